"""Steps of `/secret unset` around the flyctl call: the backup kept for a restore, approval,
verification and the record.

Fly never shows a value again, so a removed secret can only come back from secretbot's
backups. Before anyone approves, the run names the backup version it keeps, or states that
a restore will not be possible.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from bot.backups import BackupRecord
from bot.flyctl import verify_deployment
from bot.policy import Policy
from bot.runbook.context import StepContext
from bot.runbook.steps import STEP_MARGIN_SECONDS, Decision, Done, Failed, Skipped, StepKind, StepOutcome, Waiting
from bot.steps.approvers import approvers_of
from bot.steps.fly_update import NOT_LISTED
from bot.steps.policy_choice import StoredPolicyApproval
from bot.storage.models import RunSecret

logger = logging.getLogger(__name__)


class KeepBackup(StepKind):
    """Check that the secrets are on Fly and find the backup whose digest matches each one."""

    kind = "keep_backup"
    title = "Check the secret and keep its backup"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        app = ctx.run.app
        names = list(ctx.run.secret_names)
        listed = await ctx.fly_digests()
        missing = [name for name in names if name not in listed]
        if missing:
            return Failed(f"{', '.join(missing)} is not set on the Fly app {app} (`flyctl secrets list`), "
                          "so there is nothing to unset. Nothing was changed.")

        backups = ctx.services.backups
        if not backups.enabled:
            return Skipped("Backups are off (SECRETBOT_BACKUP_KEY is not set), so secretbot has no copy of "
                           f"{', '.join(names)}: a restore will not be possible after the unset.")
        kept: dict[str, BackupRecord] = {}
        problems: list[str] = []
        for name in names:
            versions = await backups.versions(app, name)
            matching = [record for record in versions if record.fly_digest == listed[name]]
            if matching:
                kept[name] = matching[-1]
            else:
                problems.append(_why_not_kept(name, versions))

        await self._save(ctx, {name: record.version for name, record in kept.items()})
        await ctx.audit("backup.kept", versions={name: record.version for name, record in kept.items()},
                        without_backup=sorted(set(names) - set(kept)))
        if problems:
            return Skipped(" ".join(problems) + " A restore will not be possible after the unset.")
        lines = [f"Backup v{record.version} of {name} from {record.created_at:%Y-%m-%d %H:%M} UTC matches the "
                 "value on Fly now and is kept" for name, record in kept.items()]
        return Done("; ".join(lines) + ": after the unset, Restore can set it back.")

    async def _save(self, ctx: StepContext, versions: dict[str, int]) -> None:
        async with ctx.services.sessions.begin() as session:
            for name, version in versions.items():
                await session.execute(update(RunSecret).where(RunSecret.run_id == ctx.run.id, RunSecret.name == name)
                                      .values(backup_version=version))


def _why_not_kept(name: str, versions: list[BackupRecord]) -> str:
    if not versions:
        return f"secretbot has no backup of {name}."
    newest = versions[-1]
    if newest.fly_digest is None:
        return (f"The newest backup of {name}, v{newest.version}, was never confirmed on Fly, so it may not be "
                "the value that is removed.")
    return (f"No backup of {name} has the digest Fly reports now (the value was set outside secretbot "
            "after the newest backup).")


class UnsetApproval(StoredPolicyApproval):
    """Approval whose prompt names the kept backup, or states that a restore will not be possible."""

    async def execute(self, ctx: StepContext) -> StepOutcome:
        return _with_backup_note(ctx, await super().execute(ctx))

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        return _with_backup_note(ctx, await super().decide(ctx, decision))


def _with_backup_note(ctx: StepContext, outcome: StepOutcome) -> StepOutcome:
    if not isinstance(outcome, Waiting):
        return outcome
    note = next((step.detail for step in ctx.run.steps if step.kind == KeepBackup.kind and step.detail), None)
    if note is None:
        return outcome
    return Waiting(prompt=f"{note}\n{outcome.prompt}", allowed_users=outcome.allowed_users)


class VerifyUnset(StepKind):
    """The app came back healthy on the new release, and Fly no longer lists the secrets."""

    kind = "verify"
    title = "Verify the deployment"

    def time_limit(self, policy: Policy) -> float:
        # The last poll may start just before verify_timeout, and one more list call follows it.
        return STEP_MARGIN_SECONDS + policy.fly.verify_timeout + 4 * policy.fly.command_timeout

    async def execute(self, ctx: StepContext) -> StepOutcome:
        app = ctx.run.app
        names = list(ctx.run.secret_names)
        fly = ctx.policy.fly
        health_url = fly.health_urls.get(app)
        await ctx.report(
            f"Checking machines, release and checks of {app} for up to {fly.verify_timeout:.0f} s, and that "
            f"{', '.join(names)} is no longer listed" + (f"; GET {health_url}." if health_url else ".")
        )
        try:
            report = await verify_deployment(ctx.flyctl, app, [], {}, timeout=fly.verify_timeout,
                                             poll_interval=fly.verify_interval, health_url=health_url)
            listed = await ctx.fly_digests()
        finally:
            # The unset step took the lock. Another run's change may start once this one is checked.
            await ctx.services.app_locks.release_run(ctx.run.id)

        removed = [name for name in names if name not in listed]
        await ctx.record_digests(after={name: listed.get(name, NOT_LISTED) for name in names})
        if removed:
            await ctx.services.inventory.record_removed(app=app, names=removed, run_id=ctx.run.id)
        problems = list(report.problems) + [f"secret {name} is still listed" for name in names if name in listed]
        await ctx.audit("verification.passed" if not problems else "verification.failed", problems=problems,
                        removed=removed, machines=report.machines, release=report.release_version)
        if problems:
            return Failed("verification failed: " + "; ".join(problems))
        detail = (f"{report.machines} machine(s) started on release v{report.release_version} with passing checks; "
                  f"{', '.join(names)} no longer listed")
        if health_url:
            detail += f"; {health_url} answered 2xx"
        return Done(detail + ".")


class RecordUnset(StepKind):
    kind = "record"
    title = "Document"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        approvers = await approvers_of(ctx)
        kept = await kept_versions(ctx)
        for secret in ctx.run.secrets:
            await ctx.audit(
                "secret.unset",
                actor=ctx.run.requester,
                secret=secret.name,
                requested_by=ctx.run.requester,
                approvers=approvers,
                requested_at=ctx.run.created_at.isoformat(),
                reason=ctx.run.reason,
                digest_before=secret.digest_before,
                kept_backup_version=kept.get(secret.name),
            )
        names = ", ".join(ctx.run.secret_names)
        if kept and len(kept) == len(ctx.run.secret_names):
            versions = ", ".join(f"{name} v{version}" for name, version in kept.items())
            return Done(f"Audit record written: {names} removed from {ctx.run.app}; "
                        f"backup {versions} kept for Restore.")
        return Done(f"Audit record written: {names} removed from {ctx.run.app}; no backup is kept, "
                    "so secretbot cannot restore it.")


async def kept_versions(ctx: StepContext) -> dict[str, int]:
    """Return the backup version kept for each of the run's secrets that has one."""
    async with ctx.services.sessions() as session:
        rows = (await session.execute(select(RunSecret.name, RunSecret.backup_version)
                                      .where(RunSecret.run_id == ctx.run.id))).all()
    return {name: version for name, version in rows if version is not None}
