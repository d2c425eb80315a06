"""Carrying out an import plan: back up, one `flyctl secrets import`, verify, record.

The steps run under the app's change lock, so an import never overlaps a Slack run's
change to the same app. Before anything is written, Fly's digests are read again under
the lock: if they moved since the plan was shown, the import stops, because the person
confirmed a listing that is no longer true.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.backups import BackupStore
from bot.clock import Clock, SystemClock
from bot.errors import FlyctlError, SecretbotError
from bot.flyctl import FlyctlClient, verify_deployment
from bot.importing.plan import ImportPlan
from bot.inventory import InventoryStore
from bot.operations import describe_holder, hold_app_lock
from bot.policy import Policy
from bot.runbook.context import AppLocks

logger = logging.getLogger(__name__)

Report = Callable[[str], Awaitable[None]]

SUCCEEDED = "succeeded"
FAILED = "failed"
DONE = "done"
PENDING = "pending"
# Lines of flyctl's output kept in a failure's description.
OUTPUT_LINES = 8


@dataclass
class StepResult:
    title: str
    status: str = PENDING
    detail: str | None = None


@dataclass
class ImportResult:
    """The outcome of an import, without any value, for the terminal, the audit log and the Slack summary."""

    operation_id: str
    app: str
    status: str
    outcome: str | None
    started_at: datetime
    finished_at: datetime
    digests_before: dict[str, str | None]
    digests_after: dict[str, str | None]
    steps: list[StepResult] = field(default_factory=list)


@dataclass(frozen=True)
class ImportServices:
    policy: Policy
    sessions: async_sessionmaker[AsyncSession]
    flyctl: FlyctlClient
    backups: BackupStore
    locks: AppLocks
    inventory: InventoryStore
    clock: Clock = field(default_factory=SystemClock)


@dataclass(frozen=True)
class Importer:
    """The person importing, from where, and why: written with every audit record of the import."""

    actor: str
    hostname: str
    os_user: str
    source: str
    reason: str | None


class _Stop(Exception):
    """Ends the import at a step, with the reason shown to the person."""


async def apply_plan(plan: ImportPlan, *, services: ImportServices, importer: Importer, operation_id: str,
                     report: Report) -> ImportResult:
    """Run the import of `plan` to its end and return what happened; never raises for a failed step."""
    started = services.clock.now()
    steps = [StepResult("Back up the values"), StepResult("Run flyctl secrets import"),
             StepResult("Verify the deployment")]
    result = ImportResult(operation_id=operation_id, app=plan.app, status=FAILED, outcome=None, started_at=started,
                          finished_at=started, digests_before=dict(plan.digests_before),
                          digests_after={name: None for name in plan.values}, steps=steps)

    async def waiting(holder: str) -> None:
        await report(f"Waiting for {describe_holder(holder)} to finish its change to {plan.app}; "
                     "changes to one app run one at a time.")

    try:
        async with hold_app_lock(services.locks, plan.app, operation_id, on_wait=waiting):
            await _run_steps(plan, services=services, importer=importer, operation_id=operation_id, report=report,
                             result=result)
        result.status = SUCCEEDED
        result.outcome = f"{len(plan.values)} secret(s) set on {plan.app} and verified."
    except _Stop as stop:
        result.outcome = str(stop)
    except SecretbotError as exc:
        # A database, backup or audit failure: the outcome names it, and no value is in its text.
        logger.error("import failed operation=%s app=%s error=%s", operation_id, plan.app, exc)
        result.outcome = f"the import stopped: {exc}"
        for step in steps:
            if step.status == PENDING:
                step.status = FAILED
                step.detail = str(exc)
                break
    result.finished_at = services.clock.now()
    await _audit(services, importer, operation_id, plan.app,
                 "import.succeeded" if result.status == SUCCEEDED else "import.failed",
                 secret=",".join(plan.values), outcome=result.outcome, digests_after=result.digests_after, quiet=True)
    return result


async def _run_steps(plan: ImportPlan, *, services: ImportServices, importer: Importer, operation_id: str,
                     report: Report, result: ImportResult) -> None:
    backup_step, import_step, verify_step = result.steps
    app = plan.app
    names = list(plan.values)

    # Fly may have changed between the listing that was confirmed and this lock.
    current = {secret.name: secret.digest for secret in await services.flyctl.list_secrets(app)}
    moved = [name for name in names if current.get(name) != plan.digests_before.get(name)]
    if moved:
        backup_step.status = FAILED
        backup_step.detail = f"Fly's digest of {', '.join(moved)} changed after the listing was shown"
        raise _Stop(f"Fly's digest of {', '.join(moved)} changed since the listing was read, so nothing was set; "
                    "run the import again to see the new listing")

    joined = ",".join(names)
    await _audit(services, importer, operation_id, app, "import.started", secret=joined,
                 digests_before=plan.digests_before,
                 changes={secret.name: secret.change.value for secret in plan.secrets})

    versions = []
    for name in names:
        record = await services.backups.save(app=app, name=name, value=plan.values[name], run_id=operation_id,
                                             created_by=importer.actor)
        versions.append(f"{name} v{record.version}")
        if record.s3_error:
            await report(f"The bucket copy of the {name} backup failed ({record.s3_error}); the database copy is kept.")
    await _audit(services, importer, operation_id, app, "backup.saved", secret=joined, versions=versions)
    backup_step.status, backup_step.detail = DONE, f"backed up (encrypted): {', '.join(versions)}"
    await report(f"Backed up (encrypted): {', '.join(versions)}.")

    await report(f"Running `flyctl secrets import --app {app}` for {', '.join(names)} (values on standard input); "
                 "Fly restarts the app's machines one by one.")
    try:
        completed = await services.flyctl.import_secrets(app, plan.values)
    except FlyctlError as exc:
        await _import_failed(services, importer, operation_id, plan, exc, result)
        raise _Stop(f"flyctl secrets import failed: {exc}. {_stored_text(result, plan)}") from None
    import_step.status, import_step.detail = DONE, f"one flyctl call, exit 0 after {completed.duration:.0f} s"
    await _audit(services, importer, operation_id, app, "fly.import.finished", secret=joined,
                 exit_code=completed.exit_code,
                 seconds=round(completed.duration, 1))

    fly = services.policy.fly
    health_url = fly.health_urls.get(app)
    await report(f"Checking machines, release, checks and digests of {app} for up to {fly.verify_timeout:.0f} s.")
    verification = await verify_deployment(services.flyctl, app, names, digests_before=plan.digests_to_leave,
                                           timeout=fly.verify_timeout, poll_interval=fly.verify_interval,
                                           health_url=health_url)
    result.digests_after = dict(verification.digests_after)
    await _record_rotation(services, operation_id, plan, result)
    await _audit(services, importer, operation_id, app,
                 "verification.passed" if verification.ok else "verification.failed", secret=joined,
                 problems=verification.problems, digests_after=verification.digests_after,
                 machines=verification.machines, release=verification.release_version)
    if not verification.ok:
        verify_step.status, verify_step.detail = FAILED, "; ".join(verification.problems)
        raise _Stop("verification failed: " + "; ".join(verification.problems))

    for name in names:
        digest = verification.digests_after.get(name)
        latest = await services.backups.latest(app, name)
        if digest is not None and latest is not None and latest.run_id == operation_id:
            await services.backups.mark_deployed(app=app, name=name, version=latest.version, fly_digest=digest)
    for secret in plan.secrets:
        if secret.name in plan.values:
            await _audit(services, importer, operation_id, app, "secret.imported", secret=secret.name,
                         change=secret.change.value, line=secret.line, digest_before=secret.fly_digest,
                         digest_after=verification.digests_after.get(secret.name))
    verify_step.status = DONE
    verify_step.detail = (f"{verification.machines} machine(s) started on release v{verification.release_version} "
                          "with passing checks; every secret set is listed as deployed")


async def _import_failed(services: ImportServices, importer: Importer, operation_id: str, plan: ImportPlan,
                         exc: FlyctlError, result: ImportResult) -> None:
    """Read Fly's digests after a failed import, for the outcome and the inventory."""
    _, import_step, _ = result.steps
    import_step.status = FAILED
    tail = [line for line in (exc.stdout + "\n" + exc.stderr).splitlines() if line.strip()][-OUTPUT_LINES:]
    import_step.detail = str(exc)
    logger.warning("import failed at flyctl operation=%s app=%s exit_code=%s", operation_id, plan.app, exc.exit_code)
    try:
        after = {secret.name: secret.digest for secret in await services.flyctl.list_secrets(plan.app)}
    except FlyctlError as read_error:
        logger.warning("cannot read secrets after a failed import operation=%s error=%s", operation_id, read_error)
        after = None
    if after is not None:
        result.digests_after = {name: after.get(name) for name in plan.values}
        await _record_rotation(services, operation_id, plan, result)
    await _audit(services, importer, operation_id, plan.app, "fly.import.failed", secret=",".join(plan.values),
                 exit_code=exc.exit_code,
                 error=str(exc), output=tail,
                 stored=sorted(name for name in plan.values if _stored(result, plan, name)))


def _stored(result: ImportResult, plan: ImportPlan, name: str) -> bool:
    after = result.digests_after.get(name)
    return after is not None and after != plan.digests_before.get(name)


def _stored_text(result: ImportResult, plan: ImportPlan) -> str:
    stored = [name for name in plan.values if _stored(result, plan, name)]
    if stored:
        return (f"Fly reports a new digest for {', '.join(stored)}: those values are stored, but the rollout did "
                "not finish. Check the app before running the import again.")
    return "Fly still reports the old digests, so nothing was changed."


async def _record_rotation(services: ImportServices, operation_id: str, plan: ImportPlan,
                           result: ImportResult) -> None:
    """Record every value that reached Fly as rotated now, so the schedule restarts from today.

    NOTE: an inventory sync that reads the app during the rollout, before this runs, records
    the new digest as a change made outside secretbot. This call then records it as the
    import's, but that sync's audit record stays.
    """
    changed = {name: digest for name, digest in result.digests_after.items()
               if digest is not None and digest != plan.digests_before.get(name)}
    if changed:
        await services.inventory.record_rotation(app=plan.app, digests=changed, run_id=operation_id)


async def _audit(services: ImportServices, importer: Importer, operation_id: str, app: str, event: str, *,
                 secret: str | None = None, quiet: bool = False, **detail: Any) -> None:
    entry = audit.AuditEntry(
        event=event, actor=importer.actor, run_id=operation_id, app=app, secret=secret,
        detail={"os_user": importer.os_user, "hostname": importer.hostname, "source": importer.source,
                "reason": importer.reason, **detail})
    if not quiet:
        await audit.append(services.sessions, entry)
        return
    try:
        await audit.append(services.sessions, entry)
    except SecretbotError as exc:
        logger.error("audit record not written operation=%s event=%s error=%s", operation_id, event, exc)
