"""Checking the bot's backups of a lost secret, and choosing to restore one or regenerate."""

from __future__ import annotations

from bot.backups import BackupRecord
from bot.runbook.context import StepContext
from bot.runbook.steps import (
    Action,
    Decision,
    Done,
    Failed,
    RequesterOrApproverStep,
    StepOutcome,
    Waiting,
)


def describe_backup(record: BackupRecord, fly_digest: str | None) -> str:
    when = f"{record.created_at:%Y-%m-%d %H:%M} UTC"
    origin = f"run {record.run_id}" if record.run_id else "outside a run"
    if fly_digest is None:
        match = "the secret is not set on Fly now"
    elif record.fly_digest is None:
        match = "it was never confirmed deployed, so it cannot be compared with Fly's digest"
    elif record.fly_digest == fly_digest:
        match = "it matches the digest Fly reports now"
    else:
        match = "it does not match the digest Fly reports now"
    return f"{record.name}: backup v{record.version} from {when} ({origin}, by {record.created_by}); {match}."


class CheckBackups(RequesterOrApproverStep):
    kind = "backups"
    title = "Check backups"
    actions = (Action("restore", "Restore this backup to Fly", "primary"), Action("regenerate", "Regenerate"))
    rejection = "Only the requester or an approver can choose."

    async def execute(self, ctx: StepContext) -> StepOutcome:
        backups = ctx.services.backups
        if not backups.enabled:
            return Done("Backups are off (SECRETBOT_BACKUP_KEY is not set), so the value will be regenerated.")
        fly_digests = await ctx.fly_digests()
        lines = []
        for name in ctx.run.secret_names:
            record = await backups.latest(ctx.run.app, name)
            if record is None:
                return Done(f"No backup of {name} exists, so the value will be regenerated.")
            lines.append(describe_backup(record, fly_digests.get(name)))
        await ctx.audit("backup.checked", found=lines)
        lines.append("Restore the backup (a secret unset or overwritten by mistake), or regenerate the value "
                     "(a value that may be known to someone else).")
        return Waiting(prompt="\n".join(lines), allowed_users=self.allowed_users(ctx.run, ctx.policy))

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        if decision.action != "restore":
            return Done("Regenerate chosen")
        backups = ctx.services.backups
        fly_digests = await ctx.fly_digests()
        restored = {}
        versions = []
        for name in ctx.run.secret_names:
            record = await backups.latest(ctx.run.app, name)
            if record is None:
                return Done(f"Regenerate: the backup of {name} is gone")
            if record.fly_digest is not None and record.fly_digest == fly_digests.get(name):
                # Setting the same value again would change nothing, and verification
                # would then report an unchanged digest.
                return Failed(
                    f"Stopped without changes: Fly already holds backup v{record.version} of {name}. "
                    f"To read the value, run `secretbot backup show {ctx.run.app} {name}` on the bot's host."
                )
            restored[name] = await backups.value(ctx.run.app, name, record.version)
            versions.append(f"{name} v{record.version}")
        await ctx.store_values(restored)
        await ctx.audit("backup.restore_chosen", actor=decision.user_id, versions=versions)
        return Done(f"Restore chosen: {', '.join(versions)}")
