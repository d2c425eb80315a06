"""`auto_rotate = true`: the bot opens the rotation of a due generated secret itself, once per due date.

Through the real `secretbot serve` with the Slack and flyctl stand-ins. The inventory is
seeded so that WAHA_WEBHOOK_TOKEN (low priority, 180 days) falls due today and nothing
else is due within the reminder's window.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import InventorySecret
from tests import databases
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    bot_messages,
    is_reminder,
    query,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.inventory_flow import block_texts, execute, next_ephemeral
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

AUTO_SECRET = "WAHA_WEBHOOK_TOKEN"
# 00:00:00 UTC has always passed, so each bot start posts the day's reminder if it is owed.
CONFIG = DEFAULT_CONFIG + f"""
[reminders]
time = "00:00:00"
timezone = "UTC"

[secrets.{AUTO_SECRET}]
auto_rotate = true
"""
SECRETBOT = Path(sys.executable).parent / "secretbot"


async def seed_inventory(url: str, fly: FlyState) -> None:
    """Record APP's secrets with Fly's digests: the automatic one last rotated 180 days ago, the others lately."""
    engine = create_engine(normalize_database_url(url))
    try:
        await migrate(engine)
        now = datetime.now(UTC)
        async with create_session_factory(engine).begin() as session:
            for name in ("JWT_SECRET", "ENCRYPTION_KEY", "OPENAI_API_KEY", AUTO_SECRET):
                age = 180 if name == AUTO_SECRET else 3
                session.add(InventorySecret(app=APP, name=name, digest=fly.secret_digest(APP, name),
                                            fly_status="Deployed", first_seen_at=now - timedelta(days=400),
                                            last_seen_at=now, last_rotated_at=now - timedelta(days=age),
                                            rotation_source="secretbot"))
    finally:
        await engine.dispose()


async def avoid_midnight(margin: float = 120.0) -> None:
    """Wait until the UTC date cannot change during the test, so one reminder date and due date apply."""
    now = datetime.now(UTC)
    to_midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    if to_midnight < margin:
        await asyncio.sleep(to_midnight + 1)


def reminders(slack: SlackStandin) -> list[str]:
    """The visible text of each reminder the bot posted, oldest first."""
    return ["\n".join(block_texts(message.blocks)) for message in bot_messages(slack) if is_reminder(message)]


def reminder_buttons(slack: SlackStandin) -> list[str]:
    return [element["action_id"] for message in bot_messages(slack) if is_reminder(message)
            for block in message.blocks if block.get("type") == "actions" for element in block["elements"]]


async def test_auto_rotation_opened_once(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                                         flyctl_wrapper: Path) -> None:
    await avoid_midnight()
    await seed_inventory(databases.for_workdir(bot_dir).url, fly)

    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=CONFIG)
    await first.start()
    try:
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        posted = await slack.wait_for(lambda: reminders(slack) or None, timeout=30, description="reminder")
    finally:
        await first.stop_async()

    assert AUTO_SECRET in parent.text
    about = "\n".join(block_texts(parent.blocks))
    assert "Requested by secretbot" in about
    assert "automatic rotation" in about
    runs = query(first.database, "SELECT id, kind, requester, status FROM runs")
    assert len(runs) == 1
    run_id = runs[0]["id"]
    assert (runs[0]["kind"], runs[0]["requester"], runs[0]["status"]) == ("rotate", "secretbot", "waiting")
    started = query(first.database, "SELECT actor, run_id, secret, detail FROM audit_log WHERE event = 'run.auto_started'")
    assert len(started) == 1
    assert (started[0]["actor"], started[0]["run_id"], started[0]["secret"]) == ("secretbot", run_id, AUTO_SECRET)
    assert "due_at" in json.loads(started[0]["detail"])

    # The reminder says a run was opened, with no Rotate now for it.
    assert len(posted) == 1
    assert "Rotation runs opened automatically (1)" in posted[0]
    assert f"`{AUTO_SECRET}` on {APP} (due today): run `{run_id}` opened" in posted[0]
    assert "reminder_rotate" not in reminder_buttons(slack)

    # A restart, and the day's reminder posted again: still the one run.
    execute(first.database, "DELETE FROM reminder_posts")
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=CONFIG,
                        port=first.port)
    await second.start()
    try:
        again = await slack.wait_for(lambda: reminders(slack)[1:] or None, timeout=30, description="second reminder")
        assert f"run `{run_id}` opened" in again[0]

        # The run ends without a rotation; the same due date still gets no second run.
        driver = SlackDriver(bot_url=second.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_deny", user_id=APPROVER)
        await wait_for_status(slack, parent, "denied")
        await driver.slash_command("sync", user_id=REQUESTER, channel_id=CHANNEL)
        reply = await next_ephemeral(slack, REQUESTER, after=0, timeout=30)
        assert APP in reply.text
    finally:
        await second.stop_async()

    assert [row["id"] for row in query(second.database, "SELECT id FROM runs")] == [run_id]
    claims = query(second.database, "SELECT name, run_id, outcome FROM auto_rotations")
    assert [(row["name"], row["run_id"], row["outcome"]) for row in claims] == [(AUTO_SECRET, run_id, "opened")]
    assert len(query(second.database, "SELECT id FROM audit_log WHERE event = 'run.auto_started'")) == 1
    assert len([message for message in bot_messages(slack) if not is_reminder(message)]) == 1


async def test_auto_rotate_on_provider_secret_rejected(tmp_path: Path) -> None:
    config = tmp_path / "secretbot.toml"
    config.write_text(DEFAULT_CONFIG + "\n[secrets.OPENAI_API_KEY]\nauto_rotate = true\n")

    process = await asyncio.create_subprocess_exec(
        str(SECRETBOT), "check-config", cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "SECRETBOT_CONFIG": str(config)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode == 2, out.decode()
    message = err.decode()
    assert "key 'secrets.OPENAI_API_KEY.auto_rotate'" in message
    assert 'only applies to source = "generated"' in message
