"""Start-up of `secretbot serve`: clear errors for missing settings, and the health check."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.botprocess import BotProcess
from tests.standins.slack_api import SlackStandin

SECRETBOT = str(Path(sys.executable).parent / "secretbot")


def run_serve(bot: BotProcess, *, drop: tuple[str, ...] = (), config: str | None = None) -> subprocess.CompletedProcess[str]:
    (bot.workdir / "secretbot.toml").write_text(config if config is not None else bot.config)
    env = {name: value for name, value in bot.environment().items() if name not in drop}
    return subprocess.run([SECRETBOT, "serve"], cwd=bot.workdir, env=env, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("variable", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "FLY_API_TOKEN"])
def test_missing_variable_stops_startup(bot_dir: Path, flyctl_wrapper: Path, variable: str) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper)
    result = run_serve(bot, drop=(variable,))
    assert result.returncode == 2
    assert variable in result.stderr


def test_invalid_config_names_file_and_key(bot_dir: Path, flyctl_wrapper: Path) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper)
    result = run_serve(bot, config='[secrets.JWT_SECRET]\npriority = "urgent"\n')
    assert result.returncode == 2
    assert "secretbot.toml" in result.stderr
    assert "secrets.JWT_SECRET.priority" in result.stderr
    assert "'urgent'" in result.stderr


def test_missing_explicit_config_file_stops_startup(bot_dir: Path, flyctl_wrapper: Path) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper,
                     extra_env={"SECRETBOT_CONFIG": str(bot_dir / "absent.toml")})
    result = run_serve(bot)
    assert result.returncode == 2
    assert "absent.toml: file not found" in result.stderr


async def test_rejected_slack_token_stops_startup(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> None:
    slack.set_token_revoked()
    bot = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    (bot.workdir / "secretbot.toml").write_text(bot.config)
    # The Slack stand-in runs on this event loop, so the bot must not block it.
    process = await asyncio.create_subprocess_exec(SECRETBOT, "serve", cwd=bot.workdir, env=bot.environment(),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr_bytes = await asyncio.wait_for(process.communicate(), timeout=30)
    stderr = stderr_bytes.decode()
    assert process.returncode == 2
    assert "Slack rejected SLACK_BOT_TOKEN (invalid_auth)" in stderr
    assert "xoxb-test" not in stderr


async def test_healthz_reports_database(bot: BotProcess) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.get(f"{bot.url}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["database"] == "ok"
