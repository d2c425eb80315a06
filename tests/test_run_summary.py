"""The thread's summary and approval prompts name who really approved, and who still can."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    query,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver
from tests.standins.slack_state import Message

SHORT_TIMEOUT_CONFIG = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                              'approvers = ["U0AAA", "U0BBB"]\napproval_timeout = 2\n')
TWO_APPROVERS_CONFIG = DEFAULT_CONFIG.replace(
    'approvers = ["U0AAA", "U0BBB"]\n',
    f'approvers = ["U0AAA", "U0BBB", "{BYSTANDER}"]\ntwo_approvers_for_high = true\n',
)


def summary(slack: SlackStandin, parent: Message) -> str:
    return next(text for text in thread_texts(slack, parent) if text.startswith("*Summary"))


async def test_cancelled_run_names_no_approver(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    run_id = query(bot.database, "SELECT id FROM runs")[0]["id"]
    await driver.slash_command(f"cancel {run_id} not needed", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_status(slack, parent, "cancelled", timeout=20)
    await asyncio.sleep(1)
    assert "approved by" not in summary(slack, parent)
    assert "is *cancelled*" in summary(slack, parent)


async def test_expired_run_names_no_approver(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> None:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=SHORT_TIMEOUT_CONFIG)
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await wait_for_status(slack, parent, "expired", timeout=20)
        await asyncio.sleep(1)
    finally:
        await process.stop_async()
    assert "approved by" not in summary(slack, parent)


async def approve_twice(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> tuple[str, str]:
    """Run a high-priority rotation through two approvals, and return the second request and the summary."""
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=TWO_APPROVERS_CONFIG)
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        second_request: str = await slack.wait_for(
            lambda: next((text for text in thread_texts(slack, parent) if "First approval given" in text), None),
            description="second approval requested")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=BYSTANDER)
        await wait_for_status(slack, parent, "done", timeout=30)
        await asyncio.sleep(1)
    finally:
        await process.stop_async()
    return second_request, summary(slack, parent)


async def test_second_request_leaves_out_first_approver(bot_dir: Path, slack: SlackStandin,
                                                         flyctl_wrapper: Path) -> None:
    second_request, _ = await approve_twice(bot_dir, slack, flyctl_wrapper)
    # The first approver cannot approve again, so "Can answer" must not list them.
    assert f"<@{APPROVER}>" not in second_request


async def test_summary_names_both_approvers(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> None:
    _, text = await approve_twice(bot_dir, slack, flyctl_wrapper)
    assert f"<@{APPROVER}>" in text
