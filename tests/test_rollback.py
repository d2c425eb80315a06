"""Rollback and logs after a failed verification, through the real server process."""

from __future__ import annotations

import json

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
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

async def rotate(driver: SlackDriver, slack: SlackStandin, index: int, status: str):
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack, index=index), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    return await wait_for_status(slack, parent, status, timeout=60)


async def test_failed_verification_rolled_back(keyed_bot: BotProcess, slack: SlackStandin, fly: FlyState) -> None:
    driver = SlackDriver(bot_url=keyed_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await rotate(driver, slack, 0, "done")
    good_value = fly.secret_value(APP, "JWT_SECRET")

    fly.inject(APP, "import", failure="unhealthy_after")
    failed = await rotate(driver, slack, 1, "failed")
    bad_value = fly.secret_value(APP, "JWT_SECRET")
    assert bad_value != good_value
    failed = await wait_for_buttons(slack, failed, "run_rollback")

    await driver.click(channel=CHANNEL, ts=failed.ts, action_id="run_rollback", user_id=BYSTANDER)
    await slack.wait_for(lambda: any("only the requester or an approver" in text
                                     for text in response_texts(slack, BYSTANDER)),
                         description="bystander may not roll back")

    await driver.click(channel=CHANNEL, ts=failed.ts, action_id="run_logs", user_id=REQUESTER)
    await slack.wait_for(lambda: any("Recent log lines from" in text or "No recent log lines" in text
                                     for text in thread_texts(slack, failed)),
                         description="logs posted in the thread")

    await driver.click(channel=CHANNEL, ts=failed.ts, action_id="run_rollback", user_id=APPROVER)
    rollback = await wait_for_parent(slack, index=2)
    await wait_for_status(slack, rollback, "done", timeout=60)
    assert fly.secret_value(APP, "JWT_SECRET") == good_value
    assert any("started a rollback" in text for text in thread_texts(slack, failed))

    events = query(keyed_bot.database, "SELECT detail FROM audit_log WHERE event = 'secret.rolled_back'")
    assert len(events) == 1
    assert json.loads(events[0]["detail"])["requested_by"] == APPROVER

    await keyed_bot.stop_async()
    for value in (good_value, bad_value):
        assert value is not None
        assert value not in slack_traffic(slack)
        assert value not in keyed_bot.log()
