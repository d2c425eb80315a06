"""The `secretbot` executable's entry point, which ends quietly on a stop signal while the command line loads.

A deploy's SIGTERM while bot.cli is imported would otherwise kill the process (status
143), and Ctrl-C would print a KeyboardInterrupt traceback. Nothing has been opened or
written yet, so both end the process with status 0. The usual handlers are back before the
command runs, so `secretbot run` still gets KeyboardInterrupt on Ctrl-C; `serve` installs
the same handler again while it imports the server (bot/cli.py).
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    """End the process with status 0; a signal handler for moments when nothing is open."""
    raise SystemExit(0)


def main() -> None:
    previous = {signum: signal.signal(signum, exit_quietly) for signum in STOP_SIGNALS}
    from bot.cli import main as run_command_line

    for signum, handler in previous.items():
        signal.signal(signum, handler)
    run_command_line()
