"""Drives one run from the terminal: confirms each step, decides waiting steps, handles Ctrl-C.

The engine advances the run as it does for Slack. This driver is the person's side: it
is the engine's step gate (a y/N before each step), and it submits the decision of every
step that waits (approval, values, confirmations, choices) through `Engine.submit` with
origin "terminal", where the person at the terminal is the one who decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from bot import audit
from bot.errors import SecretbotError
from bot.runbook.engine import (
    TERMINAL_ORIGIN,
    AlreadyDecided,
    AlreadyOpen,
    Engine,
    Invalid,
    Rejected,
    SubmitResult,
)
from bot.runbook.steps import StepKind
from bot.runbook.views import RunView, StepView
from bot.terminal.display import TerminalObserver, print_indented, print_step_plan
from bot.terminal.identity import (
    MAX_NAME_LENGTH,
    TerminalIdentity,
    clean_name,
    name_problem,
)
from bot.terminal.lease import Heartbeat
from bot.terminal.plan import StepPlan
from bot.terminal.prompts import MAX_TRIES, Prompter
from bot.value_checks import pattern_mismatch, value_problem

logger = logging.getLogger(__name__)

# How long the end of a run may take to finish its last writes and notifications.
DRAIN_SECONDS = 30.0
# The run is read again this often without a change seen here, so a cancel made from
# Slack (`/secret cancel`) by another process is noticed.
POLL_SECONDS = 2.0
# Typed at a value prompt, these are answers to the other prompts: `yes | secretbot run`
# or a stray keypress would otherwise become the production value.
PROMPT_ANSWERS = frozenset({"y", "yes", "n", "no"})
# Shorter typed values are rejected unless the secret's value_pattern matches them.
MIN_VALUE_LENGTH = 8
# The question of a step that waits for one confirmation, by step kind.
CONFIRM_QUESTIONS = {
    "external": "Is every system above updated with the new value?",
    "revoke": "Is the leaked value revoked at its source?",
}


@dataclass(frozen=True)
class RunRequest:
    kind: str
    app: str
    names: tuple[str, ...]
    reason: str | None


class TerminalRun:
    def __init__(self, *, console: Console, prompter: Prompter, request: RunRequest, identity: TerminalIdentity,
                 plans: list[StepPlan], executable: str) -> None:
        self.console = console
        self.prompter = prompter
        self.request = request
        self.identity = identity
        self.plans = plans
        self.executable = executable
        # Set once the engine and observer exist (they refer to this object's gate and hooks).
        self.engine: Engine
        self.observer: TerminalObserver
        # Ctrl-C once: stop before the next step. Twice: stop the running step now.
        self.stop_requested = False
        self.force_requested = False
        # The signal that stopped the run, when SIGTERM or SIGHUP rather than Ctrl-C did.
        self.stop_signal: str | None = None
        # Set by the session: keeps the run's lease while this process lives.
        self.heartbeat: Heartbeat | None = None
        # Set when the engine did not accept the last decision, so the step is asked again.
        self._not_accepted = False

    def attach(self, *, engine: Engine, observer: TerminalObserver) -> None:
        self.engine = engine
        self.observer = observer

    # ----------------------------------------------------------------- engine hooks

    async def record_origin(self, run: RunView) -> bool:
        """Write the audit record saying who started the run from which host; False stops the run."""
        if self.heartbeat is not None:
            self.heartbeat.start(run.id)
        identity = self.identity
        try:
            await audit.append(self.engine.services.sessions, audit.AuditEntry(
                event="run.started_from_terminal", actor=identity.requester, run_id=run.id, app=run.app,
                secret=",".join(run.secret_names),
                detail={"os_user": identity.os_user, "operator": identity.operator, "hostname": identity.hostname,
                        "pid": identity.pid}))
        except SecretbotError as exc:
            logger.error("audit record of a terminal start failed run_id=%s error=%s", run.id, exc)
            self.console.print(Text(f"The audit log cannot be written ({exc}), so the run is stopped.", style="red"))
            return False
        operator = f" (operator: {identity.operator})" if identity.operator else ""
        self.console.print(Text(f"Recorded in the audit log as started from a terminal by {identity.requester}"
                                f"{operator} on host {identity.hostname}."))
        return True

    async def gate(self, run: RunView, position: int) -> str | None:
        """Show the step and ask to run it; return None to run it, or why the run stops here."""
        step = run.steps[position]
        self.observer.announce(run, position)
        print_step_plan(self.console, self.plans[position], executable=self.executable)
        if self.stop_requested:
            stopped_by = f"by {self.stop_signal}" if self.stop_signal else "with Ctrl-C at the terminal"
            return f"stopped {stopped_by} before step '{step.title}'"
        if step.kind == "approval":
            # The step itself asks the approval question next.
            return None
        answer = self.prompter.confirm("Run this step?")
        if answer is None:
            return f"{self._stopped()} before step '{step.title}'"
        if not answer:
            return f"declined at the terminal before step '{step.title}'"
        return None

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Handle Ctrl-C, SIGTERM or SIGHUP outside a prompt, on the event loop.

        SIGTERM and SIGHUP come once, from a service manager or a closed terminal, and the
        process may be killed soon after: they stop a running step at once and settle it.
        """
        if signum != signal.SIGINT:
            self.stop_signal = signal.Signals(signum).name
            self.stop_requested = True
            self.force_requested = True
            self.console.print(Text(f"\n{self.stop_signal}: stopping the run; a running step is stopped now and its "
                                    f"result read from Fly.", style="yellow"))
        elif not self.stop_requested:
            self.stop_requested = True
            self.console.print(Text(
                f"\nCtrl-C: the run stops before its next step. A step that is running finishes first, because it "
                f"may be changing {self.request.app}. Press Ctrl-C again to stop it now; its result is then unknown.",
                style="yellow"))
        else:
            self.force_requested = True
            self.console.print(Text("\nCtrl-C again: stopping the running step now.", style="yellow"))
        self.observer.changed.set()

    # ----------------------------------------------------------------- the run

    async def execute(self) -> RunView | None:
        """Start the run and decide its waiting steps until it ends; return None if it could not start."""
        request = self.request
        result = await self.engine.start_run(kind=request.kind, app=request.app, secret_names=request.names,
                                             requester=self.identity.requester, reason=request.reason,
                                             origin=TERMINAL_ORIGIN)
        if isinstance(result, AlreadyOpen):
            self.console.print(Text(
                f"{result.secret} on {request.app} is already in open run {result.run_id}. Let it finish, or cancel "
                f"it (`/secret cancel {result.run_id}` in Slack; for a terminal run whose process died, "
                f"`secretbot run --abandon {result.run_id}`), then run this command again.", style="red"))
            return None
        if isinstance(result, Rejected):
            self.console.print(Text(f"The run was not started: {result.reason}", style="red"))
            return None

        run_id = result.run.id
        answered: set[tuple[int, int]] = set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.observer.changed.wait(), timeout=POLL_SECONDS)
            self.observer.changed.clear()
            if self.force_requested:
                self.force_requested = False
                await self._force_stop(run_id)
            view = await self.engine.require_run(run_id)
            if view.finished:
                break
            step = view.waiting_step
            if step is None:
                continue
            # A step that waits again (a second approval) has one more decision, so it is asked again.
            key = (step.position, len(step.decisions))
            if key in answered:
                continue
            answered.add(key)
            self._not_accepted = False
            await self._answer(view, step)
            if self._not_accepted:
                answered.discard(key)

        await self.engine.drain(DRAIN_SECONDS)
        return await self.engine.require_run(run_id)

    async def _force_stop(self, run_id: str) -> None:
        # Cancelling the engine's tasks stops the running step; a flyctl child is stopped with it.
        await self.engine.drain(0)
        view = await self.engine.require_run(run_id)
        if view.finished:
            return
        cause = f"the run was stopped by {self.stop_signal}" if self.stop_signal else "the run was interrupted at the terminal"
        logger.warning("terminal run stopped during a step run_id=%s step=%d signal=%s", run_id, view.current_step,
                       self.stop_signal or "SIGINT")
        # The step may have changed the app before it was stopped: the engine reads what it did.
        await self.engine.stop_settled(run_id=run_id, user_id=self.identity.requester, cause=cause)

    # ----------------------------------------------------------------- waiting steps

    async def _answer(self, view: RunView, step: StepView) -> None:
        if self.stop_requested:
            # Ctrl-C came between prompts: the run stops here rather than asking this step's question.
            await self._stop(view, f"{self._stopped()} at step '{step.title}'")
            return
        step_kind = self.engine.runbooks[view.kind].steps[step.position]
        actions = [action.name for action in step.actions]
        if "deny" in actions:
            await self._approve(view, step)
        elif step_kind.inputs(view, self.engine.services.policy):
            await self._enter(view, step, step_kind)
        elif len(actions) == 1:
            await self._confirm(view, step)
        else:
            await self._choose(view, step)

    async def _approve(self, view: RunView, step: StepView) -> None:
        approver = self.identity.requester
        if step.approvers:
            # The step waits again after one approval only when the policy wants two approvers.
            name = self._second_approver()
            if name is None:
                await self._stop(view, f"{self._stopped()} at step '{step.title}'")
                return
            approver = f"terminal:{name}"[:MAX_NAME_LENGTH]
        headline = f"{view.title} {', '.join(view.secret_names)} on {view.app}"
        answer = self.prompter.confirm(f"Approve {headline}? (n denies the run)")
        if answer is None:
            await self._stop(view, f"{self._stopped()} at step '{step.title}'")
            return
        await self._submit(view, step, "approve" if answer else "deny", user_id=approver)

    def _second_approver(self) -> str | None:
        print_indented(self.console, "A second approver is needed (slack.two_approvers_for_high). The second person "
                       "at this terminal types their name; it is recorded as the second approval.")
        taken = {self.identity.os_user.lower(), (self.identity.operator or "").lower()}
        for _ in range(MAX_TRIES):
            raw = self.prompter.text("Second approver's name")
            if raw is None:
                return None
            name = clean_name(raw)
            problem = name_problem(raw, name)
            if problem is None and name.lower() in taken:
                problem = "it names the person who started the run"
            if problem is None:
                return name
            print_indented(self.console, f"That name is not accepted: {problem}.", style="red")
        return None

    async def _enter(self, view: RunView, step: StepView, step_kind: StepKind) -> None:
        policy = self.engine.services.policy
        inputs = step_kind.inputs(view, policy)
        for _ in range(MAX_TRIES):
            values: dict[str, str] = {}
            rejected = False
            for item in inputs:
                if item.hint:
                    print_indented(self.console, f"{item.name}: {item.hint}")
                if item.secret:
                    value = self.prompter.secret(f"New value of {item.name}")
                else:
                    value = self.prompter.text(item.label or item.name)
                if value is None:
                    await self._stop(view, f"{self._stopped()} at step '{step.title}'")
                    return
                secret_policy = policy.secret_for(view.app, item.name)
                problem = typed_value_problem(value, secret_policy.value_pattern if secret_policy else None,
                                              name=item.name) if item.secret else None
                if problem is not None:
                    print_indented(self.console, f"{item.name}: {problem} Try again.", style="red")
                    rejected = True
                    break
                values[item.name] = value
            if rejected:
                continue
            result = await self.engine.submit(run_id=view.id, position=step.position, action=step.actions[0].name,
                                              user_id=self.identity.requester, values=values, origin=TERMINAL_ORIGIN)
            if not isinstance(result, Invalid):
                self._report(result)
                return
            for name, problem in result.problems.items():
                print_indented(self.console, f"{name}: {problem} Try again.", style="red")
        await self._stop(view, f"the values entered at step '{step.title}' were rejected {MAX_TRIES} times")

    async def _confirm(self, view: RunView, step: StepView) -> None:
        action = step.actions[0]
        question = CONFIRM_QUESTIONS.get(step.kind, f"{action.label}?")
        answer = self.prompter.confirm(f"{question} (n stops the run)")
        if not answer:
            await self._stop(view, f"{self._stopped()} at step '{step.title}'")
            return
        await self._submit(view, step, action.name, user_id=self.identity.requester)

    async def _choose(self, view: RunView, step: StepView) -> None:
        names = [action.name for action in step.actions]
        options = "; ".join(f"{action.name} = {action.label}" for action in step.actions)
        choice = self.prompter.choose(f"Choose ({options}; stop = end the run)", [*names, "stop"])
        if choice is None and self.prompter.gave_up:
            await self._stop(view, f"no valid choice was given in {MAX_TRIES} answers at step '{step.title}'")
            return
        if choice is None or choice == "stop":
            await self._stop(view, f"{self._stopped()} at step '{step.title}'")
            return
        await self._submit(view, step, choice, user_id=self.identity.requester)

    async def _submit(self, view: RunView, step: StepView, action: str, *, user_id: str) -> None:
        result = await self.engine.submit(run_id=view.id, position=step.position, action=action, user_id=user_id,
                                          origin=TERMINAL_ORIGIN)
        self._report(result)

    def _report(self, result: SubmitResult) -> None:
        self._not_accepted = isinstance(result, (Rejected, AlreadyDecided))
        if isinstance(result, Rejected):
            print_indented(self.console, f"Not accepted: {result.reason}", style="red")
        elif isinstance(result, AlreadyDecided):
            print_indented(self.console, f"Already decided by {result.user_id} ({result.action}).", style="red")

    def _stopped(self) -> str:
        """Say how the operator's side stopped the run: at the terminal, or by a signal."""
        received = self.stop_signal or self.prompter.interrupts.received
        if received is not None and received != "SIGINT":
            return f"stopped by {received}"
        return "stopped at the terminal"

    async def _stop(self, view: RunView, reason: str) -> None:
        result = await self.engine.cancel(run_id=view.id, user_id=self.identity.requester, reason=reason)
        if isinstance(result, Rejected):
            print_indented(self.console, f"The run could not be stopped: {result.reason}", style="red")


def typed_value_problem(value: str, value_pattern: str | None, *, name: str = "the secret") -> str | None:
    """Return why a value typed at the terminal is rejected before the step's own checks, or None when it is not.

    The step's own checks (bot.steps.values.check_entered_value) run the same value_problem
    again with the secret's allow_whitespace, which is not known here.
    """
    if value.strip().lower() in PROMPT_ANSWERS:
        return ("that is an answer to a yes/no prompt, not a value (answers piped in, e.g. from `yes`, end up "
                "here); enter the new value itself.")
    problem = value_problem(value, allow_whitespace=True)
    if problem is not None:
        return problem
    if len(value) < MIN_VALUE_LENGTH and (value_pattern is None
                                          or pattern_mismatch(value_pattern, value, name=name) is not None):
        return (f"the value is {len(value)} characters long; values shorter than {MIN_VALUE_LENGTH} are rejected "
                "unless the secret's value_pattern in secretbot.toml matches them.")
    return None
