"""Reading runs from the Slack stand-in: which runs wait for approval and which have ended."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

from bench.environment import APPROVER, CHANNEL, REQUESTER, World, secret_name
from bench.load import Request, RequestRecorder, send_load
from tests.botprocess import BotProcess
from tests.flow import run_messages
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_state import Message

# The parent message's fallback text ends with ": <status>" (handlers/messages.py RUN_STATUS_TEXT).
ENDED_TEXTS = ("done", "failed", "denied", "expired", "cancelled")


def run_status(message: Message) -> str:
    return message.text.rsplit(": ", 1)[-1]


def awaiting_approval(slack: SlackStandin, *, exclude: set[str]) -> list[Message]:
    """Return the run messages not in `exclude` that show an Approve button."""
    return [message for message in run_messages(slack)
            if message.ts not in exclude and "step_approve" in json.dumps(message.blocks)]


async def wait_for_approval_buttons(slack: SlackStandin, count: int, *, exclude: set[str],
                                    timeout: float) -> list[Message]:
    """Wait until `count` new runs show an Approve button; raise TimeoutError naming how many did."""
    deadline = time.monotonic() + timeout
    while True:
        found = awaiting_approval(slack, exclude=exclude)
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(found)} of {count} runs showed an Approve button within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def wait_until_ended(slack: SlackStandin, timestamps: list[str], *, timeout: float) -> Counter[str]:
    """Wait until every run message in `timestamps` shows an ended status; return the count of each status."""
    deadline = time.monotonic() + timeout
    while True:
        statuses: Counter[str] = Counter()
        for ts in timestamps:
            message = slack.message(CHANNEL, ts)
            statuses[run_status(message) if message is not None else "missing"] += 1
        if all(status in ENDED_TEXTS for status in statuses):
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs still open after {timeout:.0f} s: {dict(statuses)}")
        await asyncio.sleep(0.5)


async def wait_for_replies(slack: SlackStandin, commands: list[Request], *, timeout: float) -> None:
    """Wait until the bot has posted to the response_url of every slash command in `commands`.

    Raise TimeoutError naming how many replies arrived.
    """
    wanted: set[str] = set()
    for command in commands:
        urls = parse_qs(command["body"]).get("response_url")
        if not urls:
            raise ValueError("a slash command body without a response_url has no reply to wait for")
        wanted.add(urlsplit(urls[0]).path)
    deadline = time.monotonic() + timeout
    while True:
        posted = {call.path for call in slack.calls if call.method == "response_url"}
        if wanted <= posted:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted & posted)} of {len(wanted)} commands had a reply "
                               f"within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def complete_runs(world: World, bot: BotProcess, indices: list[int], *, concurrency: int,
                        timeout: float) -> Counter[str]:
    """Rotate each secret in `indices` in its own run, approve every run and wait until all have ended."""
    recorder = RequestRecorder(world.slack)
    seen = {message.ts for message in run_messages(world.slack)}
    for index in indices:
        await recorder.slash_command(f"rotate {secret_name(index)} --app {world.fleet.app_of(index)} benchmark",
                                     user_id=REQUESTER, channel_id=CHANNEL)
    await send_load(bot.events_url, recorder.take(), concurrency=concurrency)
    parents = await wait_for_approval_buttons(world.slack, len(indices), exclude=seen, timeout=timeout)
    for parent in parents:
        await recorder.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await send_load(bot.events_url, recorder.take(), concurrency=concurrency)
    return await wait_until_ended(world.slack, [parent.ts for parent in parents], timeout=timeout)
