"""`flyctl version`, `apps restart` and a minimal `deploy`."""

from __future__ import annotations

from . import injection, model, rollout, session
from .errors import CliError
from .runtime import Invocation
from .store import next_stamp, random_ulid, stable_hex


def version_line(version: str) -> str:
    """Format the line `flyctl version` prints; commit and build date are invented."""
    commit = stable_hex("flyctl", version, length=40)
    return f"flyctl v{version} linux/amd64 Commit: {commit} BuildDate: 2026-08-21T00:00:00Z"


def run_version(invocation: Invocation) -> None:
    """`version` and `--version`."""
    invocation.out(version_line(invocation.settings["version"]))


def run_apps_restart(invocation: Invocation) -> None:
    """`apps restart APP`: restart started machines one by one without a new release.

    Machines keep their release and secrets version, because a restart is not
    documented to apply staged secrets. A restarted machine's checks pass again, as
    when the app had hung, unless a `health_timeout` failure is injected.
    """
    app = session.lookup_app_graphql(invocation)
    if invocation.failure == "exit1_before_store":
        raise injection.api_error(invocation.command_path)
    machines = model.active_machines(app)
    machine_ids = [machine["id"] for machine in machines]
    if not machine_ids:
        return

    rollout.acquire_leases(invocation, machine_ids)
    skip_checks = invocation.args.flag("skip-health-checks")
    delay = float(invocation.settings["delay"])
    try:
        for machine in machines:
            if machine["state"] != "started":
                continue
            machine_id = machine["id"]
            invocation.out(f"Restarting machine {machine_id}")
            invocation.sleep(delay)
            _record_restart(invocation, machine_id)

            if skip_checks:
                pass
            elif not machine["checks"]:
                invocation.out("No health checks found")
            elif invocation.failure == "health_timeout":
                raise CliError(
                    "failed to wait for health checks to pass: "
                    f"timeout reached waiting for health checks to pass for machine {machine_id}"
                )
            else:
                count = len(machine["checks"])
                invocation.err(f"  Waiting for {machine_id} to become healthy (started, {count}/{count})")
            invocation.out(f"Machine {machine_id} restarted successfully!")
    finally:
        rollout.release_leases(invocation, machine_ids)


def _record_restart(invocation: Invocation, machine_id: str) -> None:
    with invocation.transaction() as state:
        app = state["apps"][invocation.app_name]
        machine = model.find_machine(app, machine_id)
        machine["instance_id"] = random_ulid()
        machine["updated_at"] = next_stamp(state)
        model.record_event(state, machine, kind="restart", status="started", source="user")
        model.append_log(state, app, machine, "Machine restarted", provider="runner")
        if invocation.failure == "health_timeout":
            model.set_checks(state, machine, status="critical", output="context deadline exceeded")
        else:
            model.set_checks(state, machine, status="passing", output="200 OK")


def run_deploy(invocation: Invocation) -> None:
    """`deploy`: roll existing machines onto a new image with every stored secret.

    NOTE: builds, machine creation, the local fly.toml and --wait-timeout are not
    emulated; an app without machines only gets a release record.
    """
    app = session.lookup_app_graphql(invocation)
    if invocation.failure == "exit1_before_store":
        raise injection.api_error(invocation.command_path)

    image_flag = invocation.args.text("image")
    if image_flag:
        repository, _, tag = image_flag.rpartition(":")
        new_image = model.image_ref(invocation.app_name, tag or "latest")
        if repository:
            new_image["repository"] = repository.rsplit("/", 1)[-1]
    else:
        new_image = model.image_ref(invocation.app_name, "deployment-" + random_ulid())

    invocation.out(f"Watch your deployment at https://fly.io/apps/{app['name']}/monitoring")
    invocation.out()
    strategy = invocation.args.text("strategy") or None
    if strategy is not None and strategy not in model.STRATEGIES:
        raise CliError(f"invalid deployment strategy {strategy!r}; the stand-in supports {', '.join(model.STRATEGIES)}")
    with invocation.transaction() as state:
        state["apps"][invocation.app_name]["deployed"] = True
    rollout.run(
        invocation,
        reason="deploy",
        description="Deploy image",
        detach=invocation.args.flag("detach"),
        dns_checks=invocation.args.flag("dns-checks"),
        new_image=new_image,
        strategy=strategy,
    )
    invocation.out()
    invocation.out(f"Visit your newly deployed app at https://{app['name']}.fly.dev/")
