"""A run that stopped with a failure offers Retry: the requester or an approver starts it again as a new run."""

from __future__ import annotations

import asyncio

from tests.botprocess import BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import CHANNEL, query, response_texts, thread_texts, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver


async def fail_one_rotation(driver: SlackDriver, slack: SlackStandin, fly: FlyState):  # type: ignore[no-untyped-def]
    fly.inject(APP, "import", failure="exit1_before_store")
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    return await wait_for_buttons(slack, await wait_for_status(slack, parent, "failed", timeout=30), "run_retry")


async def test_retry_starts_new_run(bot: BotProcess, driver: SlackDriver, slack: SlackStandin, fly: FlyState) -> None:
    failed = await fail_one_rotation(driver, slack, fly)

    await driver.click(channel=CHANNEL, ts=failed.ts, action_id="run_retry", user_id=REQUESTER)
    retried = await wait_for_buttons(slack, await wait_for_parent(slack, index=1), "step_approve")
    await driver.click(channel=CHANNEL, ts=retried.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, retried, "done", timeout=30)

    runs = query(bot.database, "SELECT status, requester, reason FROM runs ORDER BY created_at")
    assert [row["status"] for row in runs] == ["failed", "succeeded"]
    assert runs[1]["requester"] == REQUESTER
    assert runs[1]["reason"].startswith("retry of run ")
    assert any("started this runbook again" in text for text in thread_texts(slack, failed))


async def test_retry_by_bystander_rejected(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                           fly: FlyState) -> None:
    failed = await fail_one_rotation(driver, slack, fly)

    await driver.click(channel=CHANNEL, ts=failed.ts, action_id="run_retry", user_id=BYSTANDER)
    await asyncio.sleep(1)

    assert len(query(bot.database, "SELECT id FROM runs")) == 1
    assert any("only the requester or an approver" in text for text in response_texts(slack, BYSTANDER))


async def test_succeeded_run_offers_no_retry(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    done = await wait_for_status(slack, parent, "done", timeout=30)
    assert "run_retry" not in str(done.blocks)
