"""The reminder's content and Slack layout: order, grouping, limits, and posting to the Slack stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.inventory import SecretStatus, assess
from bot.policy import Policy, ReminderSettings, builtin_policy
from bot.reminders.report import Reminder, build_reminder
from bot.reminders.scheduler import ReminderPostError
from bot.storage.models import InventorySecret
from handlers.reminder_poster import SlackReminderPoster
from handlers.reminder_views import (
    MAX_BUTTON_LINES,
    ROTATE_ACTION_ID,
    SNOOZE_ACTION_ID,
    parse_button_value,
    reminder_messages,
    reminder_text,
)
from tests.standins.slack_api import SlackStandin

NOW = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
TODAY = date(2026, 3, 9)
CHANNEL = "C0123OPS"
WINDOW = 7


# Every app the tests name; a secret on an app outside fly.apps gets no Rotate now button.
APPS = ("app-a", "app-b", "app-c", "app-0", "app-1", "app-2", "app-3", "app-4")


@pytest.fixture
def policy() -> Policy:
    base = builtin_policy()
    return replace(base, reminders=ReminderSettings(window_days=WINDOW), fly=replace(base.fly, apps=APPS))


def status(policy: Policy, app: str, name: str, *, age_days: float, **fields: Any) -> SecretStatus:
    """Assess a secret last rotated `age_days` before NOW (JWT_SECRET is high priority, 30 days)."""
    row = InventorySecret(app=app, name=name, digest="d", fly_status="Deployed", first_seen_at=NOW - timedelta(days=900),
                          last_seen_at=NOW, last_rotated_at=NOW - timedelta(days=age_days),
                          rotation_source="secretbot", **fields)
    return assess(row, policy=policy, now=NOW)


def reminder_of(statuses: list[SecretStatus], *, all_clear: bool = False) -> Reminder:
    return build_reminder(statuses, local_date=TODAY, window_days=WINDOW, all_clear=all_clear)


def all_blocks(reminder: Reminder) -> list[dict[str, Any]]:
    return [block for message in reminder_messages(reminder) for block in message.blocks]


def line_texts(reminder: Reminder) -> list[str]:
    """The text of every section followed by a button row, in order."""
    blocks = all_blocks(reminder)
    return [blocks[index - 1]["text"]["text"] for index, block in enumerate(blocks) if block["type"] == "actions"]


def test_most_overdue_first(policy: Policy) -> None:
    reminder = reminder_of([
        status(policy, "app-a", "JWT_SECRET", age_days=35),
        status(policy, "app-b", "JWT_SECRET", age_days=50),
        status(policy, "app-c", "JWT_SECRET", age_days=31),
    ])
    assert [item.app for item in reminder.overdue] == ["app-b", "app-a", "app-c"]


def test_overdue_before_due_soon(policy: Policy) -> None:
    reminder = reminder_of([
        status(policy, "app-a", "JWT_SECRET", age_days=27),
        status(policy, "app-a", "ENCRYPTION_KEY", age_days=40),
    ])
    lines = line_texts(reminder)
    assert "ENCRYPTION_KEY" in lines[0]
    assert "JWT_SECRET" in lines[1]


def test_overdue_tie_goes_to_higher_priority(policy: Policy) -> None:
    # Both fell due exactly 5 days ago: a high secret 35 days old, a medium one 95 days old.
    reminder = reminder_of([
        status(policy, "app-a", "OPENAI_API_KEY", age_days=95),
        status(policy, "app-a", "JWT_SECRET", age_days=35),
    ])
    assert [item.name for item in reminder.overdue] == ["JWT_SECRET", "OPENAI_API_KEY"]


def test_lines_grouped_by_app(policy: Policy) -> None:
    reminder = reminder_of([
        status(policy, "app-a", "JWT_SECRET", age_days=60),
        status(policy, "app-b", "JWT_SECRET", age_days=50),
        status(policy, "app-a", "ENCRYPTION_KEY", age_days=40),
    ])
    texts = [block["text"]["text"] for block in all_blocks(reminder) if block["type"] == "section"]
    headings = [text for text in texts if text.startswith(":rotating_light:")]
    assert headings == [":rotating_light: *Overdue in app-a*", ":rotating_light: *Overdue in app-b*"]
    app_a = texts.index(headings[0])
    assert "JWT_SECRET" in texts[app_a + 1]
    assert "ENCRYPTION_KEY" in texts[app_a + 2]


def test_line_shows_days_overdue_and_priority(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=42.5)])
    assert line_texts(reminder) == ["`JWT_SECRET` · *12 days overdue* · high priority"]


def test_due_soon_line_shows_days_left(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "app-a", "OPENAI_API_KEY", age_days=87)])
    assert line_texts(reminder) == ["`OPENAI_API_KEY` · due in 3 days · medium priority"]


def test_due_today_line(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=30.2)])
    assert "*due today*" in line_texts(reminder)[0]


def test_buttons_carry_app_and_name(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=40)])
    [actions] = [block for block in all_blocks(reminder) if block["type"] == "actions"]
    assert [element["action_id"] for element in actions["elements"]] == [ROTATE_ACTION_ID, SNOOZE_ACTION_ID]
    assert {element["value"] for element in actions["elements"]} == {"app-a:JWT_SECRET"}
    assert parse_button_value(actions["elements"][0]["value"]) == ("app-a", "JWT_SECRET")


def test_malformed_button_value_rejected() -> None:
    assert parse_button_value("JWT_SECRET") is None
    assert parse_button_value(":JWT_SECRET") is None
    assert parse_button_value("app:a:b") is None


def test_snoozed_and_running_left_out_of_lists(policy: Policy) -> None:
    snoozed = status(policy, "app-a", "JWT_SECRET", age_days=40, snoozed_until=NOW + timedelta(days=2),
                     snoozed_by="U0AAA", snooze_reason="vendor outage <!channel>")
    running = assess(InventorySecret(app="app-a", name="ENCRYPTION_KEY", digest="d", fly_status="Deployed",
                                     first_seen_at=NOW - timedelta(days=900), last_seen_at=NOW,
                                     last_rotated_at=NOW - timedelta(days=40), rotation_source="secretbot"),
                     policy=policy, now=NOW, open_run_id="r1")
    reminder = reminder_of([snoozed, running])
    assert reminder.overdue == ()
    assert reminder.snoozed == (snoozed,)
    assert not reminder.should_post


def test_snoozed_summary_shows_who_until_and_reason(policy: Policy) -> None:
    snoozed = status(policy, "app-a", "JWT_SECRET", age_days=40, snoozed_until=NOW + timedelta(days=2),
                     snoozed_by="U0AAA", snooze_reason="vendor outage <!channel>")
    reminder = reminder_of([snoozed, status(policy, "app-b", "JWT_SECRET", age_days=45)])
    summary = json.dumps(all_blocks(reminder)[-1])
    assert "<@U0AAA>" in summary
    assert "until 2026-03-11 08:00 UTC" in summary
    assert "vendor outage &lt;!channel&gt;" in summary
    assert "<!channel>" not in summary


def test_nothing_due_without_all_clear_not_posted(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=2)])
    assert reminder.nothing_due
    assert not reminder.should_post


def test_all_clear_message(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=2)], all_clear=True)
    [message] = reminder_messages(reminder)
    assert reminder.should_post
    assert message.text == "Nothing is overdue or due within 7 days."
    assert not [block for block in message.blocks if block["type"] == "actions"]


def test_dry_run_text_lists_every_secret(policy: Policy) -> None:
    statuses = [status(policy, f"app-{index % 3}", f"SECRET_{index}", age_days=100 + index) for index in range(150)]
    text = reminder_text(reminder_of(statuses), channel=CHANNEL)
    assert text.splitlines()[0] == "Secret rotation reminder for 2026-03-09 in channel C0123OPS"
    assert all(f"SECRET_{index}: " in text for index in range(150))


def large_inventory(policy: Policy, count: int) -> list[SecretStatus]:
    """`count` overdue secrets (101 to 200 days old, medium priority) over five apps, with long names."""
    return [status(policy, f"hotel-app-{index % 5}", f"SERVICE_{index:03d}_" + "X" * 40,
                   age_days=200 - (index % 100)) for index in range(count)]


def test_large_inventory_messages_within_limits(policy: Policy) -> None:
    messages = reminder_messages(reminder_of(large_inventory(policy, 400)))
    for message in messages:
        assert len(message.blocks) <= 50
        assert all(len(json.dumps(block)) < 4000 for block in message.blocks)
        assert len(message.text) <= 3900
        assert len(message.plain_text) <= 3900


def test_large_inventory_buttons_for_most_urgent(policy: Policy) -> None:
    reminder = reminder_of(large_inventory(policy, 400))
    buttons = [block for block in all_blocks(reminder) if block["type"] == "actions"]
    valued = [block["elements"][0]["value"] for block in buttons]
    top_ranked = {f"{item.app}:{item.name}" for item in reminder.ranked()[:MAX_BUTTON_LINES]}
    assert len(buttons) == MAX_BUTTON_LINES
    assert set(valued) == top_ranked


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(channels=[CHANNEL]) as stand_in:
        yield stand_in


def poster_for(slack: SlackStandin) -> SlackReminderPoster:
    return SlackReminderPoster(AsyncWebClient(token="xoxb-test", base_url=slack.base_url))


async def test_large_inventory_posted_without_errors(policy: Policy, slack: SlackStandin) -> None:
    reminder = reminder_of(large_inventory(policy, 400))

    posted = await poster_for(slack).post(reminder, channel=CHANNEL)

    calls = slack.calls_to("chat.postMessage")
    assert [call.error for call in calls if not call.ok] == []
    assert all(call.args.get("blocks") for call in calls)
    assert len(calls) == posted.messages
    assert len(slack.messages(CHANNEL)) == 1
    assert len(slack.replies(CHANNEL, posted.message_ts)) == posted.messages - 1


async def test_large_inventory_names_every_secret(policy: Policy, slack: SlackStandin) -> None:
    statuses = large_inventory(policy, 400)
    posted = await poster_for(slack).post(reminder_of(statuses), channel=CHANNEL)
    stored = [slack.message(CHANNEL, posted.message_ts)] + slack.replies(CHANNEL, posted.message_ts)
    posted_blocks = json.dumps([message.blocks for message in stored if message is not None])
    missing = [item.name for item in statuses if item.name not in posted_blocks]
    assert missing == []


async def test_rejected_blocks_posted_as_plain_text(policy: Policy, slack: SlackStandin) -> None:
    slack.fail_next("chat.postMessage", error="invalid_blocks")
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=40)])

    posted = await poster_for(slack).post(reminder, channel=CHANNEL)

    message = slack.message(CHANNEL, posted.message_ts)
    assert message is not None
    assert message.blocks == []
    assert "`JWT_SECRET` · *10 days overdue* · high priority" in message.text


async def test_unknown_channel_raises(policy: Policy, slack: SlackStandin) -> None:
    reminder = reminder_of([status(policy, "app-a", "JWT_SECRET", age_days=40)])
    with pytest.raises(ReminderPostError, match="channel_not_found"):
        await poster_for(slack).post(reminder, channel="C0MISSING")


def test_unconfigured_secret_has_no_rotate_button(policy: Policy) -> None:
    reminder = reminder_of([
        status(policy, "app-a", "DATABASE_URL", age_days=400),
        status(policy, "app-a", "JWT_SECRET", age_days=40),
    ])
    rows = {block["elements"][-1]["value"]: [element["action_id"] for element in block["elements"]]
            for block in all_blocks(reminder) if block["type"] == "actions"}
    assert rows["app-a:DATABASE_URL"] == [SNOOZE_ACTION_ID]
    assert rows["app-a:JWT_SECRET"] == [ROTATE_ACTION_ID, SNOOZE_ACTION_ID]
    assert any("[secrets.DATABASE_URL]" in text for text in line_texts(reminder))


def test_unconfigured_app_has_no_rotate_button(policy: Policy) -> None:
    reminder = reminder_of([status(policy, "retired-app", "JWT_SECRET", age_days=40)])
    [row] = [block for block in all_blocks(reminder) if block["type"] == "actions"]
    assert [element["action_id"] for element in row["elements"]] == [SNOOZE_ACTION_ID]
