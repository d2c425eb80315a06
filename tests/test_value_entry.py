"""Provider-issued values entered in a Slack modal, through the real server process."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    database_bytes,
    parent_step_lines,
    response_texts,
    slack_traffic,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
    watch_command_lines,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

# Quotes, a hash, an equals sign and a dollar: each is special somewhere on the way to Fly.
NEW_KEY = 'sk-proj-"new"#key=with$chars'
BLOCK = "value:OPENAI_API_KEY"
BACKUP_KEY = base64.b64encode(bytes(range(150, 182))).decode()


async def approve_provider_rotation(driver: SlackDriver, slack: SlackStandin):
    await driver.slash_command("rotate OPENAI_API_KEY key shown in a screenshot", user_id=REQUESTER,
                               channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    return await wait_for_buttons(slack, parent, "step_enter")


async def open_form(driver: SlackDriver, slack: SlackStandin, parent, user_id: str):
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=user_id)
    return await slack.wait_for(lambda: next(iter(slack.views(user_id)), None), description="value form opened")


async def test_entered_value_reaches_fly_exactly(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    parent = await approve_provider_rotation(driver, slack)
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"
    view = await open_form(driver, slack, parent, REQUESTER)
    assert "no masked input" in json.dumps(view.blocks)

    response = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={BLOCK: {"value": NEW_KEY}})
    assert response.status == 200
    assert response.text in ("", "null")

    message = await wait_for_status(slack, parent, "done", timeout=60)
    assert parent_step_lines(message)[1].startswith(":white_check_mark:")
    assert fly.secret_value(APP, "OPENAI_API_KEY") == NEW_KEY
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1

    await bot.stop_async()
    # slack_traffic is JSON, where the quotes in the value appear escaped.
    assert json.dumps(NEW_KEY)[1:-1] not in slack_traffic(slack)
    assert NEW_KEY not in bot.log()
    assert NEW_KEY.encode() not in database_bytes(bot.database)


async def test_bad_value_gets_inline_error(
    driver: SlackDriver, slack: SlackStandin, fly: FlyState
) -> None:
    parent = await approve_provider_rotation(driver, slack)
    view = await open_form(driver, slack, parent, APPROVER)

    response = await driver.submit_view(view_id=view.id, user_id=APPROVER, values={BLOCK: {"value": " sk-padded "}})
    body = response.json()
    assert body["response_action"] == "errors"
    assert "whitespace" in body["errors"][BLOCK]
    assert "sk-padded" not in response.text

    empty = await driver.submit_view(view_id=view.id, user_id=APPROVER, values={BLOCK: {"value": ""}})
    assert "Enter a value" in empty.json()["errors"][BLOCK]
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"
    assert parent_step_lines(slack.message(CHANNEL, parent.ts))[1].startswith(":raised_hand:")


async def test_zero_width_space_gets_inline_error(driver: SlackDriver, slack: SlackStandin, fly: FlyState) -> None:
    parent = await approve_provider_rotation(driver, slack)
    view = await open_form(driver, slack, parent, APPROVER)

    pasted = "sk-proj-Zq8nR2vX7mK4pL9s\u200b"
    response = await driver.submit_view(view_id=view.id, user_id=APPROVER, values={BLOCK: {"value": pasted}})

    body = response.json()
    assert body["response_action"] == "errors"
    assert "U+200B ZERO WIDTH SPACE at position 25 of 25" in body["errors"][BLOCK]
    assert "Zq8nR2vX7mK4pL9s" not in response.text
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"


async def test_backtracking_pattern_keeps_bot_responsive(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    # `(a|aa)+` passes the configuration check, and Python's re would need hours for this value.
    config = DEFAULT_CONFIG + '\n[secrets.OPENAI_API_KEY]\nvalue_pattern = "(a|aa)+"\n'
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        parent = await approve_provider_rotation(driver, slack)
        view = await open_form(driver, slack, parent, APPROVER)

        started = time.monotonic()
        submission = asyncio.create_task(
            driver.submit_view(view_id=view.id, user_id=APPROVER, values={BLOCK: {"value": "a" * 60 + "!"}}))
        health_statuses = []
        async with aiohttp.ClientSession(trust_env=False) as session:
            while not submission.done() and time.monotonic() - started < 30:
                async with session.get(f"{process.url}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as health:
                    health_statuses.append(health.status)
                await asyncio.sleep(0.05)
        response = await asyncio.wait_for(submission, timeout=1)
    finally:
        await process.stop_async()

    assert health_statuses
    assert set(health_statuses) == {200}
    body = response.json()
    assert body["response_action"] == "errors"
    assert "took longer than" in body["errors"][BLOCK]
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"


async def test_sigterm_right_after_enter_click_still_opens_form(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    parent = await approve_provider_rotation(driver, slack)
    # views.open is still in flight when the signal arrives, so shutdown has to wait for it.
    slack.slow_next("views.open", seconds=1.0)
    response = await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=REQUESTER)
    assert response.status == 200
    assert await bot.stop_async(signal.SIGTERM) == 0
    assert [view.callback_id for view in slack.views(REQUESTER)] == ["enter_values"]
    assert "waiting for 1 acknowledged listener(s) to finish" in bot.log()
    assert "still running" not in bot.log()


async def test_click_on_open_connection_during_shutdown_refused(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    parent = await approve_provider_rotation(driver, slack)
    # One connection, kept open between requests, as a proxy may keep it.
    async with aiohttp.ClientSession(trust_env=False, connector=aiohttp.TCPConnector(limit=1)) as session:
        driver.session = session
        slack.slow_next("views.open", seconds=2.0)
        first = await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=REQUESTER)
        assert first.status == 200
        assert bot.process is not None
        bot.process.send_signal(signal.SIGTERM)
        await slack.wait_for(lambda: "start-up heap released" in bot.log(), description="shutdown begun")

        late = await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=APPROVER)

    assert late.status == 503
    assert "shutting down" in late.text
    assert await bot.stop_async(signal.SIGTERM) == 0
    assert "refused a request that arrived during shutdown" in bot.log()
    # The click before the signal still got its form; the refused one opened none.
    assert len(slack.views(REQUESTER)) == 1
    assert slack.views(APPROVER) == []


async def test_form_refused_by_slack_names_the_error(driver: SlackDriver, slack: SlackStandin) -> None:
    parent = await approve_provider_rotation(driver, slack)
    slack.fail_next("views.open", error="internal_error")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=REQUESTER)
    text = await slack.wait_for(lambda: next((text for text in response_texts(slack, REQUESTER)
                                              if "form" in text), None), description="failure reply")
    assert "`internal_error`" in text
    assert "in time" not in text
    # The button is still there, so pressing it again opens the form.
    await open_form(driver, slack, parent, REQUESTER)


async def test_rate_limited_form_not_retried_past_trigger(driver: SlackDriver, slack: SlackStandin) -> None:
    parent = await approve_provider_rotation(driver, slack)
    # Retry-After outlives the trigger_id, so waiting for it could only end in expired_trigger_id.
    slack.rate_limit_next("views.open", retry_after=4)
    started = time.monotonic()
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=REQUESTER)
    text = await slack.wait_for(lambda: next((text for text in response_texts(slack, REQUESTER)
                                              if "form" in text), None), description="failure reply")

    assert "Slack is limiting secretbot's calls" in text
    assert time.monotonic() - started < 3
    assert len([call for call in slack.calls if call.method == "views.open"]) == 1


async def test_bystander_cannot_enter_value(driver: SlackDriver, slack: SlackStandin) -> None:
    parent = await approve_provider_rotation(driver, slack)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=BYSTANDER)
    await slack.wait_for(lambda: any("Only the requester or an approver" in text
                                     for text in response_texts(slack, BYSTANDER)),
                         description="bystander refused")
    assert slack.views(BYSTANDER) == []


async def test_b2_pair_entered_together(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    fly.set_secret(APP, "B2_APPLICATION_KEY_ID", "0014old0000000000000001")
    fly.set_secret(APP, "B2_APPLICATION_KEY", "K001oldapplicationkey")
    entered = {"B2_APPLICATION_KEY_ID": "0014new0000000000000002", "B2_APPLICATION_KEY": "K001new/application+key"}
    try:
        ack = await driver.slash_command("rotate B2_APPLICATION_KEY", user_id=REQUESTER, channel_id=CHANNEL)
        assert "B2_APPLICATION_KEY, B2_APPLICATION_KEY_ID" in ack.text
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        parent = await wait_for_buttons(slack, parent, "step_enter")
        view = await open_form(driver, slack, parent, REQUESTER)
        fly.set_delay(0.3)
        async with watch_command_lines() as command_lines:
            response = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={
                f"value:{name}": {"value": value} for name, value in entered.items()})
            assert response.status == 200
            await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await process.stop_async()

    for name, value in entered.items():
        assert fly.secret_value(APP, name) == value
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1
    assert any("secrets import" in line for line in command_lines)
    for name, value in entered.items():
        assert value not in slack_traffic(slack)
        assert value not in process.log()
        assert value.encode() not in database_bytes(process.database)
        assert not [line for line in command_lines if value in line]
        shown = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "secretbot"), "backup", "show", APP, name, "--yes", "--no-newline",
            cwd=process.workdir, env=process.environment(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(shown.communicate(), timeout=30)
        assert shown.returncode == 0, stderr.decode()
        assert stdout.decode() == value
