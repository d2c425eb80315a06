"""A manual step: a person updates a system outside Fly and confirms with a button."""

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


class ExternalUpdate(RequesterOrApproverStep):
    kind = "external"
    title = "Update the external service"
    actions = (Action("done", "Done", "primary"),)
    rejection = "Only the requester or an approver can confirm this step."

    async def execute(self, ctx: StepContext) -> StepOutcome:
        # A provider-issued value already lives at its provider, whose instructions were
        # shown when it was entered. Only a value the bot made must be copied elsewhere.
        policies = [ctx.secret_policy(name) for name in ctx.run.secret_names]
        todo = [policy for policy in policies if policy.external is not None and policy.source is Source.GENERATED]
        if not todo:
            return Skipped("Not applicable: no external system needs the value the bot made.")
        lines = []
        for policy in todo:
            line = f"{policy.name}: update {policy.external}."
            if policy.instructions:
                line += f" {policy.instructions}"
            # The value never goes to Slack; an operator reads it where the bot runs.
            line += (
                f" The new value is not shown in Slack: on the bot's host run "
                f"`secretbot pending show {ctx.run.id} {policy.name}` (needs SECRETBOT_BACKUP_KEY)."
            )
            lines.append(line)
        lines.append("Press Done when every system above is updated.")
        return Waiting(prompt="\n".join(lines), allowed_users=self.allowed_users(ctx.run, ctx.policy))

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        return Done("Confirmed")
