"""Helpers for the inventory tests: wait for the start-up sync, read ephemeral replies, post a reminder."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.inventory import SecretStatus, State
from bot.policy import Priority
from bot.reminders.report import build_reminder
from handlers.reminder_views import reminder_messages
from tests.databases import BotDatabase, is_missing_table
from tests.flow import CHANNEL, as_database, query
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_state import Ephemeral, Message


async def wait_for_inventory(database: BotDatabase | Path, *, rows: int, timeout: float = 20) -> None:
    """Wait until the bot's start-up sync has written at least `rows` inventory rows."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        try:
            count = query(database, "SELECT count(*) AS n FROM inventory")[0]["n"]
        except Exception as exc:
            if not is_missing_table(exc):
                raise
            count = 0  # the table is created by the migration at start-up
        if count >= rows:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the inventory has {count} rows after {timeout} s, expected {rows}")


def execute(database: BotDatabase | Path, sql: str, *params: Any) -> None:
    """Run one change (with `?` placeholders) on the bot's database and commit it."""
    as_database(database).execute(sql, *params)


def midnight(day: date) -> datetime:
    """The start of `day` in UTC, as a timestamp parameter for `execute`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def next_ephemeral(slack: SlackStandin, user: str, *, after: int, timeout: float = 15) -> Ephemeral:
    """Wait for the first ephemeral to `user` beyond the `after` they already had."""

    def arrived() -> Ephemeral | None:
        ephemerals = slack.ephemerals(user)
        return ephemerals[after] if len(ephemerals) > after else None

    result: Ephemeral = await slack.wait_for(arrived, timeout=timeout, description=f"ephemeral #{after} to {user}")
    return result


def block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """The mrkdwn text of every section and context block, in order."""
    texts = []
    for block in blocks:
        if block.get("type") == "section":
            texts.append(block["text"]["text"])
        elif block.get("type") == "context":
            texts.extend(element.get("text", "") for element in block.get("elements", []))
    return texts


def day(days_ago: int) -> date:
    return (datetime.now(UTC) - timedelta(days=days_ago)).date()


def overdue_status(app: str, name: str, *, days_overdue: int = 5) -> SecretStatus:
    """A high-priority secret as the schedule would report it, `days_overdue` past its due date."""
    now = datetime.now(UTC)
    rotated = now - timedelta(days=30 + days_overdue)
    return SecretStatus(app=app, name=name, priority=Priority.HIGH, interval_days=30, first_seen_at=rotated,
                        last_rotated_at=rotated, rotation_source="operator", due_at=rotated + timedelta(days=30),
                        now=now, state=State.OVERDUE)


def post_reminder(slack: SlackStandin, statuses: list[SecretStatus], *, user: str) -> Message:
    """Put the reminder's parent message, as the reminder views render it, in the runbook channel."""
    reminder = build_reminder(statuses, local_date=datetime.now(UTC).date(), window_days=7, all_clear=False)
    parent = reminder_messages(reminder)[0]
    return slack.add_message(CHANNEL, parent.text, user=user, blocks=json.loads(json.dumps(parent.blocks)))
