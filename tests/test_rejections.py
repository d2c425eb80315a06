"""What the bot refuses, through the real server process: forged requests, wrong people,
Deny, and flyctl failures. In every case nothing on Fly changes that should not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.botprocess import BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    parent_step_lines,
    query,
    response_texts,
    run_messages,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

OLD_VALUE = "old-jwt-secret-value"


def imports_run(fly: FlyState, log: Path) -> int:
    return sum(1 for call in fly.invocations(log) if call["argv"][:2] == ["secrets", "import"])


async def start_and_wait_for_approval(driver: SlackDriver, slack: SlackStandin, text: str = "rotate JWT_SECRET"):
    ack = await driver.slash_command(text, user_id=REQUESTER, channel_id=CHANNEL)
    assert ack.status == 200
    parent = await wait_for_parent(slack)
    return await wait_for_buttons(slack, parent, "step_approve")


async def test_bad_signature_is_401(driver: SlackDriver, slack: SlackStandin, bot: BotProcess) -> None:
    response = await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL,
                                          signature="v0=" + "0" * 64)
    assert response.status == 401
    assert run_messages(slack) == []
    assert "bad signature" in bot.log()
    assert "JWT_SECRET" not in bot.log()


async def test_stale_timestamp_is_401(driver: SlackDriver, slack: SlackStandin, bot: BotProcess) -> None:
    stale = str(int(time.time()) - 301)
    response = await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL,
                                          timestamp=stale)
    assert response.status == 401
    assert "stale timestamp" in bot.log()
    assert run_messages(slack) == []


async def test_unsigned_request_is_401(driver: SlackDriver, slack: SlackStandin) -> None:
    response = await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL, sign=False)
    assert response.status == 401
    assert run_messages(slack) == []


async def test_unknown_secret_suggests_name(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    response = await driver.slash_command("rotate JWT_SECRT", user_id=REQUESTER, channel_id=CHANNEL)
    assert response.status == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    assert "Unknown secret `JWT_SECRT`" in body["text"]
    assert "Did you mean `JWT_SECRET`?" in body["text"]
    assert "/secret rotate NAME" in body["text"]
    assert run_messages(slack) == []
    # The inventory sync lists secrets; nothing else may reach flyctl.
    assert [call for call in fly.invocations(flyctl_log) if call["argv"][:2] != ["secrets", "list"]] == []


async def test_unknown_app_is_rejected(driver: SlackDriver, slack: SlackStandin) -> None:
    response = await driver.slash_command("rotate JWT_SECRET --app hotel-voice", user_id=REQUESTER,
                                          channel_id=CHANNEL)
    body = response.json()
    assert "Unknown app `hotel-voice`" in body["text"]
    assert "Did you mean `hotel-voice-bot`?" in body["text"]
    assert run_messages(slack) == []


async def test_help_lists_commands(driver: SlackDriver) -> None:
    response = await driver.slash_command("help", user_id=BYSTANDER, channel_id=CHANNEL)
    assert "/secret rotate" in response.json()["text"]
    assert "/secret help" in response.json()["text"]


async def test_self_approval_is_refused(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    parent = await start_and_wait_for_approval(driver, slack)
    response = await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=REQUESTER)
    assert response.status == 200
    await slack.wait_for(lambda: any("another approver" in text for text in response_texts(slack, REQUESTER)),
                         description="self-approval refusal shown to the requester")
    assert parent_step_lines(slack.message(CHANNEL, parent.ts))[0].startswith(":raised_hand:")
    assert imports_run(fly, flyctl_log) == 0


async def test_non_approver_click_is_refused(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    parent = await start_and_wait_for_approval(driver, slack)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=BYSTANDER)
    await slack.wait_for(lambda: any("Only the approvers" in text for text in response_texts(slack, BYSTANDER)),
                         description="non-approver refusal shown to the clicker")
    assert parent_step_lines(slack.message(CHANNEL, parent.ts))[0].startswith(":raised_hand:")
    assert imports_run(fly, flyctl_log) == 0


async def test_deny_ends_run_without_flyctl(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path, bot: BotProcess
) -> None:
    parent = await start_and_wait_for_approval(driver, slack)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_deny", user_id=APPROVER)
    message = await wait_for_status(slack, parent, "denied")
    assert "step_approve" not in str(message.blocks)
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_VALUE
    assert imports_run(fly, flyctl_log) == 0
    assert [row["status"] for row in query(bot.database, "SELECT status FROM runs")] == ["denied"]


async def test_double_approve_runs_flyctl_once(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    parent = await start_and_wait_for_approval(driver, slack)
    clicks = await asyncio.gather(
        driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER),
        driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER),
    )
    assert [click.status for click in clicks] == [200, 200]
    await wait_for_status(slack, parent, "done", timeout=60)
    assert imports_run(fly, flyctl_log) == 1
    await slack.wait_for(lambda: any("already approved by" in text for text in response_texts(slack, APPROVER)),
                         description="the losing click is told who decided")


async def test_flyctl_exit_1_fails_the_step(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    fly.inject(APP, "import", failure="exit1_before_store")
    parent = await start_and_wait_for_approval(driver, slack)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    message = await wait_for_status(slack, parent, "failed")
    lines = parent_step_lines(message)
    assert lines[3].startswith(":x:")
    assert "exit 1" in lines[3]
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_VALUE
    # The thread reply follows the parent message update.
    await slack.wait_for(lambda: any("old value is in place" in text for text in thread_texts(slack, parent)),
                         description="thread says the old value is in place")


async def test_flyctl_timeout_fails_the_step(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    config = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper).config
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=config.replace("deploy_timeout = 30", "deploy_timeout = 2"))
    await process.start()
    try:
        from tests.botprocess import SIGNING_SECRET

        driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        fly.inject(APP, "import", failure="hang")
        parent = await start_and_wait_for_approval(driver, slack)
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        message = await wait_for_status(slack, parent, "failed", timeout=30)
        assert "timed out" in parent_step_lines(message)[3]
    finally:
        await process.stop_async()


async def test_unhealthy_machine_fails_verification(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState
) -> None:
    fly.inject(APP, "import", failure="unhealthy_after")
    parent = await start_and_wait_for_approval(driver, slack)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    message = await wait_for_status(slack, parent, "failed", timeout=60)
    lines = parent_step_lines(message)
    assert lines[3].startswith(":white_check_mark:")
    assert lines[4].startswith(":x:")
    assert "verification failed" in lines[4]


async def test_second_run_gets_link_to_open_one(driver: SlackDriver, slack: SlackStandin) -> None:
    await start_and_wait_for_approval(driver, slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=APPROVER, channel_id=CHANNEL)
    await slack.wait_for(lambda: any("already has a run in progress" in text
                                     for text in response_texts(slack, APPROVER)),
                         description="link to the open run")
    assert len(run_messages(slack)) == 1


async def test_text_with_payload_word_is_handled(driver: SlackDriver, slack: SlackStandin) -> None:
    response = await driver.slash_command("rotate JWT_SECRET webhook payload leaked", user_id=REQUESTER,
                                          channel_id=CHANNEL)
    assert response.status == 200
    parent = await wait_for_parent(slack)
    assert "webhook payload leaked" in str(parent.blocks)


async def test_unpostable_channel_stops_run(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path, bot: BotProcess
) -> None:
    slack.fail_next("chat.postMessage", error="channel_not_found")
    response = await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    assert response.status == 200
    await slack.wait_for(lambda: any("could not be posted" in text and "channel_not_found" in text
                                     for text in response_texts(slack, REQUESTER)),
                         description="requester told the run was not posted")
    assert run_messages(slack) == []
    assert [row["status"] for row in query(bot.database, "SELECT status FROM runs")] == ["failed"]
    assert imports_run(fly, flyctl_log) == 0
    # The failed run does not block a new one.
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_parent(slack)


async def test_cancel_frees_the_secret(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path, bot: BotProcess
) -> None:
    parent = await start_and_wait_for_approval(driver, slack)
    run_id = query(bot.database, "SELECT id FROM runs")[0]["id"]

    await driver.slash_command(f"cancel {run_id}", user_id=BYSTANDER, channel_id=CHANNEL)
    await slack.wait_for(lambda: any("only the requester or an approver" in text
                                     for text in response_texts(slack, BYSTANDER)),
                         description="bystander may not cancel")

    await driver.slash_command(f"cancel {run_id} wrong secret", user_id=REQUESTER, channel_id=CHANNEL)
    message = await wait_for_status(slack, parent, "cancelled")
    assert "Cancelled: wrong secret" in str(message.blocks)
    assert "status: *cancelled*" in str(message.blocks)
    assert "step_approve" not in str(message.blocks)
    assert imports_run(fly, flyctl_log) == 0
    assert [row["status"] for row in query(bot.database, "SELECT status FROM runs")] == ["cancelled"]
    ended = query(bot.database, "SELECT event, actor FROM audit_log WHERE run_id = ? AND event IN "
                  "('run.cancelled', 'run.failed')", run_id)
    assert [(row["event"], row["actor"]) for row in ended] == [("run.cancelled", REQUESTER)]

    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_parent(slack, index=1)
