"""slack.operators named only by user groups: a group that cannot be read, or has no
members, must not open runbooks to everyone in the workspace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import BYSTANDER
from tests.flow import CHANNEL, query
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

GROUP_ONLY_OPERATORS = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                              'approvers = ["U0AAA", "U0BBB"]\noperators = ["S0OPS"]\n')


@pytest.fixture
async def operators_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=GROUP_ONLY_OPERATORS)
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


async def start_as_bystander(process: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=BYSTANDER, channel_id=CHANNEL)
    await asyncio.sleep(2)


async def test_unreadable_operator_group_lets_nobody_start(operators_bot: BotProcess, slack: SlackStandin) -> None:
    # Slack returns no_such_subteam for S0OPS, so the group is never read.
    await start_as_bystander(operators_bot, slack)
    assert query(operators_bot.database, "SELECT id FROM runs") == []


async def test_empty_operator_group_lets_nobody_start(bot_dir: Path, slack: SlackStandin,
                                                      flyctl_wrapper: Path) -> None:
    slack.add_usergroup("S0OPS", [])
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=GROUP_ONLY_OPERATORS)
    await process.start()
    try:
        await start_as_bystander(process, slack)
    finally:
        await process.stop_async()
    assert query(process.database, "SELECT id FROM runs") == []
