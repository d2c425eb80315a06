"""Exceptions that end a stand-in run, one per exit path of the real flyctl.

    CliError      printed as `Error: ...` on stderr, exit 1
    UsageError    a CliError for which cobra also prints the usage block on stdout
    Panic         a Go panic: the "Oops" text and a stack on stdout, exit 3
    Canceled      SIGINT or SIGTERM: nothing printed, exit 127
    StandinError  the stand-in itself is misconfigured: exit 2
"""

from __future__ import annotations


class CliError(Exception):
    """An error flyctl prints as `Error: <message>` on stderr before exiting with 1."""

    def __init__(
        self,
        message: str,
        *,
        description: str = "",
        suggestion: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.description = description
        self.suggestion = suggestion
        self.request_id = request_id


class UsageError(CliError):
    """A flag or argument-count error, for which cobra prints the command's usage first."""


class Panic(Exception):
    """A Go runtime panic that flyctl's recover handler turns into exit code 3."""


class Canceled(Exception):
    """The process got SIGINT or SIGTERM; flyctl exits 127 without printing."""


class StandinError(Exception):
    """The stand-in cannot run: its environment or state file is wrong."""
