"""flyctl's `--json` output parsed into small dataclasses.

The parsers are strict. A missing key or a value of the wrong type raises
`FlyctlOutputError` naming the app, the command and the key. A format change in a new
flyctl release therefore stops a rotation instead of being read as "no secrets" or
"no machines". Keys that secretbot does not read are ignored.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from bot.errors import FlyctlOutputError

logger = logging.getLogger(__name__)

# JSON's insignificant whitespace, skipped between the objects `logs --json` prints.
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")

# Values of `config.services[].autostop` that let Fly stop or suspend idle machines.
# fly-go writes "off", "stop" or "suspend", and older configs carry a boolean.
_AUTO_STOP_VALUES = (True, "stop", "suspend")


@dataclass(frozen=True)
class FlySecret:
    """One entry of `secrets list --json`; `status` is None when flyctl omits it."""

    name: str
    digest: str
    status: str | None = None


@dataclass(frozen=True)
class Check:
    """A machine health check result; `status` is passing, warning or critical."""

    name: str
    status: str
    output: str = ""


@dataclass(frozen=True)
class Machine:
    """A machine from `status --json`, reduced to what verification needs."""

    id: str
    state: str
    release_version: str | None
    host_status: str | None
    checks: list[Check] = field(default_factory=list)
    auto_stop: bool = False


@dataclass(frozen=True)
class AppStatus:
    """An app from `status --json`; `version` is the current release number."""

    name: str
    version: int
    deployed: bool
    machines: list[Machine] = field(default_factory=list)


@dataclass(frozen=True)
class Release:
    """One entry of `releases --json`; `created_at` is flyctl's RFC 3339 text."""

    version: int
    status: str
    created_at: str


@dataclass(frozen=True)
class LogLine:
    """One entry of `logs --json`; `timestamp` is flyctl's RFC 3339 text."""

    timestamp: str
    region: str | None
    instance: str | None
    level: str | None
    message: str


class _Reader:
    """Typed access to decoded JSON that raises FlyctlOutputError with context."""

    def __init__(self, *, app: str, command: str) -> None:
        self.app = app
        self.command = command

    def fail(self, where: str, problem: str) -> FlyctlOutputError:
        return FlyctlOutputError(
            f"flyctl {self.command} --json for app {self.app} printed output secretbot cannot read: "
            f"{where} {problem}. Check that the installed flyctl is a supported release "
            "(v0.4.6 or later is known to work)."
        )

    def decode(self, text: str) -> Any:
        if not text.strip():
            raise self.fail("stdout", "is empty")
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            # The position is enough to debug; the text itself may hold secret material.
            position = f"line {error.lineno} column {error.colno}"
            raise self.fail("stdout", f"is not JSON ({error.msg} at {position})") from None

    def object(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"is {_kind(value)}, expected an object")
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"is {_kind(value)}, expected an array")
        return value

    def text(self, container: dict[str, Any], key: str, where: str) -> str:
        if key not in container:
            raise self.fail(where, f"has no {key!r} key")
        value = container[key]
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"is {_kind(value)}, expected a string")
        return value

    def optional_text(self, container: dict[str, Any], key: str, where: str) -> str | None:
        if container.get(key) is None:
            return None
        return self.text(container, key, where)

    def integer(self, container: dict[str, Any], key: str, where: str) -> int:
        if key not in container:
            raise self.fail(where, f"has no {key!r} key")
        value = container[key]
        # bool is a subclass of int in Python, but true is not a release number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where}.{key}", f"is {_kind(value)}, expected an integer")
        return value

    def boolean(self, container: dict[str, Any], key: str, where: str) -> bool:
        if key not in container:
            raise self.fail(where, f"has no {key!r} key")
        value = container[key]
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"is {_kind(value)}, expected true or false")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_secrets(text: str, *, app: str) -> list[FlySecret]:
    """Parse `secrets list --json` in any of the three shapes flyctl has printed.

    * v0.4.6 and later: `{"name", "digest", "status"}`; `status` is left out when the
      app has more than 100 machines;
    * v0.3.178 to v0.4.5: `{"name", "digest"}`, sometimes with timestamps;
    * v0.3.177 and earlier: `{"Name", "Digest", "CreatedAt"}`.
    """
    reader = _Reader(app=app, command="secrets list")
    items = reader.array(reader.decode(text), "the top level")

    secrets = []
    for index, item in enumerate(items):
        where = f"item {index}"
        entry = reader.object(item, where)
        if "name" in entry and "digest" in entry:
            secret = FlySecret(
                name=reader.text(entry, "name", where),
                digest=reader.text(entry, "digest", where),
                status=reader.optional_text(entry, "status", where),
            )
        elif "Name" in entry and "Digest" in entry:
            secret = FlySecret(name=reader.text(entry, "Name", where), digest=reader.text(entry, "Digest", where))
        else:
            keys = ", ".join(sorted(str(key) for key in entry)) or "none"
            raise reader.fail(where, f"has keys ({keys}), expected name and digest")
        secrets.append(secret)

    logger.debug("parsed secrets list app=%s secrets=%d", app, len(secrets))
    return secrets


def _parse_checks(reader: _Reader, machine: dict[str, Any], where: str) -> list[Check]:
    raw_checks = machine.get("checks")
    if raw_checks is None:
        return []

    checks = []
    for index, item in enumerate(reader.array(raw_checks, f"{where}.checks")):
        check_where = f"{where}.checks[{index}]"
        check = reader.object(item, check_where)
        checks.append(
            Check(
                name=reader.text(check, "name", check_where),
                status=reader.text(check, "status", check_where),
                output=reader.optional_text(check, "output", check_where) or "",
            )
        )
    return checks


def _parse_auto_stop(reader: _Reader, config: dict[str, Any], where: str) -> bool:
    services = config.get("services")
    if services is None:
        return False
    for index, item in enumerate(reader.array(services, f"{where}.config.services")):
        service = reader.object(item, f"{where}.config.services[{index}]")
        if service.get("autostop") in _AUTO_STOP_VALUES:
            return True
    return False


def _parse_machine(reader: _Reader, item: Any, where: str) -> Machine:
    machine = reader.object(item, where)

    config = reader.object(machine.get("config") or {}, f"{where}.config")
    metadata = reader.object(config.get("metadata") or {}, f"{where}.config.metadata")

    return Machine(
        id=reader.text(machine, "id", where),
        state=reader.text(machine, "state", where),
        release_version=reader.optional_text(metadata, "fly_release_version", f"{where}.config.metadata"),
        host_status=reader.optional_text(machine, "host_status", where),
        checks=_parse_checks(reader, machine, where),
        auto_stop=_parse_auto_stop(reader, config, where),
    )


def parse_status(text: str, *, app: str) -> AppStatus:
    """Parse `status --json`: one app object with its active machines."""
    reader = _Reader(app=app, command="status")
    document = reader.object(reader.decode(text), "the top level")

    # Go encodes an empty machine slice as null when the app has none.
    raw_machines = document.get("Machines")
    if "Machines" not in document:
        raise reader.fail("the top level", "has no 'Machines' key")
    machine_items = [] if raw_machines is None else reader.array(raw_machines, "Machines")

    status = AppStatus(
        name=reader.text(document, "Name", "the top level"),
        version=reader.integer(document, "Version", "the top level"),
        deployed=reader.boolean(document, "Deployed", "the top level"),
        machines=[_parse_machine(reader, item, f"Machines[{index}]") for index, item in enumerate(machine_items)],
    )
    logger.debug("parsed status app=%s version=%d machines=%d", app, status.version, len(status.machines))
    return status


def parse_releases(text: str, *, app: str) -> list[Release]:
    """Parse `releases --json`: releases newest first, as flyctl sorts them."""
    reader = _Reader(app=app, command="releases")
    items = reader.array(reader.decode(text), "the top level")

    releases = []
    for index, item in enumerate(items):
        where = f"item {index}"
        entry = reader.object(item, where)
        releases.append(
            Release(
                version=reader.integer(entry, "Version", where),
                status=reader.text(entry, "Status", where),
                created_at=reader.text(entry, "CreatedAt", where),
            )
        )

    logger.debug("parsed releases app=%s releases=%d", app, len(releases))
    return releases


def _skip_whitespace(text: str, position: int) -> int:
    match = _JSON_WHITESPACE.match(text, position)
    return match.end() if match else position


def parse_logs(text: str, *, app: str) -> list[LogLine]:
    """Parse `logs --json`: one indented object per entry, in the order flyctl prints them.

    flyctl renders each entry separately as indented JSON (`render.JSON` per entry in
    internal/command/logs/logs.go), so the output is a run of objects with whitespace
    between them, which `json.loads` rejects. Empty output means no recent log lines.
    """
    reader = _Reader(app=app, command="logs")
    decoder = json.JSONDecoder()

    lines: list[LogLine] = []
    position = _skip_whitespace(text, 0)
    while position < len(text):
        where = f"entry {len(lines)}"
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            # The position is enough to debug; the text itself may hold secret material.
            location = f"line {error.lineno} column {error.colno}"
            raise reader.fail(where, f"is not JSON ({error.msg} at {location})") from None

        entry = reader.object(value, where)
        lines.append(
            LogLine(
                timestamp=reader.text(entry, "timestamp", where),
                region=reader.optional_text(entry, "region", where),
                instance=reader.optional_text(entry, "instance", where),
                level=reader.optional_text(entry, "level", where),
                message=reader.text(entry, "message", where),
            )
        )
        position = _skip_whitespace(text, position)

    logger.debug("parsed logs app=%s lines=%d", app, len(lines))
    return lines
