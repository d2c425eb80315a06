"""An expiry recorded just before a kill must still end the run as expired after a restart."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import REQUESTER
from tests.databases import BotDatabase
from tests.flow import CHANNEL, query, wait_for_buttons, wait_for_parent
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver


def leave_expiry_unapplied(database: BotDatabase) -> None:
    """Write what Engine.expire_approvals has committed when a SIGKILL lands before its _finish.

    The kill window is a few milliseconds wide, so the two rows that its first transaction
    writes are written here instead.
    """
    run_id = database.query("SELECT id FROM runs")[0]["id"]
    database.execute("INSERT INTO decisions (run_id, position, round, user_id, decision, decided_at) "
                     "VALUES (?, 0, 0, 'secretbot', 'expire', ?)", run_id, datetime(2026, 1, 1, tzinfo=UTC))
    database.execute("UPDATE steps SET status = 'running', actor = 'secretbot' WHERE run_id = ? AND position = 0",
                     run_id)


async def test_expiry_recorded_before_kill_ends_expired(bot_dir: Path, slack: SlackStandin,
                                                        flyctl_wrapper: Path) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await first.stop_async(signal.SIGKILL)
    leave_expiry_unapplied(first.database)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        await asyncio.sleep(4)
    finally:
        await second.stop_async()

    statuses = [row["status"] for row in query(second.database, "SELECT status FROM runs")]
    assert statuses == ["expired"]
