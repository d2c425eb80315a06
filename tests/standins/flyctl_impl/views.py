"""The shapes flyctl prints: Go-style JSON, tables, and machine, release and status objects.

Key names and order follow the fly-go structs that flyctl serialises: snake_case for
Machines API objects and PascalCase for GraphQL objects. Maps such as machine metadata
are sorted by key, because Go's encoder sorts map keys.
"""

from __future__ import annotations

import datetime
import json
import unicodedata
from typing import Any

from . import model
from .store import parse_stamp


def go_json(value: Any) -> str:
    """Encode like Go's json.Encoder with a 4-space indent: UTF-8 kept, HTML characters escaped."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    # These characters only occur inside strings, so replacing them everywhere is safe.
    for character, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(character, escape)
    return text + "\n"


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(character) in ("W", "F") else 1 for character in text)


def table(headers: list[str], rows: list[list[str]], *, bars: bool = True) -> list[str]:
    """Render a table as flyctl does: upper-cased headers, no borders.

    `bars` gives the look of flyctl v0.4.33 and later, with cells padded by one space and
    separated by `│`. Without it, cells are padded to width and separated by tabs, as
    earlier versions printed them.
    """
    header_cells = [header.upper() for header in headers]
    widths = [_width(cell) for cell in header_cells]
    for row in rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], _width(cell))

    def render(cells: list[str]) -> str:
        padded = [cell + " " * (widths[column] - _width(cell)) for column, cell in enumerate(cells)]
        if bars:
            return " " + " │ ".join(padded) + " "
        return "\t".join(padded).rstrip()

    return [render(header_cells)] + [render(row) for row in rows]


def stamp_seconds(text: str) -> str:
    """Shorten a stored stamp to RFC 3339 with whole seconds, as GraphQL timestamps read."""
    moment = parse_stamp(text)
    if moment is None:
        return text
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative_time(text: str) -> str:
    """Format a stamp relative to now, in the short form of flyctl's tables."""
    moment = parse_stamp(text)
    if moment is None:
        return ""
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - moment).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _event_view(event: dict[str, Any]) -> dict[str, Any]:
    moment = parse_stamp(event["stamp"])
    milliseconds = int(moment.timestamp() * 1000) if moment else 0
    return {"type": event["type"], "status": event["status"], "source": event["source"], "timestamp": milliseconds}


def machine_view(app: model.App, machine: model.Machine, *, flyctl_version: str) -> dict[str, Any]:
    """Build the Machines API object `machines list --json` and `status --json` print."""
    metadata = {
        "fly_flyctl_version": flyctl_version,
        "fly_platform_version": "v2",
        "fly_process_group": machine["process_group"],
    }
    if machine["release_id"]:
        metadata["fly_release_id"] = machine["release_id"]
    if machine["release_version"] is not None:
        metadata["fly_release_version"] = str(machine["release_version"])

    config: dict[str, Any] = {
        "init": {},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "metadata": dict(sorted(metadata.items())),
        "services": [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "ports": [
                    {"port": 80, "handlers": ["http"], "force_https": True},
                    {"port": 443, "handlers": ["tls", "http"]},
                ],
            }
        ],
        "image": model.image_name(machine["image"]),
        "restart": {"policy": "on-failure", "max_retries": 10},
    }
    if machine["checks"]:
        config["checks"] = {
            check["name"]: {"port": 8080, "type": "http", "interval": "15s", "timeout": "10s", "method": "GET", "path": "/healthz"}
            for check in machine["checks"]
        }

    view: dict[str, Any] = {
        "id": machine["id"],
        "name": machine["name"],
        "state": machine["state"],
        "region": machine["region"],
        "image_ref": dict(machine["image"]),
        "instance_id": machine["instance_id"],
        "version": machine["version"],
        "private_ip": machine["private_ip"],
        "created_at": stamp_seconds(machine["created_at"]),
        "updated_at": stamp_seconds(machine["updated_at"]),
        "config": config,
    }
    if machine["events"]:
        view["events"] = [_event_view(event) for event in machine["events"]]
    if machine["checks"]:
        view["checks"] = [dict(check) for check in machine["checks"]]
    view["host_status"] = "ok"
    view["cordoned"] = False
    return view


def release_view(release: model.Release) -> dict[str, Any]:
    """Build one GraphQL release object as `releases --json` prints it."""
    return {
        "ID": release["id"],
        "Version": release["version"],
        "Stable": release["status"] == "complete",
        "InProgress": release["status"] == "running",
        "Reason": release["reason"],
        "Description": release["description"],
        "Status": release["status"],
        "DeploymentStrategy": release["strategy"],
        "Metadata": None,
        "User": {"ID": "standin-user", "Name": "Stand-in User", "Email": "standin@example.com", "EnablePaidHobby": False},
        "EvaluationID": "",
        "CreatedAt": stamp_seconds(release["created_at"]),
        "ImageRef": model.image_name(release["image"]),
    }


def status_view(app: model.App, *, flyctl_version: str) -> dict[str, Any]:
    """Build the object `status --json` prints, with keys sorted as Go sorts map keys.

    NOTE: Version is the latest release whatever its status. Whether Fly reports the
    latest or the latest successful release after a failed rollout is not public.
    """
    latest = model.latest_release(app)
    machines = sorted(model.active_machines(app), key=lambda machine: machine["id"], reverse=True)
    view: dict[str, Any] = {
        "AppURL": f"https://{app['name']}.fly.dev",
        "Deployed": app["deployed"],
        "Hostname": f"{app['name']}.fly.dev",
        "ID": app["name"],
        "Machines": [machine_view(app, machine, flyctl_version=flyctl_version) for machine in machines],
        "Name": app["name"],
        "Organization": {
            "ID": "org-" + app["org"],
            "InternalNumericID": "104729",
            "Name": app["org"].capitalize(),
            "Slug": app["org"],
            "RawSlug": app["org"],
            "PaidPlan": False,
        },
        "PlatformVersion": "machines",
        "Status": "deployed" if app["deployed"] else "pending",
        "Version": latest["version"] if latest else 0,
    }
    return dict(sorted(view.items()))


def checks_summary(machine: model.Machine) -> str:
    """Summarise a machine's checks as the status table does, for example `1 total, 1 passing`."""
    if not machine["checks"]:
        return ""
    counts: dict[str, int] = {}
    for check in machine["checks"]:
        counts[check["status"]] = counts.get(check["status"], 0) + 1
    parts = [f"{len(machine['checks'])} total"] + [f"{count} {status}" for status, count in sorted(counts.items())]
    return ", ".join(parts)


def log_entry_view(entry: dict[str, Any]) -> dict[str, Any]:
    """Build one log entry as `logs --json` prints it."""
    return {
        "level": entry["level"],
        "instance": entry["instance"],
        "message": entry["message"],
        "region": entry["region"],
        "timestamp": entry["timestamp"],
        "meta": {
            "instance": entry["instance"],
            "region": entry["region"],
            "event": {"provider": entry["provider"]},
        },
    }


def log_line(entry: dict[str, Any]) -> str:
    """Format one human log line; flyctl colours it even when NO_COLOR is set."""
    return (
        f"\x1b[2m{entry['timestamp']}\x1b[0m {entry['provider']}[{entry['instance']}] "
        f"\x1b[32m{entry['region']}\x1b[0m [\x1b[34m{entry['level']}\x1b[0m] {entry['message']}"
    )
