"""Value-form submissions checked against a slow value_pattern, through the real server process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from bot.value_checks import MATCH_TIMEOUT_SECONDS
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, wait_for_buttons, wait_for_parent
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

BLOCK = "value:OPENAI_API_KEY"
# `(a|aa)+` passes the configuration check and backtracks until regex's timeout on this value.
SLOW_VALUE = "a" * 2000 + "!"
# Eight people submitting the value form at the same moment.
SUBMISSIONS = 8


async def test_concurrent_form_submissions_acknowledged(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    config = DEFAULT_CONFIG + '\n[secrets.OPENAI_API_KEY]\nvalue_pattern = "(a|aa)+"\n'
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await driver.slash_command("rotate OPENAI_API_KEY key shown in a screenshot", user_id=REQUESTER,
                                   channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        parent = await wait_for_buttons(slack, parent, "step_enter")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=APPROVER)
        view = await slack.wait_for(lambda: next(iter(slack.views(APPROVER)), None), description="value form opened")

        async def timed_submission() -> tuple[float, Any]:
            sent = time.monotonic()
            response = await driver.submit_view(view_id=view.id, user_id=APPROVER,
                                                values={BLOCK: {"value": SLOW_VALUE}})
            return time.monotonic() - sent, response.json()

        submissions = asyncio.gather(*(timed_submission() for _ in range(SUBMISSIONS)))
        health_seconds = []
        async with aiohttp.ClientSession(trust_env=False) as session:
            while not submissions.done():
                sent = time.monotonic()
                async with session.get(f"{process.url}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as health:
                    assert health.status == 200
                health_seconds.append(time.monotonic() - sent)
                await asyncio.sleep(0.02)
        results = await submissions
    finally:
        await process.stop_async()

    assert health_seconds
    # Matches run on the event loop, one submission after another, made a health check wait for
    # several of them (at most 2.2 s and 3.5 s in two runs on a 2-core machine).
    assert max(health_seconds) < 4 * MATCH_TIMEOUT_SECONDS
    for seconds, body in results:
        # Slack shows the person an error when the acknowledgement takes longer than 3 s.
        assert seconds < 3
        assert body["response_action"] == "errors"
        assert "value_pattern" in body["errors"][BLOCK]
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"
