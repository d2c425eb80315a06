"""Reading who approved a run, for the audit records that close it."""

from __future__ import annotations

from bot.runbook.context import StepContext


async def approvers_of(ctx: StepContext) -> list[str]:
    """Return who approved the run, in the order they approved."""
    approvers: list[str] = []
    for step in ctx.run.steps:
        if step.kind == "approval":
            approvers += [decision.user_id for decision in await ctx.decisions(step.position)
                          if decision.decision == "approve"]
    return approvers
