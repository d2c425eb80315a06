"""The manual "update the external service" step, and reading the pending value on the host."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    database_bytes,
    parent_step_lines,
    query,
    response_texts,
    slack_traffic,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

BACKUP_KEY = base64.b64encode(bytes(range(32))).decode()
CONFIG = DEFAULT_CONFIG + """
[secrets.WAHA_WEBHOOK_TOKEN]
external = "WAHA session webhook"
instructions = "Set it as the X-Webhook-Token header of the default session."
"""


@pytest.fixture
async def manual_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=CONFIG,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


def pending_show(bot: BotProcess, run_id: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "secretbot"), "pending", "show", run_id, name, "--yes"],
        cwd=bot.workdir, env=bot.environment(), capture_output=True, text=True, timeout=30, check=False,
    )


async def test_external_step_waits_for_done(manual_bot: BotProcess, slack: SlackStandin, fly: FlyState) -> None:
    driver = SlackDriver(bot_url=manual_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    parent = await wait_for_buttons(slack, parent, "step_done")
    assert "WAHA session webhook" in json.dumps(parent.blocks)
    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") == "old-webhook-token"

    run_id = query(manual_bot.database, "SELECT id FROM runs")[0]["id"]
    shown = pending_show(manual_bot, run_id, "WAHA_WEBHOOK_TOKEN")
    assert shown.returncode == 0, shown.stderr
    value = shown.stdout.strip()
    assert len(value) == 43  # 32 random bytes, unpadded base64url

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_done", user_id=BYSTANDER)
    await slack.wait_for(lambda: any("Only the requester or an approver" in text
                                     for text in response_texts(slack, BYSTANDER)),
                         description="bystander refused on the Done button")

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_done", user_id=REQUESTER)
    parent = await wait_for_status(slack, parent, "done", timeout=60)
    assert parent_step_lines(parent)[2].startswith(":white_check_mark:")
    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") == value

    shown_events = query(manual_bot.database, "SELECT actor FROM audit_log WHERE event = 'value.shown'")
    assert len(shown_events) == 1
    assert shown_events[0]["actor"].startswith("local:")

    await manual_bot.stop_async()
    assert value not in slack_traffic(slack)
    assert value not in manual_bot.log()
    assert value.encode() not in database_bytes(manual_bot.database)
    assert not any(value in text for text in thread_texts(slack, parent))


async def test_pending_show_needs_backup_key(manual_bot: BotProcess) -> None:
    env_without_key = {name: val for name, val in manual_bot.environment().items() if name != "SECRETBOT_BACKUP_KEY"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "secretbot"), "pending", "show", "0123456789ab", "JWT_SECRET", "--yes"],
        cwd=manual_bot.workdir, env=env_without_key, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "SECRETBOT_BACKUP_KEY is not set" in result.stderr
