"""`/secret diagnose` and its fix buttons through the real `secretbot serve`, Slack and flyctl stand-ins."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.backups import BackupStore
from bot.diagnose import Diagnosis, Fix
from bot.operations import LockBusy, hold_app_lock, new_operation_id
from bot.runbook.context import OPERATION_LEASE, AppLocks
from bot.sealing import Sealer
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import AppLock
from handlers.diagnose_listeners import FIX_ACTION_PATTERN
from handlers.diagnose_views import diagnosis_message
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BACKUP_KEY, BYSTANDER, REQUESTER
from tests.flow import CHANNEL, query, slack_traffic, wait_for_parent
from tests.inventory_flow import block_texts, next_ephemeral, wait_for_inventory
from tests.standins.fly_state import FlyState
from tests.standins.flyctl_impl import model
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver
from tests.standins.slack_state import Ephemeral

# Only these two may start runbooks, so BYSTANDER may diagnose but not press a fix.
OPERATORS_CONFIG = DEFAULT_CONFIG.replace(
    'approvers = ["U0AAA", "U0BBB"]\n', 'approvers = ["U0AAA", "U0BBB"]\noperators = ["U0AAA", "U0BBB"]\n')
STAGED_VALUE = "staged-webhook-token-value"


@pytest.fixture
async def operated_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=OPERATORS_CONFIG,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


@pytest.fixture
def operated_driver(operated_bot: BotProcess, slack: SlackStandin) -> SlackDriver:
    return SlackDriver(bot_url=operated_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)


async def diagnose(driver: SlackDriver, slack: SlackStandin, text: str, *, user: str) -> Ephemeral:
    before = len(slack.ephemerals(user))
    ack = await driver.slash_command(f"diagnose {text}", user_id=user, channel_id=CHANNEL)
    assert ack.status == 200
    assert ack.elapsed < 3.0
    assert "Checking" in ack.text
    return await next_ephemeral(slack, user, after=before, timeout=30)


async def click_fix(driver: SlackDriver, slack: SlackStandin, reply: Ephemeral, action_id: str, *,
                    user: str) -> list[str]:
    """Click a fix button and return the clicker's replies once the last one (the result) arrived."""
    before = len(slack.ephemerals(user))
    response = await driver.click(channel=CHANNEL, ts=reply.message_ts, action_id=action_id, user_id=user)
    assert response.status == 200
    assert response.elapsed < 3.0

    def finished() -> list[str] | None:
        texts = [ephemeral.text for ephemeral in slack.ephemerals(user)[before:]]
        return texts if any(marker in text for text in texts for marker in (" done ", " failed ", "needs the right",
                                                                             "Nothing was changed")) else None

    result: list[str] = await slack.wait_for(finished, timeout=60, description=f"result of {action_id}")
    return result


def button_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [element["action_id"] for block in blocks if block.get("type") == "actions"
            for element in block["elements"]]


def calls(fly: FlyState, log: Path, *argv: str) -> list[dict[str, Any]]:
    return [call for call in fly.invocations(log) if call["argv"][: len(argv)] == list(argv)]


async def test_staged_secret_deployed_from_button(operated_bot: BotProcess, operated_driver: SlackDriver,
                                                  slack: SlackStandin, fly: FlyState, flyctl_log: Path) -> None:
    fly.set_secret(APP, "WAHA_WEBHOOK_TOKEN", STAGED_VALUE, deployed=False)
    assert model.secret_statuses(fly.app(APP))["WAHA_WEBHOOK_TOKEN"] == "Staged"

    reply = await diagnose(operated_driver, slack, "WAHA_WEBHOOK_TOKEN", user=REQUESTER)
    text = "\n".join(block_texts(reply.blocks))
    assert "is *staged*" in text
    assert "Backup: no backup" in text
    assert "deploy the staged secrets" in text
    assert button_ids(reply.blocks) == ["diagnose_deploy"]
    assert "confirm" in json.dumps(reply.blocks)

    replies = await click_fix(operated_driver, slack, reply, "diagnose_deploy", user=REQUESTER)
    assert any("Deploying the staged secrets" in text for text in replies)
    assert any("done" in text and "WAHA_WEBHOOK_TOKEN deployed" in text for text in replies), replies

    assert model.secret_statuses(fly.app(APP))["WAHA_WEBHOOK_TOKEN"] == "Deployed"
    assert len(calls(fly, flyctl_log, "secrets", "deploy")) == 1
    assert calls(fly, flyctl_log, "secrets", "deploy")[0]["argv"] == ["secrets", "deploy", "--app", APP]
    records = query(operated_bot.database, "SELECT * FROM audit_log WHERE event = 'secret.deployed_staged'")
    assert len(records) == 1
    assert records[0]["actor"] == REQUESTER
    assert records[0]["app"] == APP
    assert records[0]["secret"] == "WAHA_WEBHOOK_TOKEN"
    assert json.loads(records[0]["detail"])["ok"] is True
    # No new value was made: the staged one is what Fly now runs, and nothing showed it.
    assert fly.secret_value(APP, "WAHA_WEBHOOK_TOKEN") == STAGED_VALUE
    assert STAGED_VALUE not in slack_traffic(slack)

    # A second click on the same, now stale, button: nothing is staged, so no deploy and no restart.
    again = await click_fix(operated_driver, slack, reply, "diagnose_deploy", user=REQUESTER)
    assert any("Nothing was changed" in text and "staged any more" in text for text in again), again
    assert len(calls(fly, flyctl_log, "secrets", "deploy")) == 1
    assert len(query(operated_bot.database, "SELECT id FROM audit_log WHERE event = 'secret.deployed_staged'")) == 1


async def test_unhealthy_machine_offers_restart(operated_bot: BotProcess, operated_driver: SlackDriver,
                                                slack: SlackStandin, fly: FlyState, flyctl_log: Path) -> None:
    sick = fly.machine_ids(APP)[1]
    fly.set_machine(APP, sick, checks="critical")
    fly.add_log_line(APP, "auth: JWT_SECRET rejected a token signature", machine=sick, level="error")

    reply = await diagnose(operated_driver, slack, "JWT_SECRET", user=APPROVER)
    text = "\n".join(block_texts(reply.blocks))
    assert "is deployed on" in text
    assert f"`{sick}`" in text
    assert "1 of 2 machine(s) need attention" in text
    assert "is critical" in text
    assert "1 recent log line(s) mention `JWT_SECRET`" in text
    assert "rejected a token signature" in text
    assert "restart the app" in text
    assert button_ids(reply.blocks) == ["diagnose_restart"]

    replies = await click_fix(operated_driver, slack, reply, "diagnose_restart", user=APPROVER)
    assert any("Restart on" in text and "done" in text for text in replies), replies
    restarts = calls(fly, flyctl_log, "apps", "restart")
    assert len(restarts) == 1
    assert restarts[0]["argv"] == ["apps", "restart", APP]
    assert all(check["status"] == "passing" for machine in fly.machines(APP) for check in machine["checks"])
    records = query(operated_bot.database, "SELECT * FROM audit_log WHERE event = 'app.restarted'")
    assert len(records) == 1
    assert records[0]["actor"] == APPROVER
    assert json.loads(records[0]["detail"])["ok"] is True


async def test_digest_differs_from_backup(operated_bot: BotProcess, operated_driver: SlackDriver,
                                          slack: SlackStandin, fly: FlyState) -> None:
    await wait_for_inventory(operated_bot.database, rows=5)
    # The bot backed up a value, and Fly confirmed it with a digest. Since then the value on
    # Fly was changed by hand, so Fly's digest is another one.
    engine = create_engine(normalize_database_url(operated_bot.database.url))
    try:
        store = BackupStore(sessions=create_session_factory(engine), sealer=Sealer.from_setting(BACKUP_KEY))
        record = await store.save(app=APP, name="ENCRYPTION_KEY", value="11" * 32, run_id=None, created_by=REQUESTER)
        await store.mark_deployed(app=APP, name="ENCRYPTION_KEY", version=record.version,
                                  fly_digest="0123456789abcdef")
    finally:
        await engine.dispose()

    reply = await diagnose(operated_driver, slack, "ENCRYPTION_KEY", user=REQUESTER)
    text = "\n".join(block_texts(reply.blocks))
    assert f"Fly's digest differs from backup version {record.version}" in text
    assert "`0123456789abcdef`" in text
    assert "start a rotation" in text
    assert button_ids(reply.blocks) == ["diagnose_rotate"]

    before = len(slack.ephemerals(REQUESTER))
    await operated_driver.click(channel=CHANNEL, ts=reply.message_ts, action_id="diagnose_rotate", user_id=REQUESTER)
    parent = await wait_for_parent(slack)
    assert "ENCRYPTION_KEY" in parent.text
    runs = query(operated_bot.database, "SELECT kind, requester, status FROM runs")
    assert [(row["kind"], row["requester"]) for row in runs] == [("rotate", REQUESTER)]
    await next_ephemeral(slack, REQUESTER, after=before)


async def test_bystander_click_refused(operated_bot: BotProcess, operated_driver: SlackDriver,
                                       slack: SlackStandin, fly: FlyState, flyctl_log: Path) -> None:
    sick = fly.machine_ids(APP)[0]
    fly.set_machine(APP, sick, checks="critical")

    # Diagnosing only reads, so a bystander may; the fix needs the right to start a runbook.
    reply = await diagnose(operated_driver, slack, "JWT_SECRET", user=BYSTANDER)
    assert button_ids(reply.blocks) == ["diagnose_restart"]

    replies = await click_fix(operated_driver, slack, reply, "diagnose_restart", user=BYSTANDER)
    assert any("needs the right to start a runbook" in text for text in replies), replies
    assert not calls(fly, flyctl_log, "apps", "restart")
    assert not query(operated_bot.database, "SELECT id FROM audit_log WHERE event = 'app.restarted'")
    assert any(check["status"] == "critical" for check in fly.machines(APP)[0]["checks"])


async def test_operation_lock_blocks_runs_until_stale(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}")
    try:
        await migrate(engine)
        locks = AppLocks(create_session_factory(engine))
        operation = new_operation_id("restart")
        assert operation.startswith("op-restart-")
        assert len(operation) <= 32

        async with hold_app_lock(locks, APP, operation, wait=False):
            # A run, or another fix, must wait while the operation refreshes its lock.
            assert await locks.try_acquire(APP, "b2b2b2b2b2b2") == operation
            with pytest.raises(LockBusy, match="operation `op-restart-"):
                async with hold_app_lock(locks, APP, new_operation_id("deploy"), wait=False):
                    pass
            assert await locks.refresh(APP, operation)
        assert await locks.holder(APP) is None

        # An operation whose process died stops refreshing; after the lease a run takes the lock.
        async with create_session_factory(engine).begin() as session:
            session.add(AppLock(app=APP, run_id="op-import-deadbeef0000",
                                acquired_at=datetime.now(UTC) - OPERATION_LEASE * 2))
        assert await locks.try_acquire(APP, "b2b2b2b2b2b2") is None
        assert await locks.holder(APP) == "b2b2b2b2b2b2"
    finally:
        await engine.dispose()


def test_every_fix_button_has_listener() -> None:
    for fix in Fix:
        _, blocks = diagnosis_message(Diagnosis(app=APP, name="JWT_SECRET", not_deployed=("JWT_SECRET",)), fix=fix)
        ids = button_ids(blocks)
        assert len(ids) == 1, fix
        assert FIX_ACTION_PATTERN.match(ids[0]), ids
    _, blocks = diagnosis_message(Diagnosis(app=APP, name="JWT_SECRET"), fix=None)
    assert not button_ids(blocks)
