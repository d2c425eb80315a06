"""The flyctl command lines secretbot runs, built in one place.

`FlyctlClient` runs these commands, and `secretbot run --dry-run` prints them, so what
an operator previews is what the bot would execute. A command that takes values names
them in `stdin_names`: the values travel on standard input and never in `args`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import CommandError
from bot.policy import SECRET_NAME_PATTERN

# Fly app names are lowercase letters, digits and dashes. Checking them keeps an app
# name from being read as a flag, since it is the one caller-supplied word in argv.
APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")

# What a preview shows in place of a value.
VALUE_MASK = "******"


def check_app(app: str) -> str:
    """Return `app` if it is a valid Fly app name; raise CommandError otherwise."""
    if not APP_NAME.fullmatch(app):
        raise CommandError(
            f"app name {app!r} is invalid: Fly app names use lowercase letters, digits and dashes"
        )
    return app


@dataclass(frozen=True)
class FlyCommand:
    """One flyctl invocation: the arguments after the executable and a short name for logs."""

    args: tuple[str, ...]
    # The subcommand for logs and messages, e.g. "secrets import".
    name: str
    # The app the command acts on, or None for commands such as `version`.
    app: str | None = None
    # Secrets whose values the command reads from standard input, in this order.
    stdin_names: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        return list(self.args)

    def display(self, executable: str = "flyctl") -> str:
        """Return the command line as a person would type it."""
        return " ".join((executable, *self.args))

    def masked_stdin(self) -> list[str]:
        """Return the standard-input lines with every value replaced by a mask."""
        return [f"{name}={VALUE_MASK}" for name in self.stdin_names]


def version() -> FlyCommand:
    return FlyCommand(args=("version",), name="version")


def secrets_list(app: str) -> FlyCommand:
    return FlyCommand(args=("secrets", "list", "--app", check_app(app), "--json"), name="secrets list", app=app)


def status(app: str) -> FlyCommand:
    return FlyCommand(args=("status", "--app", check_app(app), "--json"), name="status", app=app)


def releases(app: str) -> FlyCommand:
    return FlyCommand(args=("releases", "--app", check_app(app), "--json"), name="releases", app=app)


def recent_logs(app: str) -> FlyCommand:
    # Without --no-tail, flyctl keeps streaming new lines until it is stopped.
    return FlyCommand(args=("logs", "--app", check_app(app), "--no-tail", "--json"), name="logs", app=app)


def secrets_import(app: str, names: tuple[str, ...]) -> FlyCommand:
    """Return `flyctl secrets import`, which reads `NAME=value` lines for `names` from standard input."""
    return FlyCommand(args=("secrets", "import", "--app", check_app(app)), name="secrets import", app=app,
                      stdin_names=tuple(names))


def secrets_unset(app: str, names: tuple[str, ...]) -> FlyCommand:
    """Return `flyctl secrets unset NAME ... --app APP`, which removes secrets and rolls the app's machines.

    The names go into argv, so each must be a valid secret name: one starting with a dash
    would be read as a flag.
    """
    if not names:
        raise CommandError("flyctl secrets unset needs at least one secret name")
    for name in names:
        if not SECRET_NAME_PATTERN.match(name):
            raise CommandError(f"secret name {name!r} is invalid: names use letters, digits and underscores "
                               "and do not start with a digit")
    return FlyCommand(args=("secrets", "unset", *names, "--app", check_app(app)), name="secrets unset", app=app)


def secrets_deploy(app: str) -> FlyCommand:
    """Return `flyctl secrets deploy`, which rolls secrets stored with `--stage` out to every machine."""
    return FlyCommand(args=("secrets", "deploy", "--app", check_app(app)), name="secrets deploy", app=app)


def apps_restart(app: str) -> FlyCommand:
    """Return `flyctl apps restart APP`, which restarts the started machines one by one on their release.

    flyctl takes the app as an argument here and has no `--app` flag for this command.
    """
    return FlyCommand(args=("apps", "restart", check_app(app)), name="apps restart", app=app)
