"""The identity of a terminal run: the OS user, an optional operator name and the host."""

from __future__ import annotations

import getpass
import os
import socket
import unicodedata
from dataclasses import dataclass

from bot.redact import Redactor

# Names are stored in String(64) columns (requester, decision user) and shown in Slack.
MAX_NAME_LENGTH = 64
# With no values registered it masks what looks like key material.
_REDACTOR = Redactor()


def clean_name(text: str) -> str:
    """Return `text` without control and format characters, with whitespace collapsed, at most 64 characters.

    Control characters could rewrite the terminal or a log line, and format characters
    (bidirectional overrides, zero-width spaces) could make a name read as another one.
    """
    kept = "".join(" " if char.isspace() else char for char in text
                   if char.isspace() or not unicodedata.category(char).startswith("C"))
    return " ".join(kept.split())[:MAX_NAME_LENGTH]


def name_problem(raw: str, cleaned: str) -> str | None:
    """Return why a typed name cannot be recorded, or None if it can."""
    if not cleaned:
        return "it is empty once control characters and surrounding spaces are removed"
    if _REDACTOR.redact(raw) != raw:
        return "it looks like it contains a key or token"
    return None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        # No USER or LOGNAME and no passwd entry, as in some containers.
        return f"uid{os.getuid()}"


@dataclass(frozen=True)
class TerminalIdentity:
    os_user: str
    # The free-text name given with --operator, already cleaned.
    operator: str | None
    hostname: str
    pid: int

    @property
    def requester(self) -> str:
        """The run's requester and the actor of its decisions, as `secretbot backup show` names local users."""
        return f"local:{self.os_user}"[:MAX_NAME_LENGTH]

    @classmethod
    def current(cls, *, operator: str | None) -> TerminalIdentity:
        return cls(os_user=clean_name(_os_user()) or "unknown", operator=operator,
                   hostname=clean_name(socket.gethostname()) or "unknown", pid=os.getpid())
