"""The Restore offer of an unset run: taken once, by the first click the database records.

A claim is a decision row on the unset run's backup step. The unique key on (run, step,
round) admits one row, as it does for approvals, so two clicks, in one process or in
several, start one restore.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage.models import Decision

logger = logging.getLogger(__name__)

# The action recorded for a Restore click; the same word as the lost runbook's restore choice.
RESTORE_ACTION = "restore"


@dataclass(frozen=True)
class RestoreClaim:
    user_id: str
    claimed_at: datetime


async def claim_restore(sessions: async_sessionmaker[AsyncSession], *, run_id: str, position: int,
                        user_id: str) -> bool:
    """Record `user_id`'s Restore click on step `position` of an unset run; return False if a claim exists."""
    try:
        async with sessions.begin() as session:
            session.add(Decision(run_id=run_id, position=position, round=0, user_id=user_id,
                                 decision=RESTORE_ACTION))
    except IntegrityError:
        return False
    logger.info("restore claimed run_id=%s user=%s", run_id, user_id)
    return True


async def restore_claim(sessions: async_sessionmaker[AsyncSession], *, run_id: str,
                        position: int) -> RestoreClaim | None:
    """Return the claim on an unset run's Restore offer, or None while it is open."""
    async with sessions() as session:
        row = await session.scalar(select(Decision).where(
            Decision.run_id == run_id, Decision.position == position, Decision.decision == RESTORE_ACTION))
    return RestoreClaim(user_id=row.user_id, claimed_at=row.decided_at) if row is not None else None


async def release_restore(sessions: async_sessionmaker[AsyncSession], *, run_id: str, position: int,
                          user_id: str) -> None:
    """Open the offer again after `user_id`'s claim could not start a restore run."""
    async with sessions.begin() as session:
        await session.execute(delete(Decision).where(
            Decision.run_id == run_id, Decision.position == position, Decision.decision == RESTORE_ACTION,
            Decision.user_id == user_id))
    logger.info("restore claim released run_id=%s user=%s", run_id, user_id)
