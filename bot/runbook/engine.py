"""The runbook engine: creates runs, advances them step by step and records decisions.

All run state lives in the database. The engine claims a step with a conditional update
(`status = 'pending'` → `'running'`) and accepts a decision by inserting a row under a
unique key, so the database, not an in-process flag, decides who wins a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import audit
from bot.errors import SecretbotError
from bot.logs import RunContext, run_context
from bot.metrics import BotMetrics
from bot.runbook.context import AUTOMATIC_REQUESTER, Services, StepContext
from bot.runbook.guards import checks_configuration, configuration_problem
from bot.runbook.takeover import (
    COMPROMISED_KIND,
    OpenRun,
    may_take_over,
    open_runs,
    take_over_rotations,
)
from bot.runbook.steps import Decision as StepDecision
from bot.runbook.steps import RESTART_CAUSE, Done, Failed, Runbook, Skipped, StepKind, StepOutcome, Waiting
from bot.runbook.views import CANCELLED_STATUS, RunObserver, RunView, SecretView, StepView
from bot.storage.models import Decision, PendingValue, Run, RunSecret, Step, utcnow

logger = logging.getLogger(__name__)

# The actor recorded for an approval request that expired.
EXPIRY_ACTOR = "secretbot"
EXPIRY_CHECK_SECONDS = 60.0

# Where a run was started (runs.origin). A Slack run is shown, answered, resumed and
# expired by `secretbot serve`. A terminal run belongs to the `secretbot run` process that
# started it: the person there decides its waiting steps, and `serve` leaves it alone.
SLACK_ORIGIN = "slack"
TERMINAL_ORIGIN = "terminal"
_ORIGIN_PLACES = {SLACK_ORIGIN: "in Slack", TERMINAL_ORIGIN: "from a terminal"}

# Awaited before each step of a run starts, with the run and the step's position: None
# lets the step run, and a text stops the run there as cancelled, with that reason.
StepGate = Callable[[RunView, int], Awaitable[str | None]]


@dataclass(frozen=True)
class Started:
    run: RunView


@dataclass(frozen=True)
class AlreadyOpen:
    """A run for the same app and secret is still open.

    For a compromise response, which takes over a rotation waiting for approval, the
    refusal also names where the open run is and who may cancel it.
    """

    run_id: str
    secret: str
    step_title: str | None = None
    step_status: str | None = None
    # Who `cancel` accepts: the run's requester (None for the bot itself) and the approvers.
    requester: str | None = None
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Accepted:
    run: RunView


@dataclass(frozen=True)
class Rejected:
    reason: str


@dataclass(frozen=True)
class Invalid:
    """Entered values were rejected; `problems` maps each secret name to the reason."""

    problems: dict[str, str]


@dataclass(frozen=True)
class AlreadyDecided:
    user_id: str
    action: str
    decided_at: datetime


StartResult = Started | AlreadyOpen | Rejected
SubmitResult = Accepted | Rejected | AlreadyDecided | Invalid


class Engine:
    def __init__(self, *, services: Services, runbooks: Mapping[str, Runbook], observer: RunObserver,
                 metrics: BotMetrics | None = None, gate: StepGate | None = None) -> None:
        self.services = services
        self.runbooks = dict(runbooks)
        self.observer = observer
        self.gate = gate
        self.metrics = metrics if metrics is not None else BotMetrics(process=False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._run_locks: dict[str, asyncio.Lock] = {}

    # ----------------------------------------------------------------- starting runs

    async def start_run(
        self,
        *,
        kind: str,
        app: str,
        secret_names: Sequence[str],
        requester: str,
        reason: str | None,
        origin: str = SLACK_ORIGIN,
    ) -> StartResult:
        """Create a run and show it, unless one is open on the same secrets or the requester may not start one."""
        # slack.operators lists Slack users. A terminal run is started by someone who holds
        # the bot's database and Fly token, which that list cannot name.
        if origin == SLACK_ORIGIN and not await self.services.may_operate(requester):
            logger.info("run start rejected: not an operator user=%s kind=%s app=%s", requester, kind, app)
            return Rejected("only the operators listed in slack.operators can start a runbook; "
                            "ask one of them, or an admin of secretbot.toml")
        with self._tracked():
            return await self._start_run(kind=kind, app=app, secret_names=secret_names, requester=requester,
                                         reason=reason, origin=origin)

    async def _start_run(
        self, *, kind: str, app: str, secret_names: Sequence[str], requester: str, reason: str | None, origin: str
    ) -> StartResult:
        runbook = self.runbooks[kind]
        run_id = secrets.token_hex(6)
        taken_over: list[OpenRun] = []
        # The reason names no one, because the requester is recorded as the cancelled step's actor,
        # which Slack shows as a mention beside it and the terminal by name. Slack escapes the
        # reason's text, so a requester written into it, even as `<@U…>`, would show as a raw ID.
        takeover_reason = (f"Cancelled: superseded by run {run_id} of the compromised-secret runbook, which "
                           "replaces the value, so this rotation stopped before any change.")
        try:
            async with self.services.sessions.begin() as session:
                if kind == COMPROMISED_KIND:
                    taken_over = await take_over_rotations(session, app=app, secret_names=secret_names,
                                                           runbooks=self.runbooks, reason=takeover_reason,
                                                           actor=requester)
                session.add(Run(id=run_id, kind=kind, app=app, requester=requester, reason=reason,
                                origin=origin, status="pending", current_step=0))
                await session.flush()
                for position, name in enumerate(secret_names):
                    session.add(RunSecret(run_id=run_id, position=position, app=app, name=name, open=True))
                for position, step in enumerate(runbook.steps):
                    session.add(Step(run_id=run_id, position=position, kind=step.kind, status="pending"))
                await session.flush()
        except IntegrityError:
            open_run = await self._find_open_run(app, secret_names, described=kind == COMPROMISED_KIND)
            if open_run is None:
                raise
            return open_run

        for old in taken_over:
            logger.info("run taken over run_id=%s by=%s user=%s app=%s", old.run_id, run_id, requester, app)
            await self._announce_end(old.run_id, position=old.position, status=CANCELLED_STATUS, actor=requester,
                                     outcome=Failed(takeover_reason, cancelled=True),
                                     detail={"superseded_by": run_id})
        self.metrics.run_started(kind)
        with run_context(run_id=run_id, app=app, secrets=secret_names, step_position=0,
                         step_kind=runbook.steps[0].kind):
            logger.info("run created run_id=%s kind=%s app=%s secrets=%s requester=%s",
                        run_id, kind, app, ",".join(secret_names), requester)
            try:
                await audit.append(
                    self.services.sessions,
                    audit.AuditEntry(event="run.requested", actor=requester, run_id=run_id, app=app,
                                     secret=",".join(secret_names),
                                     detail={"kind": kind, "reason": reason, "origin": origin}),
                )
            except SecretbotError:
                await self._finish(run_id, position=0,
                                   outcome=Failed("the audit log cannot be written; nothing was done"))
                raise

            view = await self.require_run(run_id)
            if await self._notify(self.observer.run_created, view) is not True:
                # A run that is shown nowhere cannot be approved or followed.
                await self._finish(run_id, position=0, outcome=Failed(
                    "the run could not be posted for approval, so it was stopped before any change"))
                return Started(await self.require_run(run_id))
        self.spawn(self.advance(run_id), name=f"advance-{run_id}")
        return Started(view)

    async def _find_open_run(self, app: str, secret_names: Sequence[str], *,
                             described: bool = False) -> AlreadyOpen | None:
        """Return an open run on one of the secrets; `described` adds its step and who may cancel it."""
        async with self.services.sessions() as session:
            found = await open_runs(session, app, secret_names)
        if not found:
            return None
        if not described:
            return AlreadyOpen(run_id=found[0].run_id, secret=found[0].secret)

        # A run that cannot be taken over is the one to name, since cancelling it is what helps.
        blocking = next((run for run in found if not may_take_over(run, self.runbooks)), found[0])
        step_title = self.runbooks[blocking.kind].steps[blocking.position].title
        # The bot opens automatic rotations as their requester, but only people can cancel.
        requester = None if blocking.requester == AUTOMATIC_REQUESTER else blocking.requester
        return AlreadyOpen(run_id=blocking.run_id, secret=blocking.secret, step_title=step_title,
                           step_status=blocking.step_status, requester=requester,
                           approvers=self.services.policy.slack.approvers)

    # ----------------------------------------------------------------- advancing runs

    async def advance(self, run_id: str) -> None:
        """Run automatic steps until the run waits for a person or ends."""
        # An approval step lists who may decide, so the groups are read before it runs.
        await self.services.refresh_policy()
        lock = self._run_locks.setdefault(run_id, asyncio.Lock())
        async with lock:
            while True:
                view = await self.get_run(run_id)
                if view is None or view.finished:
                    return
                position = view.current_step
                if view.steps[position].status != "pending":
                    return
                if self.gate is not None:
                    refusal = await self.gate(view, position)
                    if refusal is not None:
                        await self._finish(run_id, position=position, actor=view.requester,
                                           outcome=Failed(f"Cancelled: {refusal}", cancelled=True))
                        return
                if not await self._claim(run_id, position):
                    return
                view = await self.require_run(run_id)
                step_kind = self.runbooks[view.kind].steps[position]
                ctx = self._context(view, position)
                with self._log_context(view, position):
                    if checks_configuration(step_kind):
                        problem = await self._configuration_problem(view)
                        if problem is not None:
                            await self._finish(run_id, position=position, outcome=Failed(problem))
                            return
                    logger.info("step started run_id=%s step=%d kind=%s app=%s",
                                run_id, position, step_kind.kind, view.app)
                    try:
                        # No step runs unless its start is on the audit record.
                        await ctx.audit("step.started", kind=step_kind.kind)
                    except SecretbotError as exc:
                        logger.error("audit write failed; step not started run_id=%s step=%d error=%s",
                                     run_id, position, exc)
                        await self._finish(run_id, position=position, outcome=Failed(
                            "the audit log cannot be written, so the step was not started"))
                        return
                    await self._notify(self.observer.step_changed, view, view.steps[position])

                    outcome = await self._execute(step_kind, ctx)
                    await self._apply(run_id, position, outcome, actor=None)
                if not isinstance(outcome, (Done, Skipped)):
                    return

    async def _claim(self, run_id: str, position: int) -> bool:
        async with self.services.sessions.begin() as session:
            result = await session.execute(
                update(Step)
                .where(Step.run_id == run_id, Step.position == position, Step.status == "pending")
                .values(status="running", started_at=utcnow())
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            await session.execute(update(Run).where(Run.id == run_id).values(status="running", current_step=position))
        return True

    async def _execute(self, step_kind: StepKind, ctx: StepContext) -> StepOutcome:
        limit = step_kind.time_limit(self.services.policy)
        try:
            return await asyncio.wait_for(step_kind.execute(ctx), timeout=limit)
        except TimeoutError:
            logger.error("step timed out %s limit=%.0fs", ctx.log_context(), limit)
            if not step_kind.restartable:
                # The step may have changed the app before it was stopped; read what happened.
                return await self._execute_settle(step_kind, ctx,
                                                  cause=f"the step passed its time limit of {limit:g} s")
            return Failed(f"step '{step_kind.title}' did not finish within {limit:g} s and was stopped; "
                          "see the bot's log, then start a new run")
        except SecretbotError as exc:
            logger.warning("step failed %s error=%s", ctx.log_context(), self.services.redactor.redact(str(exc)))
            return Failed(self.services.redactor.redact(str(exc)))
        except Exception as exc:
            logger.exception("step crashed %s", ctx.log_context())
            return Failed(f"internal error in step '{step_kind.title}' ({type(exc).__name__}); see the bot's log")

    async def _configuration_problem(self, view: RunView) -> str | None:
        """Return why the run may no longer change its app (see bot.runbook.guards), logging it."""
        # The policies of added secrets are read again, since a decision applied at start-up
        # may come before any other read.
        await self.services.refresh_policy()
        problem = configuration_problem(view, self.runbooks[view.kind], self.services.policy)
        if problem is not None:
            logger.warning("run stopped: no longer configured run_id=%s app=%s secrets=%s reason=%s",
                           view.id, view.app, ",".join(view.secret_names), problem)
        return problem

    def _context(self, view: RunView, position: int) -> StepContext:
        async def report(message: str) -> None:
            current = await self.require_run(view.id)
            await self._notify(self.observer.step_progress, current, current.steps[position], message)

        return StepContext(run=view, position=position, services=self.services, reporter=report)

    def _log_context(self, view: RunView, position: int) -> contextlib.AbstractContextManager[RunContext]:
        """Tag the log lines of the current task, deep helpers' included, with this run and step."""
        return run_context(run_id=view.id, app=view.app, secrets=view.secret_names, step_position=position,
                           step_kind=view.steps[position].kind)

    def _observe_step(self, view: RunView, position: int) -> None:
        step = view.steps[position]
        if step.started_at is not None and step.finished_at is not None:
            self.metrics.step_finished(step.kind, (step.finished_at - step.started_at).total_seconds())

    async def _apply(self, run_id: str, position: int, outcome: StepOutcome, *, actor: str | None) -> None:
        if isinstance(outcome, Failed):
            await self._finish(run_id, position=position, outcome=outcome, actor=actor)
            return

        view = await self.require_run(run_id)
        last = position == len(view.steps) - 1
        async with self.services.sessions.begin() as session:
            if isinstance(outcome, Waiting):
                await _set_step(session, run_id, position, status="waiting", detail=outcome.prompt)
                await _set_run(session, run_id, status="waiting")
            else:
                status = "done" if isinstance(outcome, Done) else "skipped"
                await _set_step(session, run_id, position, status=status, detail=outcome.detail, actor=actor,
                                finished_at=utcnow())
                if last:
                    await _set_run(session, run_id, status="succeeded", outcome=outcome.detail, finished_at=utcnow())
                    await _close_secrets(session, run_id)
                else:
                    await _set_run(session, run_id, status="running", current_step=position + 1)

        event = f"step.{type(outcome).__name__.lower()}"
        logger.info("%s run_id=%s step=%d app=%s", event, run_id, position, view.app)
        try:
            await audit.append(
                self.services.sessions,
                audit.AuditEntry(event=event, actor=actor, run_id=run_id, app=view.app,
                                 secret=",".join(view.secret_names),
                                 detail={"step": position, "kind": view.steps[position].kind,
                                         "detail": getattr(outcome, "detail", None) or getattr(outcome, "prompt", None)}),
            )
        except SecretbotError:
            logger.exception("audit record for step %d of run %s could not be written", position, run_id)
        view = await self.require_run(run_id)
        if not isinstance(outcome, Waiting):
            self._observe_step(view, position)
        if view.finished:
            self.metrics.run_finished(view.kind, view.status)
            await self.services.app_locks.release_run(run_id)
        await self._notify(self.observer.step_changed, view, view.steps[position])
        if view.finished:
            logger.info("run finished run_id=%s status=%s app=%s", run_id, view.status, view.app)
            await self._notify(self.observer.run_finished, view)

    async def _finish(self, run_id: str, *, position: int, outcome: Failed, actor: str | None = None) -> None:
        """End the run as failed, denied, expired or cancelled, as the flags of `outcome` mark it."""
        status = "failed"
        if outcome.denied:
            status = "denied"
        elif outcome.expired:
            status = "expired"
        elif outcome.cancelled:
            status = CANCELLED_STATUS
        async with self.services.sessions.begin() as session:
            await _set_step(session, run_id, position, status="failed", detail=outcome.reason, actor=actor,
                            finished_at=utcnow())
            await _set_run(session, run_id, status=status, outcome=outcome.reason, finished_at=utcnow())
            await _close_secrets(session, run_id)
            await session.execute(delete(PendingValue).where(PendingValue.run_id == run_id))
        await self._announce_end(run_id, position=position, status=status, outcome=outcome, actor=actor)

    async def _announce_end(self, run_id: str, *, position: int, status: str, outcome: Failed, actor: str | None,
                            detail: Mapping[str, Any] | None = None) -> None:
        """Release, count, log, audit and show the end of a run whose rows are already updated."""
        await self.services.app_locks.release_run(run_id)
        view = await self.require_run(run_id)
        self._observe_step(view, position)
        self.metrics.run_finished(view.kind, status)
        with self._log_context(view, position):
            logger.info("run finished run_id=%s status=%s step=%d app=%s", run_id, status, position, view.app)
            try:
                await audit.append(
                    self.services.sessions,
                    audit.AuditEntry(event=f"run.{status}", actor=actor, run_id=run_id, app=view.app,
                                     secret=",".join(view.secret_names),
                                     detail={"step": position, "reason": outcome.reason, **(detail or {})}),
                )
            except SecretbotError:
                logger.exception("audit record for the end of run %s could not be written", run_id)
            await self._notify(self.observer.step_changed, view, view.steps[position])
            await self._notify(self.observer.run_finished, view)

    # ----------------------------------------------------------------- decisions

    async def submit(
        self, *, run_id: str, position: int, action: str, user_id: str, values: Mapping[str, str] | None = None,
        origin: str = SLACK_ORIGIN,
    ) -> SubmitResult:
        """Record a decision on a waiting step if the user is allowed to make it and no decision came first.

        The decision takes effect in the background, so a front end can respond at once.
        `origin` is the front end submitting it, which must be the one that started the run.
        """
        await self.services.refresh_policy()
        with self._tracked():
            return await self._submit(run_id=run_id, position=position, action=action, user_id=user_id,
                                      values=values, origin=origin)

    async def check_answer(self, *, run_id: str, position: int, user_id: str) -> tuple[RunView, StepKind] | Rejected:
        """Return the run and step kind if `user_id` may decide the waiting step, or the reason they may not."""
        await self.services.refresh_policy()
        view = await self.get_run(run_id)
        if view is None or not 0 <= position < len(view.steps):
            return Rejected(f"run {run_id} has no step {position}")
        step = view.steps[position]
        if view.finished or step.status != "waiting":
            return Rejected(f"this step is not waiting for input (it is {step.status})")
        run_origin = await self._origin(run_id)
        if run_origin != SLACK_ORIGIN:
            return _started_elsewhere(run_id, run_origin)
        step_kind = self.runbooks[view.kind].steps[position]
        refusal = step_kind.authorize(self._context(view, position), StepDecision(action="", user_id=user_id))
        return Rejected(refusal) if refusal is not None else (view, step_kind)

    async def _submit(
        self, *, run_id: str, position: int, action: str, user_id: str, values: Mapping[str, str] | None, origin: str
    ) -> SubmitResult:
        view = await self.get_run(run_id)
        if view is None:
            return Rejected(f"run {run_id} does not exist")
        run_origin = await self._origin(run_id)
        if run_origin != origin:
            return _started_elsewhere(run_id, run_origin)
        if not 0 <= position < len(view.steps):
            return Rejected(f"run {run_id} has no step {position}")

        step = view.steps[position]
        if view.finished or step.status != "waiting":
            # The usual cause is a decision taken a moment ago, so the reply names who took it.
            earlier = await self._decision(run_id, position)
            if earlier is not None:
                return earlier
            if view.finished:
                return Rejected(f"this run has ended ({view.status})")
            return Rejected(f"this step is not waiting for input (it is {step.status})")

        step_kind = self.runbooks[view.kind].steps[position]
        if action not in {known.name for known in step_kind.actions}:
            return Rejected(f"'{action}' is not an action of step '{step_kind.title}'")
        with self._log_context(view, position):
            return await self._decide(view, position, step_kind, StepDecision(action=action, user_id=user_id,
                                                                               values=values),
                                      trusted=origin == TERMINAL_ORIGIN)

    async def _decide(self, view: RunView, position: int, step_kind: StepKind, decision: StepDecision, *,
                      trusted: bool = False) -> SubmitResult:
        run_id, user_id, action, values = view.id, decision.user_id, decision.action, decision.values
        ctx = self._context(view, position)
        # The step's checks name Slack users (approvers, the requester). At a terminal the person
        # who started the run decides every step: holding the database and the Fly token is the
        # authorization, and the run is on the audit record as started from a terminal.
        refusal = None if trusted else step_kind.authorize(ctx, decision)
        if refusal is not None:
            logger.info("decision rejected run_id=%s step=%d user=%s action=%s", run_id, position, user_id, action)
            return Rejected(refusal)

        inputs = step_kind.inputs(view, self.services.policy)
        if inputs:
            problems = await step_kind.validate(ctx, decision)
            if problems:
                logger.info("entered values rejected run_id=%s step=%d user=%s secrets=%s",
                            run_id, position, user_id, ",".join(sorted(problems)))
                return Invalid(problems)
        entered = {item.name: (values or {})[item.name] for item in inputs if item.secret}
        # The values are stored in the same transaction as the decision, so only the
        # winner's values are kept, and a decision found after a restart has them.
        if not await self._record_decision(run_id, position, decision, values=entered):
            earlier = await self._decision(run_id, position)
            return earlier or Rejected("another decision was recorded first")

        logger.info("decision accepted run_id=%s step=%d user=%s action=%s", run_id, position, user_id, action)
        if entered:
            await ctx.audit("values.entered", actor=user_id, lengths={name: len(value) for name, value in entered.items()})
        if action == "approve":
            problem = configuration_problem(view, self.runbooks[view.kind], self.services.policy)
            if problem is not None:
                # The run ends before the reply, so the approver reads why it cannot go on.
                await self._complete_decision(run_id, position, decision)
                return Rejected(problem)
        self.spawn(self._complete_decision(run_id, position, decision), name=f"decision-{run_id}")
        return Accepted(view)

    async def _complete_decision(self, run_id: str, position: int, decision: StepDecision) -> None:
        """Apply a recorded decision; also run at start-up for one recorded just before a stop."""
        view = await self.require_run(run_id)
        step_kind = self.runbooks[view.kind].steps[position]
        ctx = self._context(view, position)
        with self._log_context(view, position):
            await ctx.audit(f"step.{decision.action}", actor=decision.user_id)
            # An approval lets the run change Fly, so it counts only while the app and secrets are configured.
            problem = await self._configuration_problem(view) if decision.action == "approve" else None
            if problem is not None:
                outcome: StepOutcome = Failed(problem)
            else:
                outcome = await step_kind.decide(ctx, decision)
            await self._apply(run_id, position, outcome, actor=decision.user_id)
        if isinstance(outcome, (Done, Skipped)):
            self.spawn(self.advance(run_id), name=f"advance-{run_id}")

    async def _record_decision(
        self, run_id: str, position: int, decision: StepDecision, *, values: Mapping[str, str]
    ) -> bool:
        sealer = self.services.sealer
        for value in values.values():
            self.services.redactor.add(value)
        try:
            async with self.services.sessions.begin() as session:
                # Two deciders that count the same earlier decisions pick the same round, and
                # the unique key lets only one of them in.
                earlier = await session.scalar(select(func.count()).select_from(Decision).where(
                    Decision.run_id == run_id, Decision.position == position))
                session.add(Decision(run_id=run_id, position=position, round=earlier or 0,
                                     user_id=decision.user_id, decision=decision.action))
                await session.flush()
                if values:
                    await session.execute(delete(PendingValue).where(
                        PendingValue.run_id == run_id, PendingValue.name.in_(list(values))))
                for name, value in values.items():
                    session.add(PendingValue(run_id=run_id, name=name, key_id=sealer.key_id,
                                             ciphertext=sealer.seal(value, context=f"{run_id}/{name}")))
                result = await session.execute(
                    update(Step)
                    .where(Step.run_id == run_id, Step.position == position, Step.status == "waiting")
                    .values(status="running", actor=decision.user_id)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    raise _StepMoved
        except (IntegrityError, _StepMoved):
            return False
        return True

    async def _decision(self, run_id: str, position: int) -> AlreadyDecided | None:
        async with self.services.sessions() as session:
            row = await session.scalar(
                select(Decision).where(Decision.run_id == run_id, Decision.position == position)
                .order_by(Decision.round.desc()).limit(1)
            )
        if row is None:
            return None
        return AlreadyDecided(user_id=row.user_id, action=row.decision, decided_at=row.decided_at)

    # ----------------------------------------------------------------- reading runs

    async def _origin(self, run_id: str) -> str:
        """Return where a run was started; callers have checked that the run exists."""
        async with self.services.sessions() as session:
            origin = await session.scalar(select(Run.origin).where(Run.id == run_id))
        return origin or SLACK_ORIGIN

    async def get_run(self, run_id: str) -> RunView | None:
        async with self.services.sessions() as session:
            run = await session.get(Run, run_id, populate_existing=True)
            if run is None:
                return None
            return self._view(run)

    async def require_run(self, run_id: str) -> RunView:
        view = await self.get_run(run_id)
        if view is None:
            raise LookupError(f"run {run_id} does not exist")
        return view

    def _view(self, run: Run) -> RunView:
        runbook = self.runbooks[run.kind]
        base = RunView(
            id=run.id, kind=run.kind, title=runbook.title, app=run.app, requester=run.requester,
            reason=run.reason, status=run.status, current_step=run.current_step, outcome=run.outcome,
            secrets=tuple(SecretView(s.name, s.digest_before, s.digest_after) for s in run.secrets),
            steps=(), created_at=run.created_at, finished_at=run.finished_at,
        )
        decisions: dict[int, list[tuple[str, str]]] = {}
        for decision in run.decisions:
            decisions.setdefault(decision.position, []).append((decision.user_id, decision.decision))
        steps = []
        for row in run.steps:
            step_decisions = tuple(decisions.get(row.position, ()))
            # Someone who already approved a step that waits again (a second approval) is not asked again.
            approved = {user for user, action in step_decisions if action == "approve"}
            allowed = runbook.steps[row.position].allowed_users(base, self.services.policy)
            steps.append(StepView(
                position=row.position, kind=row.kind, title=runbook.steps[row.position].title, status=row.status,
                detail=row.detail, actor=row.actor, actions=runbook.steps[row.position].actions,
                allowed_users=tuple(user for user in allowed if user not in approved),
                started_at=row.started_at, finished_at=row.finished_at, decisions=step_decisions,
            ))
        return RunView(**{**base.__dict__, "steps": tuple(steps)})

    # ----------------------------------------------------------------- background work

    def spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run work after the HTTP acknowledgement, keeping a reference until it ends."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for background work, then cancel what is left."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            logger.warning("cancelling background task %s at shutdown", task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def expire_approvals(self) -> list[str]:
        """End every run whose approval request has waited longer than slack.approval_timeout.

        The expiry is recorded as the step's decision, so it competes with a click on the
        same unique row: either the click or the expiry wins, in any number of processes.
        Returns the IDs of the runs this call ended.
        """
        timeout = self.services.policy.slack.approval_timeout
        cutoff = self.services.clock.now() - timedelta(seconds=timeout)
        async with self.services.sessions() as session:
            # A terminal run waits for the person at its terminal, however long that takes.
            rows = (await session.execute(
                select(Step.run_id, Step.position)
                .join(Run, Run.id == Step.run_id)
                .where(Step.kind == "approval", Step.status == "waiting", Step.started_at < cutoff,
                       Run.origin == SLACK_ORIGIN)
            )).all()

        expired: list[str] = []
        for run_id, position in rows:
            decision = StepDecision(action="expire", user_id=EXPIRY_ACTOR)
            if not await self._record_decision(run_id, position, decision, values={}):
                continue
            logger.info("approval expired run_id=%s step=%d after=%.0fs", run_id, position, timeout)
            # The step turns the expiry into its outcome, as it does after a restart that
            # finds the decision recorded but not applied.
            await self._complete_decision(run_id, position, decision)
            expired.append(run_id)
        return expired

    async def run_expiry(self, stop: asyncio.Event) -> None:
        """Check for expired approval requests until `stop` is set.

        The check runs every minute, or more often for a short approval_timeout, so an
        expiry is at most a tenth of the timeout (and at most a minute) late.
        """
        interval = max(1.0, min(EXPIRY_CHECK_SECONDS, self.services.policy.slack.approval_timeout / 10))
        while not stop.is_set():
            try:
                with self._tracked():
                    await self.expire_approvals()
            except Exception:
                logger.exception("checking for expired approval requests failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def resume(self) -> int:
        """Pick up Slack runs that were in progress when the process stopped; return how many.

        Terminal runs are left to the `secretbot run` process driving them. One whose process
        died is ended with `secretbot run --abandon RUN_ID` once its lease has expired.
        """
        async with self.services.sessions() as session:
            runs = list(await session.scalars(select(Run).where(Run.status.in_(("pending", "running", "waiting")),
                                                                Run.origin == SLACK_ORIGIN)))
        resumed = 0
        for run in runs:
            step = next((s for s in run.steps if s.position == run.current_step), None)
            if step is None:
                continue
            if run.status == "pending":
                # The process may have stopped before the run was shown; showing it again is
                # harmless because the observer keeps one message per run.
                self.spawn(self._show_and_advance(run.id), name=f"resume-{run.id}")
            elif step.status == "running":
                self.spawn(self._resume_running_step(run.id, step.position), name=f"resume-{run.id}")
            elif step.status == "pending":
                self.spawn(self.advance(run.id), name=f"resume-{run.id}")
            else:
                continue
            logger.info("resuming run run_id=%s step=%d status=%s app=%s", run.id, step.position, run.status, run.app)
            resumed += 1
        return resumed

    async def _show_and_advance(self, run_id: str) -> None:
        view = await self.require_run(run_id)
        if await self._notify(self.observer.run_created, view) is not True:
            await self._finish(run_id, position=view.current_step, outcome=Failed(
                "the run could not be posted for approval, so it was stopped before any change"))
            return
        await self.advance(run_id)

    async def _resume_running_step(self, run_id: str, position: int) -> None:
        decision = await self._decision(run_id, position)
        view = await self.require_run(run_id)
        if decision is not None and view.status == "waiting":
            # A decision was stored but the process stopped before it took effect.
            await self._complete_decision(run_id, position,
                                          StepDecision(action=decision.action, user_id=decision.user_id))
            return
        step_kind = self.runbooks[view.kind].steps[position]
        if step_kind.restartable:
            async with self.services.sessions.begin() as session:
                await _set_step(session, run_id, position, status="pending")
            await self.advance(run_id)
            return
        with self._log_context(view, position):
            outcome = await self._execute_settle(step_kind, self._context(view, position))
            await self._apply(run_id, position, outcome, actor=None)
        if isinstance(outcome, (Done, Skipped)):
            await self.advance(run_id)

    async def _execute_settle(self, step_kind: StepKind, ctx: StepContext, *,
                              cause: str = RESTART_CAUSE) -> StepOutcome:
        try:
            return await step_kind.settle(ctx, cause=cause)
        except Exception as exc:
            logger.exception("settling step failed %s", ctx.log_context())
            return Failed(f"{cause} while '{step_kind.title}' was running and its result could not be "
                          f"read ({type(exc).__name__}); check `flyctl secrets list -a {ctx.run.app}`")

    async def cancel(self, *, run_id: str, user_id: str, reason: str, force: bool = False) -> SubmitResult:
        """Stop an open run for its requester or an approver.

        Without `force`, a step that is running is left to finish first, because it may be
        changing the app.
        """
        await self.services.refresh_policy()
        with self._tracked():
            view = await self.get_run(run_id)
            if view is None:
                return Rejected(f"run {run_id} does not exist")
            if view.finished:
                return Rejected(f"run {run_id} already ended ({view.status})")
            if user_id not in (view.requester, *self.services.policy.slack.approvers):
                return Rejected("only the requester or an approver can cancel a run")
            step = view.steps[view.current_step]
            if step.status == "running" and not force:
                return Rejected(f"step '{step.title}' is running; wait for it to end, then cancel")
            with self._log_context(view, view.current_step):
                logger.info("run cancelled run_id=%s user=%s step=%d", run_id, user_id, view.current_step)
                await self._finish(run_id, position=view.current_step, actor=user_id,
                                   outcome=Failed(f"Cancelled: {reason}", cancelled=True))
            return Accepted(await self.require_run(run_id))

    async def stop_settled(self, *, run_id: str, user_id: str, cause: str) -> RunView:
        """End an open run as cancelled, first reading what its running step did, if one was running.

        For a terminal run that is stopped by a signal, or abandoned after its process died.
        The caller has stopped the task running the step (or the process running it is
        gone). A step that may have changed the app is settled as after a restart: a Fly
        update reads Fly's digests. When the step turns out to have finished, it is recorded
        as done and the run ends before the next step; the app lock is released either way.
        `cause` starts the sentences that explain the end, e.g. "the run was stopped by SIGTERM".
        """
        view = await self.require_run(run_id)
        if view.finished:
            return view
        position = view.current_step
        step = view.steps[position]
        step_kind = self.runbooks[view.kind].steps[position]
        with self._log_context(view, position):
            if step.status == "running" and not step_kind.restartable:
                outcome = await self._execute_settle(step_kind, self._context(view, position), cause=cause)
                logger.info("stopped step settled run_id=%s step=%d outcome=%s", run_id, position,
                            type(outcome).__name__)
                if isinstance(outcome, (Done, Skipped)) and position < len(view.steps) - 1:
                    await self._apply(run_id, position, outcome, actor=None)
                    next_title = view.steps[position + 1].title
                    await self._finish(run_id, position=position + 1, actor=user_id,
                                       outcome=Failed(f"Cancelled: {cause}; step '{step.title}' had finished "
                                                      f"(Fly reports the change), and the run stopped before "
                                                      f"'{next_title}'", cancelled=True))
                    return await self.require_run(run_id)
                if isinstance(outcome, Failed):
                    await self._finish(run_id, position=position, actor=user_id,
                                       outcome=Failed(f"Cancelled: {outcome.reason}", cancelled=True))
                    return await self.require_run(run_id)
            where = "while step '{}' was running" if step.status == "running" else "at step '{}'"
            reason = f"{cause} {where.format(step.title)}"
            await self._finish(run_id, position=position, actor=user_id,
                               outcome=Failed(f"Cancelled: {reason}", cancelled=True))
        return await self.require_run(run_id)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Count the calling task as background work, so shutdown waits for it."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            yield
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _notify(self, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        try:
            return await method(*args)
        except Exception:
            logger.exception("observer %s failed", getattr(method, "__name__", method))
            return None


def _started_elsewhere(run_id: str, origin: str) -> Rejected:
    place = _ORIGIN_PLACES.get(origin, f"from {origin}")
    return Rejected(f"run {run_id} was started {place}, so its steps are decided there")


class _StepMoved(Exception):
    """The waiting step changed state between the decision insert and its update."""


async def _set_step(session: AsyncSession, run_id: str, position: int, **values: Any) -> None:
    await session.execute(update(Step).where(Step.run_id == run_id, Step.position == position).values(**values))


async def _set_run(session: AsyncSession, run_id: str, **values: Any) -> None:
    await session.execute(update(Run).where(Run.id == run_id).values(updated_at=utcnow(), **values))


async def _close_secrets(session: AsyncSession, run_id: str) -> None:
    await session.execute(update(RunSecret).where(RunSecret.run_id == run_id).values(open=None))
