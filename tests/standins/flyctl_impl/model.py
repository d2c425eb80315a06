"""Apps, machines, releases and secrets as the stand-in stores them in its state file.

Records are plain dicts so that they go into the JSON state unchanged. `views.py` turns
them into the shapes flyctl prints.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .store import State, next_stamp, parse_stamp, random_ulid, stable_hex

App = dict[str, Any]
Machine = dict[str, Any]
Release = dict[str, Any]

# flyctl v0.4.6 and later computes no secret status when an app has more machines than this.
STATUS_MACHINE_LIMIT = 100
# Machine states that a rolling update starts again after updating the machine; others
# (stopped, suspended, standbys) are updated but left as they are.
LAUNCH_STATES = ("started", "starting", "failed")
LIST_FORMATS = ("current", "v0.3", "legacy")
STRATEGIES = ("rolling", "immediate", "canary")
MAX_EVENTS = 10
MAX_LOG_ENTRIES = 500


def secret_digest(value: str) -> str:
    """Return the first 16 hex characters of the SHA-256 of the value.

    NOTE: Fly computes digests on the server with an unpublished algorithm; only the
    shape (16 lowercase hex characters) matches the real output.
    """
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def image_ref(app_name: str, tag: str) -> dict[str, str]:
    """Build an image reference in the registry.fly.io form that deployments use."""
    return {
        "registry": "registry.fly.io",
        "repository": app_name,
        "tag": tag,
        "digest": "sha256:" + stable_hex(app_name, tag, length=64),
    }


def image_name(reference: dict[str, str]) -> str:
    """Format an image reference as `registry/repository:tag`."""
    return f"{reference['registry']}/{reference['repository']}:{reference['tag']}"


def new_app(
    state: State,
    name: str,
    *,
    machines: int,
    checks_per_machine: int,
    ip: bool,
    region: str,
    deployed: bool,
    machine_state: str,
    list_format: str,
    strategy: str,
    org: str,
) -> App:
    """Add an app whose machines all run its first release, replacing any app of that name."""
    if list_format not in LIST_FORMATS:
        raise ValueError(f"list_format {list_format!r} is not one of {', '.join(LIST_FORMATS)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")

    app: App = {
        "name": name,
        "org": org,
        "deployed": deployed,
        "ip": ip,
        "list_format": list_format,
        "strategy": strategy,
        "max_unavailable": 0.33,
        "image": image_ref(name, "deployment-" + stable_hex(name, "image", 1, length=26).upper()),
        "secrets_version": 0,
        "secrets": {},
        "releases": [],
        "machines": [],
        "logs": [],
    }
    state["apps"][name] = app

    if deployed:
        add_release(state, app, status="complete", reason="deploy", description="Deploy image")
    for index in range(machines):
        app["machines"].append(
            new_machine(state, app, index=index, region=region, checks=checks_per_machine, machine_state=machine_state)
        )
    return app


def new_machine(state: State, app: App, *, index: int, region: str, checks: int, machine_state: str) -> Machine:
    """Build a machine of the app's "app" process group on the app's latest release."""
    stamp = next_stamp(state)
    machine_id = stable_hex(app["name"], "machine", index, length=14)
    release = latest_release(app)
    return {
        "id": machine_id,
        "name": stable_hex(app["name"], "name", index, length=6) + "-machine",
        "state": machine_state,
        "region": region,
        "process_group": "app",
        "image": dict(app["image"]),
        "instance_id": random_ulid(),
        "version": random_ulid(),
        "private_ip": f"fdaa:0:1a2b:a7b:{100 + index}:{stable_hex(machine_id, 'ip', length=4)}:1:2",
        "created_at": stamp,
        "updated_at": stamp,
        "release_version": release["version"] if release else None,
        "release_id": release["id"] if release else None,
        "secrets_version": app["secrets_version"],
        "checks": [
            {
                "name": f"servicecheck-{number:02d}-http-8080",
                "status": "passing",
                "output": "200 OK",
                "updated_at": stamp,
            }
            for number in range(checks)
        ],
        "events": [],
        "lease": None,
        "destroyed": False,
    }


def add_release(state: State, app: App, *, status: str, reason: str, description: str) -> Release:
    """Append a release with the next version number and the app's current image."""
    version = max((release["version"] for release in app["releases"]), default=0) + 1
    release: Release = {
        "id": stable_hex(app["name"], "release", version, length=12),
        "version": version,
        "status": status,
        "reason": reason,
        "description": description,
        "strategy": app["strategy"],
        "created_at": next_stamp(state),
        "image": dict(app["image"]),
    }
    app["releases"].append(release)
    return release


def latest_release(app: App) -> Release | None:
    """Return the release with the highest version, whatever its status."""
    return max(app["releases"], key=lambda release: release["version"], default=None)


def find_release(app: App, version: int) -> Release | None:
    """Return the release with that version, or None."""
    for release in app["releases"]:
        if release["version"] == version:
            return release
    return None


def active_machines(app: App) -> list[Machine]:
    """Return the app's machines that are not destroyed, sorted by ID."""
    return sorted((machine for machine in app["machines"] if not machine.get("destroyed")), key=lambda m: m["id"])


def find_machine(app: App, machine_id: str) -> Machine:
    """Return the machine with that ID, raising KeyError naming it otherwise."""
    for machine in app["machines"]:
        if machine["id"] == machine_id:
            return machine
    raise KeyError(f"machine {machine_id} is not in app {app['name']}")


def apply_secret_changes(state: State, app: App, changes: dict[str, str | None]) -> int:
    """Store a batch of secret changes (None deletes) and return the new secrets version.

    Like the Machines API batch endpoint, one call bumps the version once, unsetting an
    unknown name is not an error, and writing an unchanged value still updates it.
    """
    stamp = next_stamp(state)
    for name, value in changes.items():
        if value is None:
            app["secrets"].pop(name, None)
            continue
        previous = app["secrets"].get(name)
        app["secrets"][name] = {
            "value": value,
            "digest": secret_digest(value),
            "created_at": previous["created_at"] if previous else stamp,
            "updated_at": stamp,
        }
    app["secrets_version"] += 1
    return app["secrets_version"]


def secret_statuses(app: App) -> dict[str, str] | None:
    """Compute each secret's Deployed/Staged/Partial/Unknown status as flyctl v0.4.6+ does.

    A machine has a secret when its release was created at or after the secret's
    updated_at. Returns None when the app has more machines than flyctl computes status
    for. Only the latest max(2 x distinct machine releases, 20) releases, at most 200, are
    looked up, and a machine whose release is not among them counts as not having it.
    """
    machines = active_machines(app)
    if len(machines) > STATUS_MACHINE_LIMIT:
        return None

    versions = {machine["release_version"] for machine in machines}
    lookup_limit = min(max(2 * len(versions), 20), 200)
    recent = sorted(app["releases"], key=lambda release: release["version"], reverse=True)[:lookup_limit]
    release_times = {release["version"]: parse_stamp(release["created_at"]) for release in recent}

    statuses: dict[str, str] = {}
    for name, secret in app["secrets"].items():
        updated = parse_stamp(secret.get("updated_at"))
        if not machines:
            statuses[name] = "Staged"
            continue
        if updated is None:
            statuses[name] = "Unknown"
            continue
        having = 0
        for machine in machines:
            created = release_times.get(machine["release_version"])
            if created is not None and created >= updated:
                having += 1
        if having == 0:
            statuses[name] = "Staged"
        elif having == len(machines):
            statuses[name] = "Deployed"
        else:
            statuses[name] = "Partial"
    return statuses


def record_event(state: State, machine: Machine, *, kind: str, status: str, source: str = "flyd") -> None:
    """Record a machine event, newest first, keeping the last few."""
    machine["events"].insert(0, {"type": kind, "status": status, "source": source, "stamp": next_stamp(state)})
    del machine["events"][MAX_EVENTS:]


def append_log(state: State, app: App, machine: Machine, message: str, *, level: str = "info", provider: str = "app") -> None:
    """Append one log line that `flyctl logs` will show, dropping the oldest past the cap."""
    app["logs"].append(
        {
            "timestamp": next_stamp(state),
            "instance": machine["id"],
            "region": machine["region"],
            "level": level,
            "provider": provider,
            "message": message,
        }
    )
    del app["logs"][:-MAX_LOG_ENTRIES]


def set_checks(state: State, machine: Machine, *, status: str, output: str) -> None:
    """Set every health check of the machine to one status and output."""
    stamp = next_stamp(state)
    for check in machine["checks"]:
        check["status"] = status
        check["output"] = output
        check["updated_at"] = stamp

