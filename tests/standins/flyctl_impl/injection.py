"""Failures that tests inject into the stand-in, and which commands each one applies to.

An injection is a state entry `{"app", "command", "failure", "once", "machine", "seconds"}`.
`command` selects by full path (`secrets import`), last word (`import`), first word
(`secrets`) or `*`, so `deploy` selects both `secrets deploy` and `deploy`. `app` may be
`*` for any app.
"""

from __future__ import annotations

from typing import Any

from .errors import CliError
from .store import State, random_ulid

COMMANDS = (
    "version",
    "secrets list",
    "secrets set",
    "secrets unset",
    "secrets import",
    "secrets deploy",
    "secrets sync",
    "status",
    "releases",
    "checks list",
    "machines list",
    "logs",
    "apps restart",
    "deploy",
)
ROLLOUT_COMMANDS = ("secrets set", "secrets unset", "secrets import", "secrets deploy", "deploy")
JSON_COMMANDS = ("secrets list", "status", "releases", "checks list", "machines list", "logs")

FAILURES: dict[str, str] = {
    "exit1_before_store": "the first API call fails with a 500; nothing is stored",
    "app_not_found": "the app lookup fails as if the app did not exist",
    "panic": "flyctl panics: Oops text on stdout, exit 3",
    "hang": "sleep until SIGTERM (exit 127, nothing printed); secrets are stored first",
    "hang_before_store": "sleep until SIGTERM before anything is stored",
    "garbage_json": "--json prints text that is not JSON",
    "health_timeout": "health checks never pass on one machine; release failed, exit 1",
    "start_timeout": "one machine never reaches started; release failed, exit 1",
    "crash_loop": "smoke checks see one machine crashing; release failed, exit 1",
    "lease_conflict": "another operation holds a machine lease; nothing is updated, exit 1",
    "concurrent_update": "one machine is already being replaced; release failed, exit 1",
    "unhealthy_after": "rollout succeeds, then one machine's checks turn critical",
    "stale_release": "rollout succeeds but machines keep their old release and secrets",
    "dns_warning": "rollout succeeds but the DNS check prints a warning",
}
_GENERAL = ("exit1_before_store", "app_not_found", "panic", "hang", "hang_before_store")
_RESTART = ("health_timeout", "lease_conflict")


def applies(failure: str, command: str) -> bool:
    """Report whether a failure kind has an effect on a command."""
    if command == "version":
        return failure in ("panic", "hang", "hang_before_store")
    if failure in _GENERAL:
        return True
    if failure == "garbage_json":
        return command in JSON_COMMANDS
    if command == "apps restart":
        return failure in _RESTART
    return command in ROLLOUT_COMMANDS


def selects(selector: str, command: str) -> bool:
    """Report whether an injection's command selector picks a canonical command path."""
    words = command.split()
    return selector in ("*", command, words[-1], words[0])


def validate(selector: str, failure: str) -> None:
    """Raise ValueError unless the failure is known and applies to a selected command."""
    if failure not in FAILURES:
        raise ValueError(f"failure {failure!r} is unknown; use one of {', '.join(FAILURES)}")
    selected = [command for command in COMMANDS if selects(selector, command)]
    if not selected:
        raise ValueError(f"command {selector!r} selects no command; use one of {', '.join(COMMANDS)} or '*'")
    if not any(applies(failure, command) for command in selected):
        raise ValueError(f"failure {failure!r} has no effect on {', '.join(selected)}")


def take(state: State, app_name: str, command: str) -> dict[str, Any] | None:
    """Return the first injection for this app and command, removing it when it fires once."""
    for index, injection in enumerate(state["injections"]):
        if injection["app"] not in ("*", app_name):
            continue
        if not selects(injection["command"], command) or not applies(injection["failure"], command):
            continue
        if injection["once"]:
            del state["injections"][index]
        return injection
    return None


def request_id(region: str = "ams") -> str:
    """Return a request ID shaped like the ones the Machines API sends back."""
    return f"{random_ulid()}-{region}"


# What the first API call of each command is called in flyctl's error wrapping.
# NOTE: only the "update secrets" and "list app secrets" prefixes come from flyctl's
# source; the others are plausible wordings.
_API_ERROR_PREFIXES = {
    "secrets list": "failed to list app secrets",
    "secrets set": "update secrets: failed to update app secrets",
    "secrets unset": "update secrets: failed to update app secrets",
    "secrets import": "update secrets: failed to update app secrets",
    "secrets sync": "update secrets: failed to update app secrets",
    "secrets deploy": "failed to list machines",
    "status": "failed to get app",
    "releases": "failed to retrieve releases",
    "checks list": "failed to list active VMs",
    "machines list": "failed to list machines",
    "logs": "failed to fetch logs",
    "apps restart": "failed to list machines",
    "deploy": "failed to list machines",
}


def api_error(command: str) -> CliError:
    """Build the error a command prints when its first API call returns status 500."""
    prefix = _API_ERROR_PREFIXES.get(command, "request failed")
    return CliError(
        f"{prefix}: request returned non-2xx status: 500: internal server error",
        request_id=request_id(),
    )
