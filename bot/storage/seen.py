"""A record of Slack requests already handled, kept in the database so it survives restarts
and is shared by every bot process on the same database.

Slack retries an Events API delivery that was not acknowledged within 3 seconds up to
three times (at once, after 1 minute and after 5 minutes), each with a new timestamp and
signature but the same `event_id`. A replayed request, by contrast, repeats the exact
signature within the 5-minute timestamp window.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self.sessions = sessions
        self.clock = clock or SystemClock()
        self._inserts = 0

    async def first_time(self, key: str) -> bool:
        """Record `key`; return False if it was recorded before (by this or another process)."""
        now = self.clock.now()
        try:
            async with self.sessions.begin() as session:
                session.add(SeenRequest(key=key, seen_at=now))
        except IntegrityError:
            return False

        self._inserts += 1
        if self._inserts % PRUNE_EVERY == 0:
            async with self.sessions.begin() as session:
                result = await session.execute(delete(SeenRequest).where(SeenRequest.seen_at < now - KEEP_FOR))
            logger.debug("pruned seen requests rows=%d", result.rowcount)  # type: ignore[attr-defined]
        return True
