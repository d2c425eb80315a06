"""A bot stopped by SIGTERM while it posts a reminder's thread replies does not cause a second reminder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import InventorySecret
from tests.botprocess import BotProcess
from tests.conftest import APP
from tests.inventory_flow import execute
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_state import Message
from tests.test_reminder_e2e import (
    avoid_midnight,
    config_at,
    reminder_posts,
    database_url,
)

# Forty overdue secrets need two reminder messages: the parent and one thread reply.
NAMES = [f"LEGACY_TOKEN_{index:02d}" for index in range(40)]


async def seed_overdue(url: str, fly: FlyState) -> None:
    engine = create_engine(normalize_database_url(url))
    try:
        await migrate(engine)
        now = datetime.now(UTC)
        async with create_session_factory(engine).begin() as session:
            for name in NAMES:
                session.add(InventorySecret(app=APP, name=name, digest=fly.secret_digest(APP, name),
                                            fly_status="Deployed", first_seen_at=now - timedelta(days=400),
                                            last_seen_at=now, last_rotated_at=now - timedelta(days=200),
                                            rotation_source="secretbot"))
    finally:
        await engine.dispose()


def rate_limit_after_parent(slack: SlackStandin) -> None:
    """Reject the posts after the reminder's parent with 429, as Slack does to a burst."""
    store = slack.workspace.store_message

    def store_and_throttle(message: Message) -> Message:
        stored = store(message)
        if message.text.startswith("Secrets to rotate"):
            slack.rate_limit_next("chat.postMessage", retry_after=3, times=5)
        return stored

    slack.workspace.store_message = store_and_throttle  # type: ignore[method-assign]


async def test_sigterm_during_reminder_replies_posts_once(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    await avoid_midnight(margin=300)
    for name in NAMES:
        fly.set_secret(APP, name, f"value-of-{name}")
    await seed_overdue(database_url(bot_dir), fly)
    rate_limit_after_parent(slack)
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                       config=config_at("00:00:00"))
    await first.start()
    await slack.wait_for(lambda: reminder_posts(slack) or None, timeout=30, description="reminder parent")
    # A deploy: SIGTERM while the reply waits out Slack's Retry-After.
    await first.stop_async()

    # The ledger's lease (10 minutes) runs out before the next start; moved instead of waited for.
    lease_ago = datetime.now(UTC) - timedelta(minutes=11)
    execute(first.database, "UPDATE reminder_posts SET claimed_at = ?", lease_ago)
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                        config=config_at("00:00:00"), port=first.port)
    log_size = len(first.log())
    await second.start()
    try:
        def decided() -> bool:
            # Either outcome of the second process's claim; the post itself is checked below.
            later = second.log()[log_size:]
            return "reminder skipped" in later or "reminder marked posted" in later

        await slack.wait_for(decided, timeout=60, description="the restarted bot's reminder check")
    finally:
        await second.stop_async()

    assert len(reminder_posts(slack)) == 1
