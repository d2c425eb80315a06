"""The daily reminder through the real `secretbot serve` and `secretbot remind` processes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import InventorySecret, ReminderPost
from tests import databases
from tests.botprocess import DEFAULT_CONFIG, BotProcess
from tests.conftest import APP
from tests.flow import CHANNEL, bot_messages
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin

# Secrets the fly fixture puts on APP. At 100 days since rotation the two high (30-day) and
# the medium (90-day) ones are overdue; WAHA_WEBHOOK_TOKEN (low, 180 days) is not due.
SEEDED = ("JWT_SECRET", "ENCRYPTION_KEY", "WAHA_WEBHOOK_TOKEN", "OPENAI_API_KEY")
AGE_DAYS = 100


def config_at(at: str) -> str:
    return DEFAULT_CONFIG + f'\n[reminders]\ntime = "{at}"\ntimezone = "UTC"\n'


def database_url(workdir: Path) -> str:
    """The URL of the database that a bot process in `workdir` uses on this test's backend."""
    return databases.for_workdir(workdir).url


async def seed_inventory(url: str, fly: FlyState) -> None:
    """Migrate the database and record APP's secrets as last rotated AGE_DAYS ago.

    The digests are Fly's, so the bot's start-up sync finds nothing changed outside.
    """
    engine = create_engine(normalize_database_url(url))
    try:
        await migrate(engine)
        now = datetime.now(UTC)
        async with create_session_factory(engine).begin() as session:
            for name in SEEDED:
                session.add(InventorySecret(app=APP, name=name, digest=fly.secret_digest(APP, name),
                                            fly_status="Deployed", first_seen_at=now - timedelta(days=400),
                                            last_seen_at=now, last_rotated_at=now - timedelta(days=AGE_DAYS),
                                            rotation_source="secretbot"))
    finally:
        await engine.dispose()


async def ledger_rows(url: str) -> list[ReminderPost]:
    engine = create_engine(normalize_database_url(url))
    try:
        async with create_session_factory(engine)() as session:
            return list(await session.scalars(select(ReminderPost)))
    finally:
        await engine.dispose()


async def avoid_midnight(margin: float = 90.0) -> None:
    """Wait until the UTC date cannot change during the test, so the test spans one local date."""
    now = datetime.now(UTC)
    to_midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    if to_midnight < margin:
        await asyncio.sleep(to_midnight + 1)


async def wait_for_log(process: BotProcess, text: str, *, after: int = 0, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log()[after:]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not logged in {timeout} s:\n{process.log()[after:]}")
        await asyncio.sleep(0.1)


def reminder_posts(slack: SlackStandin) -> list[str]:
    """The fallback texts of the top-level reminder messages in the channel."""
    return [message.text for message in bot_messages(slack) if message.text.startswith("Secrets to rotate")]


async def run_cli(process: BotProcess, *args: str) -> tuple[int, str, str]:
    """Run `secretbot` with the bot's environment, without blocking the stand-in's event loop."""
    (process.workdir / "secretbot.toml").write_text(process.config)
    executable = Path(sys.executable).parent / "secretbot"
    child = await asyncio.create_subprocess_exec(
        str(executable), *args, cwd=process.workdir, env=process.environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=60)
    return child.returncode or 0, stdout.decode(), stderr.decode()


async def test_late_reminder_posted_once_across_restart(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    await avoid_midnight()
    await seed_inventory(database_url(bot_dir), fly)
    # 00:00:00 UTC has always passed today: the bot starts after the reminder time.
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                       config=config_at("00:00:00"))
    await first.start()
    try:
        await slack.wait_for(lambda: reminder_posts(slack) or None, timeout=20, description="late reminder")
    finally:
        await first.stop_async()

    log_size = len(first.log())
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                        config=config_at("00:00:00"), port=first.port)
    await second.start()
    try:
        await wait_for_log(second, "reminder skipped: already posted", after=log_size)
    finally:
        await second.stop_async()

    [row] = await ledger_rows(database_url(bot_dir))
    assert reminder_posts(slack) == ["Secrets to rotate: 3 overdue."]
    assert row.status == "posted"
    assert row.items == 3


async def test_late_reminder_lists_seeded_secrets(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    await avoid_midnight()
    await seed_inventory(database_url(bot_dir), fly)
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                     config=config_at("00:00:00"))
    await bot.start()
    try:
        await slack.wait_for(lambda: reminder_posts(slack) or None, timeout=20, description="late reminder")
    finally:
        await bot.stop_async()

    [parent] = [message for message in bot_messages(slack) if message.text.startswith("Secrets to rotate")]
    sections = [block["text"]["text"] for block in parent.blocks if block["type"] == "section"]
    rotate_buttons = [element for block in parent.blocks if block["type"] == "actions"
                      for element in block["elements"] if element["action_id"] == "reminder_rotate"]
    assert "`JWT_SECRET` · *70 days overdue* · high priority" in sections
    assert "`OPENAI_API_KEY` · *10 days overdue* · medium priority" in sections
    assert len(rotate_buttons) == 3
    assert "WAHA_WEBHOOK_TOKEN" not in json.dumps(parent.blocks)


async def test_two_processes_on_postgres_post_once(
    tmp_path: Path, bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, postgres_url: str
) -> None:
    await avoid_midnight(margin=120)
    await seed_inventory(postgres_url, fly)
    at = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
    environment = {"DATABASE_URL": postgres_url}
    other_dir = tmp_path / "bot-2"
    other_dir.mkdir()
    processes = [
        BotProcess(workdir=directory, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                   config=config_at(f"{at:%H:%M:%S}"), extra_env=environment)
        for directory in (bot_dir, other_dir)
    ]
    await asyncio.gather(*(process.start() for process in processes))
    started_before_time = datetime.now(UTC) < at
    try:
        await slack.wait_for(lambda: reminder_posts(slack) or None, timeout=40, description="reminder at its time")
        for process in processes:
            await wait_until_either(process, ("reminder claimed", "reminder skipped"))
        await asyncio.sleep(2)
    finally:
        await asyncio.gather(*(process.stop_async() for process in processes))

    claimers = [process for process in processes if "reminder claimed" in process.log()]
    [row] = await ledger_rows(postgres_url)
    assert started_before_time
    assert len(reminder_posts(slack)) == 1
    assert len(claimers) == 1
    assert row.status == "posted"


async def wait_until_either(process: BotProcess, texts: tuple[str, ...], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in process.log() for text in texts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"none of {texts} logged in {timeout} s:\n{process.log()}")
        await asyncio.sleep(0.1)


async def test_remind_dry_run_prints_and_claims_nothing(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    await seed_inventory(database_url(bot_dir), fly)
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=config_at("09:00"))

    code, output, errors = await run_cli(process, "remind", "--dry-run")

    lines = output.splitlines()
    assert code == 0, errors
    assert lines[0].startswith("Secret rotation reminder for ")
    assert lines[0].endswith(f" in channel {CHANNEL}")
    assert "Secrets to rotate: 3 overdue." in lines
    assert "    JWT_SECRET: 70 days overdue, high priority" in lines
    assert "    OPENAI_API_KEY: 10 days overdue, medium priority" in lines
    assert slack.calls_to("chat.postMessage") == []
    assert await ledger_rows(database_url(bot_dir)) == []


async def test_remind_does_not_post_twice(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    await avoid_midnight(margin=120)
    await seed_inventory(database_url(bot_dir), fly)
    # The time is irrelevant to `secretbot remind`; the bot posts late on start-up if it is due.
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=config_at("00:00:00"))

    first_code, first_output, first_errors = await run_cli(process, "remind")
    second_code, second_output, _ = await run_cli(process, "remind")
    _, dry_output, _ = await run_cli(process, "remind", "--dry-run")
    await process.start()
    try:
        await wait_for_log(process, "reminder skipped: already posted")
    finally:
        await process.stop_async()

    assert first_code == 0, first_errors
    assert "posted in C0123OPS: 3 secrets listed" in first_output
    assert second_code == 0
    assert "not posted: already posted" in second_output
    assert "Today's reminder was already posted by " in dry_output
    assert len(reminder_posts(slack)) == 1


async def test_remind_without_token_fails(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                          flyctl_wrapper: Path) -> None:
    await seed_inventory(database_url(bot_dir), fly)
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=config_at("09:00"), extra_env={"SLACK_BOT_TOKEN": ""})
    code, _, errors = await run_cli(process, "remind")
    assert code == 2
    assert "SLACK_BOT_TOKEN" in errors
    assert await ledger_rows(database_url(bot_dir)) == []
