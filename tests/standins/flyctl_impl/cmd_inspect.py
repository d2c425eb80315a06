"""Read-only commands: `status`, `releases`, `checks list`, `machines list` and `logs`.

The JSON outputs are the contract the bot should use; the human tables only approximate
flyctl's layout.
"""

from __future__ import annotations

from . import injection, model, session
from .runtime import Invocation
from .views import (
    checks_summary,
    log_entry_view,
    log_line,
    machine_view,
    release_view,
    relative_time,
    stamp_seconds,
    status_view,
    table,
)

# `releases` shows this many of the newest releases.
RELEASE_LIMIT = 25
# `logs --no-tail` prints at most this many of the newest entries.
LOG_BACKLOG = 100


def _check_api(invocation: Invocation) -> None:
    if invocation.failure == "exit1_before_store":
        raise injection.api_error(invocation.command_path)


def run_status(invocation: Invocation) -> None:
    """`status`: the app and its machines, as one JSON object or an `App` block and a table."""
    app = session.lookup_app_graphql(invocation, prefix="failed to get app: ")
    _check_api(invocation)
    version = invocation.settings["version"]

    if invocation.json_output():
        invocation.print_json(status_view(app, flyctl_version=version))
        return

    invocation.out("App")
    invocation.out(f"  Name     = {app['name']}")
    invocation.out(f"  Owner    = {app['org']}")
    invocation.out(f"  Hostname = {app['name']}.fly.dev")
    invocation.out(f"  Image    = {app['image']['repository']}:{app['image']['tag']}")
    invocation.out()
    machines = sorted(model.active_machines(app), key=lambda machine: machine["id"], reverse=True)
    if not machines:
        invocation.out("No machines are available on this app.")
        return
    invocation.out("Machines")
    rows = [
        [
            machine["process_group"],
            machine["id"],
            str(machine["release_version"] or ""),
            machine["region"],
            machine["state"],
            "",
            checks_summary(machine),
            stamp_seconds(machine["updated_at"]),
        ]
        for machine in machines
    ]
    for line in table(["Process", "ID", "Version", "Region", "State", "Role", "Checks", "Last Updated"], rows):
        invocation.out(line)
    invocation.out()


def run_releases(invocation: Invocation) -> None:
    """`releases`: the newest releases first, as PascalCase JSON objects or a table."""
    app = session.lookup_app_graphql(invocation)
    _check_api(invocation)
    releases = sorted(app["releases"], key=lambda release: release["version"], reverse=True)[:RELEASE_LIMIT]

    if invocation.json_output():
        invocation.print_json([release_view(release) for release in releases])
        return
    rows = [
        [f"v{release['version']}", release["status"], release["description"], "standin@example.com", relative_time(release["created_at"])]
        for release in releases
    ]
    for line in table(["Version", "Status", "Description", "User", "Date"], rows):
        invocation.out(line)


def run_checks_list(invocation: Invocation) -> None:
    """`checks list`: checks per machine ID; --check-name filters only the human table."""
    app = session.lookup_app_machines_api(invocation, prefix="failed to list active VMs: ")
    _check_api(invocation)
    machines = model.active_machines(app)

    if invocation.json_output():
        invocation.print_json({machine["id"]: [dict(check) for check in machine["checks"]] for machine in machines})
        return

    wanted = invocation.args.text("check-name")
    invocation.out(f"\x1b[1mHealth Checks for {app['name']}\x1b[0m")
    rows = [
        [check["name"], check["status"], machine["id"], relative_time(check["updated_at"]), check["output"]]
        for machine in machines
        for check in machine["checks"]
        if not wanted or check["name"] == wanted
    ]
    for line in table(["Name", "Status", "Machine", "Last Updated", "Output"], rows):
        invocation.out(line)


def run_machines_list(invocation: Invocation) -> None:
    """`machines list`: every machine as a Machines API object, IDs only with -q."""
    app = session.lookup_app_machines_api(invocation, prefix="failed to list machines: ")
    _check_api(invocation)
    machines = model.active_machines(app)
    version = invocation.settings["version"]

    if invocation.json_output():
        invocation.print_json([machine_view(app, machine, flyctl_version=version) for machine in machines])
        return
    if invocation.args.flag("quiet"):
        for machine in machines:
            invocation.out(machine["id"])
        return
    invocation.out(f"{len(machines)} machines have been retrieved from app {app['name']}.")
    rows = [
        [
            machine["id"],
            machine["name"],
            machine["state"],
            checks_summary(machine),
            machine["region"],
            model.image_name(machine["image"]),
            stamp_seconds(machine["created_at"]),
            stamp_seconds(machine["updated_at"]),
            machine["process_group"],
        ]
        for machine in machines
    ]
    headers = ["ID", "Name", "State", "Checks", "Region", "Image", "Created", "Last Updated", "Process Group"]
    for line in table(headers, rows):
        invocation.out(line)


def run_logs(invocation: Invocation) -> None:
    """`logs`: recent entries, then (without --no-tail) wait for more until signalled.

    `--json` prints each entry as an indented object, one after another: not JSON Lines.
    """
    app = session.lookup_app_graphql(invocation)
    _check_api(invocation)
    machine_filter = invocation.args.text("machine")
    region_filter = invocation.args.text("region")
    entries = [
        entry
        for entry in app["logs"]
        if (not machine_filter or entry["instance"] == machine_filter) and (not region_filter or entry["region"] == region_filter)
    ][-LOG_BACKLOG:]

    for entry in entries:
        if invocation.json_output():
            invocation.print_json(log_entry_view(entry))
        else:
            invocation.out(log_line(entry))
    if not invocation.args.flag("no-tail"):
        invocation.hang()
