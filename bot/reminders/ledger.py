"""The ledger of daily reminders, which lets exactly one process post each channel's reminder per day.

A process claims a (channel, local date) by inserting its row in `reminder_posts` before
it posts anything. The unique key on (channel, local_date) makes every other insert fail,
whether it comes from a second `secretbot serve`, a `secretbot remind` run or the same
process after a restart, so the loser does nothing. After posting, the winner marks the
row `posted`, or `empty` when nothing was due and no all-clear is configured.

A claim still `claimed` after the lease belongs to a process that died or failed before
posting. Another process may take it over with a conditional UPDATE, and only the one
whose UPDATE changed the row posts. A post that failed is left to expire the same way,
so it is retried after the lease.

NOTE: a process that dies after Slack accepted the post but before the row is marked
`posted` leaves a claim that another process takes over, so that day's reminder is
posted twice. Slack offers no idempotency key for chat.postMessage to prevent this.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock, SystemClock
from bot.storage.models import ReminderPost

logger = logging.getLogger(__name__)

# Posting a large reminder, rate-limit waits included, takes far less, so a live poster
# is not taken over. A crash delays the reminder by at most this much.
CLAIM_LEASE = timedelta(minutes=10)

CLAIMED = "claimed"
POSTED = "posted"
EMPTY = "empty"


class Outcome(str, Enum):
    """The result of trying to claim a day's reminder."""

    CLAIMED = "claimed"
    TAKEN_OVER = "taken over"
    POSTED = "already posted"
    EMPTY = "already checked with nothing due"
    HELD = "claimed by another process"

    @property
    def won(self) -> bool:
        return self in (Outcome.CLAIMED, Outcome.TAKEN_OVER)


@dataclass(frozen=True)
class Claim:
    """The row this process holds for one channel and local date."""

    id: int
    channel: str
    local_date: date
    owner: str
    claimed_at: datetime


@dataclass(frozen=True)
class ClaimResult:
    outcome: Outcome
    claim: Claim | None = None
    # The claimer of the row when another process has it or finished it.
    holder: str | None = None


def process_identity() -> str:
    """Return `host:pid`, which names this process in the ledger."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


class ReminderLedger:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], owner: str | None = None,
                 clock: Clock | None = None, lease: timedelta = CLAIM_LEASE) -> None:
        self.sessions = sessions
        self.owner = owner or process_identity()
        self.clock = clock or SystemClock()
        self.lease = lease

    async def get(self, *, channel: str, local_date: date) -> ReminderPost | None:
        async with self.sessions() as session:
            return await session.scalar(select(ReminderPost).where(
                ReminderPost.channel == channel, ReminderPost.local_date == local_date.isoformat()))

    async def claim(self, *, channel: str, local_date: date) -> ClaimResult:
        """Claim the reminder of `channel` for `local_date`, or report who has it."""
        existing = await self.get(channel=channel, local_date=local_date)
        if existing is None:
            now = self.clock.now()
            try:
                async with self.sessions.begin() as session:
                    row = ReminderPost(channel=channel, local_date=local_date.isoformat(), status=CLAIMED,
                                       claimed_by=self.owner, claimed_at=now, items=0)
                    session.add(row)
                    await session.flush()
                    row_id = row.id
            except IntegrityError:
                # Another process inserted the same (channel, local_date) first.
                existing = await self.get(channel=channel, local_date=local_date)
                if existing is None:
                    raise
            else:
                logger.info("reminder claimed channel=%s date=%s owner=%s", channel, local_date, self.owner)
                return ClaimResult(Outcome.CLAIMED, Claim(id=row_id, channel=channel, local_date=local_date,
                                                          owner=self.owner, claimed_at=now))
        return await self._settle(existing, local_date)

    async def _settle(self, existing: ReminderPost, local_date: date) -> ClaimResult:
        if existing.status == POSTED:
            return ClaimResult(Outcome.POSTED, holder=existing.claimed_by)
        if existing.status == EMPTY:
            return ClaimResult(Outcome.EMPTY, holder=existing.claimed_by)

        now = self.clock.now()
        if now - existing.claimed_at < self.lease:
            return ClaimResult(Outcome.HELD, holder=existing.claimed_by)

        # The old claimer and claim time in the WHERE clause make the takeover a
        # compare-and-set: of two processes taking over at once, one UPDATE matches.
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(ReminderPost)
                .where(ReminderPost.id == existing.id, ReminderPost.status == CLAIMED,
                       ReminderPost.claimed_by == existing.claimed_by,
                       ReminderPost.claimed_at == existing.claimed_at,
                       ReminderPost.claimed_at <= now - self.lease)
                .values(claimed_by=self.owner, claimed_at=now)
                .execution_options(synchronize_session=False))
        if _row_count(result) != 1:
            current = await self.get(channel=existing.channel, local_date=local_date)
            if current is not None and current.status in (POSTED, EMPTY):
                return await self._settle(current, local_date)
            return ClaimResult(Outcome.HELD, holder=current.claimed_by if current else None)
        logger.warning("reminder claim taken over channel=%s date=%s owner=%s previous=%s claimed_at=%s",
                       existing.channel, local_date, self.owner, existing.claimed_by,
                       existing.claimed_at.isoformat())
        return ClaimResult(Outcome.TAKEN_OVER, Claim(id=existing.id, channel=existing.channel,
                                                     local_date=local_date, owner=self.owner, claimed_at=now),
                           holder=existing.claimed_by)

    async def mark_posted(self, claim: Claim, *, message_ts: str, items: int) -> bool:
        """Record that the reminder was posted; return False if the claim was taken over meanwhile."""
        return await self._finish(claim, status=POSTED, message_ts=message_ts, items=items)

    async def mark_empty(self, claim: Claim) -> bool:
        """Record that nothing was due, so no other process checks this day again."""
        return await self._finish(claim, status=EMPTY, message_ts=None, items=0)

    async def _finish(self, claim: Claim, *, status: str, message_ts: str | None, items: int) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(ReminderPost)
                .where(ReminderPost.id == claim.id, ReminderPost.status == CLAIMED,
                       ReminderPost.claimed_by == claim.owner)
                .values(status=status, posted_at=self.clock.now(), message_ts=message_ts, items=items)
                .execution_options(synchronize_session=False))
        if _row_count(result) != 1:
            logger.error("reminder claim was taken over before it was marked %s channel=%s date=%s owner=%s",
                         status, claim.channel, claim.local_date, claim.owner)
            return False
        logger.info("reminder marked %s channel=%s date=%s items=%d ts=%s", status, claim.channel,
                    claim.local_date, items, message_ts or "-")
        return True


def _row_count(result: object) -> int:
    return result.rowcount if isinstance(result, CursorResult) else -1
