"""`secretbot backup` list, show, export and open, against a real SQLite database."""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bot.audit import records_for_run
from bot.backups import BackupStore, from_entry, open_ciphertext
from bot.backups.records import to_entry
from bot.cli_backup import backup
from bot.sealing import Sealer
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import AuditRecord

APP = "hotel-voice-bot"
NAME = "JWT_SECRET"
RUN_ID = "a1b2c3d4e5f6"
APPROVER = "U0BBB"
FIRST_VALUE = "first-backup-value-3c9d"
SECOND_VALUE = "second-backup-value-é-🔑\nline two"
REPO = Path(__file__).resolve().parent.parent


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


class Bot:
    """A migrated SQLite database with two backup versions of JWT_SECRET, and the env to reach it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "secretbot.db"
        self.url = f"sqlite+aiosqlite:///{self.path}"
        self.key = new_key()
        self.env = {"DATABASE_URL": self.url, "SECRETBOT_BACKUP_KEY": self.key, "LOG_LEVEL": "WARNING"}

    async def _seed(self) -> None:
        engine = create_engine(self.url)
        await migrate(engine)
        store = BackupStore(sessions=create_session_factory(engine), sealer=Sealer.from_setting(self.key))
        for value in (FIRST_VALUE, SECOND_VALUE):
            await store.save(app=APP, name=NAME, value=value, run_id=RUN_ID, created_by=APPROVER)
        await store.save(app=APP, name="ENCRYPTION_KEY", value="00" * 32, run_id=None, created_by="local:ops")
        await store.mark_deployed(app=APP, name=NAME, version=2, fly_digest="522d6815e668a102")
        await engine.dispose()

    def seed(self) -> Bot:
        asyncio.run(self._seed())
        return self

    def audit_records(self) -> list[AuditRecord]:
        async def read() -> list[AuditRecord]:
            engine = create_engine(self.url)
            try:
                from sqlalchemy import select

                async with create_session_factory(engine)() as session:
                    return list(await session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture
def bot(tmp_path: Path) -> Bot:
    return Bot(tmp_path).seed()


def invoke(bot: Bot, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    merged: dict[str, str | None] = {**bot.env, **(env or {})}
    return CliRunner().invoke(backup, list(args), input=input, env=merged, catch_exceptions=False)


# --- list ------------------------------------------------------------------------------------


def test_list_shows_each_version(bot: Bot) -> None:
    result = invoke(bot, "list", APP, NAME)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "VERSION"]
    assert [line.split()[:2] for line in lines[1:]] == [[NAME, "1"], [NAME, "2"]]


def test_list_shows_who_run_and_digest(bot: Bot) -> None:
    result = invoke(bot, "list", APP, NAME)
    assert APPROVER in result.stdout
    assert RUN_ID in result.stdout
    assert "522d6815e668a102" in result.stdout
    assert "not deployed" in result.stdout


def test_list_never_prints_values(bot: Bot) -> None:
    result = invoke(bot, "list", APP)
    assert FIRST_VALUE not in result.output
    assert "first-backup" not in result.output
    assert "00" * 32 not in result.output


def test_list_without_name_shows_every_secret(bot: Bot) -> None:
    result = invoke(bot, "list", APP)
    assert "ENCRYPTION_KEY" in result.stdout
    assert NAME in result.stdout


def test_list_works_without_key(bot: Bot) -> None:
    result = invoke(bot, "list", APP, env={"SECRETBOT_BACKUP_KEY": None})
    assert result.exit_code == 0
    assert NAME in result.stdout


def test_list_of_unknown_app_says_none(bot: Bot) -> None:
    result = invoke(bot, "list", "hotel-staging")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no backups for hotel-staging"


def test_list_rejects_invalid_app_name(bot: Bot) -> None:
    result = invoke(bot, "list", "Hotel/../x")
    assert result.exit_code == 2
    assert result.stderr.startswith("secretbot: ")
    assert "not a Fly app name" in result.stderr


def test_list_on_unmigrated_database_exits_2(bot: Bot, tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    result = invoke(bot, "list", APP, env={"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"})
    assert result.exit_code == 2
    assert "schema is not current" in result.stderr


def test_list_on_missing_database_creates_no_file(bot: Bot, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = invoke(bot, "list", APP, env={"DATABASE_URL": f"sqlite+aiosqlite:///{missing}"})
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert not missing.exists()


# --- show ------------------------------------------------------------------------------------


def test_show_prints_latest_after_confirm(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, input="y\n")
    assert result.exit_code == 0
    assert "version 2" in result.stderr
    assert result.stdout == SECOND_VALUE + "\n"


def test_show_without_newline_prints_value_alone(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, "--version", "1", "--no-newline", input="y\n")
    assert result.exit_code == 0
    assert result.stdout == FIRST_VALUE


def test_show_prints_requested_version(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, "--version", "1", "--yes")
    assert result.exit_code == 0
    assert result.stdout == FIRST_VALUE + "\n"


def test_show_declined_prints_nothing(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, input="n\n")
    assert result.exit_code == 1
    assert SECOND_VALUE not in result.output


def test_show_declined_writes_no_audit(bot: Bot) -> None:
    invoke(bot, "show", APP, NAME, input="n\n")
    assert [record.event for record in bot.audit_records()] == []


def test_show_writes_audit_record(bot: Bot) -> None:
    invoke(bot, "show", APP, NAME, "--version", "1", "--yes")
    [record] = bot.audit_records()
    assert record.event == "backup.shown"
    assert record.actor == f"local:{getpass.getuser()}"
    assert record.app == APP
    assert record.secret == NAME
    assert record.detail_fields()["version"] == 1
    assert record.detail_fields()["backup_run_id"] == RUN_ID


def test_show_audit_holds_no_value(bot: Bot) -> None:
    invoke(bot, "show", APP, NAME, "--version", "1", "--yes")
    [record] = bot.audit_records()
    assert FIRST_VALUE not in record.detail


def test_show_audit_is_not_part_of_run(bot: Bot) -> None:
    invoke(bot, "show", APP, NAME, "--yes")

    async def run_records() -> int:
        engine = create_engine(bot.url)
        try:
            return len(await records_for_run(create_session_factory(engine), RUN_ID))
        finally:
            await engine.dispose()

    assert asyncio.run(run_records()) == 0


def test_show_without_key_exits_2(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, "--yes", env={"SECRETBOT_BACKUP_KEY": None})
    assert result.exit_code == 2
    assert "SECRETBOT_BACKUP_KEY is not set" in result.stderr


def test_show_with_wrong_key_exits_2(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, "--yes", env={"SECRETBOT_BACKUP_KEY": new_key()})
    assert result.exit_code == 2
    assert "was encrypted with key" in result.stderr
    assert SECOND_VALUE not in result.output


def test_show_with_wrong_key_writes_no_audit(bot: Bot) -> None:
    invoke(bot, "show", APP, NAME, "--yes", env={"SECRETBOT_BACKUP_KEY": new_key()})
    assert bot.audit_records() == []


def test_show_missing_version_exits_2(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, "--version", "9", "--yes")
    assert result.exit_code == 2
    assert "version 9" in result.stderr


def test_show_rejects_version_zero(bot: Bot) -> None:
    result = invoke(bot, "show", APP, NAME, "--version", "0", "--yes")
    assert result.exit_code == 2
    assert SECOND_VALUE not in result.output


def test_show_runs_as_subprocess(bot: Bot) -> None:
    # A real process: click reads the confirmation from the pipe and exits with its own code.
    command = "from bot.cli_backup import backup; backup(prog_name='secretbot backup')"
    completed = subprocess.run(
        [sys.executable, "-c", command, "show", APP, NAME, "--version", "1"],
        input="y\n", capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, **bot.env},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == FIRST_VALUE + "\n"
    assert "Print the value of JWT_SECRET" in completed.stderr
    assert FIRST_VALUE not in completed.stderr


# --- export ----------------------------------------------------------------------------------


def test_export_writes_private_file(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    result = invoke(bot, "export", str(path))
    assert result.exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_export_is_private_under_loose_umask(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    previous = os.umask(0)
    try:
        invoke(bot, "export", str(path))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_export_holds_every_version(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    result = invoke(bot, "export", str(path))
    bundle = json.loads(path.read_text())
    assert bundle["format"] == "secretbot-backup-bundle/1"
    assert [(entry["name"], entry["version"]) for entry in bundle["backups"]] == [
        ("ENCRYPTION_KEY", 1), (NAME, 1), (NAME, 2),
    ]
    assert "wrote 3 backup versions" in result.stdout


def test_export_holds_no_plaintext(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    data = path.read_bytes()
    assert FIRST_VALUE.encode() not in data
    assert b"00" * 32 not in data
    assert base64.b64encode(FIRST_VALUE.encode()) not in data


def test_export_opens_with_key(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    sealer = Sealer.from_setting(bot.key)
    values = [open_ciphertext(sealer, *from_entry(entry)) for entry in json.loads(path.read_text())["backups"]]
    assert values == ["00" * 32, FIRST_VALUE, SECOND_VALUE]


def test_export_needs_no_key(bot: Bot, tmp_path: Path) -> None:
    result = invoke(bot, "export", str(tmp_path / "bundle.json"), env={"SECRETBOT_BACKUP_KEY": None})
    assert result.exit_code == 0


def test_export_filters_by_app(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path), "--app", "hotel-staging")
    assert json.loads(path.read_text())["backups"] == []


def test_export_writes_audit_record(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    [record] = bot.audit_records()
    assert record.event == "backup.exported"
    assert record.actor == f"local:{getpass.getuser()}"
    assert record.detail_fields() == {"count": 3, "file": str(path.resolve())}


def test_export_keeps_existing_file(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text("keep me")
    result = invoke(bot, "export", str(path))
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert path.read_text() == "keep me"


def test_export_does_not_follow_symlink(bot: Bot, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    link = tmp_path / "bundle.json"
    link.symlink_to(target)
    result = invoke(bot, "export", str(link))
    assert result.exit_code == 2
    assert not target.exists()


# --- open ------------------------------------------------------------------------------------


def test_open_reads_value_from_bundle(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    result = invoke(bot, "open", str(path), APP, NAME, "--version", "1", input="y\n")
    assert result.exit_code == 0
    assert result.stdout == FIRST_VALUE + "\n"


def test_open_picks_latest_version(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    result = invoke(bot, "open", str(path), APP, NAME, "--yes")
    assert result.stdout == SECOND_VALUE + "\n"


def test_open_reads_single_object(bot: Bot, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.json"
    invoke(bot, "export", str(bundle))
    entry = json.loads(bundle.read_text())["backups"][1]
    single = tmp_path / "v1.json"
    single.write_text(json.dumps(entry))
    result = invoke(bot, "open", str(single), APP, NAME, "--yes")
    assert result.stdout == FIRST_VALUE + "\n"


def test_open_writes_audit_record(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    invoke(bot, "open", str(path), APP, NAME, "--yes")
    record = bot.audit_records()[-1]
    assert record.event == "backup.shown"
    assert record.detail_fields()["source"] == str(path.resolve())


def test_open_with_wrong_key_exits_2(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    result = invoke(bot, "open", str(path), APP, NAME, "--yes", env={"SECRETBOT_BACKUP_KEY": new_key()})
    assert result.exit_code == 2
    assert "was encrypted with key" in result.stderr


def test_open_rejects_entry_renamed_in_file(bot: Bot, tmp_path: Path) -> None:
    # Changing an entry's name in the file changes the associated data, so decryption fails.
    path = tmp_path / "bundle.json"
    invoke(bot, "export", str(path))
    bundle = json.loads(path.read_text())
    bundle["backups"][1]["name"] = "WAHA_WEBHOOK_TOKEN"
    path.write_text(json.dumps(bundle))
    result = invoke(bot, "open", str(path), APP, "WAHA_WEBHOOK_TOKEN", "--yes")
    assert result.exit_code == 2
    assert "cannot be decrypted" in result.stderr


def test_open_rejects_other_json(bot: Bot, tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": "world"}')
    result = invoke(bot, "open", str(path), APP, NAME, "--yes")
    assert result.exit_code == 2
    assert "not a secretbot backup entry" in result.stderr


def test_entry_round_trips_record(bot: Bot) -> None:
    async def first_entry() -> dict[str, object]:
        engine = create_engine(bot.url)
        try:
            [entry, *_] = await BackupStore(sessions=create_session_factory(engine), sealer=None).entries(APP)
            return entry
        finally:
            await engine.dispose()

    entry = asyncio.run(first_entry())
    record, ciphertext = from_entry(entry)
    assert to_entry(record, ciphertext) == entry
