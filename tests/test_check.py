"""`secretbot check` as a process, against the Slack and flyctl stand-ins and a real database.

Each failure test breaks one thing and checks that its row failed with a useful message,
that the command exits 1, and that the rows that do not depend on it still ran.
"""

from __future__ import annotations

import asyncio
import base64
import io
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from bot.cli_check import exit_code, render_plain, render_table
from bot.preflight import CheckResult, Status
from bot.storage.db import create_engine, migrate
from tests.botprocess import (
    BOT_TOKEN,
    DEFAULT_CONFIG,
    FLY_TOKEN,
    SIGNING_SECRET,
    free_port,
)
from tests.conftest import BACKUP_KEY
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin

SECRETBOT = Path(sys.executable).parent / "secretbot"
APPS = ("hotel-voice-bot", "hotel-staging")
ALL_ITEMS = ("environment", "configuration", "database", "flyctl", "slack", "backup key",
             *(f"app {app}" for app in APPS))
# Values from the fly fixture in conftest.py; none may reach the output.
FLY_VALUES = ("old-jwt-secret-value", "old-webhook-token", "sk-old-openai-key", "staging-jwt-secret")
# Short limits keep the hang tests quick; the normal runs never come close.
SHORT_TIMEOUT = 2.0
# The bot's test configuration with Slack IDs of its own, because the channel and approvers
# of DEFAULT_CONFIG are the placeholders of secretbot.example.toml, about which check warns.
CHECK_CONFIG = DEFAULT_CONFIG.replace('"C0123OPS"', '"C0TEAMOPS"').replace('"U0AAA", "U0BBB"', '"U0ALICE", "U0BOB"')
S3_CONFIG = '\n[backups.s3]\nendpoint_url = "http://127.0.0.1:9"\nbucket = "secret-backups"\n'


@dataclass(frozen=True)
class Row:
    status: str
    detail: str
    fix: str | None


@dataclass(frozen=True)
class CheckRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def rows(self) -> dict[str, Row]:
        return parse_rows(self.stdout)


def parse_rows(stdout: str) -> dict[str, Row]:
    """Read the plain output: `STATUS  ITEM: DETAIL`, an indented `fix:` line, then the summary line."""
    rows: dict[str, Row] = {}
    last: str | None = None
    for line in stdout.splitlines()[:-1]:
        if line.startswith(" "):
            assert last is not None, stdout
            fix = line.strip().removeprefix("fix: ")
            rows[last] = Row(rows[last].status, rows[last].detail, fix)
            continue
        status, rest = line.split(maxsplit=1)
        item, detail = rest.split(": ", 1)
        rows[item] = Row(status, detail, None)
        last = item
    return rows


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """A SQLite database migrated to the latest revision, as the bot leaves it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'secretbot.db'}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    return url


@pytest.fixture
def environment(tmp_path: Path, slack: SlackStandin, flyctl_wrapper: Path, database_url: str) -> dict[str, str]:
    """The environment of a bot whose every check passes; tests change one variable each."""
    config = tmp_path / "secretbot.toml"
    config.write_text(CHECK_CONFIG)
    # A folder with nothing in it: the command must not find a real flyctl by accident.
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    return {
        "PATH": str(empty_bin),
        "HOME": str(tmp_path),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "DATABASE_URL": database_url,
        "FLYCTL": str(flyctl_wrapper),
        "FLY_API_TOKEN": FLY_TOKEN,
        "SECRETBOT_CONFIG": str(config),
        "SECRETBOT_BACKUP_KEY": BACKUP_KEY,
    }


async def run_check(env: dict[str, str], *args: str, cwd: Path, limit: float = 90.0) -> CheckRun:
    """Run the installed `secretbot check`, leaving the event loop free for the Slack stand-in."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(SECRETBOT), "check", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"secretbot check did not finish within {limit} s") from None
    assert process.returncode is not None
    return CheckRun(process.returncode, stdout.decode(), stderr.decode(), time.monotonic() - started)


def assert_no_secrets(run: CheckRun, env: dict[str, str]) -> None:
    values = [env[name] for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "FLY_API_TOKEN",
                                     "SECRETBOT_BACKUP_KEY") if env.get(name)]
    values += [FLY_TOKEN.split()[1], *FLY_VALUES]
    for value in values:
        assert value not in run.stdout, value
        assert value not in run.stderr, value


def assert_ok(run: CheckRun, *items: str) -> None:
    for item in items:
        assert run.rows[item].status == "ok", (item, run.stdout)


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Listen on 127.0.0.1 and accept connections but never respond; yield the port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    return free_port()


# --- everything in place --------------------------------------------------------------------


async def test_all_checks_pass(tmp_path: Path, environment: dict[str, str]) -> None:
    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    assert list(run.rows) == list(ALL_ITEMS)
    assert_ok(run, *ALL_ITEMS)
    assert run.stdout.splitlines()[-1] == f"{len(ALL_ITEMS)} ok, 0 failed, 0 skipped"
    assert_no_secrets(run, environment)


async def test_pass_details_name_what_was_found(tmp_path: Path, environment: dict[str, str]) -> None:
    rows = (await run_check(environment, cwd=tmp_path)).rows

    assert rows["flyctl"].detail.startswith("flyctl v0.4.87 linux/amd64")
    assert "team example (T0TEAM)" in rows["slack"].detail
    assert "bot user secretbot (U0BOT)" in rows["slack"].detail
    assert "schema at the latest revision" in rows["database"].detail
    assert str(tmp_path / "secretbot.db") in rows["database"].detail
    assert "2 apps" in rows["configuration"].detail
    assert "key ID" in rows["backup key"].detail
    assert rows["app hotel-voice-bot"].detail.endswith("4 secrets listed")
    assert rows["app hotel-staging"].detail.endswith("1 secret listed")


async def test_check_changes_nothing(tmp_path: Path, environment: dict[str, str], fly: FlyState) -> None:
    before = {app: fly.secrets_version(app) for app in APPS}
    database_file = tmp_path / "secretbot.db"
    size = database_file.stat().st_size

    await run_check(environment, cwd=tmp_path)

    assert {app: fly.secrets_version(app) for app in APPS} == before
    assert database_file.stat().st_size == size
    assert not (tmp_path / ".secretbot").exists()


# --- configuration and environment ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[slack\nchannel = 1\n", "invalid TOML"),
        (CHECK_CONFIG + "\n[fly.extra]\nfoo = 1\n", "fly"),
        ('[slack]\napprovers = ["U0AAA"]\n[fly]\napps = ["hotel-voice-bot"]\n', "[slack] channel"),
    ],
    ids=["bad-toml", "unknown-key", "no-channel"],
)
async def test_invalid_config_fails_its_row(
    tmp_path: Path, environment: dict[str, str], text: str, expected: str
) -> None:
    Path(environment["SECRETBOT_CONFIG"]).write_text(text)

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["configuration"]
    assert row.status == "failed"
    assert expected in row.detail
    assert row.fix
    assert_ok(run, "environment", "database", "flyctl", "slack", "backup key")
    assert_no_secrets(run, environment)


async def test_unreadable_config_skips_apps(tmp_path: Path, environment: dict[str, str]) -> None:
    Path(environment["SECRETBOT_CONFIG"]).write_text("[slack\n")

    rows = (await run_check(environment, cwd=tmp_path)).rows

    assert rows["apps"].status == "skipped"
    assert "configuration is invalid" in rows["apps"].detail
    assert "app hotel-voice-bot" not in rows


async def test_missing_config_file_named(tmp_path: Path, environment: dict[str, str]) -> None:
    environment["SECRETBOT_CONFIG"] = str(tmp_path / "nowhere.toml")

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["configuration"].status == "failed"
    assert "nowhere.toml: file not found" in run.rows["configuration"].detail


async def test_missing_signing_secret_fails_environment(tmp_path: Path, environment: dict[str, str]) -> None:
    del environment["SLACK_SIGNING_SECRET"]

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["environment"].status == "failed"
    assert "SLACK_SIGNING_SECRET" in run.rows["environment"].detail
    assert_ok(run, "configuration", "database", "flyctl", "slack", "backup key", "app hotel-voice-bot")
    assert_no_secrets(run, environment)


async def test_socket_mode_needs_no_signing_secret(tmp_path: Path, environment: dict[str, str],
                                                   slack: SlackStandin) -> None:
    del environment["SLACK_SIGNING_SECRET"]
    environment["SLACK_APP_TOKEN"] = "xapp-1-A0SECRETBOT-1234-abcdef"
    slack.enable_socket_mode(app_token=environment["SLACK_APP_TOKEN"], issue_url=lambda: "ws://127.0.0.1:9/never")

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 0, run.stdout
    assert "Socket Mode" in run.rows["environment"].detail
    assert "app-level token accepted" in run.rows["slack"].detail
    assert_no_secrets(run, environment)


async def test_rejected_app_token_fails_slack(tmp_path: Path, environment: dict[str, str],
                                              slack: SlackStandin) -> None:
    environment["SLACK_APP_TOKEN"] = "xapp-1-A0SECRETBOT-1-revoked"
    slack.enable_socket_mode(app_token="xapp-1-A0SECRETBOT-1-current", issue_url=lambda: "ws://127.0.0.1:9/never")

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["slack"].status == "failed"
    assert "SLACK_APP_TOKEN" in run.rows["slack"].detail
    assert "invalid_auth" in run.rows["slack"].detail
    assert_no_secrets(run, environment)


async def test_wrong_app_token_fails_environment(tmp_path: Path, environment: dict[str, str]) -> None:
    environment["SLACK_APP_TOKEN"] = "xoxb-not-an-app-token"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["environment"].status == "failed"
    assert "SLACK_APP_TOKEN" in run.rows["environment"].detail
    assert_no_secrets(run, environment)


async def test_missing_fly_token_skips_apps(tmp_path: Path, environment: dict[str, str]) -> None:
    del environment["FLY_API_TOKEN"]

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert "FLY_API_TOKEN" in run.rows["environment"].detail
    assert_ok(run, "flyctl", "slack", "database")
    for app in APPS:
        assert run.rows[f"app {app}"].status == "skipped"
        assert "FLY_API_TOKEN is not set" in run.rows[f"app {app}"].detail


async def test_unusable_environment_skips_the_rest(tmp_path: Path, environment: dict[str, str]) -> None:
    environment["PORT"] = "eighty"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["environment"].status == "failed"
    assert "PORT must be a number" in run.rows["environment"].detail
    for item in ("configuration", "database", "flyctl", "slack", "backup key", "apps"):
        assert run.rows[item].status == "skipped", item


# --- database -----------------------------------------------------------------------------------


async def test_missing_database_file(tmp_path: Path, environment: dict[str, str]) -> None:
    missing = tmp_path / "elsewhere" / "secretbot.db"
    environment["DATABASE_URL"] = f"sqlite+aiosqlite:///{missing}"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["database"]
    assert row.status == "failed"
    assert f"{missing} does not exist" in row.detail
    assert row.fix is not None and "secretbot serve" in row.fix
    assert not missing.exists()
    assert_ok(run, "environment", "configuration", "flyctl", "slack", "backup key", *ALL_ITEMS[-2:])


async def test_unmigrated_database(tmp_path: Path, environment: dict[str, str]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    environment["DATABASE_URL"] = f"sqlite:///{empty}"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["database"]
    assert row.status == "failed"
    assert "schema is not at the latest revision" in row.detail
    assert row.fix is not None and "migrates" in row.fix
    assert sqlite3.connect(empty).execute("SELECT name FROM sqlite_master").fetchall() == []
    assert_ok(run, "environment", "configuration", "flyctl", "slack", "backup key", *ALL_ITEMS[-2:])


async def test_database_behind_latest_revision(tmp_path: Path, environment: dict[str, str]) -> None:
    # As after an upgrade of secretbot whose new migration has not run yet.
    database = Path(environment["DATABASE_URL"].split("///", 1)[1])
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0001'")

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["database"].status == "failed"
    assert "schema is not at the latest revision" in run.rows["database"].detail
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]


async def test_unreachable_database(tmp_path: Path, environment: dict[str, str]) -> None:
    environment["DATABASE_URL"] = f"postgresql://secretbot:db-password-1234@127.0.0.1:{closed_port()}/bot"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["database"]
    assert row.status == "failed"
    assert "cannot reach the postgresql database bot on 127.0.0.1" in row.detail
    assert "db-password-1234" not in run.stdout + run.stderr
    assert_ok(run, "environment", "configuration", "flyctl", "slack", "backup key")


async def test_hanging_database_times_out(tmp_path: Path, environment: dict[str, str]) -> None:
    async with silent_server() as port:
        environment["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{port}/bot"
        run = await run_check(environment, "--timeout", str(SHORT_TIMEOUT), cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["database"].status == "failed"
    assert f"did not answer within {SHORT_TIMEOUT:g} s" in run.rows["database"].detail
    assert_ok(run, "flyctl", "slack", *ALL_ITEMS[-2:])
    assert run.seconds < 30


async def test_database_on_postgresql(tmp_path: Path, environment: dict[str, str], postgres_url: str) -> None:
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    await migrate(engine)
    await engine.dispose()
    environment["DATABASE_URL"] = postgres_url

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 0, run.stdout
    assert "postgresql database" in run.rows["database"].detail


# --- flyctl and the apps ------------------------------------------------------------------------


async def test_no_flyctl_on_path(tmp_path: Path, environment: dict[str, str]) -> None:
    del environment["FLYCTL"]

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["flyctl"]
    assert row.status == "failed"
    assert "'flyctl' was not found" in row.detail
    assert row.fix is not None and "FLYCTL" in row.fix
    for app in APPS:
        assert run.rows[f"app {app}"].status == "skipped"
        assert "flyctl failed" in run.rows[f"app {app}"].detail
    assert_ok(run, "environment", "configuration", "database", "slack", "backup key")


async def test_unknown_app_fails_its_row(tmp_path: Path, environment: dict[str, str], fly: FlyState) -> None:
    fly.remove_app("hotel-staging")

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["app hotel-staging"]
    assert row.status == "failed"
    assert "app not found" in row.detail
    assert row.fix is not None and "[fly] apps" in row.fix
    assert_ok(run, "app hotel-voice-bot", "flyctl", "slack", "database", "configuration", "environment")
    assert_no_secrets(run, environment)


async def test_rejected_fly_token_is_redacted(tmp_path: Path, environment: dict[str, str], fly: FlyState) -> None:
    fly.set_accepted_tokens(["FlyV1 fm2_some-other-token"])

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    for app in APPS:
        assert run.rows[f"app {app}"].status == "failed"
    assert_ok(run, "flyctl")
    assert_no_secrets(run, environment)


async def test_hanging_flyctl_times_out(tmp_path: Path, environment: dict[str, str], fly: FlyState) -> None:
    fly.inject("*", "version", "hang", once=False)

    run = await run_check(environment, "--timeout", str(SHORT_TIMEOUT), cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["flyctl"]
    assert row.status == "failed"
    assert f"did not finish within {SHORT_TIMEOUT:g} s" in row.detail
    for app in APPS:
        assert run.rows[f"app {app}"].status == "skipped"
    assert_ok(run, "environment", "configuration", "database", "slack", "backup key")
    # The limit, the kill grace and the process's own start-up; far below flyctl's hang of 300 s.
    assert run.seconds < 30


async def test_hanging_app_times_out_alone(tmp_path: Path, environment: dict[str, str], fly: FlyState) -> None:
    fly.inject("hotel-staging", "secrets list", "hang", once=False)

    run = await run_check(environment, "--timeout", str(SHORT_TIMEOUT), cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["app hotel-staging"].status == "failed"
    assert "did not finish within" in run.rows["app hotel-staging"].detail
    assert_ok(run, "app hotel-voice-bot", "flyctl")
    assert run.seconds < 30


# --- Slack ----------------------------------------------------------------------------------------


async def test_rejected_slack_token(tmp_path: Path, environment: dict[str, str]) -> None:
    environment["SLACK_BOT_TOKEN"] = "xoxb-1234-rejected-by-slack"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["slack"]
    assert row.status == "failed"
    assert row.detail == "Slack rejected SLACK_BOT_TOKEN: invalid_auth"
    assert row.fix is not None and "OAuth & Permissions" in row.fix
    assert_ok(run, "environment", "configuration", "database", "flyctl", "backup key", *ALL_ITEMS[-2:])
    assert_no_secrets(run, environment)


async def test_revoked_slack_token(tmp_path: Path, environment: dict[str, str], slack: SlackStandin) -> None:
    slack.set_token_revoked(error="token_revoked")

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["slack"].detail == "Slack rejected SLACK_BOT_TOKEN: token_revoked"


async def test_unreachable_slack(tmp_path: Path, environment: dict[str, str]) -> None:
    environment["SLACK_API_URL"] = f"http://127.0.0.1:{closed_port()}/api/"

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["slack"]
    assert row.status == "failed"
    assert "request failed" in row.detail
    assert row.fix is not None and "SLACK_API_URL" in row.fix
    assert_ok(run, "database", "flyctl", *ALL_ITEMS[-2:])


async def test_hanging_slack_times_out(tmp_path: Path, environment: dict[str, str]) -> None:
    async with silent_server() as port:
        environment["SLACK_API_URL"] = f"http://127.0.0.1:{port}/api/"
        run = await run_check(environment, "--timeout", str(SHORT_TIMEOUT), cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["slack"].status == "failed"
    assert f"did not answer within {SHORT_TIMEOUT:g} s" in run.rows["slack"].detail
    assert_ok(run, "database", "flyctl", *ALL_ITEMS[-2:])
    assert run.seconds < 30


async def test_missing_slack_token_skips_slack(tmp_path: Path, environment: dict[str, str]) -> None:
    del environment["SLACK_BOT_TOKEN"]

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    assert run.rows["environment"].status == "failed"
    assert run.rows["slack"].status == "skipped"
    assert "SLACK_BOT_TOKEN is not set" in run.rows["slack"].detail


# --- backup key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("not//base64!!" + "A" * 30, "not valid base64"),
        (base64.b64encode(bytes(range(16))).decode(), "must decode to 32 bytes, got 16"),
    ],
    ids=["not-base64", "short"],
)
async def test_bad_backup_key(tmp_path: Path, environment: dict[str, str], key: str, expected: str) -> None:
    environment["SECRETBOT_BACKUP_KEY"] = key

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["backup key"]
    assert row.status == "failed"
    assert expected in row.detail
    assert row.fix is not None and "SECRETBOT_BACKUP_KEY" in row.fix
    assert_ok(run, "environment", "configuration", "database", "flyctl", "slack", *ALL_ITEMS[-2:])
    assert key not in run.stdout + run.stderr


async def test_missing_backup_key_warns(tmp_path: Path, environment: dict[str, str]) -> None:
    del environment["SECRETBOT_BACKUP_KEY"]

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 0, run.stdout
    row = run.rows["backup key"]
    assert row.status == "warning"
    assert "SECRETBOT_BACKUP_KEY is not set, so no backups are kept" in row.detail
    assert "cannot restore a lost value" in row.detail
    assert row.fix is not None and "python3 -c" in row.fix
    assert_ok(run, "environment", "configuration", "database", "flyctl", "slack", *ALL_ITEMS[-2:])
    assert run.stdout.splitlines()[-1] == f"{len(ALL_ITEMS) - 1} ok, 1 warning, 0 failed, 0 skipped"


async def test_missing_backup_key_with_bucket_fails(tmp_path: Path, environment: dict[str, str]) -> None:
    Path(environment["SECRETBOT_CONFIG"]).write_text(CHECK_CONFIG + S3_CONFIG)
    environment["SECRETBOT_S3_ACCESS_KEY_ID"] = "bucket-key-id"
    environment["SECRETBOT_S3_SECRET_ACCESS_KEY"] = "bucket-secret-key"
    del environment["SECRETBOT_BACKUP_KEY"]

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 1
    row = run.rows["backup key"]
    assert row.status == "failed"
    assert "[backups.s3]" in row.detail
    assert row.fix is not None and "SECRETBOT_BACKUP_KEY" in row.fix
    assert_ok(run, "configuration")


# --- example placeholders -------------------------------------------------------------------------


async def test_example_ids_warn_configuration(tmp_path: Path, environment: dict[str, str]) -> None:
    Path(environment["SECRETBOT_CONFIG"]).write_text(DEFAULT_CONFIG)

    run = await run_check(environment, cwd=tmp_path)

    assert run.returncode == 0, run.stdout
    row = run.rows["configuration"]
    assert row.status == "warning"
    assert "slack.channel is C0123OPS, the placeholder from secretbot.example.toml" in row.detail
    assert "slack.approvers contains U0AAA, U0BBB" in row.detail
    assert row.fix is not None and "secretbot.toml" in row.fix
    assert_ok(run, "environment", "database", "flyctl", "slack", "backup key", *ALL_ITEMS[-2:])


# --- usage and rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("--timeout", "0"), ("--timeout", "soon"), ("--verbose",)])
async def test_usage_error_exits_2(tmp_path: Path, environment: dict[str, str], args: tuple[str, ...]) -> None:
    run = await run_check(environment, *args, cwd=tmp_path)

    assert run.returncode == 2
    assert run.stdout == ""


RESULTS = [
    CheckResult(item="configuration", status=Status.FAILED, detail="no apps in [fly] apps",
                fix="list them in [fly] apps"),
    CheckResult(item="slack", status=Status.OK, detail="token accepted"),
    CheckResult(item="app x", status=Status.SKIPPED, detail="not run because flyctl failed"),
]
WARNING_RESULT = CheckResult(item="backup key", status=Status.WARNING, detail="SECRETBOT_BACKUP_KEY is not set",
                             fix="set it")


def test_table_keeps_brackets() -> None:
    buffer = io.StringIO()
    render_table(RESULTS, Console(file=buffer, force_terminal=True, width=160, color_system=None))
    text = buffer.getvalue()

    assert "no apps in [fly] apps" in text
    assert "fix: list them in [fly] apps" in text
    assert "1 ok, 1 failed, 1 skipped" in text


def test_plain_layout_is_stable() -> None:
    assert render_plain(RESULTS) == [
        "failed   configuration: no apps in [fly] apps",
        "         fix: list them in [fly] apps",
        "ok       slack: token accepted",
        "skipped  app x: not run because flyctl failed",
        "1 ok, 1 failed, 1 skipped",
    ]


def test_plain_layout_with_warning() -> None:
    assert render_plain([*RESULTS, WARNING_RESULT])[-3:] == [
        "warning  backup key: SECRETBOT_BACKUP_KEY is not set",
        "         fix: set it",
        "1 ok, 1 warning, 1 failed, 1 skipped",
    ]


def test_warning_alone_exits_0() -> None:
    assert exit_code([RESULTS[1], WARNING_RESULT]) == 0
    assert exit_code([*RESULTS, WARNING_RESULT]) == 1


def test_password_in_slack_url_masked() -> None:
    from bot.preflight import CheckResult, Status, _masked

    url = "http://gateway:slackurlpass@127.0.0.1:1/api/"
    [result] = _masked([CheckResult(item="slack", status=Status.FAILED, detail=f"auth.test at {url} failed")],
                       {"SLACK_API_URL": url})
    assert "slackurlpass" not in result.detail
    assert "127.0.0.1:1/api/" in result.detail
