"""The reminder ledger lets one process post each channel's reminder per day, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.reminders.ledger import CLAIM_LEASE, Outcome, ReminderLedger
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import ReminderPost

CHANNEL = "C0123OPS"
DAY = date(2026, 3, 9)
START = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield normalize_database_url(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Three engines on one database, standing for three bot processes."""
    engines = [create_engine(database_url) for _ in range(3)]
    await migrate(engines[0])
    try:
        yield engines
    finally:
        for engine in engines:
            await engine.dispose()


def ledger(engine: AsyncEngine, owner: str, clock: FixedClock) -> ReminderLedger:
    return ReminderLedger(sessions=create_session_factory(engine), owner=owner, clock=clock)


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[ReminderPost]:
    async with sessions() as session:
        return list(await session.scalars(select(ReminderPost)))


async def test_simultaneous_claims_one_wins(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    ledgers = [ledger(engine, f"host:{index}", clock) for index, engine in enumerate(engines)]

    results = await asyncio.gather(*(item.claim(channel=CHANNEL, local_date=DAY) for item in ledgers))

    assert [result.outcome.won for result in results].count(True) == 1
    assert len(await rows(create_session_factory(engines[0]))) == 1


async def test_loser_sees_holder(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    first = await ledger(engines[0], "host:1", clock).claim(channel=CHANNEL, local_date=DAY)
    second = await ledger(engines[1], "host:2", clock).claim(channel=CHANNEL, local_date=DAY)
    assert first.outcome is Outcome.CLAIMED
    assert second.outcome is Outcome.HELD
    assert second.holder == "host:1"


async def test_other_channel_and_day_independent(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    first = ledger(engines[0], "host:1", clock)
    await first.claim(channel=CHANNEL, local_date=DAY)
    other_channel = await first.claim(channel="C0OTHER", local_date=DAY)
    next_day = await first.claim(channel=CHANNEL, local_date=DAY + timedelta(days=1))
    assert other_channel.outcome is Outcome.CLAIMED
    assert next_day.outcome is Outcome.CLAIMED


async def test_stale_claim_taken_over(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    await ledger(engines[0], "host:dead", clock).claim(channel=CHANNEL, local_date=DAY)
    clock.current = START + CLAIM_LEASE + timedelta(seconds=1)

    result = await ledger(engines[1], "host:2", clock).claim(channel=CHANNEL, local_date=DAY)

    assert result.outcome is Outcome.TAKEN_OVER
    assert result.holder == "host:dead"
    assert result.claim is not None
    assert result.claim.owner == "host:2"


async def test_fresh_claim_not_taken_over(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    await ledger(engines[0], "host:1", clock).claim(channel=CHANNEL, local_date=DAY)
    clock.current = START + CLAIM_LEASE - timedelta(seconds=1)
    result = await ledger(engines[1], "host:2", clock).claim(channel=CHANNEL, local_date=DAY)
    assert result.outcome is Outcome.HELD


async def test_simultaneous_takeovers_one_wins(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    await ledger(engines[0], "host:dead", clock).claim(channel=CHANNEL, local_date=DAY)
    clock.current = START + CLAIM_LEASE * 2
    takers = [ledger(engines[1], "host:2", clock), ledger(engines[2], "host:3", clock)]

    results = await asyncio.gather(*(taker.claim(channel=CHANNEL, local_date=DAY) for taker in takers))

    assert sorted(result.outcome.value for result in results) == sorted(
        [Outcome.TAKEN_OVER.value, Outcome.HELD.value])


async def test_posted_day_not_reposted(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    poster = ledger(engines[0], "host:1", clock)
    claimed = await poster.claim(channel=CHANNEL, local_date=DAY)
    assert claimed.claim is not None
    assert await poster.mark_posted(claimed.claim, message_ts="1700000000.000100", items=3)
    clock.current = START + CLAIM_LEASE * 10

    again_same = await poster.claim(channel=CHANNEL, local_date=DAY)
    again_other = await ledger(engines[1], "host:2", clock).claim(channel=CHANNEL, local_date=DAY)

    assert again_same.outcome is Outcome.POSTED
    assert again_other.outcome is Outcome.POSTED


async def test_posted_row_records_message(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    poster = ledger(engines[0], "host:1", clock)
    claimed = await poster.claim(channel=CHANNEL, local_date=DAY)
    assert claimed.claim is not None
    await poster.mark_posted(claimed.claim, message_ts="1700000000.000100", items=3)
    [row] = await rows(create_session_factory(engines[0]))
    assert row.status == "posted"
    assert row.message_ts == "1700000000.000100"
    assert row.items == 3
    assert row.local_date == "2026-03-09"
    assert row.posted_at == START


async def test_empty_day_not_rechecked(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    poster = ledger(engines[0], "host:1", clock)
    claimed = await poster.claim(channel=CHANNEL, local_date=DAY)
    assert claimed.claim is not None
    assert await poster.mark_empty(claimed.claim)
    clock.current = START + CLAIM_LEASE * 10
    assert (await ledger(engines[1], "host:2", clock).claim(channel=CHANNEL, local_date=DAY)).outcome is Outcome.EMPTY


async def test_overtaken_claim_cannot_mark_posted(engines: list[AsyncEngine]) -> None:
    clock = FixedClock(START)
    slow = ledger(engines[0], "host:slow", clock)
    slow_claim = await slow.claim(channel=CHANNEL, local_date=DAY)
    clock.current = START + CLAIM_LEASE * 2
    taker = await ledger(engines[1], "host:2", clock).claim(channel=CHANNEL, local_date=DAY)
    assert slow_claim.claim is not None
    assert taker.claim is not None

    assert not await slow.mark_posted(slow_claim.claim, message_ts="1.1", items=1)
    assert await ledger(engines[1], "host:2", clock).mark_posted(taker.claim, message_ts="2.2", items=1)
