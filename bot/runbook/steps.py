"""The building blocks of a runbook: step kinds, their outcomes and the actions people take.

A step kind is code the engine runs; a runbook is an ordered tuple of step kinds. Step
kinds know nothing about Slack: they return outcomes with plain text and user IDs, and a
front end decides how to show them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.policy import Policy
    from bot.runbook.context import StepContext
    from bot.runbook.views import RunView


@dataclass(frozen=True)
class Action:
    """A button a person can press on a waiting step."""

    name: str  # approve | deny | done
    label: str
    style: str | None = None  # primary | danger | None


@dataclass(frozen=True)
class Done:
    detail: str


@dataclass(frozen=True)
class Skipped:
    detail: str


@dataclass(frozen=True)
class Waiting:
    """The step needs a person: `prompt` is the request, and `allowed_users` may respond."""

    prompt: str
    allowed_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    """The step failed; the run stops here. `denied` marks a refusal rather than an error."""

    reason: str
    denied: bool = False
    # An approval request that no approver decided in time.
    expired: bool = False
    # A person or the bot stopped the run on purpose: `/secret cancel`, a stop at the
    # terminal, or a compromise response taking over.
    cancelled: bool = False


StepOutcome = Done | Skipped | Waiting | Failed


@dataclass(frozen=True)
class Decision:
    action: str
    user_id: str
    # Values a person entered, by secret name; kept out of repr so no log line shows them.
    values: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ValueInput:
    """One value a person must enter for a waiting step."""

    name: str
    hint: str | None = None
    label: str | None = None
    # A secret input is stored encrypted and never shown; other text (a review) is recorded.
    secret: bool = True


# The default cause of a settled step, as its outcome words it.
RESTART_CAUSE = "the bot restarted"

# Added to every step's time limit for the bot's own work (database writes, an upload of a
# backup to S3) on top of the flyctl timeouts the step waits for.
STEP_MARGIN_SECONDS = 120.0


def app_change_time_limit(policy: Policy) -> float:
    """Return the time limit of a step that changes an app's secrets on Fly (an import or an unset).

    It covers the wait for another run's change to the same app (that run's rollout and
    verification), this step's own rollout, and the secrets list calls around it.
    """
    fly = policy.fly
    waiting = fly.deploy_timeout + fly.verify_timeout
    return STEP_MARGIN_SECONDS + waiting + fly.deploy_timeout + 4 * fly.command_timeout


class StepKind(ABC):
    """One kind of step. Instances are stateless; per-run state lives in the database."""

    kind: str = "step"
    title: str = "Step"
    actions: tuple[Action, ...] = ()
    # Whether the step can run again from the start after the bot was killed while it ran.
    # A step that changes something outside the bot must settle what happened first.
    restartable: bool = True
    # Whether the step changes the app on Fly. The engine starts such a step only while
    # fly.apps still lists the run's app.
    changes_fly: bool = False

    @abstractmethod
    async def execute(self, ctx: StepContext) -> StepOutcome:
        """Run the step, or return Waiting when it needs a person."""

    async def settle(self, ctx: StepContext, *, cause: str = RESTART_CAUSE) -> StepOutcome:
        """Decide the outcome of a step that was cut short: by a restart, or by its time limit.

        Only called for steps that are not `restartable`; the default gives up. `cause`
        starts the sentences that explain it, e.g. "the bot restarted".
        """
        return Failed(
            f"{cause} while '{self.title}' was running, so its result is unknown; "
            f"check the app with `flyctl secrets list -a {ctx.run.app}` before starting a new run"
        )

    def time_limit(self, policy: Policy) -> float:
        """Return the seconds the step may run before the engine stops it.

        The default allows a few read-only flyctl calls; steps that wait for a rollout or a
        verification add their own timeouts.
        """
        return STEP_MARGIN_SECONDS + 4 * policy.fly.command_timeout

    def allowed_users(self, run: RunView, policy: Policy) -> tuple[str, ...]:
        """Return the users who may decide this step when it waits; empty for automatic steps."""
        return ()

    def inputs(self, run: RunView, policy: Policy) -> tuple[ValueInput, ...]:
        """Return the values a person enters to complete this step; empty for buttons only."""
        return ()

    async def validate(self, ctx: StepContext, decision: Decision) -> dict[str, str]:
        """Return problems with the entered values by secret name; empty when they are fine.

        The engine awaits it before Slack receives the form's acknowledgement, so a slow check must
        not block the event loop.
        """
        return {}

    def authorize(self, ctx: StepContext, decision: Decision) -> str | None:
        """Return why `decision.user_id` may not take this action, or None if they may."""
        return "this step takes no input"

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        """Turn an accepted decision into the step's outcome."""
        raise NotImplementedError(f"step {self.kind} takes no decisions")


class RequesterOrApproverStep(StepKind):
    """A step that waits for the run's requester or any configured approver."""

    # The reply to anyone else who presses the step's button.
    rejection = "Only the requester or an approver can decide this step."

    def allowed_users(self, run: RunView, policy: Policy) -> tuple[str, ...]:
        return tuple(dict.fromkeys([run.requester, *policy.slack.approvers]))

    def authorize(self, ctx: StepContext, decision: Decision) -> str | None:
        if decision.user_id not in self.allowed_users(ctx.run, ctx.policy):
            return self.rejection
        return None


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    steps: tuple[StepKind, ...]
    # Whether the steps rotate each secret by its policy (a [secrets.NAME] table, or the
    # choice stored by `/secret add`), so the engine stops the run when a policy is removed.
    needs_secret_policies: bool = False
