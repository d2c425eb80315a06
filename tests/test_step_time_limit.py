"""Every step has a time limit: a step that hangs is stopped, and one that changes the app is settled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from bot.flyctl import Redactor
from bot.policy import Policy, builtin_policy
from bot.runbook.context import Services, StepContext
from bot.runbook.engine import Engine
from bot.runbook.steps import STEP_MARGIN_SECONDS, Done, Failed, StepKind, StepOutcome
from bot.runbook.views import RunView, SecretView
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.verify import VerifyDeployment

LIMIT = 0.2


class HangingStep(StepKind):
    kind = "hang"
    title = "Hang"

    def __init__(self, *, restartable: bool) -> None:
        self.restartable = restartable
        self.cancelled = False
        self.settle_cause: str | None = None

    def time_limit(self, policy: Policy) -> float:
        return LIMIT

    async def execute(self, ctx: StepContext) -> StepOutcome:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return Done("never reached")

    async def settle(self, ctx: StepContext, *, cause: str = "") -> StepOutcome:
        self.settle_cause = cause
        return Done("settled from Fly's state")


def engine_and_context() -> tuple[Engine, StepContext]:
    # The hanging step touches no storage, flyctl or backups, so those stay unset.
    unused = cast(Any, None)
    services = Services(policy=builtin_policy(), sessions=unused, flyctl=unused, sealer=unused, redactor=Redactor(),
                        backups=unused)
    engine = Engine(services=services, runbooks={}, observer=unused)
    run = RunView(id="0123456789ab", kind="rotate", title="Rotate", app="hotel-voice-bot", requester="U0AAA",
                  reason=None, status="running", current_step=0, outcome=None,
                  secrets=(SecretView("JWT_SECRET", None, None),), steps=(), created_at=datetime.now(UTC),
                  finished_at=None)

    async def report(_message: str) -> None:
        return None

    return engine, StepContext(run=run, position=0, services=services, reporter=report)


async def test_hanging_step_fails_after_limit() -> None:
    engine, ctx = engine_and_context()
    step = HangingStep(restartable=True)

    outcome = await asyncio.wait_for(engine._execute(step, ctx), timeout=5)

    assert isinstance(outcome, Failed)
    assert "did not finish within 0.2 s" in outcome.reason
    assert step.cancelled


async def test_hanging_change_step_is_settled() -> None:
    engine, ctx = engine_and_context()
    step = HangingStep(restartable=False)

    outcome = await asyncio.wait_for(engine._execute(step, ctx), timeout=5)

    assert outcome == Done("settled from Fly's state")
    assert step.cancelled
    assert step.settle_cause == "the step passed its time limit of 0.2 s"


def test_fly_update_limit_covers_its_timeouts() -> None:
    fly = builtin_policy().fly
    limit = UpdateFlySecrets().time_limit(builtin_policy())
    assert limit > 2 * fly.deploy_timeout + fly.verify_timeout
    assert limit >= STEP_MARGIN_SECONDS


def test_verify_limit_covers_verify_timeout() -> None:
    policy = builtin_policy()
    assert VerifyDeployment().time_limit(policy) > policy.fly.verify_timeout + policy.fly.command_timeout
