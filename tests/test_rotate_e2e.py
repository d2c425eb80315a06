"""A whole rotation through the real `secretbot serve` process, Slack and flyctl stand-ins."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.botprocess import BOT_TOKEN, FLY_TOKEN, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    watch_command_lines,
    database_bytes,
    parent_step_lines,
    query,
    response_texts,
    slack_traffic,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

OLD_VALUE = "old-jwt-secret-value"


async def test_rotation_end_to_end(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    old_digest = fly.secret_digest(APP, "JWT_SECRET")
    # A slow rollout keeps flyctl alive long enough for the process scan to see it.
    fly.set_delay(0.3)

    async with watch_command_lines() as command_lines:
        ack = await driver.slash_command("rotate JWT_SECRET quarterly rotation", user_id=REQUESTER, channel_id=CHANNEL)
        assert ack.status == 200
        assert ack.elapsed < 3.0
        assert "Starting the rotation of JWT_SECRET" in ack.text

        parent = await wait_for_parent(slack)
        parent = await wait_for_buttons(slack, parent, "step_approve")
        assert any("runbook thread" in text for text in response_texts(slack, REQUESTER))

        click = await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        assert click.status == 200
        assert click.elapsed < 3.0
        parent = await wait_for_status(slack, parent, "done", timeout=60)

    new_value = fly.secret_value(APP, "JWT_SECRET")
    new_digest = fly.secret_digest(APP, "JWT_SECRET")
    assert new_value is not None
    assert new_value != OLD_VALUE
    # 64 random bytes in unpadded base64url are 86 characters.
    assert len(new_value) == 86
    assert new_digest != old_digest

    # flyctl: one import for the right app, the value on stdin only.
    calls = fly.invocations(flyctl_log)
    imports = [call for call in calls if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1
    assert imports[0]["argv"] in (["secrets", "import", "-a", APP], ["secrets", "import", "--app", APP])
    assert imports[0]["stdin_bytes"] > len(new_value)
    assert imports[0]["exit_code"] == 0
    assert "LOG_LEVEL" not in imports[0]["env_keys"]
    assert "SLACK_BOT_TOKEN" not in imports[0]["env_keys"]

    # The thread: every step done or not applicable, and a summary.
    lines = parent_step_lines(parent)
    assert len(lines) == 6
    for line in lines:
        assert line.startswith((":white_check_mark:", ":heavy_minus_sign:")), line
    assert lines[2].startswith(":heavy_minus_sign:")
    # The summary is posted after the parent message shows "done".
    await slack.wait_for(lambda: any("Summary" in reply for reply in thread_texts(slack, parent)),
                         description="summary reply posted")
    replies = thread_texts(slack, parent)
    assert any("Summary" in reply and "*done*" in reply for reply in replies)
    assert any("flyctl secrets import" in reply for reply in replies)
    assert any(f"<@{APPROVER}>" in reply and "Approval" in reply for reply in replies)

    # The audit log has the run with both digests and both people.
    rotated = query(bot.database, "SELECT * FROM audit_log WHERE event = 'secret.rotated'")
    assert len(rotated) == 1
    detail = json.loads(rotated[0]["detail"])
    assert rotated[0]["app"] == APP
    assert rotated[0]["secret"] == "JWT_SECRET"
    assert detail["requested_by"] == REQUESTER
    assert detail["approved_by"] == APPROVER
    assert detail["reason"] == "quarterly rotation"
    assert detail["digest_before"] == old_digest
    assert detail["digest_after"] == new_digest
    runs = query(bot.database, "SELECT status FROM runs")
    assert [row["status"] for row in runs] == ["succeeded"]

    # The new value is nowhere but in the flyctl stand-in's state.
    await bot.stop_async()
    assert new_value not in slack_traffic(slack)
    assert new_value not in bot.log()
    assert new_value.encode() not in database_bytes(bot.database)
    assert new_value not in flyctl_log.read_text()
    assert command_lines, "the process scan saw no processes"
    assert any("secrets import" in line for line in command_lines), "flyctl was not seen running"
    assert not [line for line in command_lines if new_value in line]

    # Nor are the old value or the bot's own credentials, even at LOG_LEVEL=DEBUG.
    log = bot.log()
    for credential in (OLD_VALUE, SIGNING_SECRET, BOT_TOKEN, FLY_TOKEN):
        assert credential not in log
        assert credential.encode() not in database_bytes(bot.database)
    assert OLD_VALUE not in slack_traffic(slack)


async def test_health_url_failure_fails_verification(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    from aiohttp import web

    from tests.botprocess import DEFAULT_CONFIG

    hits: list[str] = []

    async def unhealthy(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=503, text="database down")

    app = web.Application()
    app.router.add_get("/health", unhealthy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = DEFAULT_CONFIG + f'\n[fly.health_urls]\nhotel-voice-bot = "http://127.0.0.1:{port}/health"\n'
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await process.start()
    try:
        driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        message = await wait_for_status(slack, parent, "failed", timeout=60)
    finally:
        await process.stop_async()
        await runner.cleanup()
    line = parent_step_lines(message)[4]
    assert line.startswith(":x:")
    assert "503" in line
    assert hits


async def test_audit_verify_detects_tampering(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    import sys

    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await bot.stop_async()
    command = [str(Path(sys.executable).parent / "secretbot"), "audit", "verify"]

    intact = await asyncio.create_subprocess_exec(*command, cwd=bot.workdir, env=bot.environment(),
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await intact.communicate()
    assert intact.returncode == 0
    assert "audit log intact" in out.decode()

    bot.database.execute("UPDATE audit_log SET actor = 'U0EVIL' WHERE id = 1")
    broken = await asyncio.create_subprocess_exec(*command, cwd=bot.workdir, env=bot.environment(),
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await broken.communicate()
    assert broken.returncode == 1
    assert "broken at record 1" in err.decode()
