"""SIGKILL at each step of a rotation, then a restart: the run ends in a clear state, flyctl's
import runs at most once, nothing stays running, and the audit chain still verifies."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, query_any, wait_for_buttons, wait_for_parent
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

# The rotate runbook's automatic steps after the approval, in order.
STEP_KINDS = ["values", "external", "fly_update", "verify", "record"]


async def wait_for_db(database: Path | str, sql: str, description: str,
                      timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await query_any(database, sql)
        if rows:
            return rows
        await asyncio.sleep(0.01)
    raise TimeoutError(description)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, bot_dir: Path) -> Path | str:
    """The bot's database: its SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return bot_dir / "secretbot.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize("kind", STEP_KINDS)
async def test_killed_at_step_ends_clearly(kind: str, database: Path | str, bot_dir: Path, slack: SlackStandin,
                                          fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path) -> None:
    # Slow machines keep the import and the verification running long enough to be hit.
    fly.set_delay(0.5)
    extra_env = {"DATABASE_URL": database} if isinstance(database, str) else {}
    first = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, extra_env=extra_env)
    await first.start()
    driver = SlackDriver(bot_url=first.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_db(database,
                      f"SELECT id FROM audit_log WHERE event = 'step.started' AND detail LIKE '%\"kind\": \"{kind}\"%'",
                      f"step {kind} started")
    await first.stop_async(signal.SIGKILL)

    second = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, port=first.port,
                        extra_env=extra_env)
    await second.start()
    try:
        [run] = await wait_for_db(database,
                                  "SELECT id, status, outcome FROM runs WHERE status IN ('succeeded', 'failed')",
                                  "run ended after the restart", timeout=60)
        await asyncio.sleep(0.5)
    finally:
        await second.stop_async()

    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) <= 1
    assert await query_any(database, "SELECT position FROM steps WHERE status = 'running'") == []
    stored = fly.secret_value(APP, "JWT_SECRET") != "old-jwt-secret-value"
    if run["status"] == "succeeded":
        assert stored
        assert len(imports) == 1
    else:
        # A stopped run states the reason and offers Retry in its parent message.
        assert run["outcome"]
        final = slack.message(CHANNEL, parent.ts)
        assert final is not None
        assert "run_retry" in json.dumps(final.blocks)

    command = [str(Path(sys.executable).parent / "secretbot"), "audit", "verify"]
    verified = subprocess.run(command, capture_output=True, text=True, env=second.environment(), cwd=bot_dir,
                              check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
