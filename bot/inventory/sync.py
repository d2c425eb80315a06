"""The inventory sync: reads each configured app's secrets from Fly and records what changed.

A sync lists names, digests and deployment status with `flyctl secrets list --json` and
compares them with the inventory table. It records secrets that appeared, were removed,
or got a new digest that no secretbot run made ("changed outside secretbot", which counts
as a rotation). Each of those changes is written together with its audit record.

One app's failure (flyctl error, unknown JSON shape, database error) is reported in its
`AppSync` and leaves that app's rows as they were, so the other apps still sync and no
secret is marked removed because a listing failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.clock import Clock, SystemClock
from bot.errors import SecretbotError, StorageError
from bot.flyctl import FlyctlClient, FlySecret
from bot.inventory.schedule import STAGED_STATUS
from bot.policy import Policy
from bot.storage.models import InventoryApp, InventorySecret, RunSecret

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppSync:
    """The result of syncing one app: secret names by what happened to them, or the error."""

    app: str
    secrets: int = 0
    appeared: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed_outside: tuple[str, ...] = ()
    staged: tuple[str, ...] = ()
    error: str | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """Describe the result in one line, e.g. for the command line."""
        if self.error is not None:
            return f"{self.app}: sync failed: {self.error}"
        return (
            f"{self.app}: {self.secrets} secrets, {len(self.appeared)} appeared, {len(self.removed)} removed, "
            f"{len(self.changed_outside)} changed outside secretbot, {len(self.staged)} staged"
        )


@dataclass
class _Changes:
    """Secret names by kind of change, and their audit entries, from one transaction (rebuilt on a retry)."""

    appeared: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed_outside: list[str] = field(default_factory=list)
    entries: list[audit.AuditEntry] = field(default_factory=list)


class InventorySync:
    """Syncs the inventory table with the secrets each configured Fly app has."""

    def __init__(self, *, flyctl: FlyctlClient, sessions: async_sessionmaker[AsyncSession], policy: Policy,
                 clock: Clock | None = None) -> None:
        self.flyctl = flyctl
        self.sessions = sessions
        self.policy = policy
        self.clock = clock or SystemClock()
        # Bounds the flyctl processes of all syncs of this object together, including
        # several sync_all calls that overlap.
        self._flyctl_slots = asyncio.Semaphore(policy.inventory.sync_concurrency)

    async def sync_all(self, apps: Iterable[str] | None = None) -> list[AppSync]:
        """Sync every configured app (or the given ones) at once, in the order given."""
        selected = list(dict.fromkeys(self.policy.fly.apps if apps is None else apps))
        started = time.monotonic()
        results = await asyncio.gather(*(self._sync_guarded(app) for app in selected))

        logger.info("inventory sync finished apps=%d failed=%d duration=%.1fs", len(results), len(failed_apps(results)),
                    time.monotonic() - started)
        return list(results)

    async def _sync_guarded(self, app: str) -> AppSync:
        # sync_app reports the errors it expects. Anything else is a bug, and it must
        # still not stop the other apps of a sync_all.
        try:
            return await self.sync_app(app)
        except Exception as exc:
            logger.exception("inventory sync crashed app=%s", app)
            return AppSync(app=app, error=f"unexpected {type(exc).__name__}: {exc}")

    async def sync_app(self, app: str) -> AppSync:
        """List one app's secrets on Fly and record appearances, removals and outside changes."""
        started = time.monotonic()
        try:
            async with self._flyctl_slots:
                listing = await self.flyctl.list_secrets(app)
        except SecretbotError as exc:
            logger.warning("inventory sync failed app=%s error=%s", app, exc)
            return AppSync(app=app, error=str(exc), duration=time.monotonic() - started)

        secrets = {secret.name: secret for secret in listing}
        now = self.clock.now()
        try:
            changes = await self._record(app, secrets, now)
        except StorageError as exc:
            # append_with already retries an IntegrityError, which is how another process
            # inserting the same (app, name) shows. Other conflicts with a concurrent writer
            # (SQLite's "database is locked" after its busy timeout, a PostgreSQL deadlock)
            # arrive here. The retry reads what the other writer stored, so it records only
            # what is still new.
            logger.info("inventory sync retrying after a database conflict app=%s error=%s", app, exc)
            try:
                changes = await self._record(app, secrets, now)
            except StorageError as retry_exc:
                logger.warning("inventory sync failed app=%s error=%s", app, retry_exc)
                return AppSync(app=app, error=str(retry_exc), duration=time.monotonic() - started)

        result = AppSync(
            app=app,
            secrets=len(secrets),
            appeared=tuple(changes.appeared),
            removed=tuple(changes.removed),
            changed_outside=tuple(changes.changed_outside),
            staged=tuple(name for name, secret in sorted(secrets.items()) if _is_staged(secret)),
            duration=time.monotonic() - started,
        )
        logger.info(
            "inventory synced app=%s secrets=%d appeared=%d removed=%d changed_outside=%d staged=%d duration=%.2fs",
            app, result.secrets, len(result.appeared), len(result.removed), len(result.changed_outside),
            len(result.staged), result.duration,
        )
        return result

    async def run_periodic(self, stop: asyncio.Event) -> None:
        """Sync every app now and then every `inventory.sync_interval` seconds until `stop` is set.

        With an interval of 0 it syncs once and then only waits for `stop`.
        """
        interval = self.policy.inventory.sync_interval
        logger.info("inventory sync started apps=%d interval=%gs", len(self.policy.fly.apps), interval)
        while not stop.is_set():
            try:
                await self.sync_all()
            except Exception:
                # The loop must outlive one failed round, because the next round retries.
                logger.exception("inventory sync round failed")
            if interval <= 0:
                await stop.wait()
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
        logger.info("inventory sync stopped")

    async def _record(self, app: str, secrets: dict[str, FlySecret], now: datetime) -> _Changes:
        entries: list[audit.AuditEntry] = []
        changes = _Changes()

        async def change(session: AsyncSession) -> None:
            nonlocal changes
            changes = await _apply_listing(session, app=app, secrets=secrets, now=now)
            # append_with appends the entries it was given after `change` returns, so the
            # list is filled here, inside the same transaction as the row changes. A retried
            # transaction calls `change` again, which replaces both.
            entries[:] = changes.entries

        await audit.append_with(self.sessions, entries, change)
        return changes


async def _apply_listing(session: AsyncSession, *, app: str, secrets: dict[str, FlySecret],
                         now: datetime) -> _Changes:
    """Bring one app's inventory rows in line with its listing, and return what changed."""
    # Written before anything is read: a second sync of the same app waits here (row lock on
    # PostgreSQL, the write lock on SQLite) until the first commits, then reads its result.
    marked = await session.execute(update(InventoryApp).where(InventoryApp.app == app).values(synced_at=now))
    if marked.rowcount == 0:  # type: ignore[attr-defined]
        # Two first syncs collide on the primary key; audit.append_with retries the loser.
        session.add(InventoryApp(app=app, synced_at=now))
        await session.flush()

    rows = {row.name: row for row in await session.scalars(select(InventorySecret).where(InventorySecret.app == app))}
    first_sync = not rows
    open_runs = {
        name: run_id
        for name, run_id in await session.execute(
            select(RunSecret.name, RunSecret.run_id).where(RunSecret.app == app, RunSecret.open.is_(True)))
    }
    # The digest the latest run of each secret left, so that a run's change is recognised
    # even if the sync reads it before the run's verify step has recorded the rotation.
    # Only the latest counts: an older run's value put back by hand is an outside change.
    latest_runs: dict[str, tuple[str | None, str]] = {}
    for name, digest, run_id in await session.execute(
            select(RunSecret.name, RunSecret.digest_after, RunSecret.run_id)
            .where(RunSecret.app == app, RunSecret.digest_after.is_not(None))
            .order_by(RunSecret.id)):
        latest_runs[name] = (digest, run_id)

    changes = _Changes()
    for name, secret in sorted(secrets.items()):
        row = rows.get(name)
        if row is None:
            session.add(InventorySecret(app=app, name=name, digest=secret.digest, fly_status=secret.status,
                                        first_seen_at=now, last_seen_at=now, last_rotated_at=None,
                                        rotation_source="unknown"))
            changes.appeared.append(name)
            if not first_sync:
                changes.entries.append(_entry("inventory.appeared", app, name, digest=secret.digest,
                                              fly_status=secret.status, returned=False))
            continue

        if row.removed_at is not None:
            changes.appeared.append(name)
            changes.entries.append(_entry("inventory.appeared", app, name, digest=secret.digest,
                                          fly_status=secret.status, returned=True,
                                          removed_at=row.removed_at.isoformat()))
            row.removed_at = None

        row.last_seen_at = now
        row.fly_status = secret.status
        if row.digest is None:
            # A row that a run or an operator created before any sync saw the secret.
            row.digest = secret.digest
        elif row.digest != secret.digest:
            latest = latest_runs.get(name)
            latest_run_id = latest[1] if latest is not None and latest[0] == secret.digest else None
            _record_new_digest(row, secret, now=now, open_run_id=open_runs.get(name), run_id=latest_run_id,
                               changes=changes)

    for name, row in sorted(rows.items()):
        if name in secrets or row.removed_at is not None:
            continue
        row.removed_at = now
        changes.removed.append(name)
        changes.entries.append(_entry("inventory.removed", app, name, digest=row.digest,
                                      last_seen_at=row.last_seen_at.isoformat()))

    if first_sync and changes.appeared:
        # The first sync of an app finds every secret at once, so one summary record is written.
        changes.entries.append(audit.AuditEntry(
            event="inventory.appeared", app=app,
            detail={"first_sync": True, "count": len(changes.appeared),
                    "digests": {name: secrets[name].digest for name in changes.appeared}}))
    return changes


def _record_new_digest(row: InventorySecret, secret: FlySecret, *, now: datetime, open_run_id: str | None,
                       run_id: str | None, changes: _Changes) -> None:
    """Record a digest that differs from the stored one, as a run's rotation or an outside change."""
    if open_run_id is not None:
        # The run's verify step records the rotation with the digest it reads. A sync that
        # runs between flyctl's import and that step leaves the row to it.
        logger.info("inventory digest change left to its run app=%s secret=%s run_id=%s",
                    row.app, row.name, open_run_id)
        return

    if run_id is not None:
        # A finished run set this value but its rotation was never recorded (it stopped
        # between the digest read and the inventory write).
        logger.info("inventory rotation recorded from run digests app=%s secret=%s run_id=%s",
                    row.app, row.name, run_id)
        row.rotation_source = "secretbot"
        row.last_run_id = run_id
        row.changed_outside_at = None
    else:
        logger.warning("secret changed outside secretbot app=%s secret=%s", row.app, row.name)
        changes.changed_outside.append(row.name)
        changes.entries.append(_entry("inventory.changed_outside", row.app, row.name, digest_before=row.digest,
                                      digest_after=secret.digest, noticed_at=now.isoformat()))
        row.rotation_source = "outside"
        row.changed_outside_at = now

    # A new value restarts the schedule, and a snooze of the old value's reminder no longer applies.
    row.digest = secret.digest
    row.last_rotated_at = now
    row.snoozed_until = None
    row.snoozed_by = None
    row.snooze_reason = None


def _entry(event: str, app: str, name: str, **detail: object) -> audit.AuditEntry:
    return audit.AuditEntry(event=event, app=app, secret=name, detail=detail)


def _is_staged(secret: FlySecret) -> bool:
    return (secret.status or "").lower() == STAGED_STATUS


def failed_apps(results: Sequence[AppSync]) -> list[str]:
    """Return the apps whose sync failed, in the order of the results."""
    return [result.app for result in results if not result.ok]
