"""The closing review of a lost secret: what will prevent it next time."""

from __future__ import annotations

from bot.policy import Policy
from bot.redact import Redactor
from bot.runbook.context import StepContext
from bot.runbook.steps import (
    Action,
    Decision,
    Done,
    RequesterOrApproverStep,
    StepOutcome,
    ValueInput,
    Waiting,
)
from bot.runbook.views import RunView

REVIEW_INPUT = "review"
MAX_REVIEW_LENGTH = 2000
# With no values registered it masks what looks like key material.
_REDACTOR = Redactor()


class Review(RequesterOrApproverStep):
    kind = "review"
    title = "Review"
    actions = (Action("review", "Write the review", "primary"),)
    rejection = "Only the requester or an approver can write the review."

    def inputs(self, run: RunView, policy: Policy) -> tuple[ValueInput, ...]:
        return (ValueInput(name=REVIEW_INPUT, label="What will prevent this next time?", secret=False),)

    async def execute(self, ctx: StepContext) -> StepOutcome:
        return Waiting(prompt="What will prevent this next time? Press the button to write the review.",
                       allowed_users=self.allowed_users(ctx.run, ctx.policy))

    async def validate(self, ctx: StepContext, decision: Decision) -> dict[str, str]:
        text = (decision.values or {}).get(REVIEW_INPUT, "").strip()
        if not text:
            return {REVIEW_INPUT: "Write a sentence or two."}
        if len(text) > MAX_REVIEW_LENGTH:
            return {REVIEW_INPUT: f"Keep it under {MAX_REVIEW_LENGTH} characters."}
        if _REDACTOR.redact(text) != text:
            return {REVIEW_INPUT: "This looks like it contains a key or token; leave values out of the review."}
        return {}

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        text = (decision.values or {}).get(REVIEW_INPUT, "").strip()
        if not text:
            # Only after a restart: the text of a non-secret input is not stored with the decision.
            return Done("Review submitted; its text was lost in a restart of the bot")
        await ctx.audit("review.recorded", actor=decision.user_id, review=text)
        return Done(f"Review: {text}")
