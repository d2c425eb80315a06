"""The App Home dashboard, published by the real `secretbot serve` process on `app_home_opened`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handlers.reminder_views import ROTATE_ACTION_ID
from handlers.status_views import MAX_HOME_BUTTONS
from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import CHANNEL, query, wait_for_buttons, wait_for_parent
from tests.inventory_flow import block_texts, day, execute, midnight, wait_for_inventory
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver
from tests.standins.slack_state import View

SYNCED_ROWS = 5
BULK_SECRETS = 300


def make_overdue(bot: BotProcess, name: str, *, days_ago: int) -> None:
    execute(bot.database, "UPDATE inventory SET last_rotated_at = ?, rotation_source = 'operator' "
            "WHERE app = ? AND name = ?", midnight(day(days_ago)), APP, name)


def home_opened(user: str, tab: str = "home") -> dict[str, Any]:
    return {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": tab}


async def published_home(slack: SlackStandin, user: str, *, count: int = 1) -> View:
    """Wait for the `count`-th views.publish of `user`'s Home tab and return the view."""

    def published() -> View | None:
        calls = [call for call in slack.calls_to("views.publish") if call.args.get("user_id") == user]
        return slack.home_view(user) if len(calls) >= count else None

    view: View = await slack.wait_for(published, description=f"home tab #{count} of {user} published")
    return view


def buttons(view: View) -> list[dict[str, Any]]:
    return [block["accessory"] for block in view.blocks
            if isinstance(block.get("accessory"), dict) and block["accessory"].get("type") == "button"]


async def test_home_shows_overdue_secrets_and_open_runs(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    make_overdue(bot, "ENCRYPTION_KEY", days_ago=50)
    make_overdue(bot, "OPENAI_API_KEY", days_ago=120)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    run_id = query(bot.database, "SELECT id FROM runs")[0]["id"]

    response = await driver.event(home_opened(APPROVER))
    assert response.status == 200
    assert response.elapsed < 3.0
    view = await published_home(slack, APPROVER)

    publish = slack.calls_to("views.publish")[-1]
    assert publish.response["ok"] is True
    texts = block_texts(view.blocks)
    open_runs = next(text for text in texts if text.startswith("*Open runs*"))
    assert f"run {run_id}" in open_runs
    assert "rotate · hotel-voice-bot · JWT_SECRET" in open_runs
    assert "waiting for input" in open_runs
    assert f"<@{REQUESTER}>" in open_runs
    # Most overdue first: OPENAI_API_KEY (medium, 90 days) is 30 days late, ENCRYPTION_KEY (high, 30 days) 20.
    assert [button["value"] for button in buttons(view)] == [f"{APP}:OPENAI_API_KEY", f"{APP}:ENCRYPTION_KEY"]
    assert {button["action_id"] for button in buttons(view)} == {ROTATE_ACTION_ID}
    assert any("*JWT_SECRET* on hotel-voice-bot" in text and "rotation running" in text for text in texts)


async def test_home_rotate_starts_run_as_clicker(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    make_overdue(bot, "ENCRYPTION_KEY", days_ago=50)
    await driver.event(home_opened(BYSTANDER))
    view = await published_home(slack, BYSTANDER)

    click = await driver.click_view(view_id=view.id, action_id=ROTATE_ACTION_ID, user_id=BYSTANDER)
    assert click.status == 200
    assert click.elapsed < 3.0

    await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    runs = query(bot.database, "SELECT requester, app FROM runs")
    assert [tuple(row) for row in runs] == [(BYSTANDER, APP)]
    refreshed = await published_home(slack, BYSTANDER, count=2)
    assert buttons(refreshed) == []
    assert any("*ENCRYPTION_KEY*" in text and "rotation running" in text for text in block_texts(refreshed.blocks))
    # The Home tab has no response_url, so the reply is shown at the top of the refreshed tab.
    notice = block_texts(refreshed.blocks)[1]
    assert "Started" in notice
    assert "ENCRYPTION_KEY" in notice
    assert slack.messages("D" + BYSTANDER[1:]) == []


async def test_messages_tab_publishes_nothing(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)

    response = await driver.event(home_opened(APPROVER, tab="messages"))
    # A Home tab opened afterwards is published, so the first event had its chance to publish.
    await driver.event(home_opened(REQUESTER))
    await published_home(slack, REQUESTER)

    assert response.status == 200
    assert slack.home_view(APPROVER) is None


@pytest.fixture
async def bulk_bot(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                   flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    for index in range(BULK_SECRETS):
        fly.set_secret(APP, f"BULK_SECRET_{index:03d}", f"bulk-value-{index}")
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await process.start()
    try:
        await wait_for_inventory(process.database, rows=SYNCED_ROWS + BULK_SECRETS, timeout=60)
        yield process
    finally:
        await process.stop_async()


async def test_home_of_hundreds_within_limits(bulk_bot: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=bulk_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    # Every secret on both apps overdue; only those in secretbot.toml can have a Rotate button.
    execute(bulk_bot.database, "UPDATE inventory SET last_rotated_at = ?, rotation_source = 'operator'",
            midnight(day(400)))

    await driver.event(home_opened(APPROVER))
    view = await published_home(slack, APPROVER)

    assert slack.calls_to("views.publish")[-1].response["ok"] is True
    assert len(view.blocks) <= 100
    for text in block_texts(view.blocks):
        assert 0 < len(text) <= 3000
    values = [button["value"] for button in buttons(view)]
    assert values
    assert not [value for value in values if "BULK_SECRET" in value]
    texts = block_texts(view.blocks)
    assert any(text.startswith(f"…and {SYNCED_ROWS + BULK_SECRETS - MAX_HOME_BUTTONS} more overdue") for text in texts)
    every = texts.index("*Every secret*, most urgent first")
    listed = [line for text in texts[every + 1:] for line in text.splitlines() if line.startswith(":red_circle:")]
    left_out = int(texts[-1].split("…and ")[1].split(" more")[0]) if texts[-1].startswith("…and") else 0
    assert len(listed) + left_out == SYNCED_ROWS + BULK_SECRETS
