"""`/secret rotated`, `status`, `history` and `sync`, and `secretbot status`, through the real `secretbot serve`.

The inventory comes from the bot's own start-up sync of the flyctl stand-in. Tests move
dates with `/secret rotated`, or with SQL on the bot's SQLite file for hundreds of rows.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.audit import AuditEntry, append
from bot.overview import secret_history
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BYSTANDER, REQUESTER
from tests.databases import SqliteDatabase
from tests.flow import (
    CHANNEL,
    query,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.inventory_flow import (
    block_texts,
    day,
    execute,
    midnight,
    next_ephemeral,
    wait_for_inventory,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

# The fly fixture puts four secrets on APP and one on hotel-staging.
SYNCED_ROWS = 5
BULK_SECRETS = 400


async def test_recorded_date_shown_in_status(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    rotated_on = day(45)

    ack = await driver.slash_command(f"rotated JWT_SECRET {rotated_on}", user_id=APPROVER, channel_id=CHANNEL)
    assert ack.status == 200
    assert ack.elapsed < 3.0
    reply = await next_ephemeral(slack, APPROVER, after=0)
    assert f"last rotated on {rotated_on}" in reply.text
    assert "overdue by 15 days" in reply.text

    ack = await driver.slash_command("status", user_id=APPROVER, channel_id=CHANNEL)
    assert ack.status == 200
    assert ack.elapsed < 3.0
    status = await next_ephemeral(slack, APPROVER, after=1)
    texts = block_texts(status.blocks)
    assert f"{SYNCED_ROWS} secret(s)" in texts[0]
    first_line = texts[1].splitlines()[0]
    assert "*JWT_SECRET* on hotel-voice-bot" in first_line
    assert f"rotated {rotated_on} (45 days ago)" in first_line
    assert "*overdue by 15 days*" in first_line
    assert "last rotation unknown" in texts[1].splitlines()[1]

    records = query(bot.database, "SELECT * FROM audit_log WHERE event = 'secret.rotation_date_recorded'")
    assert len(records) == 1
    assert records[0]["actor"] == APPROVER
    assert records[0]["secret"] == "JWT_SECRET"
    assert json.loads(records[0]["detail"])["rotated_at"].startswith(str(rotated_on))


async def test_non_approver_cannot_record_date(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)

    ack = await driver.slash_command(f"rotated JWT_SECRET {day(10)}", user_id=BYSTANDER, channel_id=CHANNEL)

    assert ack.status == 200
    assert "Only approvers" in ack.text
    await asyncio.sleep(0.5)
    assert query(bot.database, "SELECT * FROM audit_log WHERE event = 'secret.rotation_date_recorded'") == []
    row = query(bot.database, "SELECT * FROM inventory WHERE app = ? AND name = 'JWT_SECRET'", APP)[0]
    assert row["last_rotated_at"] is None


async def test_recorded_date_for_unknown_name_rejected(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)

    await driver.slash_command(f"rotated JWT_SECRT {day(10)}", user_id=APPROVER, channel_id=CHANNEL)

    reply = await next_ephemeral(slack, APPROVER, after=0)
    assert "Did you mean `JWT_SECRET`?" in reply.text
    assert query(bot.database, "SELECT * FROM inventory WHERE name = 'JWT_SECRT'") == []


async def test_history_newest_first_after_rotation(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    await driver.slash_command("rotate JWT_SECRET WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, parent, "done", timeout=60)
    await driver.slash_command(f"rotated JWT_SECRET {day(1)}", user_id=APPROVER, channel_id=CHANNEL)
    await next_ephemeral(slack, APPROVER, after=0)

    seen = len(slack.ephemerals(REQUESTER))
    await driver.slash_command("history WAHA_WEBHOOK_TOKEN", user_id=REQUESTER, channel_id=CHANNEL)
    history = await next_ephemeral(slack, REQUESTER, after=seen)
    lines = [line for text in block_texts(history.blocks)[1:] for line in text.splitlines()]

    expected = query(bot.database, "SELECT event, secret FROM audit_log WHERE app = ? AND "
                     "(secret = 'WAHA_WEBHOOK_TOKEN' OR secret LIKE '%WAHA_WEBHOOK_TOKEN%') ORDER BY id DESC", APP)
    assert len(lines) == len(expected)
    for line, record in zip(lines, expected, strict=True):
        assert f"*{record['event']}*" in line
    # The run on both secrets wrote one run.requested record naming both.
    assert any("*run.requested*" in line and "with JWT_SECRET, WAHA_WEBHOOK_TOKEN" in line for line in lines)
    assert any("*secret.rotated*" in line for line in lines)
    # The date recorded for JWT_SECRET alone is not part of this secret's history.
    assert not any("rotation_date_recorded" in line for line in lines)


async def test_history_of_unknown_secret_suggests_name(driver: SlackDriver, slack: SlackStandin) -> None:
    await driver.slash_command("history JWT_SECRETS", user_id=REQUESTER, channel_id=CHANNEL)

    reply = await next_ephemeral(slack, REQUESTER, after=0)
    assert "Unknown secret `JWT_SECRETS`" in reply.text
    assert "Did you mean `JWT_SECRET`?" in reply.text


@pytest.fixture
async def bulk_bot(bot_dir: Path, slack: SlackStandin, fly: FlyState,
                   flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    """The bot with BULK_SECRETS more secrets on APP, synced at start-up."""
    for index in range(BULK_SECRETS):
        fly.set_secret(APP, f"BULK_SECRET_{index:03d}", f"bulk-value-{index}")
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await process.start()
    try:
        await wait_for_inventory(process.database, rows=SYNCED_ROWS + BULK_SECRETS, timeout=60)
        yield process
    finally:
        await process.stop_async()


async def test_status_of_hundreds_within_block_kit_limits(bulk_bot: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=bulk_bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    # Half of them overdue by 1 to 399 days (medium priority, 90-day interval), so the order is checked across many lines.
    for index in range(0, BULK_SECRETS, 2):
        execute(bulk_bot.database, "UPDATE inventory SET last_rotated_at = ?, rotation_source = 'operator' "
                "WHERE name = ?", midnight(day(91 + index)), f"BULK_SECRET_{index:03d}")

    ack = await driver.slash_command(f"status --app {APP}", user_id=REQUESTER, channel_id=CHANNEL)
    assert ack.status == 200
    assert ack.elapsed < 3.0
    reply = await next_ephemeral(slack, REQUESTER, after=0)

    response_calls = [call for call in slack.calls_to("response_url") if call.status != 200]
    assert response_calls == []
    assert len(reply.blocks) <= 50
    for text in block_texts(reply.blocks):
        assert 0 < len(text) <= 3000
    lines = [line for text in block_texts(reply.blocks)[1:-1] for line in text.splitlines()]
    # The most overdue secret comes first: BULK_SECRET_398 was rotated 489 days ago.
    assert "*BULK_SECRET_398*" in lines[0]
    overdue_by = [int(line.split("overdue by ")[1].split(" ")[0]) for line in lines if "overdue by" in line]
    assert overdue_by == sorted(overdue_by, reverse=True)
    summary = block_texts(reply.blocks)[-1]
    left_out = int(summary.split("…and ")[1].split(" more")[0])
    assert len(lines) + left_out == SYNCED_ROWS - 1 + BULK_SECRETS
    assert "secretbot status" in summary


async def test_sync_reports_each_app(bot: BotProcess, driver: SlackDriver, slack: SlackStandin, fly: FlyState) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    fly.set_secret(APP, "NEW_SECRET", "new-value")

    ack = await driver.slash_command("sync", user_id=BYSTANDER, channel_id=CHANNEL)
    assert ack.status == 200
    assert ack.elapsed < 3.0
    reply = await next_ephemeral(slack, BYSTANDER, after=0)

    lines = reply.text.splitlines()
    assert len(lines) == 2
    # The start-up reminder also syncs, and may be the one that records NEW_SECRET first.
    assert lines[0].startswith(f":white_check_mark: {APP}: 5 secret(s), ")
    assert lines[1].startswith(":white_check_mark: hotel-staging: 1 secret(s), 0 appeared")
    assert query(bot.database, "SELECT * FROM inventory WHERE name = 'NEW_SECRET'") != []
    appeared = query(bot.database, "SELECT id FROM audit_log WHERE event = 'inventory.appeared' "
                                        "AND secret = 'NEW_SECRET'")
    assert len(appeared) == 1


def unchanged_marker(bot: BotProcess) -> object:
    """What changes when anything writes to the bot's database: the SQLite file's mtime, or every row."""
    if isinstance(bot.database, SqliteDatabase):
        return bot.database.path.stat().st_mtime_ns
    return bot.database.contents()


async def test_cli_status_prints_table(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    await driver.slash_command(f"rotated JWT_SECRET {day(45)}", user_id=APPROVER, channel_id=CHANNEL)
    await next_ephemeral(slack, APPROVER, after=0)
    await bot.stop_async()
    before = unchanged_marker(bot)

    out, err, code = await _run_cli(bot, "status", "--app", APP)

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["APP", "SECRET", "PRIORITY", "LAST", "ROTATED", "AGE", "DUE", "STATE"]
    assert lines[1].split()[:5] == [APP, "JWT_SECRET", "high", str(day(45)), "45"]
    assert lines[1].endswith("overdue by 15 d")
    assert len([line for line in lines if line.startswith(APP)]) == 4
    assert "4 secrets: 1 overdue, 3 ok" in out
    assert unchanged_marker(bot) == before


async def test_cli_status_missing_database_creates_nothing(bot: BotProcess, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"

    _out, err, code = await _run_cli(bot, "status", env={"DATABASE_URL": f"sqlite+aiosqlite:///{missing}"})

    assert code == 2
    assert "does not exist" in err
    assert not missing.exists()


async def _run_cli(bot: BotProcess, *args: str, env: dict[str, str] | None = None) -> tuple[str, str, int]:
    command = [str(Path(sys.executable).parent / "secretbot"), *args]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=bot.workdir, env={**bot.environment(), **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    return out.decode(), err.decode(), process.returncode or 0


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    # A synchronous fixture, because postgres_url runs its own event loop to create the database.
    return normalize_database_url(request.getfixturevalue("postgres_url"))


async def test_history_matches_whole_names_only(database_url: str) -> None:
    # SQLite's LIKE ignores case and treats "_" as a wildcard, so both backends are checked.
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        sessions = create_session_factory(engine)
        for secret in ("JWT_SECRET", "jwt_secret", "JWT_SECRET_OLD", "JWTXSECRET", "A,JWT_SECRET,B",
                       "JWT_SECRET,B", "A,JWT_SECRET", "A,OLD_JWT_SECRET"):
            await append(sessions, AuditEntry(event="test.event", app=APP, secret=secret))
        await append(sessions, AuditEntry(event="test.event", app="hotel-staging", secret="JWT_SECRET"))

        history = await secret_history(sessions, app=APP, name="JWT_SECRET", limit=3)
    finally:
        await engine.dispose()

    assert [record.secret for record in history.records] == ["A,JWT_SECRET", "JWT_SECRET,B", "A,JWT_SECRET,B"]
    assert history.older == 1
