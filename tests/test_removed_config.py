"""A run opened before secretbot.toml changed: after a restart without its app in fly.apps,
or without its secret's policy, the run ends before it changes anything on Fly."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    parent_step_lines,
    query,
    response_texts,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

STAGING = "hotel-staging"
BACKUP_KEY = base64.b64encode(bytes(range(100, 132))).decode()
WITHOUT_STAGING = DEFAULT_CONFIG.replace('apps = ["hotel-voice-bot", "hotel-staging"]', 'apps = ["hotel-voice-bot"]')
# A generated secret copied to an external system, so the run waits at "Update the external
# service" after its value is made and before Fly is changed.
PARTNER_TABLE = """
[secrets.PARTNER_WEBHOOK_TOKEN]
priority = "low"
source = "generated"
format = "base64url"
length = 32
external = "Partner portal"
"""
EXTERNAL_CONFIG = DEFAULT_CONFIG + PARTNER_TABLE
EXTERNAL_WITHOUT_STAGING = WITHOUT_STAGING + PARTNER_TABLE


def imports_run(fly: FlyState, log: Path) -> int:
    return sum(1 for call in fly.invocations(log) if call["argv"][:2] == ["secrets", "import"])


async def restart(first: BotProcess, *, config: str, slack: SlackStandin, flyctl_wrapper: Path,
                  extra_env: dict[str, str] | None = None) -> BotProcess:
    """Stop `first` with SIGTERM and start a new process on the same database with `config`."""
    assert await first.stop_async(signal.SIGTERM) == 0
    second = BotProcess(workdir=first.workdir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port,
                        config=config, extra_env=extra_env or {})
    await second.start()
    return second


async def test_removed_app_rejects_approval(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command(f"rotate JWT_SECRET --app {STAGING}", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")

    second = await restart(first, config=WITHOUT_STAGING, slack=slack, flyctl_wrapper=flyctl_wrapper)
    try:
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        message = await wait_for_status(slack, parent, "failed", timeout=30)
        await slack.wait_for(lambda: any("Add it back to fly.apps" in text for text in response_texts(slack, APPROVER)),
                             description="refusal shown to the approver")
    finally:
        await second.stop_async()

    first_line = parent_step_lines(message)[0]
    assert first_line.startswith(":x:")
    assert f"the app {STAGING} is no longer in fly.apps" in first_line
    assert any("Add it back to fly.apps in secretbot.toml, or start a new run" in text
               for text in thread_texts(slack, parent))
    assert "no longer configured run_id=" in second.log()
    assert f"app={STAGING}" in second.log()
    assert fly.secret_value(STAGING, "JWT_SECRET") == "staging-jwt-secret"
    assert imports_run(fly, flyctl_log) == 0
    assert [row["status"] for row in query(second.database, "SELECT status FROM runs")] == ["failed"]


async def test_removed_app_stops_before_fly_update(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    fly.set_secret(STAGING, "PARTNER_WEBHOOK_TOKEN", "old-partner-token")
    keyed = {"SECRETBOT_BACKUP_KEY": BACKUP_KEY}
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=EXTERNAL_CONFIG,
                       extra_env=keyed)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command(f"rotate PARTNER_WEBHOOK_TOKEN --app {STAGING}", user_id=REQUESTER,
                               channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    parent = await wait_for_buttons(slack, parent, "step_done")

    second = await restart(first, config=EXTERNAL_WITHOUT_STAGING, slack=slack, flyctl_wrapper=flyctl_wrapper,
                           extra_env=keyed)
    try:
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_done", user_id=REQUESTER)
        message = await wait_for_status(slack, parent, "failed", timeout=30)
    finally:
        await second.stop_async()

    lines = parent_step_lines(message)
    assert lines[2].startswith(":white_check_mark:")
    assert lines[3].startswith(":x:")
    assert f"the app {STAGING} is no longer in fly.apps" in lines[3]
    assert fly.secret_value(STAGING, "PARTNER_WEBHOOK_TOKEN") == "old-partner-token"
    assert imports_run(fly, flyctl_log) == 0


async def test_removed_secret_stops_before_fly_update(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    fly.set_secret(STAGING, "PARTNER_WEBHOOK_TOKEN", "old-partner-token")
    keyed = {"SECRETBOT_BACKUP_KEY": BACKUP_KEY}
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=EXTERNAL_CONFIG,
                       extra_env=keyed)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command(f"rotate PARTNER_WEBHOOK_TOKEN --app {STAGING}", user_id=REQUESTER,
                               channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    parent = await wait_for_buttons(slack, parent, "step_done")

    second = await restart(first, config=DEFAULT_CONFIG, slack=slack, flyctl_wrapper=flyctl_wrapper, extra_env=keyed)
    try:
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_done", user_id=REQUESTER)
        message = await wait_for_status(slack, parent, "failed", timeout=30)
    finally:
        await second.stop_async()

    line = parent_step_lines(message)[3]
    assert line.startswith(":x:")
    assert f"PARTNER_WEBHOOK_TOKEN on {STAGING} is no longer in secretbot.toml" in line
    assert fly.secret_value(STAGING, "PARTNER_WEBHOOK_TOKEN") == "old-partner-token"
    assert imports_run(fly, flyctl_log) == 0
