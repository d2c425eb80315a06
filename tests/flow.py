"""Helpers that read a runbook thread from the Slack stand-in the way a person would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests import databases
from tests.databases import BotDatabase
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_state import Message

CHANNEL = "C0123OPS"
# The start of the daily reminder's header, as handlers/reminder_views.py writes it.
REMINDER_HEADER = "Secret rotation reminder for "


def bot_messages(slack: SlackStandin) -> list[Message]:
    """Top-level messages the bot posted in the runbook channel: runs and reminders."""
    return [message for message in slack.messages(CHANNEL) if message.bot_id is not None]


def run_messages(slack: SlackStandin) -> list[Message]:
    """Top-level run messages the bot posted in the runbook channel.

    The daily reminder goes to the same channel by default, and a bot started after the
    reminder time posts it at once, so it is left out here.
    """
    return [message for message in bot_messages(slack) if not is_reminder(message)]


def is_reminder(message: Message) -> bool:
    return any(block.get("type") == "header" and block["text"]["text"].startswith(REMINDER_HEADER)
               for block in message.blocks)


async def wait_for_parent(slack: SlackStandin, *, index: int = 0, timeout: float = 15) -> Message:
    async def found() -> Message | None:
        messages = run_messages(slack)
        return messages[index] if len(messages) > index else None

    result: Message = await slack.wait_for(found, timeout=timeout, description=f"run message #{index} posted")
    return result


async def wait_for_buttons(slack: SlackStandin, parent: Message, action_id: str, *, timeout: float = 15) -> Message:
    async def has_button() -> Message | None:
        message = slack.message(CHANNEL, parent.ts)
        if message is not None and action_id in json.dumps(message.blocks):
            return message
        return None

    result: Message = await slack.wait_for(has_button, timeout=timeout, description=f"button {action_id} shown")
    return result


async def wait_for_status(slack: SlackStandin, parent: Message, status: str, *, timeout: float = 30) -> Message:
    """Wait until the parent message's fallback text ends with `: <status>`."""

    async def reached() -> Message | None:
        message = slack.message(CHANNEL, parent.ts)
        if message is not None and message.text.endswith(f": {status}"):
            return message
        return None

    result: Message = await slack.wait_for(reached, timeout=timeout, description=f"run status '{status}'")
    return result


def thread_texts(slack: SlackStandin, parent: Message) -> list[str]:
    return [reply.text for reply in slack.replies(CHANNEL, parent.ts)]


def response_texts(slack: SlackStandin, user: str | None = None) -> list[str]:
    """Texts the bot sent back through response_url or as ephemerals (only the user sees them)."""
    return [ephemeral.text for ephemeral in slack.ephemerals(user)]


def slack_traffic(slack: SlackStandin) -> str:
    """Everything the bot sent to Slack, as one string to search for leaked values."""
    return json.dumps([{"method": call.method, "args": call.args} for call in slack.calls], default=str)


def database_bytes(database: BotDatabase | Path) -> bytes:
    """Everything the bot's database holds, to search for values that must not be stored."""
    return as_database(database).contents()


def query(database: BotDatabase | Path, sql: str, *params: Any) -> list[Any]:
    """Rows of `sql` (with `?` placeholders) on the bot's database; rows index by name and position."""
    return as_database(database).query(sql, *params)


async def query_any(database: BotDatabase | Path | str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Run `sql` with `?` placeholders on a test database, a SQLite path or a PostgreSQL URL; rows as dicts."""
    target = databases.from_url(database) if isinstance(database, str) else as_database(database)
    return [dict(row) for row in await asyncio.to_thread(target.query, sql, *params)]


def as_database(database: BotDatabase | Path) -> BotDatabase:
    return databases.SqliteDatabase(database) if isinstance(database, Path) else database


def parent_step_lines(message: Message) -> list[str]:
    """The checklist lines of a parent message, one per step."""
    for block in message.blocks:
        text = block.get("text", {}).get("text", "") if block.get("type") == "section" else ""
        lines = text.splitlines()
        if lines and all(line.startswith(":") for line in lines) and len(lines) >= 3:
            return lines
    raise AssertionError(f"no checklist in message {message.ts}: {message.blocks!r}")


@contextlib.asynccontextmanager
async def watch_command_lines() -> AsyncIterator[set[str]]:
    """Collect the command line of every process seen while the block runs."""
    seen: set[str] = set()

    async def poll() -> None:
        while True:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        seen.add(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(poll())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
