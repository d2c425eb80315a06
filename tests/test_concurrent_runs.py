"""Many runs started and approved at once in one bot process: every run succeeds, each
secret is imported once, and the audit chain stays intact without a single append retry."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from pathlib import Path

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, REQUESTER
from tests.flow import CHANNEL, query, run_messages
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

APPS = 8
SECRETS_PER_APP = 4
RUNS = APPS * SECRETS_PER_APP
# bot/audit.py logs this line each time an append lost a race and read the chain again.
RACE_LINE = "audit append raced another writer"


def app_name(index: int) -> str:
    return f"load-app-{index}"


def secret_name(app_index: int, index: int) -> str:
    return f"LOAD_KEY_{app_index}_{index}"


def load_config() -> str:
    apps = ", ".join(f'"{app_name(index)}"' for index in range(APPS))
    lines = [
        "[slack]",
        f'channel = "{CHANNEL}"',
        f'approvers = ["{REQUESTER}", "{APPROVER}"]',
        "",
        "[fly]",
        f"apps = [{apps}]",
        "command_timeout = 60",
        "deploy_timeout = 120",
        "verify_timeout = 60",
        "verify_interval = 0.2",
        "",
        "[inventory]",
        "sync_interval = 0",
        "",
    ]
    for app_index in range(APPS):
        for index in range(SECRETS_PER_APP):
            # Low priority and generated: one approval runs the whole rotation.
            lines += [f"[secrets.{secret_name(app_index, index)}]", 'priority = "low"', 'source = "generated"', ""]
    return "\n".join(lines)


async def wait_for_approvals(slack: SlackStandin, count: int, *, timeout: float) -> list[str]:
    async def ready() -> list[str] | None:
        waiting = [message.ts for message in run_messages(slack) if "step_approve" in json.dumps(message.blocks)]
        return waiting if len(waiting) >= count else None

    result: list[str] = await slack.wait_for(ready, timeout=timeout, description=f"{count} runs awaiting approval")
    return result


async def wait_for_ended_runs(bot: BotProcess, count: int, *, timeout: float) -> list[str]:
    def ended() -> list[str] | None:
        rows = query(bot.database, "SELECT status FROM runs WHERE finished_at IS NOT NULL")
        return [row[0] for row in rows] if len(rows) >= count else None

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        statuses = ended()
        if statuses is not None:
            return statuses
        if asyncio.get_running_loop().time() > deadline:
            open_rows = query(bot.database, "SELECT id, status FROM runs WHERE finished_at IS NULL")
            raise AssertionError(f"{len(open_rows)} of {count} runs still open after {timeout:.0f} s: {open_rows}")
        await asyncio.sleep(0.5)


async def test_concurrent_rotations_all_succeed(tmp_path: Path, slack: SlackStandin, fly: FlyState,
                                                 flyctl_wrapper: Path, flyctl_log: Path) -> None:
    for app_index in range(APPS):
        fly.add_app(app_name(app_index), machines=1, checks_per_machine=1, ip=False)
        for index in range(SECRETS_PER_APP):
            fly.set_secret(app_name(app_index), secret_name(app_index, index), secrets.token_urlsafe(24))
    workdir = tmp_path / "load"
    workdir.mkdir()
    bot = BotProcess(workdir=workdir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=load_config(),
                     extra_env={"LOG_LEVEL": "INFO"})
    await bot.start()
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    try:
        started = await asyncio.gather(*(
            driver.slash_command(f"rotate {secret_name(app_index, index)} --app {app_name(app_index)} load test",
                                 user_id=REQUESTER, channel_id=CHANNEL)
            for app_index in range(APPS) for index in range(SECRETS_PER_APP)))
        assert [response.status for response in started] == [200] * RUNS
        waiting = await wait_for_approvals(slack, RUNS, timeout=120)
        # All approvals land together, so every run's steps finish and write audit records at once.
        clicked = await asyncio.gather(*(
            driver.click(channel=CHANNEL, ts=ts, action_id="step_approve", user_id=APPROVER) for ts in waiting))
        assert [response.status for response in clicked] == [200] * RUNS
        statuses = await wait_for_ended_runs(bot, RUNS, timeout=300)
    finally:
        await bot.stop_async()

    assert statuses == ["succeeded"] * RUNS
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    # The client may spell the flag -a or --app; the app name follows it either way.
    assert sorted(call["argv"][3] for call in imports) == sorted(
        app_name(app_index) for app_index in range(APPS) for _ in range(SECRETS_PER_APP))
    log = bot.log()
    assert RACE_LINE not in log
    assert "database is locked" not in log
    command = [str(Path(sys.executable).parent / "secretbot"), "audit", "verify"]
    verified = subprocess.run(command, capture_output=True, text=True, env=bot.environment(), cwd=bot.workdir,
                              check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_acknowledged_commands_survive_sigterm(bot: BotProcess, driver: SlackDriver, slack: SlackStandin,
                                                     fly: FlyState) -> None:
    # Slow flyctl calls keep the syncs busy, so the rotations queue for their turn after the
    # ack; a deploy's SIGTERM then arrives while they wait.
    fly.set_delay(1.0)
    syncs = [driver.slash_command("sync", user_id=APPROVER, channel_id=CHANNEL) for _ in range(12)]
    rotations = [driver.slash_command(f"rotate {name}", user_id=REQUESTER, channel_id=CHANNEL)
                 for name in ("JWT_SECRET", "ENCRYPTION_KEY")]
    responses = await asyncio.gather(*syncs, *rotations)
    assert [response.status for response in responses] == [200] * len(responses)
    assert all("Starting the rotation" in response.text for response in responses[-2:])
    assert await bot.stop_async() == 0

    runs = query(bot.database, "SELECT id FROM runs")
    assert len(runs) == 2
    posted = {message.ts for message in run_messages(slack)}
    assert len(posted) == 2
