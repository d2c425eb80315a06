"""Approval: a configured approver other than the requester approves or denies the run."""

from __future__ import annotations

from bot.policy import Policy, Priority
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
        if policy.slack.allow_self_approval:
            return policy.slack.approvers
        return tuple(user for user in policy.slack.approvers if user != run.requester)

    def approvals_needed(self, run: RunView, policy: Policy) -> int:
        """Return 2 for a run on a high-priority secret when the policy requires two approvers, else 1."""
        high = any(_priority(policy, run.app, name) is Priority.HIGH for name in run.secret_names)
        return 2 if policy.slack.two_approvers_for_high and high else 1

    async def execute(self, ctx: StepContext) -> StepOutcome:
        approvers = self.allowed_users(ctx.run, ctx.policy)
        needed = self.approvals_needed(ctx.run, ctx.policy)
        if not ctx.policy.slack.approvers:
            return Failed("no approvers are configured; add Slack user IDs to slack.approvers in secretbot.toml")
        if not approvers:
            return Failed(
                "the requester is the only configured approver and cannot approve their own run; "
                "add another user ID to slack.approvers in secretbot.toml"
            )
        if len(approvers) < needed:
            return Failed(
                f"a high-priority secret needs {needed} approvers other than the requester, but only "
                f"{len(approvers)} can approve; add user IDs to slack.approvers in secretbot.toml"
            )
        if needed == 2:
            return Waiting(prompt="High-priority secret: waiting for two approvers other than the requester.",
                           allowed_users=approvers)
        return Waiting(prompt="Waiting for an approver other than the requester.", allowed_users=approvers)

    def authorize(self, ctx: StepContext, decision: Decision) -> str | None:
        if decision.user_id == ctx.run.requester and not ctx.policy.slack.allow_self_approval:
            return "You requested this run, so another approver has to decide."
        if decision.user_id not in ctx.policy.slack.approvers:
            return "Only the approvers listed in slack.approvers can approve or deny a run."
        # After a first approval the step waits again with that approver as its actor.
        if decision.user_id == ctx.run.steps[ctx.position].actor:
            return "You approved this run already; a second approver has to decide."
        return None

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        if decision.action == "expire":
            waited = _duration_text(ctx.policy.slack.approval_timeout)
            return Failed(f"Expired: nobody approved or denied within {waited}. Press Retry to start it again.",
                          expired=True)
        if decision.action != "approve":
            return Failed("Denied", denied=True)
        approvals = [earlier for earlier in await ctx.decisions() if earlier.decision == "approve"]
        needed = self.approvals_needed(ctx.run, ctx.policy)
        if len(approvals) < needed:
            remaining = tuple(user for user in self.allowed_users(ctx.run, ctx.policy)
                              if user not in {earlier.user_id for earlier in approvals})
            return Waiting(prompt="First approval given; waiting for a second approver.", allowed_users=remaining)
        if needed == 2:
            return Done("Approved by two approvers")
        return Done("Approved")


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


def _duration_text(seconds: float) -> str:
    """Write a timeout in the largest whole unit that fits: hours, minutes or seconds."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _priority(policy: Policy, app: str, name: str) -> Priority:
    """Return a secret's priority, counting the one chosen when it was added; the default for any other name."""
    secret = policy.secret_for(app, name)
    return secret.priority if secret is not None else policy.inventory.default_priority
