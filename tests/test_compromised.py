"""The compromised-secret runbook through the real server process: break-glass start,
revocation at the source, the new value, and the incident record."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    database_bytes,
    parent_step_lines,
    query,
    slack_traffic,
    thread_texts,
    wait_for_buttons,
    watch_command_lines,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

SECURITY = "C0SECURITY"
CONFIG = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]',
                                f'approvers = ["U0AAA", "U0BBB"]\nsecurity_channel = "{SECURITY}"')
NEW_KEY = "sk-proj-replacement-key-0123456789"
BACKUP_KEY = base64.b64encode(bytes(range(200, 232))).decode()


@pytest.fixture
async def incident_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    slack.add_channel(SECURITY)
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=CONFIG,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


async def test_compromised_provider_key_to_incident(
    incident_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=incident_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    ack = await driver.slash_command("compromised OPENAI_API_KEY key pasted in a public channel",
                                     user_id=REQUESTER, channel_id=CHANNEL)
    assert ack.status == 200
    parent = await wait_for_parent(slack)
    assert "\N{POLICE CARS REVOLVING LIGHT}" in json.dumps(parent.blocks, ensure_ascii=False)

    # No approval wait: the revocation step waits at once, and approvers and security are notified.
    parent = await wait_for_buttons(slack, parent, "step_done")
    lines = parent_step_lines(parent)
    assert lines[0].startswith(":heavy_minus_sign:")
    assert "Break-glass" in lines[0]
    assert "OpenAI dashboard" in json.dumps(parent.blocks)
    await slack.wait_for(lambda: any(f"<@{APPROVER}>" in text for text in thread_texts(slack, parent)),
                         description="approvers notified in the thread")
    security_posts = [message.text for message in slack.messages(SECURITY)]
    assert any("Compromised secret: OPENAI_API_KEY" in text for text in security_posts)

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_done", user_id=REQUESTER)
    parent = await wait_for_buttons(slack, parent, "step_enter")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=APPROVER)
    view = await slack.wait_for(lambda: next(iter(slack.views(APPROVER)), None), description="value form")
    fly.set_delay(0.3)
    async with watch_command_lines() as command_lines:
        response = await driver.submit_view(view_id=view.id, user_id=APPROVER,
                                            values={"value:OPENAI_API_KEY": {"value": NEW_KEY}})
        assert response.status == 200
        parent = await wait_for_status(slack, parent, "done", timeout=60)
    assert any("secrets import" in line for line in command_lines)
    assert not [line for line in command_lines if NEW_KEY in line]
    assert fly.secret_value(APP, "OPENAI_API_KEY") == NEW_KEY
    assert all(line.startswith((":white_check_mark:", ":heavy_minus_sign:")) for line in parent_step_lines(parent))

    records = query(incident_bot.database, "SELECT detail FROM audit_log WHERE event = 'incident.recorded'")
    assert len(records) == 1
    detail = json.loads(records[0]["detail"])
    assert detail["what_happened"] == "key pasted in a public channel"
    assert [entry["step"] for entry in detail["timeline"]] == [
        "Approval", "Revoke at the source", "Generate or enter the new value", "Update the Fly.io secret",
        "Verify the deployment",
    ]
    assert detail["timeline"][1]["by"] == REQUESTER
    assert detail["timeline"][2]["by"] == APPROVER
    assert detail["digest_before"] != detail["digest_after"]
    assert len(query(incident_bot.database, "SELECT id FROM audit_log WHERE event = 'run.break_glass'")) == 1

    await incident_bot.stop_async()
    assert NEW_KEY not in slack_traffic(slack)
    assert NEW_KEY not in incident_bot.log()
    assert NEW_KEY.encode() not in database_bytes(incident_bot.database)

    # The backup decrypts to the exact bytes entered.
    shown = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "secretbot"), "backup", "show", APP, "OPENAI_API_KEY", "--yes",
        "--no-newline", cwd=incident_bot.workdir, env=incident_bot.environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(shown.communicate(), timeout=30)
    assert shown.returncode == 0, stderr.decode()
    assert stdout.decode() == NEW_KEY


async def test_compromised_generated_secret_needs_no_clicks(
    incident_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=incident_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("compromised JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_status(slack, await wait_for_parent(slack), "done", timeout=60)
    lines = parent_step_lines(parent)
    assert lines[1].startswith(":heavy_minus_sign:")
    assert "stops working when the new one is deployed" in lines[1]
    assert fly.secret_value(APP, "JWT_SECRET") != "old-jwt-secret-value"


async def test_non_approver_compromised_waits_for_approval(
    incident_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    from tests.conftest import BYSTANDER

    driver = SlackDriver(bot_url=incident_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("compromised JWT_SECRET", user_id=BYSTANDER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    assert parent_step_lines(parent)[0].startswith(":raised_hand:")
    assert fly.secret_value(APP, "JWT_SECRET") == "old-jwt-secret-value"


async def test_failed_compromised_run_offers_no_rollback(
    incident_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=incident_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    fly.inject(APP, "import", failure="unhealthy_after")
    await driver.slash_command("compromised JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_status(slack, await wait_for_parent(slack), "failed", timeout=60)
    assert "run_logs" not in json.dumps(parent.blocks)
    assert "run_rollback" not in json.dumps(parent.blocks)
