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


async def test_compromise_takes_over_waiting_rotation(
    incident_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=incident_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    rotation = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    rotation_id = query(incident_bot.database, "SELECT id FROM runs")[0]["id"]

    await driver.slash_command("compromised JWT_SECRET -- leaked in a support ticket", user_id=BYSTANDER,
                               channel_id=CHANNEL)
    incident = await wait_for_buttons(slack, await wait_for_parent(slack, index=1), "step_approve")
    incident_id = query(incident_bot.database, "SELECT id FROM runs WHERE kind = 'compromised'")[0]["id"]
    assert incident.ts != rotation.ts

    rotation = await wait_for_status(slack, rotation, "cancelled")
    first_line = parent_step_lines(rotation)[0]
    assert first_line.startswith(":x:")
    assert f"superseded by run {incident_id}" in first_line
    assert "step_approve" not in json.dumps(rotation.blocks)
    await slack.wait_for(lambda: any(f"superseded by run {incident_id}" in text and f"<@{BYSTANDER}>" in text
                                     for text in thread_texts(slack, rotation)),
                         description="takeover posted in the rotation's thread")
    await slack.wait_for(lambda: any(f"run `{incident_id}`" in text for text in response_texts(slack, BYSTANDER)),
                         description="compromise run started for the reporter")

    ended = query(incident_bot.database, "SELECT event, actor, detail FROM audit_log WHERE run_id = ? AND event LIKE "
                  "'run.%' AND event != 'run.requested'", rotation_id)
    assert len(ended) == 1
    assert ended[0]["event"] == "run.cancelled"
    assert ended[0]["actor"] == BYSTANDER
    assert json.loads(ended[0]["detail"])["superseded_by"] == incident_id
    statuses = {row["id"]: row["status"] for row in query(incident_bot.database, "SELECT id, status FROM runs")}
    assert statuses[incident_id] == "waiting"
    assert statuses[rotation_id] == "cancelled"
    assert fly.secret_value(APP, "JWT_SECRET") == "old-jwt-secret-value"


async def test_compromise_refused_after_rotation_approved(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    # The secret is copied to an external system, so the approved rotation waits before Fly.
    config = CONFIG + '\n[secrets.WAHA_WEBHOOK_TOKEN]\nexternal = "WAHA session webhook"\n'
    slack.add_channel(SECURITY)
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.slash_command("rotate WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
        rotation = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=rotation.ts, action_id="step_approve", user_id=APPROVER)
        rotation = await wait_for_buttons(slack, rotation, "step_done")
        rotation_id = query(process.database, "SELECT id FROM runs")[0]["id"]

        await driver.slash_command("compromised WAHA_WEBHOOK_TOKEN -- leaked", user_id=BYSTANDER, channel_id=CHANNEL)
        reply = await slack.wait_for(
            lambda: next((text for text in response_texts(slack, BYSTANDER) if "already has run" in text), None),
            description="takeover refusal")
    finally:
        await process.stop_async()

    assert f"run `{rotation_id}`" in reply
    assert "*Update the external service* (waiting)" in reply
    assert f"/secret cancel {rotation_id}" in reply
    assert f"<@{REQUESTER}> (its requester)" in reply
    assert f"<@{APPROVER}>" in reply
    statuses = [row["status"] for row in query(process.database, "SELECT status FROM runs")]
    assert statuses == ["waiting"]


async def test_takeover_racing_approval_one_wins(
    incident_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=incident_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    rotation = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    rotation_id = query(incident_bot.database, "SELECT id FROM runs")[0]["id"]

    await asyncio.gather(
        driver.click(channel=CHANNEL, ts=rotation.ts, action_id="step_approve", user_id=APPROVER),
        driver.slash_command("compromised JWT_SECRET -- leaked", user_id=BYSTANDER, channel_id=CHANNEL),
    )
    reply = await slack.wait_for(
        lambda: next((text for text in response_texts(slack, BYSTANDER)
                      if "already has run" in text or "Started" in text), None),
        description="reply to the compromise command")
    await asyncio.sleep(1)

    runs = {row["kind"]: row["status"] for row in query(incident_bot.database, "SELECT kind, status FROM runs")}
    approval = query(incident_bot.database, "SELECT status FROM steps WHERE run_id = ? AND position = 0", rotation_id)
    if "Started" in reply:
        assert runs["rotate"] == "cancelled"
        assert approval[0]["status"] == "failed"
        assert "compromised" in runs
    else:
        assert runs["rotate"] != "cancelled"
        assert approval[0]["status"] != "failed"
        assert "compromised" not in runs
