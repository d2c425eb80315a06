"""What one stand-in run carries around: streams, environment, state access and signals.

SIGINT and SIGTERM raise Canceled in the main thread, which the entry point turns into
exit code 127 as flyctl does. While the state file is being written the signal is held
back until the write ends, so a killed run never leaves a half-applied change.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from . import store
from .errors import Canceled
from .flags import ParsedArgs
from .views import go_json

_deferral_depth = 0
_pending_signal: int | None = None


def _on_signal(signum: int, _frame: object) -> None:
    global _pending_signal
    if _deferral_depth:
        _pending_signal = signum
        return
    raise Canceled()


def install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into Canceled exceptions."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then raise Canceled for them."""
    global _deferral_depth, _pending_signal
    _deferral_depth += 1
    try:
        yield
    finally:
        _deferral_depth -= 1
    if _deferral_depth == 0 and _pending_signal is not None:
        _pending_signal = None
        raise Canceled()


class StdinReader:
    """Reads file descriptor 0 directly and counts the bytes taken, for the invocation log.

    The bytes themselves are kept in `data` too, and written out only when a test asks for
    them with FLYCTL_STANDIN_STDIN_DIR.
    """

    def __init__(self) -> None:
        self.bytes_read = 0
        self.data = b""

    def is_char_device(self) -> bool:
        """Report whether stdin is a terminal or other character device, or is closed.

        flyctl refuses to read `NAME=-` values from a character device, which includes
        /dev/null as well as a terminal.
        """
        try:
            mode = os.fstat(0).st_mode
        except OSError:
            return True
        return os.isatty(0) or stat.S_ISCHR(mode)

    def read(self, limit: int | None = None) -> bytes:
        """Read until end of file, or until more than `limit` bytes have arrived."""
        chunks: list[bytes] = []
        total = 0
        while limit is None or total <= limit:
            want = 65536 if limit is None else min(65536, limit + 1 - total)
            try:
                chunk = os.read(0, want)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        self.bytes_read += total
        taken = b"".join(chunks)
        self.data += taken
        return taken


class Invocation:
    """One run of the stand-in: parsed arguments, streams, environment and state access."""

    def __init__(
        self,
        *,
        argv: list[str],
        env: dict[str, str],
        state_path: str,
        stdin: StdinReader,
        stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr,
    ) -> None:
        self.argv = argv
        self.env = env
        self.state_path = state_path
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.command_path = ""
        self.args = ParsedArgs()
        self.token = ""
        self.app_name = ""
        self.app_config: dict[str, Any] = {}
        self.injection: dict[str, Any] | None = None
        self.settings: dict[str, Any] = dict(store.DEFAULT_SETTINGS)
        self._cancel_hooks: list[Callable[[], None]] = []

    def out(self, line: str = "") -> None:
        """Write one line to stdout and flush it, as flyctl does line by line."""
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def err(self, line: str = "") -> None:
        """Write one line to stderr and flush it."""
        self.stderr.write(line + "\n")
        self.stderr.flush()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[store.State]:
        """Yield the state for a read-modify-write under the file lock, signals held back."""
        with signals_deferred(), store.locked(self.state_path) as state:
            yield state

    def snapshot(self) -> store.State:
        """Return a read-only copy of the state."""
        with signals_deferred(), store.locked(self.state_path, write=False) as state:
            return state

    @property
    def failure(self) -> str:
        """Return the injected failure kind for this run, or an empty string."""
        return str(self.injection["failure"]) if self.injection else ""

    def json_output(self) -> bool:
        """Report whether JSON output was asked for by `--json` or FLY_JSON."""
        return self.args.flag("json") or self.env.get("FLY_JSON", "") not in ("", "0", "false")

    def print_json(self, value: object) -> None:
        """Print Go-style JSON, or a cut-off copy of it for the `garbage_json` failure."""
        text = go_json(value)
        if self.failure == "garbage_json":
            text = text[: max(1, len(text) // 2)] + "\n"
        self.stdout.write(text)
        self.stdout.flush()

    def sleep(self, seconds: float) -> None:
        """Sleep without holding the state lock; SIGTERM interrupts it."""
        if seconds > 0:
            time.sleep(seconds)

    def hang(self) -> None:
        """Sleep until a signal arrives, capped by the `hang_max` setting, then exit as canceled."""
        deadline = time.monotonic() + float(self.settings["hang_max"])
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise Canceled()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Register cleanup that runs if the run is canceled, such as releasing leases."""
        self._cancel_hooks.append(hook)

    def run_cancel_hooks(self) -> None:
        """Run cleanup hooks newest first; a second signal during cleanup is ignored."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while self._cancel_hooks:
            hook = self._cancel_hooks.pop()
            hook()
