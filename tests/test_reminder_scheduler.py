"""send_once and the reminder loop against a real SQLite database and the Slack stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.inventory import InventoryStore
from bot.policy import Policy, ReminderSettings, SlackSettings, builtin_policy
from bot.reminders.ledger import CLAIM_LEASE, ReminderLedger
from bot.reminders.scheduler import ReminderPostError, ReminderScheduler
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import InventorySecret, ReminderPost
from handlers.reminder_poster import SlackReminderPoster
from tests.standins.slack_api import SlackStandin

CHANNEL = "C0123OPS"
NOW = datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
TODAY = date(2026, 3, 9)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(channels=[CHANNEL]) as stand_in:
        yield stand_in


def policy_with(**reminders: object) -> Policy:
    settings = ReminderSettings(time=time(9, 0), timezone="UTC", **reminders)  # type: ignore[arg-type]
    return replace(builtin_policy(), slack=SlackSettings(channel=CHANNEL), reminders=settings)


async def seed(sessions: async_sessionmaker[AsyncSession], *, age_days: int, names: tuple[str, ...]) -> None:
    async with sessions.begin() as session:
        for name in names:
            session.add(InventorySecret(app="hotel-voice-bot", name=name, digest="d", fly_status="Deployed",
                                        first_seen_at=NOW - timedelta(days=400), last_seen_at=NOW,
                                        last_rotated_at=NOW - timedelta(days=age_days), rotation_source="secretbot"))


def scheduler(engine: AsyncEngine, slack: SlackStandin, *, owner: str, clock: FixedClock,
              policy: Policy | None = None, **options: object) -> ReminderScheduler:
    policy = policy or policy_with()
    sessions = create_session_factory(engine)
    return ReminderScheduler(
        store=InventoryStore(sessions=sessions, policy=policy, clock=clock),
        ledger=ReminderLedger(sessions=sessions, owner=owner, clock=clock),
        poster=SlackReminderPoster(AsyncWebClient(token="xoxb-test", base_url=slack.base_url)),
        policy=policy, clock=clock, **options)  # type: ignore[arg-type]


async def ledger_rows(engine: AsyncEngine) -> list[ReminderPost]:
    async with create_session_factory(engine)() as session:
        return list(await session.scalars(select(ReminderPost)))


async def test_send_once_posts_and_records(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET", "ENCRYPTION_KEY"))
    result = await scheduler(engine, slack, owner="host:1", clock=FixedClock(NOW)).send_once(local_date=TODAY)
    [row] = await ledger_rows(engine)
    assert result.outcome == "posted"
    assert row.status == "posted"
    assert row.items == 2
    assert row.message_ts == result.message_ts
    assert len(slack.messages(CHANNEL)) == 1


async def test_second_send_not_posted(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))
    clock = FixedClock(NOW)
    await scheduler(engine, slack, owner="host:1", clock=clock).send_once(local_date=TODAY)
    clock.current = NOW + CLAIM_LEASE * 3
    again = await scheduler(engine, slack, owner="host:2", clock=clock).send_once(local_date=TODAY)
    assert again.outcome == "already posted"
    assert len(slack.messages(CHANNEL)) == 1


async def test_concurrent_sends_post_once(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))
    clock = FixedClock(NOW)
    schedulers = [scheduler(engine, slack, owner=f"host:{index}", clock=clock) for index in range(4)]
    results = await asyncio.gather(*(item.send_once(local_date=TODAY) for item in schedulers))
    assert [result.outcome for result in results].count("posted") == 1
    assert len(slack.messages(CHANNEL)) == 1


async def test_nothing_due_posts_nothing(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=2, names=("JWT_SECRET",))
    result = await scheduler(engine, slack, owner="host:1", clock=FixedClock(NOW)).send_once(local_date=TODAY)
    [row] = await ledger_rows(engine)
    assert result.outcome == "empty"
    assert row.status == "empty"
    assert slack.calls_to("chat.postMessage") == []


async def test_all_clear_posted_when_configured(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=2, names=("JWT_SECRET",))
    send = scheduler(engine, slack, owner="host:1", clock=FixedClock(NOW), policy=policy_with(all_clear=True))
    result = await send.send_once(local_date=TODAY)
    assert result.outcome == "posted"
    assert slack.messages(CHANNEL)[0].text == "Nothing is overdue or due within 7 days."


async def test_hook_runs_only_in_winner(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))
    calls: list[str] = []

    def hook_for(owner: str) -> object:
        async def hook() -> None:
            calls.append(owner)
        return hook

    clock = FixedClock(NOW)
    schedulers = [scheduler(engine, slack, owner=f"host:{index}", clock=clock, before_post=hook_for(f"host:{index}"))
                  for index in range(3)]
    await asyncio.gather(*(item.send_once(local_date=TODAY) for item in schedulers))
    assert len(calls) == 1


async def test_hook_sees_its_changes(engine: AsyncEngine, slack: SlackStandin) -> None:
    sessions = create_session_factory(engine)

    async def sync() -> None:
        await seed(sessions, age_days=40, names=("JWT_SECRET",))

    send = scheduler(engine, slack, owner="host:1", clock=FixedClock(NOW), before_post=sync)
    result = await send.send_once(local_date=TODAY)
    assert result.items == 1


async def test_failing_hook_still_posts(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))

    async def broken() -> None:
        raise OSError("flyctl unreachable")

    send = scheduler(engine, slack, owner="host:1", clock=FixedClock(NOW), before_post=broken)
    assert (await send.send_once(local_date=TODAY)).outcome == "posted"


async def test_failed_post_retried_after_lease(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))
    clock = FixedClock(NOW)
    slack.fail_next("chat.postMessage", error="not_in_channel")
    with pytest.raises(ReminderPostError):
        await scheduler(engine, slack, owner="host:1", clock=clock).send_once(local_date=TODAY)

    soon = await scheduler(engine, slack, owner="host:2", clock=clock).send_once(local_date=TODAY)
    clock.current = NOW + CLAIM_LEASE + timedelta(seconds=1)
    later = await scheduler(engine, slack, owner="host:2", clock=clock).send_once(local_date=TODAY)

    assert soon.outcome == "claimed by another process"
    assert later.outcome == "posted"
    assert len(slack.messages(CHANNEL)) == 1


async def test_loop_posts_once_and_stops(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler(engine, slack, owner="host:1", clock=FixedClock(NOW)).run(stop))
    await slack.wait_for(lambda: slack.messages(CHANNEL) or None, timeout=10, description="reminder posted")
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(slack.messages(CHANNEL)) == 1


async def test_loop_waits_for_time(engine: AsyncEngine, slack: SlackStandin) -> None:
    await seed(create_session_factory(engine), age_days=40, names=("JWT_SECRET",))
    stop = asyncio.Event()
    early = FixedClock(datetime(2026, 3, 9, 8, 59, tzinfo=UTC))
    task = asyncio.create_task(scheduler(engine, slack, owner="host:1", clock=early).run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert slack.calls_to("chat.postMessage") == []
    assert await ledger_rows(engine) == []
