"""Two approvers for high-priority secrets, and approval by the requester when the policy allows it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, BYSTANDER, REQUESTER
from tests.databases import BotDatabase
from tests.flow import CHANNEL, query, query_any, response_texts, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

THIRD_APPROVER = BYSTANDER
TWO_APPROVERS_CONFIG = DEFAULT_CONFIG.replace(
    'approvers = ["U0AAA", "U0BBB"]\n',
    f'approvers = ["U0AAA", "U0BBB", "{THIRD_APPROVER}"]\ntwo_approvers_for_high = true\n',
)


async def start_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, config: str) -> BotProcess:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await process.start()
    return process


@pytest.fixture
async def two_approver_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    process = await start_bot(bot_dir, slack, flyctl_wrapper, TWO_APPROVERS_CONFIG)
    try:
        yield process
    finally:
        await process.stop_async()


def imports(fly: FlyState, log: Path) -> list[dict[str, object]]:
    return [call for call in fly.invocations(log) if call["argv"][:2] == ["secrets", "import"]]


async def test_high_priority_needs_second_approver(two_approver_bot: BotProcess, slack: SlackStandin, fly: FlyState,
                                                   flyctl_log: Path) -> None:
    driver = SlackDriver(bot_url=two_approver_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await asyncio.sleep(1.5)
    after_first = await wait_for_buttons(slack, parent, "step_approve")
    assert imports(fly, flyctl_log) == []
    assert "second approver" in json.dumps(after_first.blocks)

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await asyncio.sleep(1)
    assert any("approved this run already" in text for text in response_texts(slack, APPROVER))

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=THIRD_APPROVER)
    await wait_for_status(slack, parent, "done", timeout=30)

    assert len(imports(fly, flyctl_log)) == 1
    rows = query(two_approver_bot.database, "SELECT round, user_id, decision FROM decisions ORDER BY round")
    assert [(row["round"], row["user_id"], row["decision"]) for row in rows] == [
        (0, APPROVER, "approve"), (1, THIRD_APPROVER, "approve")]
    rotated = query(two_approver_bot.database, "SELECT detail FROM audit_log WHERE event = 'secret.rotated'")
    assert json.loads(rotated[0]["detail"])["approvers"] == [APPROVER, THIRD_APPROVER]


async def second_approvals_race(process: BotProcess, database: BotDatabase | str, slack: SlackStandin, fly: FlyState,
                                flyctl_log: Path) -> None:
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await asyncio.sleep(1.5)
    await wait_for_buttons(slack, parent, "step_approve")

    # The third approver's Approve and Deny arrive together, so only one can be the second decision.
    await asyncio.gather(
        driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=THIRD_APPROVER),
        driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_deny", user_id=THIRD_APPROVER),
    )
    await asyncio.sleep(3)

    rows = await query_any(database, "SELECT round FROM decisions WHERE round = 1")
    assert len(rows) == 1
    status = (await query_any(database, "SELECT status FROM runs"))[0]["status"]
    assert status in ("succeeded", "denied")
    assert len(imports(fly, flyctl_log)) == (1 if status == "succeeded" else 0)


async def test_second_approvals_race_one_wins(two_approver_bot: BotProcess, slack: SlackStandin, fly: FlyState,
                                              flyctl_log: Path) -> None:
    await second_approvals_race(two_approver_bot, two_approver_bot.database, slack, fly, flyctl_log)


async def test_second_approvals_race_on_postgres(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                                 flyctl_wrapper: Path, flyctl_log: Path, postgres_url: str) -> None:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=TWO_APPROVERS_CONFIG, extra_env={"DATABASE_URL": postgres_url})
    await process.start()
    try:
        await second_approvals_race(process, postgres_url, slack, fly, flyctl_log)
    finally:
        await process.stop_async()


async def test_low_priority_needs_one_approver(two_approver_bot: BotProcess, slack: SlackStandin, fly: FlyState,
                                               flyctl_log: Path) -> None:
    driver = SlackDriver(bot_url=two_approver_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, parent, "done", timeout=30)
    assert len(imports(fly, flyctl_log)) == 1


async def test_too_few_approvers_fails_clearly(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                               flyctl_wrapper: Path) -> None:
    config = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                    'approvers = ["U0AAA", "U0BBB"]\ntwo_approvers_for_high = true\n')
    process = await start_bot(bot_dir, slack, flyctl_wrapper, config)
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_status(slack, await wait_for_parent(slack), "failed", timeout=20)
    finally:
        await process.stop_async()
    assert "needs 2 approvers other than the requester" in json.dumps(parent.blocks)


async def test_self_approval_when_allowed(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                          flyctl_wrapper: Path, flyctl_log: Path) -> None:
    config = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                    'approvers = ["U0AAA", "U0BBB"]\nallow_self_approval = true\n')
    process = await start_bot(bot_dir, slack, flyctl_wrapper, config)
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=REQUESTER)
        await wait_for_status(slack, parent, "done", timeout=30)
    finally:
        await process.stop_async()
    assert len(imports(fly, flyctl_log)) == 1
