"""Terminal output of a run: the step plan, a line per step change and the outcome.

`TerminalObserver` implements the engine's RunObserver protocol for a run started from a
terminal, the counterpart of the Slack observer. Every text that comes from a step or
from flyctl passes through the run's redactor before it is printed, on top of the
redaction the engine already applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.text import Text

from bot.redact import Redactor
from bot.runbook.views import RunView, StepView
from bot.terminal.plan import StepPlan

logger = logging.getLogger(__name__)

STEP_MARKS = {
    "pending": ("·", "dim"),
    "running": ("…", "cyan"),
    "waiting": ("?", "yellow"),
    "done": ("✓", "green"),
    "skipped": ("–", "dim"),
    "failed": ("✗", "red"),
}
RUN_STATUS_STYLES = {"succeeded": "bold green", "failed": "bold red", "denied": "bold red", "expired": "bold red",
                     "cancelled": "bold red"}
# Step kinds whose waiting prompt the driver words itself: the approval question and the
# value prompts. The Slack prompts of these steps talk about buttons and forms.
PROMPTED_BY_DRIVER = frozenset({"approval", "values", "review"})


def print_indented(console: Console, text: str | Text, *, style: str = "", indent: int = 4) -> None:
    """Print text indented under a step heading, wrapped lines indented too and without trailing spaces."""
    body = Text(text, style=style) if isinstance(text, str) else text
    for line in body.wrap(console, max(20, console.width - indent)):
        line.rstrip()
        console.print(Text(" " * indent) + line, soft_wrap=True)


def print_step_plan(console: Console, plan: StepPlan, *, executable: str) -> None:
    """Print what a step does and the exact flyctl commands it runs, values masked."""
    for line in plan.description:
        print_indented(console, line)
    for command in plan.commands:
        # Command lines are never wrapped, so they can be copied as they are.
        console.print(Text(f"    $ {command.display(executable)}", style="bold"), soft_wrap=True)
        for stdin_line in command.masked_stdin():
            console.print(Text(f"      stdin: {stdin_line}", style="dim"), soft_wrap=True)


def step_heading(position: int, total: int, title: str) -> Text:
    return Text.assemble((f"Step {position + 1}/{total}  ", "bold cyan"), (title, "bold"))


class TerminalObserver:
    """Prints a terminal run as it progresses and wakes the driver on every change."""

    def __init__(self, console: Console, redactor: Redactor, *,
                 on_created: Callable[[RunView], Awaitable[bool]]) -> None:
        self.console = console
        self.redactor = redactor
        self.on_created = on_created
        # Set on every change of the run; the driver clears it before it reads the run again.
        self.changed = asyncio.Event()
        self._announced: set[int] = set()

    def announce(self, run: RunView, position: int) -> None:
        """Print a step's heading once, whether the gate or the step's start comes first."""
        if position in self._announced:
            return
        self._announced.add(position)
        self.console.print()
        self.console.print(step_heading(position, len(run.steps), run.steps[position].title))

    async def run_created(self, run: RunView) -> bool:
        self.console.print(Text.assemble(("Run ", "bold"), (run.id, "bold"), (f": {_headline(run)}", "bold")))
        shown = await self.on_created(run)
        self.changed.set()
        return shown

    async def step_changed(self, run: RunView, step: StepView) -> None:
        self.announce(run, step.position)
        if step.status == "waiting":
            if step.kind not in PROMPTED_BY_DRIVER:
                for line in (step.detail or "").splitlines():
                    # Lines such as "Press Done when …" name Slack buttons; the prompt below replaces them.
                    if line.strip() and not line.startswith("Press "):
                        print_indented(self.console, self._clean(line))
        elif step.status != "running":
            print_indented(self.console, self._result_line(step), indent=2)
        self.changed.set()

    async def step_progress(self, run: RunView, step: StepView, message: str) -> None:
        for line in self._clean(message).splitlines():
            print_indented(self.console, f"│ {line}", style="dim")

    async def run_finished(self, run: RunView) -> None:
        self.console.print()
        style = RUN_STATUS_STYLES.get(run.status, "bold")
        line = Text.assemble(("Run ", style), (run.id, style), (f" {run.status}", style))
        if run.status != "succeeded" and run.outcome:
            line.append(f": {self._clean(run.outcome)}")
        self.console.print(line)
        self.changed.set()

    def _result_line(self, step: StepView) -> Text:
        mark, style = STEP_MARKS.get(step.status, ("?", ""))
        line = Text.assemble((f"{mark} {step.status}", style))
        if step.detail:
            line.append(f": {self._clean(step.detail)}")
        if step.actor and step.status in ("done", "failed"):
            line.append(f" ({step.actor})", style="dim")
        return line

    def _clean(self, text: str) -> str:
        return self.redactor.redact(text)


def _headline(run: RunView) -> str:
    return f"{run.title} {', '.join(run.secret_names)} on {run.app}"
