"""An approval request that no approver decides in time ends the run as expired, and its buttons go."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    query,
    query_any,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

SHORT_TIMEOUT_CONFIG = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                              'approvers = ["U0AAA", "U0BBB"]\napproval_timeout = 2\n')


async def test_unanswered_approval_expires(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                           flyctl_wrapper: Path, flyctl_log: Path) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                     config=SHORT_TIMEOUT_CONFIG)
    await bot.start()
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        expired = await wait_for_status(slack, parent, "expired", timeout=20)
    finally:
        await bot.stop_async()

    assert "step_approve" not in str(expired.blocks)
    decisions = query(bot.database, "SELECT user_id, decision FROM decisions")
    assert [(row["user_id"], row["decision"]) for row in decisions] == [("secretbot", "expire")]
    assert any("Expired" in text for text in thread_texts(slack, parent))
    assert [row["status"] for row in query(bot.database, "SELECT status FROM runs")] == ["expired"]
    events = [row["event"] for row in query(bot.database, "SELECT event FROM audit_log ORDER BY id")]
    assert "run.expired" in events
    assert "step.approve" not in events
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert imports == []


async def test_approved_run_does_not_expire(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                            flyctl_wrapper: Path) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                     config=SHORT_TIMEOUT_CONFIG)
    await bot.start()
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await wait_for_status(slack, parent, "done", timeout=30)
        await asyncio.sleep(3)
    finally:
        await bot.stop_async()

    assert [row["status"] for row in query(bot.database, "SELECT status FROM runs")] == ["succeeded"]


async def test_approval_expires_on_postgres(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                            flyctl_wrapper: Path, postgres_url: str) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                     config=SHORT_TIMEOUT_CONFIG, extra_env={"DATABASE_URL": postgres_url})
    await bot.start()
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await wait_for_status(slack, parent, "expired", timeout=20)
    finally:
        await bot.stop_async()

    assert [row["status"] for row in await query_any(postgres_url, "SELECT status FROM runs")] == ["expired"]
