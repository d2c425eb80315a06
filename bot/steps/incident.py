"""The incident record of a compromised-secret run: what happened and every step's timeline."""

from __future__ import annotations

from datetime import datetime

from bot.runbook.context import StepContext
from bot.runbook.steps import Done, StepKind, StepOutcome
from bot.storage.models import utcnow


def _seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds(), 1)


class RecordIncident(StepKind):
    kind = "incident"
    title = "Document the incident"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        now = utcnow()
        timeline = [
            {
                "step": step.title,
                "status": step.status,
                "by": step.actor,
                "started": step.started_at.isoformat() if step.started_at else None,
                "finished": step.finished_at.isoformat() if step.finished_at else None,
                "seconds": _seconds(step.started_at, step.finished_at),
            }
            for step in ctx.run.steps[: ctx.position]
        ]
        total = (now - ctx.run.created_at).total_seconds()
        for secret in ctx.run.secrets:
            await ctx.audit(
                "incident.recorded",
                actor=ctx.run.requester,
                secret=secret.name,
                what_happened=ctx.run.reason,
                reported_by=ctx.run.requester,
                reported_at=ctx.run.created_at.isoformat(),
                timeline=timeline,
                digest_before=secret.digest_before,
                digest_after=secret.digest_after,
                seconds_to_replace=round(total, 1),
            )
        revoked = next((step for step in ctx.run.steps if step.kind == "revoke"), None)
        revoked_text = "revocation confirmed" if revoked and revoked.status == "done" else "old value dies with the deploy"
        return Done(
            f"Incident record written: {', '.join(ctx.run.secret_names)} on {ctx.run.app} replaced "
            f"{total:.0f} s after the report ({revoked_text}); timeline of {len(timeline)} steps in the audit log."
        )
