"""A record of Slack requests already handled, kept in the database so it survives restarts
and is shared by every bot process on the same database.

Slack retries an Events API delivery that was not acknowledged within 3 seconds up to
three times (at once, after 1 minute and after 5 minutes), each with a new timestamp and
signature but the same `event_id`. A replayed request, by contrast, repeats the exact
signature within the 5-minute timestamp window.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock, SystemClock
from bot.storage.models import SeenRequest

logger = logging.getLogger(__name__)

# Longer than Slack's last event retry (5 minutes after the first delivery) and the
# signature timestamp window (5 minutes), with a margin.
KEEP_FOR = timedelta(hours=1)
# Old keys are deleted on every this-many-th insert, which keeps the table small without
# a delete on every request.
PRUNE_EVERY = 200


class SeenRequests:
    """Records request keys in the database, in one transaction for all requests that arrive together.

    Every Slack request is recorded here before it is acknowledged. A transaction per
    request made concurrent requests queue for SQLite's single writer, whose busy handler
    sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so a burst of 200 clicks took
    seconds to acknowledge. Keys that arrive while a write is in progress wait for the
    next write and share it (group commit).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self.sessions = sessions
        self.clock = clock or SystemClock()
        self._inserts = 0
        self._waiting: list[tuple[str, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def first_time(self, key: str) -> bool:
        """Record `key`; return False if it was recorded before (by this or another process).

        Raises the database's error (SQLAlchemyError) when the write fails.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="seen-requests-writer")
        return await future

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                inserted = await self._insert(list(dict.fromkeys(key for key, _ in batch)))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which reports it
                for _key, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            claimed: set[str] = set()
            for key, future in batch:
                # The same key twice in one batch (a replay sent at once): only the first is new.
                first = key in inserted and key not in claimed
                claimed.add(key)
                if not future.done():
                    future.set_result(first)

    async def _insert(self, keys: list[str]) -> set[str]:
        """Insert the keys that are not recorded yet and return those."""
        now = self.clock.now()
        async with self.sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            # A Core statement: the ORM's unit of work costs more than the insert itself here.
            statement = (insert(SeenRequest).values([{"key": key, "seen_at": now} for key in keys])
                         .on_conflict_do_nothing().returning(SeenRequest.key))
            inserted = set((await session.execute(statement)).scalars())

        before, self._inserts = self._inserts, self._inserts + len(inserted)
        if self._inserts // PRUNE_EVERY > before // PRUNE_EVERY:
            async with self.sessions.begin() as session:
                result = await session.execute(delete(SeenRequest).where(SeenRequest.seen_at < now - KEEP_FOR))
            logger.debug("pruned seen requests rows=%d", result.rowcount)  # type: ignore[attr-defined]
        return inserted
