"""Slack's rate limits are waited out without losing or repeating a message, and concurrent
requests on SQLite never surface "database is locked"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.botprocess import BotProcess
from tests.conftest import APPROVER, BYSTANDER, REQUESTER
from tests.flow import CHANNEL, query, wait_for_buttons, wait_for_parent, wait_for_status
from tests.inventory_flow import day, wait_for_inventory
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

# The fly fixture puts four secrets on the main app and one on hotel-staging.
SYNCED_ROWS = 5


async def test_rate_limited_rotation_posts_each_reply_once(bot: BotProcess, driver: SlackDriver,
                                                           slack: SlackStandin) -> None:
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    # Every later post and update is rejected twice with 429 before Slack accepts it.
    slack.rate_limit_next("chat.postMessage", retry_after=1, times=2)
    slack.rate_limit_next("chat.update", retry_after=1, times=2)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, parent, "done", timeout=60)
    await asyncio.sleep(1)

    limited = [call for call in slack.calls if call.error == "ratelimited"]
    assert len(limited) == 4
    replies = [message.text for message in slack.replies(CHANNEL, parent.ts)]
    repeated = [text for text, count in Counter(replies).items() if count > 1]
    assert replies
    assert repeated == []


async def test_concurrent_requests_all_answered(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    home = {"type": "app_home_opened", "user": BYSTANDER, "channel": "D0HOME", "tab": "home"}

    requests = []
    for index in range(20):
        requests.append(driver.slash_command(f"rotated JWT_SECRET {day(10 + index)}", user_id=APPROVER,
                                             channel_id=CHANNEL))
        requests.append(driver.slash_command("status", user_id=BYSTANDER, channel_id=CHANNEL))
        requests.append(driver.event(home))
    responses = await asyncio.gather(*requests)
    await asyncio.sleep(3)

    assert [response.status for response in responses] == [200] * len(responses)
    assert "database is locked" not in bot.log()
    recorded = query(bot.database, "SELECT id FROM audit_log WHERE event = 'secret.rotation_date_recorded'")
    assert len(recorded) == 20
    command = [str(Path(sys.executable).parent / "secretbot"), "audit", "verify"]
    verified = subprocess.run(command, capture_output=True, text=True, env=bot.environment(), cwd=bot.workdir,
                              check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
