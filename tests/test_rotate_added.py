"""Rotating a secret that `/secret add` put on an app with a chosen policy, through the real bot process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from handlers.reminder_views import ROTATE_ACTION_ID
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    database_bytes,
    query,
    run_messages,
    slack_traffic,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.inventory_flow import day, execute, midnight
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver
from tests.standins.slack_state import Message, View
from tests.test_add_unset import approve, calls, open_add_form
from tests.test_home_tab import buttons, home_opened, published_home

GENERATED_NAME = "WEBHOOK_SIGNING_KEY"
PROVIDER_NAME = "VENDOR_API_KEY"
FIRST_VALUE = "vendor-key-first-0a1b2c3d"
SECOND_VALUE = 'vendor-key-"second"#9f8e7d'


async def add_secret(driver: SlackDriver, slack: SlackStandin, name: str, *, priority: str, source: str,
                     value: str | None = None, index: int = 0) -> None:
    """Add `name` on APP through the form with the given choices and wait until the add run is done."""
    parent, view = await open_add_form(driver, slack, f"add {name} --app {APP}", index=index)
    values: dict[str, dict[str, str]] = {"add:priority": {"choice": priority}, "add:source": {"choice": source}}
    if value is not None:
        values[f"value:{name}"] = {"value": value}
    response = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values=values)
    assert response.text in ("", "null")
    await approve(driver, slack, parent)
    await wait_for_status(slack, parent, "done", timeout=60)


async def open_value_form(driver: SlackDriver, slack: SlackStandin, parent: Message) -> View:
    """Press "Enter the new value" as the requester and return the value form it opens."""
    parent = await wait_for_buttons(slack, parent, "step_enter")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=REQUESTER)
    view: View = await slack.wait_for(lambda: next(iter(slack.views(REQUESTER)), None),
                                      description="value form opened")
    return view


def value_blocks(view: View) -> list[dict[str, Any]]:
    return [block for block in view.blocks if block.get("type") == "input"]


async def test_rotate_added_generated_secret(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                             fly: FlyState, flyctl_log: Path) -> None:
    await add_secret(driver, slack, GENERATED_NAME, priority="high", source="generated")
    added_value = fly.secret_value(APP, GENERATED_NAME)
    assert added_value is not None
    imports_after_add = len(calls(fly, flyctl_log, "secrets", "import"))
    forms_after_add = len(slack.calls_to("views.open"))

    await driver.slash_command(f"rotate {GENERATED_NAME} --app {APP} -- quarterly rotation", user_id=REQUESTER,
                               channel_id=CHANNEL)
    parent = await approve(driver, slack, await wait_for_parent(slack, index=1))
    await wait_for_status(slack, parent, "done", timeout=60)

    rotated = fly.secret_value(APP, GENERATED_NAME)
    assert rotated is not None
    assert rotated != added_value
    # The default of a generated secret: 48 random bytes in unpadded base64url, 64 characters.
    assert len(rotated) == 64
    imports = calls(fly, flyctl_log, "secrets", "import")
    assert len(imports) == imports_after_add + 1
    assert imports[-1]["argv"] == ["secrets", "import", "--app", APP]
    assert imports[-1]["stdin_bytes"] > len(rotated)
    assert rotated not in flyctl_log.read_text()
    # A generated value needs no form.
    assert len(slack.calls_to("views.open")) == forms_after_add
    runs = query(bot.database, "SELECT kind, status FROM runs ORDER BY created_at")
    assert [(row["kind"], row["status"]) for row in runs] == [("add", "succeeded"), ("rotate", "succeeded")]
    generated = query(bot.database, "SELECT detail FROM audit_log WHERE event = 'values.generated' "
                                    "AND run_id IN (SELECT id FROM runs WHERE kind = 'rotate')")
    assert len(generated) == 1
    assert json.loads(generated[0]["detail"])["formats"] == {GENERATED_NAME: "48 random bytes, base64url"}

    await bot.stop_async()
    assert rotated not in slack_traffic(slack)
    assert rotated not in bot.log()
    assert rotated.encode() not in database_bytes(bot.database)


async def test_rotate_added_provider_secret(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                            fly: FlyState, flyctl_log: Path) -> None:
    await add_secret(driver, slack, PROVIDER_NAME, priority="medium", source="provider", value=FIRST_VALUE)
    assert fly.secret_value(APP, PROVIDER_NAME) == FIRST_VALUE
    imports_after_add = len(calls(fly, flyctl_log, "secrets", "import"))

    await driver.slash_command(f"rotate {PROVIDER_NAME}", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await approve(driver, slack, await wait_for_parent(slack, index=1))
    view = await open_value_form(driver, slack, parent)
    fields = value_blocks(view)
    assert [block["block_id"] for block in fields] == [f"value:{PROVIDER_NAME}"]
    assert fields[0]["label"]["text"] == f"New value of {PROVIDER_NAME}"
    # No external system or instructions were configured, so the field has no hint.
    assert "hint" not in fields[0]

    empty = await driver.submit_view(view_id=view.id, user_id=REQUESTER, values={})
    assert empty.json()["errors"][f"value:{PROVIDER_NAME}"] == "Enter a value."
    response = await driver.submit_view(view_id=view.id, user_id=REQUESTER,
                                        values={f"value:{PROVIDER_NAME}": {"value": SECOND_VALUE}})
    assert response.text in ("", "null")
    await wait_for_status(slack, parent, "done", timeout=60)

    assert fly.secret_value(APP, PROVIDER_NAME) == SECOND_VALUE
    imports = calls(fly, flyctl_log, "secrets", "import")
    assert len(imports) == imports_after_add + 1
    assert SECOND_VALUE not in flyctl_log.read_text()
    await bot.stop_async()
    assert json.dumps(SECOND_VALUE)[1:-1] not in slack_traffic(slack)
    assert SECOND_VALUE not in bot.log()


async def test_compromised_added_provider_secret(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                                 fly: FlyState) -> None:
    await add_secret(driver, slack, PROVIDER_NAME, priority="high", source="provider", value=FIRST_VALUE)

    # An approver starting it skips the approval wait (break-glass); the revoke step has no configured text.
    await driver.slash_command(f"compromised {PROVIDER_NAME} -- key seen in a CI log", user_id=APPROVER,
                               channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack, index=1), "step_done")
    assert "Revoke or delete the leaked key at its provider" in json.dumps(parent.blocks)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_done", user_id=APPROVER)
    parent = await wait_for_buttons(slack, parent, "step_enter")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_enter", user_id=APPROVER)
    view = await slack.wait_for(lambda: next(iter(slack.views(APPROVER)), None), description="value form opened")
    await driver.submit_view(view_id=view.id, user_id=APPROVER,
                             values={f"value:{PROVIDER_NAME}": {"value": SECOND_VALUE}})
    await wait_for_status(slack, parent, "done", timeout=60)
    assert fly.secret_value(APP, PROVIDER_NAME) == SECOND_VALUE


async def test_rotate_unknown_names_rejected(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                             fly: FlyState, flyctl_log: Path) -> None:
    never = await driver.slash_command("rotate NEVER_ADDED_KEY", user_id=REQUESTER, channel_id=CHANNEL)
    assert "Unknown secret `NEVER_ADDED_KEY`" in never.text
    assert "/secret rotate NAME" in never.text

    # The stored choice belongs to the app the secret was added to.
    await add_secret(driver, slack, GENERATED_NAME, priority="low", source="generated")
    other_app = await driver.slash_command(f"rotate {GENERATED_NAME} --app hotel-staging", user_id=REQUESTER,
                                           channel_id=CHANNEL)
    assert f"Unknown secret `{GENERATED_NAME}`" in other_app.text
    assert len(run_messages(slack)) == 1
    assert len(calls(fly, flyctl_log, "secrets", "import")) == 1


async def test_config_table_wins_over_choice(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                             flyctl_wrapper: Path, flyctl_log: Path) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    try:
        driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await add_secret(driver, slack, PROVIDER_NAME, priority="high", source="provider", value=FIRST_VALUE)
    finally:
        await first.stop_async()

    # A table written after the add makes the secret generated, as 16 bytes of hex.
    config = DEFAULT_CONFIG + (f'\n[secrets.{PROVIDER_NAME}]\npriority = "low"\nsource = "generated"\n'
                               'format = "hex"\nlength = 16\n')
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await second.start()
    try:
        driver = SlackDriver(bot_url=second.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.slash_command(f"rotate {PROVIDER_NAME}", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await approve(driver, slack, await wait_for_parent(slack, index=1))
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await second.stop_async()

    rotated = fly.secret_value(APP, PROVIDER_NAME)
    assert rotated is not None
    assert rotated != FIRST_VALUE
    assert len(rotated) == 32
    assert int(rotated, 16) >= 0
    # The add opened one form; the rotation generated its value without one.
    assert len(slack.calls_to("views.open")) == 1


async def test_resumed_rotation_keeps_choice(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                             flyctl_wrapper: Path) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        await add_secret(driver, slack, PROVIDER_NAME, priority="medium", source="provider", value=FIRST_VALUE)
        await driver.slash_command(f"rotate {PROVIDER_NAME}", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack, index=1), "step_approve")
    finally:
        await first.stop_async(signal.SIGKILL)

    # A new process, which has read no stored choice yet, takes over the run.
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        await approve(driver, slack, parent)
        view = await open_value_form(driver, slack, parent)
        assert [block["block_id"] for block in value_blocks(view)] == [f"value:{PROVIDER_NAME}"]
        await driver.submit_view(view_id=view.id, user_id=REQUESTER,
                                 values={f"value:{PROVIDER_NAME}": {"value": SECOND_VALUE}})
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await second.stop_async()
    assert fly.secret_value(APP, PROVIDER_NAME) == SECOND_VALUE


async def test_home_rotate_added_secret(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                        fly: FlyState) -> None:
    await add_secret(driver, slack, GENERATED_NAME, priority="high", source="generated")
    added_value = fly.secret_value(APP, GENERATED_NAME)
    # High priority is due every 30 days.
    execute(bot.database, "UPDATE inventory SET last_rotated_at = ? WHERE app = ? AND name = ?",
            midnight(day(45)), APP, GENERATED_NAME)

    await driver.event(home_opened(BYSTANDER))
    view = await published_home(slack, BYSTANDER)
    assert [button["value"] for button in buttons(view)] == [f"{APP}:{GENERATED_NAME}"]
    click = await driver.click_view(view_id=view.id, action_id=ROTATE_ACTION_ID, user_id=BYSTANDER)
    assert click.status == 200

    parent = await approve(driver, slack, await wait_for_parent(slack, index=1))
    await wait_for_status(slack, parent, "done", timeout=60)
    runs = query(bot.database, "SELECT requester FROM runs WHERE kind = 'rotate'")
    assert [row["requester"] for row in runs] == [BYSTANDER]
    rotated = fly.secret_value(APP, GENERATED_NAME)
    assert rotated is not None
    assert rotated != added_value


async def test_lowercase_added_name_is_read_as_a_name(bot: BotProcess, driver: SlackDriver, slack: SlackStandin
                                                       ) -> None:
    # A lower-case word after the names usually starts the reason. Once `vendor_key` has been
    # added, the next command must read it as a secret, not file it as the reason.
    await add_secret(driver, slack, "vendor_key", priority="low", source="generated")
    response = await driver.slash_command(f"rotate JWT_SECRET vendor_key --app {APP}", user_id=REQUESTER,
                                          channel_id=CHANNEL)
    assert "JWT_SECRET, vendor_key" in response.text
    await wait_for_parent(slack, index=1)
    rows = query(bot.database, "SELECT s.name, r.reason FROM runs r JOIN run_secrets s ON s.run_id = r.id "
                               "WHERE r.kind = 'rotate'")
    assert sorted(row["name"] for row in rows) == ["JWT_SECRET", "vendor_key"]
    assert {row["reason"] for row in rows} == {None}


async def test_name_added_by_another_process_is_read_again_after_the_ack(bot: BotProcess, driver: SlackDriver,
                                                                         slack: SlackStandin) -> None:
    # The row is written straight to the database, as another bot process sharing it would.
    # This bot's copy of the added policies then lacks `vendor_key`, so its ack reads the
    # word as the reason. The command is read again before anything starts.
    now = midnight(day(0))
    execute(bot.database, "INSERT INTO inventory (app, name, first_seen_at, last_seen_at, rotation_source, "
                          "priority, value_source) VALUES (?, ?, ?, ?, ?, ?, ?)",
            APP, "vendor_key", now, now, "unknown", "low", "generated")
    response = await driver.slash_command(f"rotate JWT_SECRET vendor_key --app {APP}", user_id=REQUESTER,
                                          channel_id=CHANNEL)
    assert response.status == 200
    await wait_for_parent(slack, index=0)
    rows = query(bot.database, "SELECT s.name, r.reason FROM runs r JOIN run_secrets s ON s.run_id = r.id "
                               "WHERE r.kind = 'rotate'")
    assert sorted(row["name"] for row in rows) == ["JWT_SECRET", "vendor_key"]
    assert {row["reason"] for row in rows} == {None}
    notices = [str(call.args.get("text", "")) for call in slack.calls_to("response_url")]
    assert any("reads differently" in text and "JWT_SECRET, vendor_key" in text for text in notices), notices
