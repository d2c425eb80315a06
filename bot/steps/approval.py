"""Approval: a configured approver other than the requester approves or denies the run."""

from __future__ import annotations

from bot.policy import Policy
from bot.runbook.context import StepContext
from bot.runbook.steps import (
    Action,
    Decision,
    Done,
    Failed,
    Skipped,
    StepKind,
    StepOutcome,
    Waiting,
)
from bot.runbook.views import RunView


class Approval(StepKind):
    kind = "approval"
    title = "Approval"
    actions = (Action("approve", "Approve", "primary"), Action("deny", "Deny", "danger"))

    def allowed_users(self, run: RunView, policy: Policy) -> tuple[str, ...]:
        return tuple(user for user in policy.slack.approvers if user != run.requester)

    async def execute(self, ctx: StepContext) -> StepOutcome:
        approvers = self.allowed_users(ctx.run, ctx.policy)
        if not ctx.policy.slack.approvers:
            return Failed("no approvers are configured; add Slack user IDs to slack.approvers in secretbot.toml")
        if not approvers:
            return Failed(
                "the requester is the only configured approver and cannot approve their own run; "
                "add another user ID to slack.approvers in secretbot.toml"
            )
        return Waiting(prompt="Waiting for an approver other than the requester.", allowed_users=approvers)

    def authorize(self, ctx: StepContext, decision: Decision) -> str | None:
        if decision.user_id == ctx.run.requester:
            return "You requested this run, so another approver has to decide."
        if decision.user_id not in ctx.policy.slack.approvers:
            return "Only the approvers listed in slack.approvers can approve or deny a run."
        return None

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        if decision.action == "approve":
            return Done("Approved")
        return Failed("Denied", denied=True)


class BreakGlassApproval(Approval):
    """Approval for a compromised secret: skipped unless the policy requires it."""

    async def execute(self, ctx: StepContext) -> StepOutcome:
        # Break-glass skips the wait only for an approver: anyone else could otherwise put
        # a value of their choosing on a production app without a second person.
        if ctx.policy.slack.compromised_requires_approval or ctx.run.requester not in ctx.policy.slack.approvers:
            return await super().execute(ctx)
        await ctx.audit("run.break_glass", actor=ctx.run.requester, reason=ctx.run.reason)
        return Skipped(
            "Break-glass start: a compromised secret is replaced without waiting for approval; "
            "the approvers are notified in this thread."
        )
