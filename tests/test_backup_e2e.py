"""Backups made by a real rotation: the value on Fly is recoverable on the operator's machine."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, database_bytes, query, thread_texts, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

BACKUP_KEY = base64.b64encode(bytes(range(100, 132))).decode()
SECRETBOT = str(Path(sys.executable).parent / "secretbot")


async def rotate(process: BotProcess, slack: SlackStandin) -> object:
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    return await wait_for_status(slack, parent, "done", timeout=60)


async def test_rotation_backs_up_value(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        parent = await rotate(process, slack)
    finally:
        await process.stop_async()

    value = fly.secret_value(APP, "JWT_SECRET")
    assert value is not None
    rows = query(process.database, "SELECT app, name, version, run_id, fly_digest FROM backups")
    assert len(rows) == 1
    assert rows[0]["version"] == 1
    assert rows[0]["fly_digest"] == fly.secret_digest(APP, "JWT_SECRET")
    assert any("Backed up (encrypted): JWT_SECRET v1" in text for text in thread_texts(slack, parent))
    assert value.encode() not in database_bytes(process.database)

    shown = await asyncio.create_subprocess_exec(
        SECRETBOT, "backup", "show", APP, "JWT_SECRET", "--yes", "--no-newline",
        cwd=process.workdir, env=process.environment(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(shown.communicate(), timeout=30)
    assert shown.returncode == 0, stderr.decode()
    assert stdout.decode() == value
    assert len(query(process.database, "SELECT id FROM audit_log WHERE event = 'backup.shown'")) == 1


async def test_rotation_without_key_says_backups_off(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    parent = await rotate(bot, slack)
    assert any("Backups are off" in text for text in thread_texts(slack, parent))
    assert query(bot.database, "SELECT id FROM backups") == []
