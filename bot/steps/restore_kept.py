"""Restore after an unset: the backup that the unset kept, set on Fly again and recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update

from bot.runbook.context import StepContext
from bot.runbook.steps import Done, Failed, StepKind, StepOutcome
from bot.steps.approvers import approvers_of
from bot.storage.models import Run, RunSecret, Step

logger = logging.getLogger(__name__)

# The step kind of the unset runbook that removes secrets from Fly.
UNSET_STEP_KIND = "fly_unset"


@dataclass(frozen=True)
class KeptBackup:
    """The latest unset of a secret, and the backup version it kept (None when it kept none)."""

    unset_run_id: str
    version: int | None


async def latest_unset(ctx: StepContext, name: str) -> KeptBackup | None:
    """Return the latest unset run that removed `name` from the run's app, or None if none did."""
    async with ctx.services.sessions() as session:
        row = (await session.execute(
            select(RunSecret.run_id, RunSecret.backup_version)
            .join(Run, Run.id == RunSecret.run_id)
            .join(Step, Step.run_id == Run.id)
            .where(Run.kind == "unset", RunSecret.app == ctx.run.app, RunSecret.name == name,
                   Step.kind == UNSET_STEP_KIND, Step.status == "done")
            .order_by(Run.created_at.desc())
            .limit(1)
        )).first()
    return KeptBackup(unset_run_id=row[0], version=row[1]) if row is not None else None


class RestoreKept(StepKind):
    kind = "restore_kept"
    title = "Take the kept value from the backups"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        app = ctx.run.app
        backups = ctx.services.backups
        if not backups.enabled:
            return Failed("backups are off (SECRETBOT_BACKUP_KEY is not set), so there is nothing to restore")
        listed = await ctx.fly_digests()

        restored: dict[str, str] = {}
        chosen: dict[str, KeptBackup] = {}
        for name in ctx.run.secret_names:
            if name in listed:
                return Failed(f"{name} is set on {app} again, so restoring the removed value would replace the "
                              f"current one; use `/secret rotate {name}` to change it. Nothing was changed.")
            kept = await latest_unset(ctx, name)
            if kept is None:
                return Failed(f"no secretbot unset removed {name} from {app}, so there is no kept backup to restore")
            if kept.version is None:
                return Failed(f"the unset of {name} in run {kept.unset_run_id} kept no backup, so secretbot cannot "
                              "restore it")
            restored[name] = await backups.value(app, name, kept.version)
            chosen[name] = kept

        await ctx.store_values(restored)
        async with ctx.services.sessions.begin() as session:
            for name, kept in chosen.items():
                await session.execute(update(RunSecret).where(RunSecret.run_id == ctx.run.id, RunSecret.name == name)
                                      .values(backup_version=kept.version))
        described = [f"backup v{kept.version} of {name}, kept by unset run {kept.unset_run_id}"
                     for name, kept in chosen.items()]
        await ctx.audit("restore.chosen", versions={name: kept.version for name, kept in chosen.items()},
                        unset_runs={name: kept.unset_run_id for name, kept in chosen.items()})
        logger.info("restore chosen %s versions=%s", ctx.log_context(),
                    ",".join(f"{name}:v{kept.version}" for name, kept in chosen.items()))
        return Done("Restoring " + "; ".join(described) + ".")


class RecordRestored(StepKind):
    kind = "record"
    title = "Document"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        approvers = await approvers_of(ctx)
        async with ctx.services.sessions() as session:
            versions = dict((await session.execute(
                select(RunSecret.name, RunSecret.backup_version).where(RunSecret.run_id == ctx.run.id))).all())
        described = []
        for secret in ctx.run.secrets:
            version = versions.get(secret.name)
            record = await ctx.services.backups.get(ctx.run.app, secret.name, version) if version else None
            if record is not None:
                # The value dates from its backup, so the schedule counts from then, not from today.
                await ctx.services.inventory.record_value_age(app=ctx.run.app, name=secret.name,
                                                              created_at=record.created_at, run_id=ctx.run.id)
            await ctx.audit(
                "secret.restored",
                actor=ctx.run.requester,
                secret=secret.name,
                requested_by=ctx.run.requester,
                approvers=approvers,
                requested_at=ctx.run.created_at.isoformat(),
                reason=ctx.run.reason,
                backup_version=version,
                value_created_at=record.created_at.isoformat() if record else None,
                digest_after=secret.digest_after,
            )
            described.append(f"{secret.name} (backup v{version})")
        return Done(f"Audit record written: {', '.join(described)} restored on {ctx.run.app}.")
