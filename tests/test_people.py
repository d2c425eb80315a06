"""Approvers and operators named by user group: expanded through Slack, cached, and never widened by a failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.people import People
from bot.policy import Policy, SlackSettings, builtin_policy
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, BYSTANDER, REQUESTER
from tests.flow import CHANNEL, query, response_texts, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver


class FakeDirectory:
    def __init__(self, groups: dict[str, frozenset[str]]) -> None:
        self.groups = groups
        self.reads = 0
        self.fail = False
        self.delay = 0.0

    async def group_members(self, group_id: str) -> frozenset[str]:
        self.reads += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError("Slack unreachable")
        return self.groups[group_id]


def policy_with(*, approvers: tuple[str, ...], operators: tuple[str, ...] = ()) -> Policy:
    base = builtin_policy()
    return Policy(slack=SlackSettings(approvers=approvers, operators=operators), fly=base.fly, secrets=base.secrets)


async def test_groups_expanded_to_members() -> None:
    directory = FakeDirectory({"S0OPS": frozenset({"U0BBB", "U0CCC"})})
    resolved = await People(directory=directory).resolve(policy_with(approvers=("U0AAA", "S0OPS")))
    assert resolved.slack.approvers == ("U0AAA", "U0BBB", "U0CCC")


async def test_group_read_once_within_cache() -> None:
    directory = FakeDirectory({"S0OPS": frozenset({"U0BBB"})})
    people = People(directory=directory)
    for _ in range(3):
        await people.resolve(policy_with(approvers=("S0OPS",), operators=("S0OPS",)))
    assert directory.reads == 1


async def test_group_read_again_after_cache() -> None:
    directory = FakeDirectory({"S0OPS": frozenset({"U0BBB"})})
    people = People(directory=directory, cache_seconds=0)
    await people.resolve(policy_with(approvers=("S0OPS",)))
    directory.groups["S0OPS"] = frozenset({"U0CCC"})
    resolved = await people.resolve(policy_with(approvers=("S0OPS",)))
    assert directory.reads == 2
    assert resolved.slack.approvers == ("U0CCC",)


async def test_failed_read_keeps_last_members() -> None:
    directory = FakeDirectory({"S0OPS": frozenset({"U0BBB"})})
    people = People(directory=directory, cache_seconds=0)
    await people.resolve(policy_with(approvers=("S0OPS",)))
    directory.fail = True
    resolved = await people.resolve(policy_with(approvers=("S0OPS",)))
    assert resolved.slack.approvers == ("U0BBB",)


async def test_never_read_group_counts_as_empty() -> None:
    directory = FakeDirectory({})
    directory.fail = True
    resolved = await People(directory=directory).resolve(policy_with(approvers=("S0OPS", "U0AAA")))
    assert resolved.slack.approvers == ("U0AAA",)


async def test_slow_read_gives_up() -> None:
    directory = FakeDirectory({"S0OPS": frozenset({"U0BBB"})})
    directory.delay = 10
    resolved = await asyncio.wait_for(People(directory=directory).resolve(policy_with(approvers=("S0OPS",))),
                                      timeout=5)
    assert resolved.slack.approvers == ()


async def test_policy_without_groups_unchanged() -> None:
    policy = policy_with(approvers=("U0AAA",))
    assert await People(directory=None).resolve(policy) is policy


GROUP_CONFIG = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                      'approvers = ["S0APPROVE"]\noperators = ["S0OPS", "U0AAA"]\n')


@pytest.fixture
async def group_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    slack.add_usergroup("S0APPROVE", [APPROVER])
    slack.add_usergroup("S0OPS", [BYSTANDER])
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=GROUP_CONFIG)
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


async def test_group_member_approves(group_bot: BotProcess, slack: SlackStandin, fly: FlyState) -> None:
    driver = SlackDriver(bot_url=group_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    assert f"<@{APPROVER}>" in str(parent.blocks)

    # The other operator is not in the approvers' group.
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=BYSTANDER)
    await asyncio.sleep(1)
    assert query(group_bot.database, "SELECT * FROM decisions") == []

    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, parent, "done", timeout=30)
    assert len(slack.calls_to("usergroups.users.list")) >= 2


async def test_non_operator_cannot_start(group_bot: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=group_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=APPROVER, channel_id=CHANNEL)
    await asyncio.sleep(1.5)
    assert query(group_bot.database, "SELECT id FROM runs") == []
    assert any("only the operators" in text for text in response_texts(slack, APPROVER))

    # A member of the operators' group may.
    await driver.slash_command("rotate JWT_SECRET", user_id=BYSTANDER, channel_id=CHANNEL)
    await wait_for_parent(slack)
    assert len(query(group_bot.database, "SELECT id FROM runs")) == 1
