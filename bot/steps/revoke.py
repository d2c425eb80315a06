"""Revoking a leaked value at its source, before anything else happens."""

from __future__ import annotations

from bot.policy import Source
from bot.runbook.context import StepContext
from bot.runbook.steps import (
    Action,
    Decision,
    Done,
    RequesterOrApproverStep,
    Skipped,
    StepOutcome,
    Waiting,
)


class RevokeAtSource(RequesterOrApproverStep):
    kind = "revoke"
    title = "Revoke at the source"
    actions = (Action("done", "Revoked", "danger"),)
    rejection = "Only the requester or an approver can confirm the revocation."

    async def execute(self, ctx: StepContext) -> StepOutcome:
        policies = [ctx.secret_policy(name) for name in ctx.run.secret_names]
        generated = [policy.name for policy in policies if policy.source is Source.GENERATED]
        provided = [policy for policy in policies if policy.source is Source.PROVIDER]
        generated_note = (
            f"{', '.join(generated)} is made by the bot, so the leaked value stops working when the new one "
            "is deployed in the Fly update step."
            if generated
            else ""
        )
        if not provided:
            return Skipped(generated_note)
        lines = ["Revoke the leaked value now, before the new one exists; the app may fail until then."]
        for policy in provided:
            how = policy.revoke_instructions or f"Revoke or delete the leaked key at {policy.external or 'its provider'}."
            lines.append(f"{policy.name}: {how}")
        if generated_note:
            lines.append(generated_note)
        lines.append("Press Revoked once it is done.")
        return Waiting(prompt="\n".join(lines), allowed_users=self.allowed_users(ctx.run, ctx.policy))

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        return Done("Revocation confirmed")
