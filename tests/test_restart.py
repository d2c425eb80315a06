"""Runs survive the bot process being killed or stopped, and report plainly when they cannot."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from tests import databases
from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, parent_step_lines, query, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver


async def test_killed_while_waiting_resumes(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path
) -> None:
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    assert await first.stop_async(signal.SIGKILL) == -signal.SIGKILL

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await second.stop_async()
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1


async def start_approved_rotation(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> tuple[BotProcess, Any]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await process.start()
    driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    return process, parent


async def wait_until(condition: Callable[[], bool], description: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(description)
        await asyncio.sleep(0.02)


async def test_killed_after_value_stored_settles_then_verifies(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    old_digest = fly.secret_digest(APP, "JWT_SECRET")
    # Slow machines keep the rollout going after the value is stored.
    fly.set_delay(1.0)
    first, parent = await start_approved_rotation(bot_dir, slack, flyctl_wrapper)
    await wait_until(lambda: fly.secret_digest(APP, "JWT_SECRET") != old_digest, "value stored on Fly")
    await first.stop_async(signal.SIGKILL)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        message = await wait_for_status(slack, parent, "failed", timeout=60)
    finally:
        await second.stop_async()
    # flyctl dies on its next write to the dead bot's pipe, so the rollout stops half way:
    # the value is stored, and verification reports the machines left behind.
    line = parent_step_lines(message)[3]
    assert line.startswith(":white_check_mark:")
    assert "restarted during `flyctl secrets import`" in line
    verify_line = parent_step_lines(message)[4]
    assert verify_line.startswith(":x:")
    assert "verification failed" in verify_line
    digests = query(second.database, "SELECT digest_before, digest_after FROM run_secrets")
    assert digests[0]["digest_before"] == old_digest
    assert digests[0]["digest_after"] == fly.secret_digest(APP, "JWT_SECRET")


async def test_killed_before_value_stored_reports_nothing_changed(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    fly.set_hang_limit(3)
    fly.inject(APP, "import", failure="hang_before_store")
    first, parent = await start_approved_rotation(bot_dir, slack, flyctl_wrapper)

    def import_started() -> bool:
        rows = query(first.database, "SELECT digest_before FROM run_secrets")
        return bool(rows) and rows[0]["digest_before"] is not None

    await wait_until(import_started, "digests read before the import")
    await asyncio.sleep(0.5)
    await first.stop_async(signal.SIGKILL)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port)
    await second.start()
    try:
        message = await wait_for_status(slack, parent, "failed", timeout=30)
    finally:
        await second.stop_async()
    line = parent_step_lines(message)[3]
    assert line.startswith(":x:")
    assert "still reports the old digest" in line
    assert fly.secret_value(APP, "JWT_SECRET") == "old-jwt-secret-value"


async def test_sigterm_after_click_finishes_decision(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    process, parent = await start_approved_rotation(bot_dir, slack, flyctl_wrapper)
    # SIGTERM right after the click's acknowledgement: shutdown waits for the decision.
    assert await process.stop_async(signal.SIGTERM) == 0
    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=process.port)
    await second.start()
    try:
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await second.stop_async()


async def test_sigterm_stops_cleanly(bot: BotProcess) -> None:
    assert await bot.stop_async(signal.SIGTERM) == 0
    log = bot.log()
    assert "start-up heap frozen" in log
    assert "start-up heap released" in log
    assert "secretbot stopped" in log


async def test_rotation_on_postgres(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path, postgres_url: str
) -> None:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"DATABASE_URL": postgres_url})
    await process.start()
    try:
        driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.slash_command("rotate JWT_SECRET ENCRYPTION_KEY", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await wait_for_status(slack, parent, "done", timeout=60)
    finally:
        await process.stop_async()

    assert not (process.workdir / "secretbot.db").exists()
    connection = await asyncpg.connect(postgres_url)
    try:
        rotated = await connection.fetch("SELECT secret FROM audit_log WHERE event = 'secret.rotated' ORDER BY secret")
        statuses = await connection.fetch("SELECT status FROM runs")
    finally:
        await connection.close()
    assert [row["secret"] for row in rotated] == ["ENCRYPTION_KEY", "JWT_SECRET"]
    assert [row["status"] for row in statuses] == ["succeeded"]
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1
    assert fly.secret_value(APP, "ENCRYPTION_KEY") != "00" * 32


async def _serve_process(bot: BotProcess) -> asyncio.subprocess.Process:
    """Start `secretbot serve` without waiting for /healthz, its output piped."""
    (bot.workdir / "secretbot.toml").write_text(bot.config)
    executable = str(Path(sys.executable).parent / "secretbot")
    return await asyncio.create_subprocess_exec(executable, "serve", cwd=bot.workdir, env=bot.environment(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


@pytest.mark.parametrize("delay", [0.3, 1.0])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_during_startup_exits_zero(
    bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, signum: int, delay: float
) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    process = await _serve_process(bot)
    await asyncio.sleep(delay)
    process.send_signal(signum)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode == 0, output.decode()
    assert b"Traceback" not in output


async def test_sigterm_while_slack_check_waits(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> None:
    # auth.test returns 429 with a 30 s Retry-After, so start-up waits in the Slack check.
    slack.rate_limit_next("auth.test", retry_after=30)
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    process = await _serve_process(bot)
    deadline = time.monotonic() + 30
    while not slack.calls_to("auth.test") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert slack.calls_to("auth.test")

    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=10)

    assert process.returncode == 0
    assert b"secretbot stopped during start-up, before serving" in output
    assert b"database schema" not in output


async def test_sigterm_while_request_waits_for_ledger_finishes_it(bot: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    # The first request creates the ledger (file or table).
    assert (await driver.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL)).status == 200
    async with _ledger_locked(bot) as release:
        command = asyncio.create_task(driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER,
                                                           channel_id=CHANNEL))
        await asyncio.sleep(0.5)
        assert bot.process is not None
        bot.process.send_signal(signal.SIGTERM)
        # Well within the ledger's 2 s wait for the lock, so the request is recorded and handled.
        await asyncio.sleep(0.8)
        await release()
        response = await command

    assert response.status == 200
    assert await bot.stop_async(signal.SIGTERM) == 0
    # The acknowledged command was carried out before the process ended.
    assert len(query(bot.database, "SELECT id FROM runs")) == 1
    assert "waiting for 1 request(s) in progress" in bot.log()


@contextlib.asynccontextmanager
async def _ledger_locked(bot: BotProcess) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold the replay ledger's write lock until the yielded function is awaited."""
    if isinstance(bot.database, databases.SqliteDatabase):
        path = bot.database.path.with_name(f"{bot.database.path.stem}.seen-requests{bot.database.path.suffix}")
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")

        async def release_file() -> None:
            connection.execute("ROLLBACK")

        try:
            yield release_file
        finally:
            connection.close()
        return
    holder = await asyncpg.connect(bot.database.url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("LOCK TABLE seen_requests IN EXCLUSIVE MODE")
    try:
        yield transaction.rollback
    finally:
        await holder.close()


async def test_sigterm_while_body_arrives_answers_it(bot: BotProcess, slack: SlackStandin) -> None:
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    fields = {"token": "legacy", "team_id": "T0TEAM", "team_domain": slack.workspace.team_domain,
              "channel_id": CHANNEL, "user_id": REQUESTER, "command": "/secret", "text": "help",
              "response_url": slack.new_response_url(channel=CHANNEL, user=REQUESTER),
              "trigger_id": slack.new_trigger_id(REQUESTER)}
    body = urlencode(fields).encode()
    timestamp = str(int(time.time()))
    head = (f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
            f"X-Slack-Request-Timestamp: {timestamp}\r\n"
            f"X-Slack-Signature: {driver.signature_for(body.decode(), timestamp)}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", bot.port)
    writer.write(head + body[:20])
    await writer.drain()
    await asyncio.sleep(0.3)
    assert bot.process is not None
    signalled = time.monotonic()
    bot.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.0)
    writer.write(body[20:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()

    assert status_line.startswith(b"HTTP/1.1 200")
    assert await bot.stop_async(signal.SIGTERM) == 0
    assert time.monotonic() - signalled < 20
