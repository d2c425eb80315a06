"""Start-up of `secretbot serve`: clear errors for missing settings, unusable databases and
ports, and the health check."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
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


def error_line(stderr: str) -> str:
    """Return the last line of stderr: the `secretbot: ...` message, after any log lines."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines
    assert lines[-1].startswith("secretbot: ")
    return lines[-1]


@pytest.mark.own_database
def test_unreachable_postgres_names_database_url(bot_dir: Path, flyctl_wrapper: Path) -> None:
    # Nothing listens on port 9 (discard) of 127.0.0.1, so the connection is refused.
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper,
                     extra_env={"DATABASE_URL": "postgresql://postgres:hunter2pw@127.0.0.1:9/test"})
    result = run_serve(bot)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "DATABASE_URL postgresql+asyncpg://postgres:***@127.0.0.1:9/test" in line
    assert "ConnectionRefusedError" in line
    assert "check that PostgreSQL is running" in line
    assert "hunter2pw" not in result.stderr


@pytest.fixture
async def postgres_without_ssl() -> AsyncIterator[int]:
    """Yield the port of a server that declines SSL the way PostgreSQL without SSL does.

    A client that requires SSL first sends an 8-byte SSLRequest, and a server without SSL
    replies with the single byte "N".
    """

    async def decline(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readexactly(8), timeout=10)
            writer.write(b"N")
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(decline, host="127.0.0.1", port=0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.own_database
async def test_postgres_without_ssl_names_sslmode(bot_dir: Path, flyctl_wrapper: Path,
                                                  postgres_without_ssl: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{postgres_without_ssl}/test?sslmode=require"
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper,
                     extra_env={"DATABASE_URL": url})
    (bot.workdir / "secretbot.toml").write_text(bot.config)
    # The stand-in runs on this event loop, so the bot must not block it.
    process = await asyncio.create_subprocess_exec(SECRETBOT, "serve", cwd=bot.workdir, env=bot.environment(),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr_bytes = await asyncio.wait_for(process.communicate(), timeout=30)
    stderr = stderr_bytes.decode()
    assert process.returncode == 2
    line = error_line(stderr)
    assert "rejected SSL upgrade" in line
    assert "remove sslmode=require" in line


@pytest.mark.own_database
def test_unopenable_sqlite_names_folder(bot_dir: Path, flyctl_wrapper: Path) -> None:
    missing = bot_dir / "no-such-folder"
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper,
                     extra_env={"DATABASE_URL": f"sqlite+aiosqlite:///{missing}/secretbot.db"})
    result = run_serve(bot)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "unable to open database file" in line
    assert f"check that the folder {missing} exists" in line


def test_port_in_use_names_port(bot_dir: Path, flyctl_wrapper: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper, port=port)
        result = run_serve(bot)
    assert result.returncode == 2
    assert f"PORT {port} is already in use" in error_line(result.stderr)


async def test_healthz_reports_database(bot: BotProcess) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.get(f"{bot.url}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["database"] == "ok"


@pytest.mark.own_database
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("not//base64!!" + "A" * 30, "SECRETBOT_BACKUP_KEY is not valid base64"),
        ("AAAA", "SECRETBOT_BACKUP_KEY must decode to 32 bytes, got 3"),
    ],
    ids=["not-base64", "short"],
)
def test_bad_backup_key_leaves_no_files(bot_dir: Path, flyctl_wrapper: Path, key: str, expected: str) -> None:
    database = bot_dir / "secretbot.db"
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper,
                     extra_env={"DATABASE_URL": f"sqlite+aiosqlite:///{database}", "SECRETBOT_BACKUP_KEY": key})
    result = run_serve(bot)
    assert result.returncode == 2
    assert expected in error_line(result.stderr)
    assert "python3 -c" in result.stderr
    assert key not in result.stderr
    assert not database.exists()
    assert not (bot_dir / "secretbot.seen-requests.db").exists()
    assert not (bot_dir / ".secretbot").exists()


async def test_startup_logs_no_bolt_token_warnings(bot: BotProcess) -> None:
    log = bot.log()
    assert "Slack token accepted" in log
    assert "will be unused" not in log
    assert "will be ignored" not in log
