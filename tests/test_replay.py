"""Replayed requests and retried events: each signed request and each event is handled once,
also across a restart, because the record of what was seen is in the database."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.seen import KEEP_FOR, PRUNE_EVERY, SeenRequests
from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import REQUESTER
from tests.flow import CHANNEL, query, run_messages
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import FORM_CONTENT_TYPE, SlackDriver


async def test_replayed_command_rejected(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    sent_at = str(int(time.time()))
    original = await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL,
                                          timestamp=sent_at)
    replay = await driver.send(urlencode(original.payload), content_type=FORM_CONTENT_TYPE, timestamp=sent_at)
    await asyncio.sleep(1)

    assert original.status == 200
    assert replay.status == 401
    assert "rejected replayed request" in bot.log()
    assert len(query(bot.database, "SELECT id FROM runs")) == 1
    assert len(run_messages(slack)) == 1


async def test_replay_after_restart_rejected(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    sent_at = str(int(time.time()))
    original = await driver.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL, timestamp=sent_at)
    await first.stop_async()

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        replay = await driver.send(urlencode(original.payload), content_type=FORM_CONTENT_TYPE, timestamp=sent_at)
    finally:
        await second.stop_async()

    assert original.status == 200
    assert replay.status == 401


async def test_event_retry_handled_once(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> None:
    home_opened = {"type": "app_home_opened", "user": REQUESTER, "channel": "D0HOME", "tab": "home"}
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    delivered = await driver.event(home_opened)
    event_id = delivered.payload["event_id"]
    retried = await driver.event(home_opened, event_id=event_id, retry_num=1)
    await first.stop_async()

    # A retry that arrives after a restart is still recognised.
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        late_retry = await driver.event(home_opened, event_id=event_id, retry_num=2, retry_reason="http_error")
        other = await driver.event(home_opened)
        await asyncio.sleep(1)
    finally:
        await second.stop_async()

    assert delivered.status == 200
    assert retried.status == 200
    assert late_retry.status == 200
    assert other.status == 200
    assert "repeated event delivery" in first.log()
    assert "repeated event delivery" in second.log()
    # One home view for the first delivery and one for the other event, none for the retries.
    assert len(slack.calls_to("views.publish")) == 2


async def first_time_race(database_url: str) -> list[bool]:
    engine = create_engine(normalize_database_url(database_url))
    await migrate(engine)
    try:
        ledgers = [SeenRequests(create_session_factory(engine)) for _ in range(8)]
        return list(await asyncio.gather(*(ledger.first_time("event:Ev0RACE") for ledger in ledgers)))
    finally:
        await engine.dispose()


async def test_seen_race_sqlite_one_winner(tmp_path: Path) -> None:
    results = await first_time_race(f"sqlite:///{tmp_path / 'seen.db'}")
    assert results.count(True) == 1
    assert results.count(False) == 7


async def test_seen_race_postgres_one_winner(postgres_url: str) -> None:
    results = await first_time_race(postgres_url)
    assert results.count(True) == 1
    assert results.count(False) == 7


async def test_seen_prunes_old_keys(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'seen.db'}"))
    await migrate(engine)
    clock = MovableClock(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    ledger = SeenRequests(create_session_factory(engine), clock=clock)
    try:
        assert await ledger.first_time("signature:old")
        clock.current += KEEP_FOR + timedelta(minutes=1)
        for index in range(PRUNE_EVERY - 1):
            assert await ledger.first_time(f"signature:new-{index}")
        # The old key was pruned, so it counts as new again; a recent one does not.
        assert await ledger.first_time("signature:old")
        assert not await ledger.first_time("signature:new-0")
    finally:
        await engine.dispose()


class MovableClock:
    def __init__(self, current: datetime) -> None:
        self.current = current

    def now(self) -> datetime:
        return self.current
