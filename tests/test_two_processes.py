"""Two `secretbot serve` processes on one PostgreSQL database, with requests spread across both:
each run advances once, and changes to one app never overlap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.botprocess import SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver


async def test_same_app_changes_serialised_across_processes(
    tmp_path: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path, flyctl_log: Path, postgres_url: str
) -> None:
    # Each machine takes a second to roll out, so two imports would overlap if both ran at once.
    fly.set_delay(1.0)
    processes = []
    for name in ("first", "second"):
        workdir = tmp_path / name
        workdir.mkdir()
        processes.append(BotProcess(workdir=workdir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                                    extra_env={"DATABASE_URL": postgres_url}))
    for process in processes:
        await process.start()
    first, second = (SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
                     for process in processes)
    try:
        await first.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        jwt_run = await wait_for_buttons(slack, await wait_for_parent(slack, index=0), "step_approve")
        await second.slash_command("rotate ENCRYPTION_KEY", user_id=REQUESTER, channel_id=CHANNEL)
        key_run = await wait_for_buttons(slack, await wait_for_parent(slack, index=1), "step_approve")

        # Each approval goes to the process that did not start the run.
        await asyncio.gather(
            second.click(channel=CHANNEL, ts=jwt_run.ts, action_id="step_approve", user_id=APPROVER),
            first.click(channel=CHANNEL, ts=key_run.ts, action_id="step_approve", user_id=APPROVER),
        )
        await wait_for_status(slack, jwt_run, "done", timeout=90)
        await wait_for_status(slack, key_run, "done", timeout=90)
    finally:
        for process in processes:
            await process.stop_async()

    imports = sorted((call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]),
                     key=lambda call: call["started"])
    assert len(imports) == 2
    assert imports[1]["started"] >= imports[0]["ended"]

    connection = await asyncpg.connect(postgres_url)
    try:
        statuses = await connection.fetch("SELECT status FROM runs")
        started = await connection.fetch("SELECT run_id, count(*) AS n FROM audit_log "
                                         "WHERE event = 'step.started' GROUP BY run_id, detail")
        locks = await connection.fetch("SELECT app FROM app_locks")
    finally:
        await connection.close()
    assert [row["status"] for row in statuses] == ["succeeded", "succeeded"]
    # No step of either run started twice.
    assert all(row["n"] == 1 for row in started)
    assert locks == []
    assert fly.secret_value(APP, "ENCRYPTION_KEY") != "00" * 32
