"""Documentation: the audit record of the whole rotation and its summary."""

from __future__ import annotations

from bot.runbook.context import StepContext
from bot.runbook.steps import Done, StepKind, StepOutcome


class RecordRotation(StepKind):
    kind = "record"
    title = "Document"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        approvers: list[str] = []
        for step in ctx.run.steps:
            if step.kind == "approval" and step.actor:
                approvers += [decision.user_id for decision in await ctx.decisions(step.position)
                              if decision.decision == "approve"]
        approver = approvers[0] if approvers else None
        for secret in ctx.run.secrets:
            await ctx.audit(
                "secret.rolled_back" if ctx.run.kind == "rollback" else "secret.rotated",
                actor=ctx.run.requester,
                secret=secret.name,
                requested_by=ctx.run.requester,
                approved_by=approver,
                approvers=approvers,
                requested_at=ctx.run.created_at.isoformat(),
                reason=ctx.run.reason,
                digest_before=secret.digest_before,
                digest_after=secret.digest_after,
                outcome="rolled back" if ctx.run.kind == "rollback" else "rotated",
            )
        names = ", ".join(ctx.run.secret_names)
        return Done(f"Audit record written: {names} on {ctx.run.app} rotated, digests recorded.")
