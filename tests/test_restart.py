"""Runs survive the bot process being killed or stopped, and say plainly when they cannot."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, parent_step_lines, query, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver


async def test_killed_while_waiting_resumes(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    assert await first.stop_async(signal.SIGKILL) == -signal.SIGKILL

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await second.stop_async()
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1


async def test_killed_during_flyctl_reports_unknown(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    fly.set_delay(1.0)
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        steps = query(first.database_path, "SELECT status FROM steps WHERE position = 3")
        if steps and steps[0]["status"] == "running":
            break
        await asyncio.sleep(0.05)
    await first.stop_async(signal.SIGKILL)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        message = await wait_for_status(slack, parent, "failed", timeout=30)
    finally:
        await second.stop_async()
    line = parent_step_lines(message)[3]
    assert line.startswith(":x:")
    assert "restarted" in line
    assert f"flyctl secrets list -a {APP}" in str(message.blocks)


async def test_sigterm_stops_cleanly(bot: BotProcess) -> None:
    assert await bot.stop_async(signal.SIGTERM) == 0
    assert "secretbot stopped" in bot.log()


async def test_rotation_on_postgres(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path, postgres_url: str
) -> None:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"DATABASE_URL": postgres_url})
    await process.start()
    try:
        driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.slash_command("rotate JWT_SECRET ENCRYPTION_KEY", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await process.stop_async()

    assert not process.database_path.exists()
    connection = await asyncpg.connect(postgres_url)
    try:
        rotated = await connection.fetch("SELECT secret FROM audit_log WHERE event = 'secret.rotated' ORDER BY secret")
        statuses = await connection.fetch("SELECT status FROM runs")
    finally:
        await connection.close()
    assert [row["secret"] for row in rotated] == ["ENCRYPTION_KEY", "JWT_SECRET"]
    assert [row["status"] for row in statuses] == ["succeeded"]
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1
    assert fly.secret_value(APP, "ENCRYPTION_KEY") != "00" * 32
