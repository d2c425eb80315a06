"""The reminder's "Rotate now" and "Snooze" buttons, clicked through the real `secretbot serve` process.

The reminder message is rendered by the reminder views and placed in the stand-in's
channel, so the clicks carry exactly the buttons the reminder posts.
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handlers.reminder_views import ROTATE_ACTION_ID, SNOOZE_ACTION_ID
from handlers.status_views import SNOOZE_DAYS_BLOCK, SNOOZE_REASON_BLOCK
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    query,
    run_messages,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
)
from tests.inventory_flow import (
    block_texts,
    day,
    execute,
    midnight,
    next_ephemeral,
    overdue_status,
    post_reminder,
    wait_for_inventory,
)
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver
from tests.standins.slack_state import Message, View

SYNCED_ROWS = 5


async def reminder(bot: BotProcess, slack: SlackStandin) -> Message:
    """Make JWT_SECRET overdue by 9 days in the inventory and post a reminder listing it."""
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    execute(bot.database, "UPDATE inventory SET last_rotated_at = ?, rotation_source = 'operator' "
            "WHERE app = ? AND name = 'JWT_SECRET'", midnight(day(39)), APP)
    statuses = [overdue_status(APP, "JWT_SECRET", days_overdue=9), overdue_status(APP, "WAHA_WEBHOOK_TOKEN")]
    return post_reminder(slack, statuses, user=slack.workspace.bot_user_id)


def block_of(message: Message, name: str) -> str:
    """The block_id of the buttons on the reminder line of `name`."""
    for block in message.blocks:
        if block.get("type") == "actions" and any(
                element.get("value") == f"{APP}:{name}" for element in block.get("elements", [])):
            return str(block["block_id"])
    raise AssertionError(f"no buttons for {name} in {message.blocks!r}")


async def open_snooze(driver: SlackDriver, slack: SlackStandin, message: Message, user: str) -> View:
    click = await driver.click(channel=CHANNEL, ts=message.ts, action_id=SNOOZE_ACTION_ID, user_id=user,
                               block_id=block_of(message, "JWT_SECRET"))
    assert click.status == 200
    assert click.elapsed < 3.0
    view: View = await slack.wait_for(lambda: next(iter(slack.views(user)), None), description="snooze form opened")
    return view


def snooze_values(days: str, reason: str | None) -> dict[str, dict[str, str | None]]:
    return {SNOOZE_DAYS_BLOCK: {"days": days}, SNOOZE_REASON_BLOCK: {"reason": reason}}


def snooze_records(bot: BotProcess) -> list[dict[str, object]]:
    return [dict(row) for row in query(bot.database, "SELECT * FROM audit_log WHERE event = 'secret.snoozed'")]


async def test_rotate_now_reaches_approval_as_clicker(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    message = await reminder(bot, slack)

    click = await driver.click(channel=CHANNEL, ts=message.ts, action_id=ROTATE_ACTION_ID, user_id=BYSTANDER,
                               block_id=block_of(message, "JWT_SECRET"))
    assert click.status == 200
    assert click.elapsed < 3.0

    run_message = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    assert "JWT_SECRET" in run_message.text
    runs = query(bot.database, "SELECT requester, kind, app FROM runs")
    assert [tuple(row) for row in runs] == [(BYSTANDER, "rotate", APP)]
    started = await next_ephemeral(slack, BYSTANDER, after=0)
    assert "Started" in started.text

    # A second click finds the open run instead of starting another.
    await driver.click(channel=CHANNEL, ts=message.ts, action_id=ROTATE_ACTION_ID, user_id=APPROVER,
                       block_id=block_of(message, "JWT_SECRET"))
    already = await next_ephemeral(slack, APPROVER, after=0)
    assert "already has a run in progress" in already.text
    assert len(query(bot.database, "SELECT id FROM runs")) == 1
    assert len(run_messages(slack)) == 1


async def test_rotate_now_forged_value_rejected(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    message = await reminder(bot, slack)

    await driver.click(channel=CHANNEL, ts=message.ts, action_id=ROTATE_ACTION_ID, user_id=REQUESTER,
                       block_id=block_of(message, "JWT_SECRET"), value="other-app:JWT_SECRET")

    reply = await next_ephemeral(slack, REQUESTER, after=0)
    assert "Unknown app `other-app`" in reply.text
    assert query(bot.database, "SELECT id FROM runs") == []


async def test_snooze_with_reason_audited_and_shown(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    message = await reminder(bot, slack)
    view = await open_snooze(driver, slack, message, REQUESTER)

    response = await driver.submit_view(view_id=view.id, user_id=REQUESTER,
                                        values=snooze_values("5", "waiting for the vendor's new key"))
    assert response.status == 200
    assert not slack.view(view.id).is_open  # type: ignore[union-attr]

    records = snooze_records(bot)
    assert len(records) == 1
    assert records[0]["actor"] == REQUESTER
    detail = json.loads(str(records[0]["detail"]))
    assert detail["days"] == 5
    assert detail["reason"] == "waiting for the vendor's new key"
    await slack.wait_for(lambda: thread_texts(slack, message), description="snooze confirmed in the thread")
    assert "snoozed the reminder for JWT_SECRET" in thread_texts(slack, message)[0]

    await driver.slash_command("status", user_id=REQUESTER, channel_id=CHANNEL)
    status = await next_ephemeral(slack, REQUESTER, after=0)
    line = next(line for text in block_texts(status.blocks) for line in text.splitlines() if "*JWT_SECRET*" in line)
    assert "snoozed until" in line
    assert f"<@{REQUESTER}>" in line
    assert "waiting for the vendor's new key" in line


async def test_snooze_without_reason_accepted(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    message = await reminder(bot, slack)
    view = await open_snooze(driver, slack, message, APPROVER)

    await driver.submit_view(view_id=view.id, user_id=APPROVER, values=snooze_values("14", None))

    records = snooze_records(bot)
    assert len(records) == 1
    assert json.loads(str(records[0]["detail"]))["reason"] is None
    row = query(bot.database, "SELECT snoozed_by FROM inventory WHERE app = ? AND name = 'JWT_SECRET'", APP)
    assert row[0]["snoozed_by"] == APPROVER


async def test_snooze_form_refused_by_slack_names_the_error(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    message = await reminder(bot, slack)
    slack.fail_next("views.open", error="internal_error")
    click = await driver.click(channel=CHANNEL, ts=message.ts, action_id=SNOOZE_ACTION_ID, user_id=REQUESTER,
                               block_id=block_of(message, "JWT_SECRET"))
    assert click.status == 200

    reply = await next_ephemeral(slack, REQUESTER, after=0)
    assert "Slack refused to open the snooze form (`internal_error`)" in reply.text
    assert slack.views(REQUESTER) == []
    assert "views.open failed for the snooze form app=" in bot.log()
    assert "error=internal_error" in bot.log()


async def test_sigterm_right_after_snooze_click_still_opens_form(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    message = await reminder(bot, slack)
    # views.open is still in flight when the signal arrives, so shutdown has to wait for it.
    slack.slow_next("views.open", seconds=1.0)
    await driver.click(channel=CHANNEL, ts=message.ts, action_id=SNOOZE_ACTION_ID, user_id=REQUESTER,
                       block_id=block_of(message, "JWT_SECRET"))
    assert await bot.stop_async(signal.SIGTERM) == 0
    assert len(slack.views(REQUESTER)) == 1
    assert "still running" not in bot.log()


async def test_snooze_over_cap_rejected_inline(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    message = await reminder(bot, slack)
    view = await open_snooze(driver, slack, message, REQUESTER)

    await driver.submit_view(view_id=view.id, user_id=REQUESTER, values=snooze_values("15", "later"))

    still_open = slack.view(view.id)
    assert still_open is not None
    assert still_open.is_open
    assert "14 days" in still_open.errors[SNOOZE_DAYS_BLOCK]
    assert snooze_records(bot) == []


async def test_snooze_reason_with_key_rejected_inline(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    message = await reminder(bot, slack)
    view = await open_snooze(driver, slack, message, REQUESTER)
    key = "sk-proj-" + "Q" * 48

    await driver.submit_view(view_id=view.id, user_id=REQUESTER, values=snooze_values("3", f"new key {key}"))

    assert "key or token" in slack.view(view.id).errors[SNOOZE_REASON_BLOCK]  # type: ignore[union-attr]
    assert snooze_records(bot) == []
    assert key not in json.dumps([call.args for call in slack.calls], default=str)


@pytest.fixture
async def reason_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    config = DEFAULT_CONFIG + "\n[reminders]\nsnooze_reason_required = true\nmax_snooze_days = 30\n"
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


async def test_required_reason_missing_rejected_inline(reason_bot: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=reason_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    message = await reminder(reason_bot, slack)
    view = await open_snooze(driver, slack, message, REQUESTER)

    await driver.submit_view(view_id=view.id, user_id=REQUESTER, values=snooze_values("20", None))

    form = slack.view(view.id)
    assert form is not None
    assert form.is_open
    assert "required" in form.errors[SNOOZE_REASON_BLOCK]
    assert SNOOZE_DAYS_BLOCK not in form.errors  # 20 is within this policy's cap of 30
    assert snooze_records(reason_bot) == []
