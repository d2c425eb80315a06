"""Rollback: the last value that passed verification on Fly, taken from the backups."""

from __future__ import annotations

from bot.runbook.context import StepContext
from bot.runbook.steps import Done, Failed, StepKind, StepOutcome


class RestoreLastGood(StepKind):
    kind = "restore"
    title = "Take the last verified value from the backups"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        backups = ctx.services.backups
        if not backups.enabled:
            return Failed("backups are off (SECRETBOT_BACKUP_KEY is not set), so there is nothing to roll back to")
        restored: dict[str, str] = {}
        chosen = []
        for name in ctx.run.secret_names:
            record = await backups.latest_verified(ctx.run.app, name)
            if record is None:
                return Failed(f"no backup of {name} was ever verified on Fly, so there is nothing to roll back to")
            restored[name] = await backups.value(ctx.run.app, name, record.version)
            chosen.append(f"{name} v{record.version} (verified {record.deployed_at or record.created_at:%Y-%m-%d %H:%M} UTC)")
        await ctx.store_values(restored)
        await ctx.audit("rollback.chosen", versions=chosen)
        return Done("Rolling back to " + ", ".join(chosen))
