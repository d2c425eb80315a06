"""Questions to the person at the terminal, and what Ctrl-C does during a run.

Prompts block the event loop on purpose: a terminal run has nothing else to do while it
waits for its operator, and a blocking read is the one that Ctrl-C can interrupt. When
standard input is not a terminal (a pipe, as in tests or scripts), answers are read from
it line by line, and hidden input is read without echo because a pipe never echoes.
Every prompt returns None when the operator presses Ctrl-C or input ends, and the caller
stops the run. SIGTERM and SIGHUP are handled like Ctrl-C, so a run stopped by a service
manager or a closed terminal still ends in a recorded state with its app lock released.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

import click
from rich.console import Console
from rich.text import Text

logger = logging.getLogger(__name__)

# Answers that are not accepted before a prompt gives up and the run is stopped.
MAX_TRIES = 3
# Signals that stop a run. Without a handler, SIGTERM and SIGHUP end the process at once,
# leaving the run open and its app lock held.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    """Routes SIGINT, SIGTERM and SIGHUP: at a prompt they end the prompt, otherwise they call
    `on_interrupt` with the signal number on the event loop.

    asyncio's own SIGINT handling cancels the main task, which would leave a running
    flyctl import unsettled and the run open. Here the driver decides what to stop.
    `received` names the last signal (e.g. "SIGTERM"), so a stop at a prompt can say why.
    """

    def __init__(self) -> None:
        self.prompting = False
        self.received: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_interrupt: Callable[[int], None] | None = None
        self._previous: dict[int, Any] = {}

    def install(self, loop: asyncio.AbstractEventLoop, on_interrupt: Callable[[int], None]) -> None:
        self._loop = loop
        self._on_interrupt = on_interrupt
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        if self._loop is not None:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous.clear()
            self._loop = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            _detach_from_terminal()
        if self.prompting or self._loop is None or self._on_interrupt is None:
            raise KeyboardInterrupt
        self._loop.call_soon_threadsafe(self._on_interrupt, signum)

    @contextmanager
    def prompt(self) -> Iterator[None]:
        self.prompting = True
        try:
            yield
        finally:
            self.prompting = False


def _detach_from_terminal() -> None:
    """Point output that went to a hung-up terminal at /dev/null, so printing the run's end does not fail with EIO."""
    for fd in (1, 2):
        try:
            if os.isatty(fd):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
        except OSError:
            logger.debug("could not detach fd %d from the terminal", fd)


class Prompter:
    def __init__(self, console: Console, interrupts: Interrupts, *, stdin: TextIO | None = None) -> None:
        self.console = console
        self.interrupts = interrupts
        self.stdin = stdin if stdin is not None else sys.stdin
        self.interactive = self.stdin.isatty()
        # True when the last `choose` returned None because every entry was invalid.
        self.gave_up = False

    def confirm(self, question: str) -> bool | None:
        """Ask a yes/no question whose default is no."""
        with self.interrupts.prompt():
            try:
                answer = click.confirm(question, default=False)
            except (click.Abort, KeyboardInterrupt, EOFError, OSError):
                self.console.print()
                return None
        self._echo("y" if answer else "n")
        return answer

    def choose(self, question: str, choices: list[str], *, tries: int = MAX_TRIES) -> str | None:
        """Prompt for one of `choices`, and return None after `tries` invalid entries.

        click's own choice prompt asks again forever, which an answer piped in without end
        (`yes | secretbot run lost NAME`) turns into an endless loop.
        """
        self.gave_up = False
        for _ in range(tries):
            with self.interrupts.prompt():
                try:
                    answer: str = click.prompt(question, default="", show_default=False)
                except (click.Abort, KeyboardInterrupt, EOFError, OSError):
                    self.console.print()
                    return None
            self._echo(answer)
            if answer.strip() in choices:
                return answer.strip()
            self.console.print(Text(f"{answer.strip()!r} is not one of: {', '.join(choices)}.", style="red"))
        self.console.print(Text(f"No valid choice after {tries} invalid entries; the run stops.", style="red"))
        self.gave_up = True
        return None

    def text(self, label: str) -> str | None:
        """Read a line of visible text."""
        with self.interrupts.prompt():
            try:
                answer: str = click.prompt(label, default="", show_default=False)
            except (click.Abort, KeyboardInterrupt, EOFError, OSError):
                self.console.print()
                return None
        self._echo("")
        return answer

    def secret(self, label: str) -> str | None:
        """Read a value without echoing it; only the line ending is removed."""
        with self.interrupts.prompt():
            try:
                if self.interactive:
                    value: str = click.prompt(label, hide_input=True, default="", show_default=False)
                    return value
                self.console.print(Text(f"{label} (hidden, read from standard input): "), end="")
                line = self.stdin.readline()
            except (click.Abort, KeyboardInterrupt, EOFError, OSError):
                self.console.print()
                return None
        # The pipe did not echo the answer's newline, so the prompt line is ended here.
        self.console.print()
        if line == "":
            return None
        return line.removesuffix("\n").removesuffix("\r")

    def _echo(self, answer: str) -> None:
        """Show an answer read from a pipe, which does not echo it, so the transcript reads like a session."""
        if not self.interactive:
            self.console.print(Text(answer))
