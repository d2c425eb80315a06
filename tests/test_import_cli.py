"""`secretbot import FILE`: an env file set on Fly from the terminal, beside a running `secretbot serve`.

The import runs the real executable with the bot's environment, against the flyctl
stand-in, which keeps each run's standard input in a file of its own here, so the test
can compare the exact bytes flyctl read.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.flyctl import encode_import, parse_import
from tests.botprocess import FLYCTL_STANDIN, BotProcess
from tests.conftest import APP, BACKUP_KEY
from tests.flow import CHANNEL, database_bytes, query, slack_traffic
from tests.inventory_flow import wait_for_inventory
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin

SECRETBOT = Path(sys.executable).parent / "secretbot"

# Twelve lines: comments, a blank line, an `export` prefix, single and double quotes, an
# inline comment, a value ending in `==` and a double-quoted value over three lines.
ENV_FILE = """\
# Secrets of hotel-voice-bot, copied from the old host
export DATABASE_PASSWORD=pa55-w0rd-with-dashes
API_TOKEN='single quoted # not a comment'
GREETING="double quoted with \\"escaped\\" quotes"

# the key spans three lines
TLS_KEY="-----BEGIN TEST KEY-----
line-two-of-the-key
-----END TEST KEY-----"
PADDED_OK=c2VjcmV0==
JWT_SECRET=old-jwt-secret-value   # the value Fly already has
WEBHOOK_URL=https://example.invalid/hook?a=1&b=2
"""
# What python-dotenv reads from ENV_FILE, in file order.
EXPECTED = {
    "DATABASE_PASSWORD": "pa55-w0rd-with-dashes",
    "API_TOKEN": "single quoted # not a comment",
    "GREETING": 'double quoted with "escaped" quotes',
    "TLS_KEY": "-----BEGIN TEST KEY-----\nline-two-of-the-key\n-----END TEST KEY-----",
    "PADDED_OK": "c2VjcmV0==",
    "JWT_SECRET": "old-jwt-secret-value",
    "WEBHOOK_URL": "https://example.invalid/hook?a=1&b=2",
}
# Values that must appear nowhere but in the stand-in's own files (its state and stdin copies).
SECRET_VALUES = ("pa55-w0rd-with-dashes", "single quoted # not a comment", "line-two-of-the-key",
                 "https://example.invalid/hook?a=1&b=2", "rotated-api-token-value")


@dataclass
class ImportRun:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Importer:
    """`secretbot import` with the environment of the bot process, and a flyctl that keeps its stdin."""

    bot: BotProcess
    flyctl: Path
    workdir: Path

    async def start(self, *args: str, extra_env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        env = {**self.bot.environment(), "FLYCTL": str(self.flyctl), "COLUMNS": "200", **(extra_env or {})}
        # The bot runs at DEBUG; the command line logs warnings only, as an operator sees it.
        env.pop("LOG_LEVEL", None)
        return await asyncio.create_subprocess_exec(
            str(SECRETBOT), "import", *args, cwd=self.workdir, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def run(self, *args: str, answers: str = "", extra_env: dict[str, str] | None = None) -> ImportRun:
        process = await self.start(*args, extra_env=extra_env)
        out, err = await asyncio.wait_for(process.communicate(answers.encode()), timeout=90)
        assert process.returncode is not None
        return ImportRun(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


@pytest.fixture
def stdin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flyctl-stdin"
    directory.mkdir()
    return directory


@pytest.fixture
async def importer(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, fly: FlyState, flyctl_log: Path,
                   stdin_dir: Path, tmp_path: Path) -> Any:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    # The start-up sync is done before the import reads the inventory it updates.
    await wait_for_inventory(process.database, rows=5)
    operator_bin = tmp_path / "operator-bin"
    operator_bin.mkdir()
    wrapper = operator_bin / "flyctl"
    exports = "".join(f"export {name}='{value}'\n"
                      for name, value in fly.env(log_path=flyctl_log, stdin_dir=stdin_dir).items())
    wrapper.write_text(f"#!/bin/sh\n{exports}exec '{sys.executable}' '{FLYCTL_STANDIN}' \"$@\"\n")
    wrapper.chmod(0o755)
    operator_dir = tmp_path / "operator"
    operator_dir.mkdir()
    try:
        yield Importer(bot=process, flyctl=wrapper, workdir=operator_dir)
    finally:
        await process.stop_async()


def imports(fly: FlyState, log: Path) -> list[dict[str, Any]]:
    return [call for call in fly.invocations(log) if call["argv"][:2] == ["secrets", "import"]]


def audit_events(bot: BotProcess) -> list[str]:
    return [row["event"] for row in query(bot.database, "SELECT event FROM audit_log ORDER BY id")]


async def test_import_sets_file_in_one_call(importer: Importer, fly: FlyState, flyctl_log: Path, stdin_dir: Path,
                                            slack: SlackStandin) -> None:
    env_file = importer.workdir / "hotel.env"
    env_file.write_text(ENV_FILE)
    assert len(ENV_FILE.splitlines()) == 12

    first = await importer.run(str(env_file), "--app", APP, "--reason", "first setup", answers="y\n")

    assert first.returncode == 0, first.stdout + first.stderr
    listing = first.stdout
    for name in ("DATABASE_PASSWORD", "API_TOKEN", "GREETING", "TLS_KEY", "PADDED_OK", "WEBHOOK_URL"):
        assert f"{name}" in listing
    assert "JWT_SECRET         changed  (line 11): Fly's value is unknown to secretbot" in listing
    assert "6 new, 1 changed, 0 unchanged." in listing
    assert "Not in the file, left as they are on Fly: ENCRYPTION_KEY, OPENAI_API_KEY, WAHA_WEBHOOK_TOKEN." in listing
    assert "Summary posted to the runbook channel C0123OPS." in listing

    # One flyctl call, and the bytes it read are exactly the encoded values, nothing else.
    calls = imports(fly, flyctl_log)
    assert len(calls) == 1
    assert calls[0]["argv"] == ["secrets", "import", "--app", APP]
    sent = FlyState.stdin_of(calls[0], stdin_dir)
    assert sent == encode_import(EXPECTED).encode("utf-8")
    assert parse_import(sent.decode("utf-8")) == EXPECTED
    for name, value in EXPECTED.items():
        assert fly.secret_value(APP, name) == value

    # Every value backed up and confirmed on Fly with its digest.
    backups = query(importer.bot.database, "SELECT name, version, fly_digest FROM backups ORDER BY name")
    assert [row["name"] for row in backups] == sorted(EXPECTED)
    for row in backups:
        assert row["version"] == 1
        assert row["fly_digest"] == fly.secret_digest(APP, row["name"])

    events = audit_events(importer.bot)
    for event in ("import.started", "backup.saved", "fly.import.finished", "verification.passed",
                  "import.succeeded"):
        assert events.count(event) == 1, (event, events)
    imported = query(importer.bot.database, "SELECT secret, detail FROM audit_log WHERE event = 'secret.imported'")
    assert sorted(row["secret"] for row in imported) == sorted(EXPECTED)
    greeting = next(json.loads(row["detail"]) for row in imported if row["secret"] == "GREETING")
    assert greeting["change"] == "new"
    assert greeting["line"] == 4
    assert greeting["reason"] == "first setup"
    assert greeting["digest_after"] == fly.secret_digest(APP, "GREETING")

    # The inventory counts the changed values as rotated by secretbot now.
    rows = query(importer.bot.database, "SELECT rotation_source FROM inventory WHERE app = ? AND name = ?",
                 APP, "DATABASE_PASSWORD")
    assert [row["rotation_source"] for row in rows] == ["secretbot"]

    # The summary in the runbook channel names the secrets and no value.
    summaries = [message.text for message in slack.messages(CHANNEL) if "Summary: Import" in message.text]
    assert len(summaries) == 1
    assert "DATABASE_PASSWORD" in summaries[0]
    assert "started from a terminal" in summaries[0]

    # A changed file: only the changed value is sent, the rest is listed as unchanged.
    env_file.write_text(ENV_FILE.replace("single quoted # not a comment", "rotated-api-token-value"))
    second = await importer.run(str(env_file), "--app", APP, answers="y\n")

    assert second.returncode == 0, second.stdout + second.stderr
    assert "API_TOKEN          changed  (line 3): differs from backup version 1" in second.stdout
    assert "0 new, 1 changed, 6 unchanged." in second.stdout
    assert "JWT_SECRET         unchanged, not sent" in second.stdout
    calls = imports(fly, flyctl_log)
    assert len(calls) == 2
    assert FlyState.stdin_of(calls[1], stdin_dir) == encode_import({"API_TOKEN": "rotated-api-token-value"}).encode()
    assert fly.secret_value(APP, "API_TOKEN") == "rotated-api-token-value"

    # The values are nowhere but in the stand-in's own files.
    await importer.bot.stop_async()
    searched = {
        "import output": first.stdout + first.stderr + second.stdout + second.stderr,
        "Slack traffic": slack_traffic(slack),
        "bot log": importer.bot.log(),
        "flyctl invocation log": flyctl_log.read_text(),
    }
    stored = database_bytes(importer.bot.database)
    for value in SECRET_VALUES:
        for where, text in searched.items():
            assert value not in text, f"a value is in the {where}"
        assert value.encode() not in stored


async def test_import_declined_sets_nothing(importer: Importer, fly: FlyState, flyctl_log: Path) -> None:
    env_file = importer.workdir / "hotel.env"
    env_file.write_text(ENV_FILE)
    events_before = audit_events(importer.bot)

    result = await importer.run(str(env_file), answers="n\n")

    assert result.returncode == 1
    assert "Set 7 secret(s) on hotel-voice-bot and restart its machines? [y/N]" in result.stdout
    assert "Nothing was set." in result.stdout
    assert not imports(fly, flyctl_log)
    assert fly.secret_value(APP, "DATABASE_PASSWORD") is None
    assert fly.secret_value(APP, "JWT_SECRET") == "old-jwt-secret-value"
    assert not query(importer.bot.database, "SELECT id FROM backups")
    assert audit_events(importer.bot) == events_before


async def test_malformed_line_reported_by_number(importer: Importer, fly: FlyState, flyctl_log: Path) -> None:
    pasted = "sk-live-Zq8nR2vX7mK4pL9s"
    env_file = importer.workdir / "broken.env"
    env_file.write_text(f"GOOD=fine-value\n# a comment\n{pasted}\nBROKEN=\"never closed\n9LIVES=value\n")

    result = await importer.run(str(env_file), answers="y\n")

    assert result.returncode == 2
    assert "line 3: it has no `=` and so no value" in result.stderr
    assert "line 4: python-dotenv cannot parse it" in result.stderr
    assert "line 5: its name is not a valid Fly secret name" in result.stderr
    assert "Nothing was changed." in result.stderr
    for text in (pasted, "never closed", "9LIVES", "fine-value"):
        assert text not in result.stdout + result.stderr
    assert not imports(fly, flyctl_log)
    assert fly.secret_value(APP, "GOOD") is None


async def test_empty_value_rejected_with_yes(importer: Importer, fly: FlyState, flyctl_log: Path) -> None:
    env_file = importer.workdir / "jwt.env"
    env_file.write_text("# only the JWT secret\nJWT_SECRET=\n")
    events_before = audit_events(importer.bot)

    result = await importer.run(str(env_file), "--app", APP, "--yes")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "line 2: the value of JWT_SECRET is empty" in result.stderr
    assert "Nothing was changed." in result.stderr
    assert "changed  (line 2)" not in result.stdout
    assert not imports(fly, flyctl_log)
    assert fly.secret_value(APP, "JWT_SECRET") == "old-jwt-secret-value"
    assert not query(importer.bot.database, "SELECT id FROM backups")
    assert audit_events(importer.bot) == events_before


async def test_invisible_character_rejects_whole_file(importer: Importer, fly: FlyState, flyctl_log: Path) -> None:
    key = "sk-proj-Zq8nR2vX7mK4pL9s"
    env_file = importer.workdir / "keys.env"
    env_file.write_text(f"DATABASE_PASSWORD=pa55-w0rd-with-dashes\nOPENAI_API_KEY={key}\u200b\n"
                        'GREETING="\u00a0hello"\n', encoding="utf-8")

    result = await importer.run(str(env_file), "--app", APP, "--yes")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "line 2: the value of OPENAI_API_KEY contains U+200B ZERO WIDTH SPACE at position 25 of 25" in result.stderr
    assert "line 3: the value of GREETING starts with U+00A0 NO-BREAK SPACE" in result.stderr
    assert "2 line(s) of" in result.stderr
    assert key not in result.stdout + result.stderr
    assert not imports(fly, flyctl_log)
    assert fly.secret_value(APP, "DATABASE_PASSWORD") is None
    assert fly.secret_value(APP, "OPENAI_API_KEY") == "sk-old-openai-key"


async def test_import_needs_backup_key(importer: Importer, fly: FlyState, flyctl_log: Path) -> None:
    env_file = importer.workdir / "hotel.env"
    env_file.write_text(ENV_FILE)

    result = await importer.run(str(env_file), answers="y\n", extra_env={"SECRETBOT_BACKUP_KEY": ""})

    assert result.returncode == 2
    assert "SECRETBOT_BACKUP_KEY is not set" in result.stderr
    assert not imports(fly, flyctl_log)


async def test_import_waits_for_run_lock(importer: Importer, fly: FlyState, flyctl_log: Path) -> None:
    # A Slack run holds the app's change lock, as it does from its import to its verification.
    database = importer.bot.database
    now = datetime.now(UTC)
    database.execute("INSERT INTO runs (id, kind, app, requester, origin, status, current_step, created_at, "
                     "updated_at) VALUES ('a1a1a1a1a1a1', 'rotate', ?, 'U0AAA', 'slack', 'running', 4, ?, ?)",
                     APP, now, now)
    database.execute("INSERT INTO app_locks (app, run_id, acquired_at) VALUES (?, 'a1a1a1a1a1a1', ?)", APP, now)
    env_file = importer.workdir / "hotel.env"
    env_file.write_text("DATABASE_PASSWORD=pa55-w0rd-with-dashes\n")

    process = await importer.start(str(env_file), "--yes")
    assert process.stdout is not None
    seen = b""
    try:
        while b"Waiting for run `a1a1a1a1a1a1`" not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, seen.decode()
            seen += line
        await asyncio.sleep(1)
        assert not imports(fly, flyctl_log)
        locks = query(database, "SELECT run_id FROM app_locks")
        assert [row["run_id"] for row in locks] == ["a1a1a1a1a1a1"]

        # The run ends; its lock is then stale, and the import takes it.
        database.execute("UPDATE runs SET status = 'succeeded' WHERE id = 'a1a1a1a1a1a1'")
        rest, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, (seen + rest + err).decode()
    assert len(imports(fly, flyctl_log)) == 1
    assert fly.secret_value(APP, "DATABASE_PASSWORD") == "pa55-w0rd-with-dashes"
    assert not query(database, "SELECT app FROM app_locks")
