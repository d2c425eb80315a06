"""`/secret add`, `/secret unset` and Restore through the real `secretbot serve` process and the stand-ins."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    database_bytes,
    parent_step_lines,
    query,
    response_texts,
    run_messages,
    slack_traffic,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
    watch_command_lines,
)
from tests.inventory_flow import block_texts
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver
from tests.standins.slack_state import Message, View

# Quotes, a hash, an equals sign and a dollar: each is special somewhere on the way to Fly.
PROVIDER_VALUE = 'vendor-"key"#with=odd$chars-2f9c1e'
NEW_NAME = "VENDOR_API_KEY"
THIRD_APPROVER = BYSTANDER
TWO_APPROVERS_CONFIG = DEFAULT_CONFIG.replace(
    'approvers = ["U0AAA", "U0BBB"]\n',
    f'approvers = ["U0AAA", "U0BBB", "{THIRD_APPROVER}"]\ntwo_approvers_for_high = true\n',
)


def calls(fly: FlyState, log: Path, *words: str) -> list[dict[str, Any]]:
    return [call for call in fly.invocations(log) if call["argv"][:len(words)] == list(words)]


async def open_add_form(driver: SlackDriver, slack: SlackStandin, text: str, *, user_id: str = REQUESTER,
                        index: int = 0) -> tuple[Message, View]:
    """Type `/secret add ...`, press the form button and return run message number `index` and the opened form."""
    await driver.slash_command(text, user_id=user_id, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack, index=index), "step_define")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_define", user_id=user_id)
    view = await slack.wait_for(lambda: next(iter(slack.views(user_id)), None), description="add form opened")
    return parent, view


async def approve(driver: SlackDriver, slack: SlackStandin, parent: Message, user_id: str = APPROVER) -> Message:
    parent = await wait_for_buttons(slack, parent, "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=user_id)
    return parent


async def wait_until(condition: Callable[[], bool], description: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(description)
        await asyncio.sleep(0.02)


async def status_text(driver: SlackDriver, slack: SlackStandin, user_id: str) -> str:
    """Run `/secret status` as `user_id` and return the text of the ephemeral reply."""
    before = len(slack.ephemerals(user_id))
    await driver.slash_command("status", user_id=user_id, channel_id=CHANNEL)
    reply = await slack.wait_for(
        lambda: next((item for item in slack.ephemerals(user_id)[before:] if item.blocks), None),
        description="status reply")
    return "\n".join(block_texts(reply.blocks))


# --- add ----------------------------------------------------------------------------------------


async def test_add_provider_secret_end_to_end(
    keyed_bot: BotProcess, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    driver = SlackDriver(bot_url=keyed_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    fly.set_delay(0.3)
    async with watch_command_lines() as command_lines:
        parent, view = await open_add_form(driver, slack, f"add {NEW_NAME} --app {APP} new vendor integration")
        form = json.dumps(view.blocks)
        assert "no masked input" in form
        assert "add:priority" in form
        assert "add:source" in form
        assert calls(fly, flyctl_log, "secrets", "import") == []

        response = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={
            "add:priority": {"choice": "high"},
            "add:source": {"choice": "provider"},
            f"value:{NEW_NAME}": {"value": PROVIDER_VALUE},
        })
        assert response.status == 200
        assert response.text in ("", "null")
        await approve(driver, slack, parent)
        message = await wait_for_status(slack, parent, "done", timeout=60)

    assert fly.secret_value(APP, NEW_NAME) == PROVIDER_VALUE
    imports = calls(fly, flyctl_log, "secrets", "import")
    assert len(imports) == 1
    assert imports[0]["argv"] == ["secrets", "import", "--app", APP]
    assert imports[0]["stdin_bytes"] > len(PROVIDER_VALUE)
    assert PROVIDER_VALUE not in flyctl_log.read_text()
    assert any("secrets import" in line for line in command_lines), "flyctl was not seen running"
    assert not [line for line in command_lines if PROVIDER_VALUE in line]
    assert "high priority (every 30 days), value from the provider (chosen)" in parent_step_lines(message)[0]

    added = query(keyed_bot.database, "SELECT * FROM audit_log WHERE event = 'secret.added'")
    assert len(added) == 1
    detail = json.loads(added[0]["detail"])
    assert added[0]["secret"] == NEW_NAME
    assert detail["requested_by"] == REQUESTER
    assert detail["approvers"] == [APPROVER]
    assert detail["priority"] == "high"
    assert detail["source"] == "provider"
    assert detail["reason"] == "new vendor integration"
    assert detail["digest_after"] == fly.secret_digest(APP, NEW_NAME)

    rows = query(keyed_bot.database, "SELECT * FROM inventory WHERE app = ? AND name = ?", APP, NEW_NAME)
    assert len(rows) == 1
    assert rows[0]["rotation_source"] == "secretbot"
    assert rows[0]["priority"] == "high"
    assert rows[0]["value_source"] == "provider"
    assert rows[0]["removed_at"] is None
    backups = query(keyed_bot.database, "SELECT version, fly_digest FROM backups WHERE name = ?", NEW_NAME)
    assert [row["version"] for row in backups] == [1]
    assert backups[0]["fly_digest"] == fly.secret_digest(APP, NEW_NAME)

    status = await status_text(driver, slack, APPROVER)
    assert f"*{NEW_NAME}* on {APP} · high · " in status

    await keyed_bot.stop_async()
    # slack_traffic is JSON, where the quotes in the value appear escaped.
    assert json.dumps(PROVIDER_VALUE)[1:-1] not in slack_traffic(slack)
    assert PROVIDER_VALUE not in keyed_bot.log()
    assert PROVIDER_VALUE.encode() not in database_bytes(keyed_bot.database)


async def test_add_generated_secret(bot: BotProcess, driver: SlackDriver, slack: SlackStandin, fly: FlyState,
                                    flyctl_log: Path) -> None:
    parent, view = await open_add_form(driver, slack, "add WEBHOOK_SIGNING_KEY")

    empty = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={})
    errors = empty.json()["errors"]
    assert errors["add:priority"] == "Choose a priority."
    assert errors["add:source"] == "Choose where the value comes from."
    typed = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={
        "add:priority": {"choice": "low"}, "add:source": {"choice": "generated"},
        "value:WEBHOOK_SIGNING_KEY": {"value": "typed-but-not-wanted"}})
    assert "Leave the value empty" in typed.json()["errors"]["value:WEBHOOK_SIGNING_KEY"]
    assert "typed-but-not-wanted" not in typed.text

    response = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={
        "add:priority": {"choice": "low"}, "add:source": {"choice": "generated"}})
    assert response.text in ("", "null")
    await approve(driver, slack, parent)
    await wait_for_status(slack, parent, "done", timeout=60)

    value = fly.secret_value(APP, "WEBHOOK_SIGNING_KEY")
    assert value is not None
    # 48 random bytes in unpadded base64url are 64 characters.
    assert len(value) == 64
    assert len(calls(fly, flyctl_log, "secrets", "import")) == 1
    rows = query(bot.database, "SELECT priority, value_source, rotation_source FROM inventory WHERE name = ?",
                 "WEBHOOK_SIGNING_KEY")
    assert [(row["priority"], row["value_source"], row["rotation_source"]) for row in rows] == [
        ("low", "generated", "secretbot")]
    await bot.stop_async()
    assert value not in slack_traffic(slack)
    assert value not in bot.log()
    assert value.encode() not in database_bytes(bot.database)


async def test_add_uses_configured_policy(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                          fly: FlyState) -> None:
    # secretbot.toml's built-in policy makes WAHA_WEBHOOK_TOKEN a generated, low-priority secret.
    await driver.slash_command("add WAHA_WEBHOOK_TOKEN --app hotel-staging", user_id=REQUESTER, channel_id=CHANNEL)
    generated = await approve(driver, slack, await wait_for_parent(slack))
    message = await wait_for_status(slack, generated, "done", timeout=60)
    assert "Policy from secretbot.toml" in parent_step_lines(message)[0]
    assert slack.views(REQUESTER) == []
    value = fly.secret_value("hotel-staging", "WAHA_WEBHOOK_TOKEN")
    assert value is not None
    # 32 random bytes in unpadded base64url are 43 characters.
    assert len(value) == 43

    # OPENAI_API_KEY is a provider secret there: the form shows the policy and asks for the value only.
    parent, view = await open_add_form(driver, slack, "add OPENAI_API_KEY --app hotel-staging", index=1)
    form = json.dumps(view.blocks)
    assert "secretbot.toml sets the policy of *OPENAI_API_KEY*: medium priority (every 90 days)" in form
    assert "add:priority" not in form
    missing = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={})
    assert missing.json()["errors"]["value:OPENAI_API_KEY"] == "Enter a value."
    await driver.submit_view(view_id=view.id, user_id=REQUESTER,
                             values={"value:OPENAI_API_KEY": {"value": "sk-staging-key-0123456789abcdef"}})
    await approve(driver, slack, parent)
    await wait_for_status(slack, parent, "done", timeout=60)
    assert fly.secret_value("hotel-staging", "OPENAI_API_KEY") == "sk-staging-key-0123456789abcdef"


async def test_add_existing_name_points_to_rotate(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                                  fly: FlyState, flyctl_log: Path) -> None:
    ack = await driver.slash_command("add OPENAI_API_KEY", user_id=REQUESTER, channel_id=CHANNEL)
    assert ack.status == 200
    await slack.wait_for(lambda: any("already set on hotel-voice-bot" in text and "`/secret rotate OPENAI_API_KEY`"
                                     in text for text in response_texts(slack, REQUESTER)),
                         description="add of a listed name rejected")
    assert run_messages(slack) == []
    assert calls(fly, flyctl_log, "secrets", "import") == []
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"


async def test_add_on_unknown_app_rejected(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    ack = await driver.slash_command("add NEW_KEY --app hotel-wrker", user_id=REQUESTER, channel_id=CHANNEL)
    assert "Unknown app `hotel-wrker`" in ack.text
    assert "Configured apps: `hotel-voice-bot`, `hotel-staging`" in ack.text
    assert "/secret add NAME" in ack.text
    await asyncio.sleep(0.5)
    assert run_messages(slack) == []


# --- unset and Restore -------------------------------------------------------------------------


async def test_unset_then_restore(keyed_bot: BotProcess, slack: SlackStandin, fly: FlyState,
                                  flyctl_log: Path) -> None:
    driver = SlackDriver(bot_url=keyed_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    # A rotation first, so the bot has a verified backup of the value that is on Fly.
    await driver.slash_command("rotate WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
    rotation = await approve(driver, slack, await wait_for_parent(slack))
    await wait_for_status(slack, rotation, "done", timeout=60)
    original = fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN")
    assert original is not None

    await driver.slash_command("unset WAHA_WEBHOOK_TOKEN -- no longer used by the app", user_id=REQUESTER,
                               channel_id=CHANNEL)
    unset = await wait_for_buttons(slack, await wait_for_parent(slack, index=1), "step_approve")
    assert "Backup v1 of WAHA_WEBHOOK_TOKEN" in json.dumps(unset.blocks)
    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") == original
    releases_before = len(fly.releases(APP))
    await approve(driver, slack, unset)
    unset = await wait_for_status(slack, unset, "done", timeout=60)
    unset = await wait_for_buttons(slack, unset, "run_restore")

    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") is None
    unsets = calls(fly, flyctl_log, "secrets", "unset")
    assert [call["argv"] for call in unsets] == [["secrets", "unset", "WAHA_WEBHOOK_TOKEN", "--app", APP]]
    # The unset made a release and restarted every machine on it.
    releases = fly.releases(APP)
    assert len(releases) == releases_before + 1
    assert all(str(machine["release_version"]) == str(releases[-1]["version"]) for machine in fly.machines(APP))
    removed = query(keyed_bot.database, "SELECT removed_at FROM inventory WHERE name = ?", "WAHA_WEBHOOK_TOKEN")
    assert removed[0]["removed_at"] is not None
    unset_audit = query(keyed_bot.database, "SELECT detail FROM audit_log WHERE event = 'secret.unset'")
    assert len(unset_audit) == 1
    assert json.loads(unset_audit[0]["detail"])["kept_backup_version"] == 1

    await driver.click(channel=CHANNEL, ts=unset.ts, action_id="run_restore", user_id=BYSTANDER)
    await slack.wait_for(lambda: any("only the requester of the unset or an approver" in text
                                     for text in response_texts(slack, BYSTANDER)),
                         description="bystander may not restore")

    # Two approvers press Restore at once; the database lets one of them start it.
    await asyncio.gather(
        driver.click(channel=CHANNEL, ts=unset.ts, action_id="run_restore", user_id=REQUESTER),
        driver.click(channel=CHANNEL, ts=unset.ts, action_id="run_restore", user_id=APPROVER),
    )
    await slack.wait_for(lambda: any("already pressed Restore" in text for text in response_texts(slack)),
                         description="second Restore click told who pressed it")
    restore = await wait_for_parent(slack, index=2)
    restore_runs = query(keyed_bot.database, "SELECT requester FROM runs WHERE kind = 'restore'")
    assert len(restore_runs) == 1
    restorer = restore_runs[0]["requester"]
    await approve(driver, slack, restore, user_id=APPROVER if restorer == REQUESTER else REQUESTER)
    await wait_for_status(slack, restore, "done", timeout=60)

    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") == original
    restored = query(keyed_bot.database, "SELECT detail FROM audit_log WHERE event = 'secret.restored'")
    assert len(restored) == 1
    assert json.loads(restored[0]["detail"])["backup_version"] == 1
    assert any("started a restore" in text for text in thread_texts(slack, unset))
    assert "run_restore" not in json.dumps(slack.message(CHANNEL, unset.ts).blocks)
    back = query(keyed_bot.database, "SELECT removed_at FROM inventory WHERE name = ?", "WAHA_WEBHOOK_TOKEN")
    assert back[0]["removed_at"] is None

    await keyed_bot.stop_async()
    assert original not in slack_traffic(slack)
    assert original not in keyed_bot.log()
    assert original not in flyctl_log.read_text()


async def test_unset_without_backup_warns(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin, fly: FlyState
) -> None:
    await driver.slash_command("unset OPENAI_API_KEY", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    approval_prompt = next(text for text in block_texts(parent.blocks) if text.startswith("*Approval*"))
    assert "a restore will not be possible" in approval_prompt
    assert any("a restore will not be possible" in text for text in thread_texts(slack, parent))

    await approve(driver, slack, parent)
    message = await wait_for_status(slack, parent, "done", timeout=60)
    assert fly.secret_value(APP, "OPENAI_API_KEY") is None
    assert "run_restore" not in json.dumps(message.blocks)


async def test_unset_of_unlisted_name_rejected(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                               flyctl_log: Path, fly: FlyState) -> None:
    await driver.slash_command("unset JWT_SECRETS", user_id=REQUESTER, channel_id=CHANNEL)
    await slack.wait_for(lambda: any("JWT_SECRETS is not set on hotel-voice-bot" in text and "`JWT_SECRET`" in text
                                     for text in response_texts(slack, REQUESTER)),
                         description="unset of an unlisted name rejected")
    assert run_messages(slack) == []
    assert calls(fly, flyctl_log, "secrets", "unset") == []


@pytest.fixture
async def two_approver_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         config=TWO_APPROVERS_CONFIG)
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


async def test_unset_high_priority_needs_two_approvers(two_approver_bot: BotProcess, slack: SlackStandin,
                                                       fly: FlyState, flyctl_log: Path) -> None:
    driver = SlackDriver(bot_url=two_approver_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("unset JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await approve(driver, slack, await wait_for_parent(slack))
    await slack.wait_for(lambda: "second approver" in json.dumps(slack.message(CHANNEL, parent.ts).blocks),
                         description="waiting for a second approver")
    assert calls(fly, flyctl_log, "secrets", "unset") == []
    assert fly.secret_value(APP, "JWT_SECRET") == "old-jwt-secret-value"

    await approve(driver, slack, parent, user_id=THIRD_APPROVER)
    await wait_for_status(slack, parent, "done", timeout=60)
    assert len(calls(fly, flyctl_log, "secrets", "unset")) == 1
    assert fly.secret_value(APP, "JWT_SECRET") is None


async def test_add_high_priority_needs_two_approvers(two_approver_bot: BotProcess, slack: SlackStandin,
                                                     fly: FlyState, flyctl_log: Path) -> None:
    driver = SlackDriver(bot_url=two_approver_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    parent, view = await open_add_form(driver, slack, "add SIGNING_KEY")
    await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={
        "add:priority": {"choice": "high"}, "add:source": {"choice": "generated"}})
    parent = await approve(driver, slack, parent)
    await slack.wait_for(lambda: "second approver" in json.dumps(slack.message(CHANNEL, parent.ts).blocks),
                         description="waiting for a second approver")
    assert calls(fly, flyctl_log, "secrets", "import") == []

    await approve(driver, slack, parent, user_id=THIRD_APPROVER)
    await wait_for_status(slack, parent, "done", timeout=60)
    assert fly.secret_value(APP, "SIGNING_KEY") is not None


# --- a kill during the unset -------------------------------------------------------------------


async def start_approved_unset(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> tuple[BotProcess, Message]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("unset WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await approve(driver, slack, await wait_for_parent(slack))
    return process, parent


async def test_killed_after_removal_settles_from_fly_list(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    # Slow machines keep the rollout going after the secret is removed.
    fly.set_delay(1.0)
    first, parent = await start_approved_unset(bot_dir, slack, flyctl_wrapper)
    await wait_until(lambda: fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") is None, "secret removed on Fly")
    await first.stop_async(signal.SIGKILL)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        message = await wait_for_status(slack, parent, "failed", timeout=60)
    finally:
        await second.stop_async()
    lines = parent_step_lines(message)
    assert lines[2].startswith(":white_check_mark:")
    assert "restarted during `flyctl secrets unset`" in lines[2]
    assert "no longer lists WAHA_WEBHOOK_TOKEN" in lines[2]
    # flyctl died with the bot, so the rollout stopped half way and verification says so.
    assert lines[3].startswith(":x:")
    assert len(calls(fly, flyctl_log, "secrets", "unset")) == 1


async def test_killed_before_removal_changes_nothing(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    fly.set_hang_limit(3)
    fly.inject(APP, "unset", failure="hang_before_store")
    first, parent = await start_approved_unset(bot_dir, slack, flyctl_wrapper)
    await wait_until(lambda: bool(query(first.database, "SELECT id FROM audit_log WHERE event = 'fly.unset.started'")),
                     "digests read before the unset")
    await asyncio.sleep(0.5)
    await first.stop_async(signal.SIGKILL)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        message = await wait_for_status(slack, parent, "failed", timeout=30)
    finally:
        await second.stop_async()
    line = parent_step_lines(message)[2]
    assert line.startswith(":x:")
    assert "Fly still lists WAHA_WEBHOOK_TOKEN, so nothing was changed" in line
    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") == "old-webhook-token"
