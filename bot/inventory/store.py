"""Reads and writes of the secret inventory: statuses, rotations, recorded dates and snoozes.

Every change a person makes here is written together with its audit record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.clock import Clock, SystemClock
from bot.errors import CommandError
from bot.inventory.schedule import Assessor, SecretStatus
from bot.inventory.status_cache import StatusCache, StatusOverview
from bot.inventory.status_rows import STATUS_QUERY, StatusColumns, read_open_runs
from bot.inventory.urgency import by_urgency
from bot.policy import Policy
from bot.shared_reads import JoinedCalls
from bot.storage.models import InventorySecret

logger = logging.getLogger(__name__)

# Rows assessed between two yields to the event loop in a status read. At about 10 µs per
# row (the cost measured for 10,000 secrets in BENCHMARKS.md) that is an estimated 5 ms, so
# a read of 10,000 secrets holds back a waiting acknowledgement only briefly.
ROWS_PER_SLICE = 500


class InventoryStore:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], policy: Policy,
                 clock: Clock | None = None) -> None:
        self.sessions = sessions
        self.policy = policy
        self.clock = clock or SystemClock()
        # Shared reads in progress by app (None for all apps). A `/secret status` typed by
        # many people at once then costs one read, not one each: reading 10,000 rows takes
        # 0.3 s of the event loop that also acknowledges Slack's requests.
        self._shared_reads: JoinedCalls[str | None, list[SecretStatus]] = JoinedCalls()
        self._status_cache = StatusCache(sessions)

    async def statuses(self, *, app: str | None = None, shared: bool = False) -> list[SecretStatus]:
        """Return every secret present on Fly (of one app, or all), ordered by app and name.

        With `shared`, a call made while another shared read of the same app is in progress
        returns that read's result, which may miss a change committed after the read
        began. Only views that show the list pass it; anything that acts on the result, or
        reads back its own write, reads afresh.
        """
        if not shared:
            return await self._read_statuses(app)
        return list(await self._shared_reads.get(app, lambda: self._read_statuses(app)))

    async def status_overview(self, *, app: str | None = None, limit: int) -> StatusOverview:
        """Return how many secrets present on Fly (of one app, or all) are in each state, and the `limit` most urgent.

        The result equals StatusOverview.from_statuses(by_urgency(statuses(app=app)), limit=limit),
        but only the shown rows are assessed on a call that finds the inventory unchanged
        since the last one (see bot.inventory.status_cache).
        """
        now = self.clock.now()
        overview = await self._status_cache.overview(app=app, policy=self.policy, now=now, limit=limit)
        if overview is None:
            overview = StatusOverview.from_statuses(by_urgency(await self._read_statuses(app, now)), limit=limit)
        return overview

    async def _read_statuses(self, app: str | None, now: datetime | None = None) -> list[SecretStatus]:
        # Core rows of the columns assess reads, not ORM entities: at 10,000 secrets, loading
        # entities took about half of /secret status, in attribute instrumentation and in
        # UTCDateTime's conversion of each timestamp (see status_rows.UTCTimestamp).
        assessor = Assessor(self.policy, now or self.clock.now())
        query = STATUS_QUERY
        if app is not None:
            query = query.where(InventorySecret.app == app)
        statuses = []
        async with self.sessions() as session:
            open_runs = await read_open_runs(session, app)
            # Each row is assessed as it is read, so no list of 10,000 intermediate rows is kept
            # alive long enough for the garbage collector to scan it.
            for count, row in enumerate(await session.execute(query), start=1):
                columns = StatusColumns._make(row)
                statuses.append(assessor.assess(columns, open_runs.get((columns.app, columns.name))))
                if count % ROWS_PER_SLICE == 0:
                    # Let the event loop acknowledge waiting requests between slices.
                    await asyncio.sleep(0)
        return statuses

    async def get(self, app: str, name: str) -> InventorySecret | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(InventorySecret).where(InventorySecret.app == app, InventorySecret.name == name))

    async def record_rotation(self, *, app: str, digests: Mapping[str, str | None], run_id: str) -> None:
        """Mark secrets as rotated now by a secretbot run, with the digests Fly reported after it.

        Safe to repeat: a step that is run again after a restart writes the same values.
        """
        now = self.clock.now()
        try:
            await self._write_rotation(app=app, digests=digests, run_id=run_id, now=now)
        except IntegrityError:
            # An inventory sync added the row for a new secret between this read and insert,
            # so the second attempt finds that row and updates it.
            logger.info("inventory rotation raced a sync; retrying run_id=%s app=%s", run_id, app)
            await self._write_rotation(app=app, digests=digests, run_id=run_id, now=now)
        logger.info("inventory rotation recorded run_id=%s app=%s secrets=%s", run_id, app, ",".join(digests))

    async def _write_rotation(self, *, app: str, digests: Mapping[str, str | None], run_id: str,
                              now: datetime) -> None:
        async with self.sessions.begin() as session:
            for name, digest in digests.items():
                row = await _row_for_update(session, app, name, now)
                row.last_rotated_at = now
                row.rotation_source = "secretbot"
                row.last_run_id = run_id
                row.changed_outside_at = None
                row.snoozed_until = None
                row.snoozed_by = None
                row.snooze_reason = None
                if digest is not None:
                    row.digest = digest
                    # Fly listed the secret with this digest, so it is present even if a sync saw it removed.
                    row.removed_at = None
                    row.last_seen_at = now

    async def record_policy(self, *, app: str, name: str, priority: str, value_source: str) -> None:
        """Keep the policy chosen for a secret that secretbot added, for its schedule and reminders.

        The run that added the secret writes the audit record. A [secrets.NAME] table in
        secretbot.toml still takes precedence over what is stored here.
        """
        now = self.clock.now()
        async with self.sessions.begin() as session:
            row = await _row_for_update(session, app, name, now)
            row.priority = priority
            row.value_source = value_source
        logger.info("inventory policy recorded app=%s secret=%s priority=%s source=%s", app, name, priority,
                    value_source)

    async def record_removed(self, *, app: str, names: Sequence[str], run_id: str) -> None:
        """Mark secrets that a secretbot run removed from Fly; the rows and their policy stay for a restore."""
        now = self.clock.now()
        async with self.sessions.begin() as session:
            rows = await session.scalars(select(InventorySecret).where(
                InventorySecret.app == app, InventorySecret.name.in_(list(names)), InventorySecret.removed_at.is_(None)))
            for row in rows:
                row.removed_at = now
                row.last_run_id = run_id
        logger.info("inventory removal recorded run_id=%s app=%s secrets=%s", run_id, app, ",".join(names))

    async def record_value_age(self, *, app: str, name: str, created_at: datetime, run_id: str) -> None:
        """Date the last rotation to when a restored value was first set, not to the restore.

        Putting an old value back does not make it new, so its schedule keeps counting from
        the backup's creation.
        """
        async with self.sessions.begin() as session:
            row = await session.scalar(
                select(InventorySecret).where(InventorySecret.app == app, InventorySecret.name == name))
            if row is None:
                return
            row.last_rotated_at = created_at
            row.last_run_id = run_id
        logger.info("inventory value age recorded run_id=%s app=%s secret=%s", run_id, app, name)

    async def record_date(self, *, app: str, name: str, rotated_at: datetime, actor: str) -> None:
        """Record the real date of the last rotation, given by an operator, with an audit record."""

        async def change(session: AsyncSession) -> None:
            row = await _listed_row(session, app, name)
            row.last_rotated_at = rotated_at
            row.rotation_source = "operator"

        entry = audit.AuditEntry(event="secret.rotation_date_recorded", actor=actor, app=app, secret=name,
                                 detail={"rotated_at": rotated_at.isoformat()})
        await audit.append_with(self.sessions, [entry], change)
        logger.info("rotation date recorded app=%s secret=%s user=%s", app, name, actor)

    async def snooze(self, *, app: str, name: str, days: int, reason: str | None, actor: str) -> datetime:
        """Leave a secret out of the reminder for `days` days; return when the snooze ends."""
        until = self.clock.now() + timedelta(days=days)

        async def change(session: AsyncSession) -> None:
            row = await _listed_row(session, app, name)
            row.snoozed_until = until
            row.snoozed_by = actor
            row.snooze_reason = reason

        entry = audit.AuditEntry(event="secret.snoozed", actor=actor, app=app, secret=name,
                                 detail={"days": days, "until": until.isoformat(), "reason": reason})
        await audit.append_with(self.sessions, [entry], change)
        logger.info("reminder snoozed app=%s secret=%s days=%d user=%s", app, name, days, actor)
        return until


async def _listed_row(session: AsyncSession, app: str, name: str) -> InventorySecret:
    """Return the inventory row of a secret that the last sync saw on Fly, or raise CommandError."""
    row = await session.scalar(
        select(InventorySecret).where(InventorySecret.app == app, InventorySecret.name == name))
    if row is None or row.removed_at is not None:
        raise CommandError(f"{name} is not set on {app} according to the last `flyctl secrets list`, "
                           "so nothing was recorded; set it on Fly first, or check the app")
    return row


async def _row_for_update(session: AsyncSession, app: str, name: str, now: datetime) -> InventorySecret:
    """Return the inventory row for a secret, adding one if no sync has seen it yet."""
    row = await session.scalar(
        select(InventorySecret).where(InventorySecret.app == app, InventorySecret.name == name))
    if row is None:
        row = InventorySecret(app=app, name=name, first_seen_at=now, last_seen_at=now, rotation_source="unknown")
        session.add(row)
    return row
