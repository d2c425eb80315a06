"""Test helper that creates and reads the flyctl stand-in's state file.

    state = FlyState(tmp_path / "fly.json")
    state.add_app("hotel-voice-bot", machines=2, checks_per_machine=1, ip=True)
    state.set_secret("hotel-voice-bot", "JWT_SECRET", "old-value")
    state.inject("hotel-voice-bot", "import", failure="health_timeout")
    env = {"PATH": ..., "FLY_API_TOKEN": "token", **state.env(log_path=tmp_path / "calls.jsonl")}

The stand-in (`tests/standins/flyctl`) reads the file named by FLYCTL_STANDIN_STATE on
every run, and appends one line per run to FLYCTL_STANDIN_LOG when that is set. Both
sides take the same file lock, so a test may change the state while the bot runs.
Returned records are copies; change the state only through these methods.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from .flyctl_impl import injection, model, store

STANDIN_PATH = Path(__file__).resolve().parent / "flyctl"


class FlyState:
    """The stand-in's state file: apps, machines, releases, secrets and injected failures."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        store.create_if_missing(self.path)

    def env(self, *, log_path: str | os.PathLike[str] | None = None,
            stdin_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Return the environment variables that point the stand-in at this state and log.

        With `stdin_dir`, each run's standard input is kept in a file in that folder; the
        log names it as `stdin_file` (see `stdin_of`). Those files hold values.
        """
        variables = {"FLYCTL_STANDIN_STATE": self.path}
        if log_path is not None:
            variables["FLYCTL_STANDIN_LOG"] = str(log_path)
        if stdin_dir is not None:
            variables["FLYCTL_STANDIN_STDIN_DIR"] = str(stdin_dir)
        return variables

    def _read(self) -> store.State:
        with store.locked(self.path, write=False) as state:
            return state

    def _app(self, state: store.State, app: str) -> model.App:
        try:
            return state["apps"][app]
        except KeyError:
            raise KeyError(f"app {app!r} is not in the stand-in state; add it with add_app()") from None

    def add_app(
        self,
        name: str,
        *,
        machines: int = 1,
        checks_per_machine: int = 1,
        ip: bool = False,
        region: str = "ams",
        deployed: bool = True,
        machine_state: str = "started",
        list_format: str = "current",
        strategy: str = "rolling",
        org: str = "personal",
    ) -> None:
        """Add a deployed app with machines on release v1; `deployed=False` adds no release.

        `ip=True` makes rollouts print the DNS check lines. `list_format` selects the
        `secrets list --json` keys: "current", "v0.3" or "legacy".
        """
        with store.locked(self.path) as state:
            model.new_app(
                state,
                name,
                machines=machines,
                checks_per_machine=checks_per_machine,
                ip=ip,
                region=region,
                deployed=deployed,
                machine_state=machine_state,
                list_format=list_format,
                strategy=strategy,
                org=org,
            )

    def remove_app(self, name: str) -> None:
        """Delete an app, so that commands for it fail as for an unknown app."""
        with store.locked(self.path) as state:
            state["apps"].pop(name, None)

    def set_secret(self, app: str, name: str, value: str, *, deployed: bool = True) -> None:
        """Store a secret; deployed means every machine already runs with it.

        With `deployed=False` the secret is staged: newer than every release, so
        `secrets list` reports it as Staged until a rollout.
        """
        with store.locked(self.path) as state:
            record = self._app(state, app)
            version = model.apply_secret_changes(state, record, {name: value})
            if not deployed:
                return
            latest = model.latest_release(record)
            if latest is not None:
                record["secrets"][name]["updated_at"] = latest["created_at"]
                record["secrets"][name]["created_at"] = min(record["secrets"][name]["created_at"], latest["created_at"])
            for machine in record["machines"]:
                machine["secrets_version"] = version

    def secret_value(self, app: str, name: str) -> str | None:
        """Return the value the stand-in holds for a secret, or None when it is unset."""
        secret = self._app(self._read(), app)["secrets"].get(name)
        return secret["value"] if secret else None

    def secret_digest(self, app: str, name: str) -> str | None:
        """Return the digest `secrets list` shows for a secret, or None when it is unset."""
        secret = self._app(self._read(), app)["secrets"].get(name)
        return secret["digest"] if secret else None

    def secret_names(self, app: str) -> list[str]:
        """Return the app's secret names, sorted."""
        return sorted(self._app(self._read(), app)["secrets"])

    def secrets_version(self, app: str) -> int:
        """Return how many batch updates the app's secrets have had."""
        return int(self._app(self._read(), app)["secrets_version"])

    def inject(
        self,
        app: str,
        command: str,
        failure: str,
        *,
        once: bool = True,
        machine: int | str | None = None,
    ) -> None:
        """Make the next matching run fail, or every one with `once=False`.

        `command` is a full path ("secrets import"), its last or first word ("import",
        "secrets") or "*", and `app` may be "*". `machine` picks the machine a rollout
        failure hits, as an index into the ID-sorted machines or as an ID. The default is
        the first started machine, or the last one for "unhealthy_after". Kinds are listed in
        flyctl_impl.injection.FAILURES; ValueError names an unknown kind or a kind that
        has no effect on the command.
        """
        injection.validate(command, failure)
        with store.locked(self.path) as state:
            state["injections"].append(
                {"app": app, "command": command, "failure": failure, "once": once, "machine": machine}
            )

    def pending_injections(self) -> list[dict[str, Any]]:
        """Return the injections that have not fired yet (and every `once=False` one)."""
        return copy.deepcopy(self._read()["injections"])

    def clear_injections(self) -> None:
        """Remove every injected failure."""
        with store.locked(self.path) as state:
            state["injections"] = []

    def _set_setting(self, key: str, value: Any) -> None:
        with store.locked(self.path) as state:
            state["settings"][key] = value

    def set_delay(self, seconds: float) -> None:
        """Set how long each started machine takes to roll out (default 0)."""
        self._set_setting("delay", float(seconds))

    def set_lease_wait(self, seconds: float) -> None:
        """Set how long a rollout waits for another process's machine lease (default 1 s)."""
        self._set_setting("lease_wait", float(seconds))

    def set_hang_limit(self, seconds: float) -> None:
        """Set the longest a `hang` failure or a tailing `logs` runs before exiting 127 (default 300 s)."""
        self._set_setting("hang_max", float(seconds))

    def set_version(self, version: str) -> None:
        """Set the version `flyctl version` reports, without a leading "v" (default 0.4.87)."""
        self._set_setting("version", version)

    def set_accepted_tokens(self, tokens: list[str] | None) -> None:
        """Accept only these access tokens, failing others as revoked; None accepts any."""
        self._set_setting("accepted_tokens", list(tokens) if tokens is not None else None)

    def set_list_format(self, app: str, list_format: str) -> None:
        """Select the `secrets list --json` keys for an app: "current", "v0.3" or "legacy"."""
        if list_format not in model.LIST_FORMATS:
            raise ValueError(f"list_format {list_format!r} is not one of {', '.join(model.LIST_FORMATS)}")
        with store.locked(self.path) as state:
            self._app(state, app)["list_format"] = list_format

    def set_machine(self, app: str, machine_id: str, *, state: str | None = None, checks: str | None = None) -> None:
        """Change a machine's state ("started", "stopped", ...) or all its check statuses."""
        with store.locked(self.path) as document:
            machine = model.find_machine(self._app(document, app), machine_id)
            if state is not None:
                machine["state"] = state
            if checks is not None:
                model.set_checks(document, machine, status=checks, output="" if checks != "passing" else "200 OK")

    def app(self, app: str) -> dict[str, Any]:
        """Return a copy of the app's whole stored record."""
        return copy.deepcopy(self._app(self._read(), app))

    def releases(self, app: str) -> list[dict[str, Any]]:
        """Return the app's releases, oldest first."""
        return copy.deepcopy(self._app(self._read(), app)["releases"])

    def machines(self, app: str) -> list[dict[str, Any]]:
        """Return the app's machines sorted by ID, with release_version, state and checks."""
        return copy.deepcopy(model.active_machines(self._app(self._read(), app)))

    def machine_ids(self, app: str) -> list[str]:
        """Return the app's machine IDs, sorted as rollouts visit them."""
        return [machine["id"] for machine in self.machines(app)]

    @staticmethod
    def stdin_of(invocation: dict[str, Any], stdin_dir: str | os.PathLike[str]) -> bytes | None:
        """Return the exact bytes a logged run read from standard input, or None if none were kept."""
        name = invocation.get("stdin_file")
        if not name:
            return None
        with open(os.path.join(stdin_dir, name), "rb") as file:
            return file.read()

    def add_log_line(self, app: str, message: str, *, machine: int | str = 0, level: str = "info") -> None:
        """Append a line to the app's log as `flyctl logs` shows it, from a machine (index or ID)."""
        with store.locked(self.path) as state:
            record = self._app(state, app)
            machines = model.active_machines(record)
            chosen = machines[machine] if isinstance(machine, int) else model.find_machine(record, machine)
            model.append_log(state, record, chosen, message, level=level)

    @staticmethod
    def invocations(log_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Read the invocation log: one dict per stand-in run, oldest first; [] if none ran."""
        try:
            with open(log_path, encoding="utf-8") as file:
                return [json.loads(line) for line in file if line.strip()]
        except FileNotFoundError:
            return []
