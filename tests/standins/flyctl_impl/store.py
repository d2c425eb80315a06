"""State file of the flyctl stand-in: one JSON document read and written under a lock.

Every stand-in process and every test helper goes through `locked()`, which holds an
exclusive fcntl lock on the sidecar file `<state>.lock` for the whole read-modify-write.
The lock cannot live on the state file itself because each write replaces that file
(temporary file plus os.replace) so that a reader never sees half a document.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

SCHEMA_VERSION = 1

State = dict[str, Any]

DEFAULT_SETTINGS: dict[str, Any] = {
    # Seconds each started machine takes to roll out; real rollouts take 10 s or more.
    "delay": 0.0,
    # Seconds a rollout retries while another process holds a machine lease. Real flyctl
    # retries for about a minute, which is too slow for tests.
    "lease_wait": 1.0,
    "version": "0.4.87",
    # None accepts any non-empty token; a list accepts only those tokens.
    "accepted_tokens": None,
    # Upper bound for the `hang` failure and for `logs` without --no-tail, so that the
    # process still ends when a test never sends it a signal.
    "hang_max": 300.0,
}


class StateFileError(Exception):
    """The state file is missing, unreadable or not a stand-in state document."""


def empty_state() -> State:
    """Build a state document with no apps, no injected failures and default settings."""
    return {
        "schema": SCHEMA_VERSION,
        "clock": None,
        "settings": dict(DEFAULT_SETTINGS),
        "apps": {},
        "injections": [],
    }


def load(path: str) -> State:
    """Read the state document, raising StateFileError with the path and the fix."""
    try:
        with open(path, encoding="utf-8") as file:
            state = json.load(file)
    except FileNotFoundError:
        raise StateFileError(
            f"state file {path} does not exist; create it with tests/standins/fly_state.py FlyState(path)"
        ) from None
    except (OSError, ValueError) as error:
        raise StateFileError(f"state file {path} is not readable JSON: {error}") from None

    if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION:
        raise StateFileError(
            f"state file {path} is not a schema {SCHEMA_VERSION} stand-in state; recreate it with FlyState(path)"
        )
    for key, value in DEFAULT_SETTINGS.items():
        state["settings"].setdefault(key, value)
    return state


def save(path: str, state: State) -> None:
    """Replace the state file atomically with `state`."""
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".fly-state-", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            # ASCII escapes keep surrogate-escaped bytes of non-UTF-8 values round-trippable.
            json.dump(state, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def locked(path: str, *, write: bool = True) -> Iterator[State]:
    """Yield the state under an exclusive lock and save it afterwards when `write` is set.

    An exception inside the block leaves the file unchanged.
    """
    with open(path + ".lock", "a", encoding="utf-8") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            state = load(path)
            yield state
            if write:
                save(path, state)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def create_if_missing(path: str) -> None:
    """Write an empty state document at `path` unless a file already exists there."""
    with open(path + ".lock", "a", encoding="utf-8") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not os.path.exists(path):
                save(path, empty_state())
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def format_stamp(moment: datetime.datetime) -> str:
    """Format a UTC time as RFC 3339 with microseconds, the form used across the state."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: object) -> datetime.datetime | None:
    """Parse an RFC 3339 time, returning None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def next_stamp(state: State) -> str:
    """Return the current time, moved forward so that every stamp is later than the last.

    Secret status compares a secret's updated_at with release creation times, so two
    events in the same microsecond must still be ordered.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    last = parse_stamp(state.get("clock"))
    if last is not None and now <= last:
        now = last + datetime.timedelta(microseconds=1)
    state["clock"] = format_stamp(now)
    return state["clock"]


def stable_hex(*parts: object, length: int) -> str:
    """Derive `length` hex characters from `parts`, so that IDs repeat across test runs."""
    text = "\x00".join(str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def random_ulid() -> str:
    """Return a random 26-character Crockford base32 string shaped like Fly's ULIDs."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    number = uuid.uuid4().int
    characters = []
    for _ in range(26):
        number, remainder = divmod(number, 32)
        characters.append(alphabet[remainder])
    return "01" + "".join(characters)[2:]
