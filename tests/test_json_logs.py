"""LOG_FORMAT=json: one JSON object per line, tagged with the run, and never a value."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ConfigError
from bot.logs import JsonFormatter, RunContextFilter, TextFormatter, current_run, run_context
from bot.settings import load_settings
from runbooks.rotate import ROTATE
from tests.botprocess import BOT_TOKEN, FLY_TOKEN, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, BACKUP_KEY, REQUESTER
from tests.flow import CHANNEL, query, thread_texts, wait_for_buttons, wait_for_parent, wait_for_status
from tests.inventory_flow import wait_for_inventory
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

REPO = Path(__file__).resolve().parent.parent
OLD_VALUE = "old-jwt-secret-value"
STEP_KINDS = {step.kind for step in ROTATE.steps}


@pytest.fixture
async def json_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    """The bot process logging JSON, with backups on so the backup store logs too."""
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"LOG_FORMAT": "json", "SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of the log. A line that is not a JSON object fails the test with its number."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"log line {number} is not JSON ({exc}): {line[:200]!r}") from None
        assert isinstance(entry, dict), f"log line {number} is not an object: {line[:200]!r}"
        entries.append(entry)
    return entries


async def test_rotation_logs_json_with_run_fields(
    json_bot: BotProcess, slack: SlackStandin, fly: FlyState
) -> None:
    bot = json_bot
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await wait_for_inventory(bot.database, rows=5)
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, parent, "done", timeout=60)
    await slack.wait_for(lambda: any("Summary" in reply for reply in thread_texts(slack, parent)),
                         description="summary reply posted")
    # Stopping writes the shutdown lines, which must be JSON too.
    await bot.stop_async()

    text = bot.log()
    entries = parse_lines(text)
    assert len(entries) > 20
    for entry in entries:
        for key in ("time", "level", "logger", "message"):
            assert key in entry, entry
        assert entry["time"].endswith("Z"), entry["time"]
        assert datetime.fromisoformat(entry["time"]).utcoffset() == UTC.utcoffset(None)
    assert any(entry["message"] == "secretbot stopped" for entry in entries)

    run_id = query(bot.database, "SELECT id FROM runs")[0]["id"]
    run_lines = [entry for entry in entries if entry.get("run_id") == run_id]
    for entry in run_lines:
        assert entry["app"] == APP, entry
        assert entry["secret"] == "JWT_SECRET", entry
        assert isinstance(entry["step"]["position"], int), entry
        assert entry["step"]["kind"] == ROTATE.steps[entry["step"]["position"]].kind, entry
    # Each step logged something while it ran.
    assert {entry["step"]["kind"] for entry in run_lines} == STEP_KINDS

    # Every line that names the run in its text carries the fields too.
    naming = [entry for entry in entries if f"run_id={run_id}" in entry["message"]]
    assert naming
    for entry in naming:
        assert entry.get("run_id") == run_id, entry

    # Lines from helpers that never receive the run: flyctl, the backup store, Slack posting.
    def tagged(logger: str, start: str) -> list[dict[str, Any]]:
        return [entry for entry in entries if entry["logger"] == logger and entry["message"].startswith(start)]

    imports = tagged("bot.flyctl.runner", "flyctl finished app=hotel-voice-bot command=secrets import")
    assert len(imports) == 1
    assert imports[0].get("run_id") == run_id
    assert imports[0]["step"]["kind"] == "fly_update"
    statuses = tagged("bot.flyctl.runner", "flyctl finished app=hotel-voice-bot command=status")
    assert statuses
    assert all(entry.get("run_id") == run_id and entry["step"]["kind"] == "verify" for entry in statuses)
    backups = tagged("bot.backups.store", "backup deployed")
    assert len(backups) == 1
    assert backups[0].get("run_id") == run_id
    posted = tagged("handlers.observer", "run message posted")
    assert len(posted) == 1
    assert posted[0].get("run_id") == run_id

    # The start-up sync runs in its own task, so no run's fields leak into it.
    syncs = [entry for entry in entries if entry["logger"] == "bot.inventory.sync"]
    assert syncs
    assert all("run_id" not in entry for entry in syncs)

    new_value = fly.secret_value(APP, "JWT_SECRET")
    assert new_value is not None
    for forbidden in (new_value, OLD_VALUE, BOT_TOKEN, FLY_TOKEN, "fm2_", SIGNING_SECRET, BACKUP_KEY):
        assert forbidden not in text, forbidden


# --- the formatters and the filter ---------------------------------------------------


def record(message: str, *args: object, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    """A record as a logger makes it, passed through the run context filter."""
    log_record = logging.getLogger("bot.example").makeRecord("bot.example", level, __file__, 1, message, args,
                                                            None, extra=extra or None)
    RunContextFilter().filter(log_record)
    return log_record


def test_json_line_has_base_fields() -> None:
    line = JsonFormatter().format(record("flyctl finished app=%s", APP))
    entry = json.loads(line)

    assert entry["level"] == "INFO"
    assert entry["logger"] == "bot.example"
    assert entry["message"] == f"flyctl finished app={APP}"
    assert entry["time"].endswith("Z")
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    assert "run_id" not in entry


def test_json_line_carries_run_context() -> None:
    with run_context(run_id="abc123", app=APP, secrets=["B2_APPLICATION_KEY", "B2_APPLICATION_KEY_ID"],
                     step_position=3, step_kind="fly_update"):
        entry = json.loads(JsonFormatter().format(record("importing")))

    assert entry["run_id"] == "abc123"
    assert entry["app"] == APP
    assert entry["secret"] == "B2_APPLICATION_KEY,B2_APPLICATION_KEY_ID"
    assert entry["step"] == {"position": 3, "kind": "fly_update"}


def test_json_exception_stays_one_line() -> None:
    try:
        raise RuntimeError("flyctl secrets import failed for app hotel-voice-bot")
    except RuntimeError:
        log_record = logging.getLogger("bot.example").makeRecord(
            "bot.example", logging.ERROR, __file__, 1, "step crashed", (), sys.exc_info())
    line = JsonFormatter().format(log_record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: flyctl secrets import failed for app hotel-voice-bot" in entry["exception"]
    # The same rendering as the readable format, which shows no local variables.
    assert entry["exception"] == logging.Formatter().formatException(log_record.exc_info)  # type: ignore[arg-type]


def test_json_extra_keeps_scalars_only() -> None:
    entry = json.loads(JsonFormatter().format(record("sync done", apps=3, ok=True, client=object())))

    assert entry["apps"] == 3
    assert entry["ok"] is True
    assert "client" not in entry


def test_extra_field_wins_over_context() -> None:
    with run_context(run_id="abc123", app=APP, secrets=["JWT_SECRET"], step_position=0, step_kind="approval"):
        entry = json.loads(JsonFormatter().format(record("other app", app="hotel-staging")))

    assert entry["app"] == "hotel-staging"
    assert entry["run_id"] == "abc123"


def test_text_line_shows_context() -> None:
    formatter = TextFormatter()
    with run_context(run_id="abc123", app=APP, secrets=["JWT_SECRET"], step_position=4, step_kind="verify"):
        inside = formatter.format(record("machines healthy"))
    outside = formatter.format(record("machines healthy"))

    assert inside.endswith(f"bot.example: machines healthy [run_id=abc123 app={APP} secret=JWT_SECRET step=4:verify]")
    assert outside.endswith("bot.example: machines healthy")


def test_text_context_precedes_traceback() -> None:
    try:
        raise ValueError("bad shape")
    except ValueError:
        log_record = logging.getLogger("bot.example").makeRecord(
            "bot.example", logging.ERROR, __file__, 1, "step crashed", (), sys.exc_info())
    with run_context(run_id="abc123", app=APP, secrets=["JWT_SECRET"], step_position=1, step_kind="values"):
        RunContextFilter().filter(log_record)
    first, *rest = TextFormatter().format(log_record).splitlines()

    assert first.endswith("step crashed [run_id=abc123 app=hotel-voice-bot secret=JWT_SECRET step=1:values]")
    assert rest[-1] == "ValueError: bad shape"


def test_context_restored_after_block() -> None:
    assert current_run() is None
    with run_context(run_id="outer", app=APP, secrets=["JWT_SECRET"], step_position=0, step_kind="approval"):
        with run_context(run_id="inner", app=APP, secrets=["JWT_SECRET"], step_position=5, step_kind="record"):
            assert record("x").run_id == "inner"  # type: ignore[attr-defined]
        assert record("x").run_id == "outer"  # type: ignore[attr-defined]
    assert current_run() is None
    assert not hasattr(record("x"), "run_id")


async def test_context_follows_tasks_started_inside() -> None:
    seen: dict[str, object] = {}

    async def log_from_task(label: str) -> None:
        seen[label] = getattr(record("from a task"), "run_id", None)

    outside = asyncio.create_task(log_from_task("outside"))
    with run_context(run_id="abc123", app=APP, secrets=["JWT_SECRET"], step_position=3, step_kind="fly_update"):
        inside = asyncio.create_task(log_from_task("inside"))
        await outside
    await inside

    assert seen["inside"] == "abc123"
    assert seen["outside"] is None


# --- configuration -------------------------------------------------------------------


def test_invalid_log_format_rejected() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"LOG_FORMAT": "yaml"})

    assert "LOG_FORMAT 'yaml'" in str(raised.value)
    assert "'text'" in str(raised.value)
    assert "'json'" in str(raised.value)


def test_log_format_read_case_insensitively() -> None:
    assert load_settings({}).log_format == "text"
    assert load_settings({"LOG_FORMAT": "JSON"}).log_format == "json"


def test_serve_stops_on_invalid_log_format(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "secretbot"
    result = subprocess.run([str(executable), "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "LOG_FORMAT": "logfmt"}, check=False)

    assert result.returncode == 2
    assert "secretbot: LOG_FORMAT 'logfmt' is not a log format" in result.stderr


def test_serve_start_error_is_json(bot_dir: Path, flyctl_wrapper: Path) -> None:
    bot = BotProcess(workdir=bot_dir, slack_api_url="http://127.0.0.1:9/api/", flyctl=flyctl_wrapper,
                     extra_env={"LOG_FORMAT": "json"})
    (bot.workdir / "secretbot.toml").write_text('[secrets.JWT_SECRET]\npriority = "urgent"\n')
    result = subprocess.run([str(Path(sys.executable).parent / "secretbot"), "serve"], cwd=bot.workdir,
                            env=bot.environment(), capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[-1]["level"] == "ERROR"
    assert "secrets.JWT_SECRET.priority" in records[-1]["message"]
    assert "'urgent'" in records[-1]["message"]


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("PORT", "abc", "PORT must be a number"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL 'LOUD' is not a logging level"),
])
def test_serve_settings_error_is_json(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "secretbot"), "serve"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={"PATH": "/usr/bin:/bin", "LOG_FORMAT": "json", variable: value})

    assert result.returncode == 2
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[-1]["level"] == "ERROR"
    assert expected in records[-1]["message"]


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a new interpreter from the repository root, so it starts with logging unconfigured."""
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)


def test_json_covers_warnings_and_crashes() -> None:
    script = (
        "import logging, warnings\n"
        "from bot.logs import configure_logging\n"
        "configure_logging('INFO', 'json')\n"
        "logging.getLogger('bot.example').info('hello %s', 'world')\n"
        "warnings.warn('old option')\n"
        "raise SystemError('boom')\n"
    )
    result = run_python(script)

    assert result.returncode == 1
    entries = parse_lines(result.stderr)
    assert [entry["level"] for entry in entries] == ["INFO", "WARNING", "CRITICAL"]
    assert entries[0]["message"] == "hello world"
    assert "old option" in entries[1]["message"]
    assert "SystemError: boom" in entries[2]["exception"]


def test_handler_writes_one_line_per_record() -> None:
    from bot.logs import build_handler

    handler = build_handler("json")
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    with run_context(run_id="abc123", app=APP, secrets=["JWT_SECRET"], step_position=2, step_kind="external"):
        handler.handle(logging.getLogger("bot.example").makeRecord(
            "bot.example", logging.INFO, __file__, 1, "line one\nline two", (), None))

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["step"] == {"position": 2, "kind": "external"}


def test_fly_toml_sets_json_logs() -> None:
    fly = tomllib.loads((REPO / "fly.toml").read_text())

    assert fly["env"]["LOG_FORMAT"] == "json"


def test_response_url_not_logged_when_reply_fails() -> None:
    # A response_url lets whoever holds it post as the bot, so a failed reply must not print it.
    script = (
        "import asyncio, socket\n"
        "from slack_sdk.webhook.async_client import AsyncWebhookClient\n"
        "from bot.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "probe = socket.socket(); probe.bind(('127.0.0.1', 0)); port = probe.getsockname()[1]; probe.close()\n"
        "url = f'http://127.0.0.1:{port}/response/credential-like-path'\n"
        "async def main():\n"
        "    try:\n"
        "        await AsyncWebhookClient(url).send(text='hello')\n"
        "    except Exception as error:\n"
        "        print('failed', type(error).__name__)\n"
        "asyncio.run(main())\n"
    )
    result = run_python(script)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failed ")
    assert "credential-like-path" not in result.stderr
