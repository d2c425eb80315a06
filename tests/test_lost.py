"""The lost-secret runbook through the real server process: restore from backup, or regenerate."""

from __future__ import annotations

import json

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    database_bytes,
    slack_traffic,
    parent_step_lines,
    query,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

async def run_to_button(driver: SlackDriver, slack: SlackStandin, text: str, index: int, button: str):
    await driver.slash_command(text, user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack, index=index), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    return await wait_for_buttons(slack, parent, button)


async def test_lost_secret_restored_from_backup(keyed_bot: BotProcess, slack: SlackStandin, fly: FlyState) -> None:
    driver = SlackDriver(bot_url=keyed_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate ENCRYPTION_KEY", user_id=REQUESTER, channel_id=CHANNEL)
    first = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=first.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, first, "done", timeout=60)
    good_value = fly.secret_value(APP, "ENCRYPTION_KEY")

    # Someone overwrites the secret by hand.
    fly.set_secret(APP, "ENCRYPTION_KEY", "overwritten-by-mistake")
    assert good_value is not None

    parent = await run_to_button(driver, slack, "lost ENCRYPTION_KEY", 1, "step_restore")
    assert "does not match the digest Fly reports now" in json.dumps(parent.blocks)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_restore", user_id=APPROVER)

    parent = await wait_for_buttons(slack, parent, "step_review", timeout=60)
    assert fly.secret_value(APP, "ENCRYPTION_KEY") == good_value
    lines = parent_step_lines(parent)
    assert lines[2].startswith(":heavy_minus_sign:")
    assert lines[4].startswith(":white_check_mark:")

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_review", user_id=REQUESTER)
    view = await slack.wait_for(lambda: next(iter(slack.views(REQUESTER)), None), description="review form")
    assert "no masked input" not in json.dumps(view.blocks)
    response = await driver.submit_view(view_id=view.id, user_id=REQUESTER,
                                        values={"value:review": {"value": "Lock secrets set behind secretbot."}})
    assert response.status == 200
    await wait_for_status(slack, parent, "done", timeout=30)

    reviews = query(keyed_bot.database, "SELECT detail FROM audit_log WHERE event = 'review.recorded'")
    assert len(reviews) == 1
    assert json.loads(reviews[0]["detail"])["review"] == "Lock secrets set behind secretbot."
    versions = query(keyed_bot.database, "SELECT version FROM backups ORDER BY version")
    assert [row["version"] for row in versions] == [1, 2]

    await keyed_bot.stop_async()
    assert good_value not in slack_traffic(slack)
    assert good_value not in keyed_bot.log()
    assert good_value.encode() not in database_bytes(keyed_bot.database)


async def test_lost_secret_without_backup_is_regenerated(
    keyed_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=keyed_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    parent = await run_to_button(driver, slack, "lost JWT_SECRET", 0, "step_review")
    lines = parent_step_lines(parent)
    assert "No backup of JWT_SECRET" in lines[1]
    assert lines[2].startswith(":white_check_mark:")
    assert fly.secret_value(APP, "JWT_SECRET") != "old-jwt-secret-value"


async def test_restoring_value_fly_already_holds_stops(
    keyed_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    driver = SlackDriver(bot_url=keyed_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    first = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=first.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, first, "done", timeout=60)
    value = fly.secret_value(APP, "JWT_SECRET")

    parent = await run_to_button(driver, slack, "lost JWT_SECRET", 1, "step_restore")
    assert "it matches the digest Fly reports now" in json.dumps(parent.blocks)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_restore", user_id=APPROVER)
    message = await wait_for_status(slack, parent, "failed", timeout=30)
    assert "Stopped without changes" in parent_step_lines(message)[1]
    assert "secretbot backup show hotel-voice-bot JWT_SECRET" in json.dumps(message.blocks)
    assert fly.secret_value(APP, "JWT_SECRET") == value
