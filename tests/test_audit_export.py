"""`secretbot audit export` and `audit verify` as processes, on SQLite and PostgreSQL.

Records are written through the bot's own audit writer, then read back from the export.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.audit import AuditEntry, record_hash
from bot.cli_audit import EXPORT_COLUMNS, write_export
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import AuditRecord

SECRETBOT = Path(sys.executable).parent / "secretbot"

# Fields that CSV quoting and JSON escaping must carry unchanged.
AWKWARD_DETAIL = {"note": 'comma, "quote"\nnewline', "ü": "<!channel> \u2028", "nested": {"list": [1, None, True]}}


@dataclass
class AuditDatabase:
    url: str
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # Synchronous, because postgres_url runs its own event loop to create the database.
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'secretbot.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AuditDatabase]:
    """A migrated, empty database on each backend, with sessions for the test to write through."""
    engine = create_engine(normalize_database_url(database_url))
    await migrate(engine)
    try:
        yield AuditDatabase(url=database_url, sessions=create_session_factory(engine))
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[AuditDatabase]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'secretbot.db'}"
    engine = create_engine(url)
    await migrate(engine)
    try:
        yield AuditDatabase(url=url, sessions=create_session_factory(engine))
    finally:
        await engine.dispose()


def secretbot(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "DATABASE_URL": url}
    return subprocess.run([str(SECRETBOT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=120, check=False)


async def write_records(sessions: async_sessionmaker[AsyncSession], count: int = 6) -> None:
    for index in range(count):
        await audit.append(sessions, AuditEntry(
            event="run.requested" if index % 2 == 0 else "step.done",
            actor=f"U0{index:04d}" if index != 1 else None,
            run_id=f"run{index // 2}",
            app="hotel-voice-bot" if index != 3 else None,
            secret="JWT_SECRET",
            detail={"position": index, **(AWKWARD_DETAIL if index == 2 else {})},
        ))


async def stored_records(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    """The records as the export should show them, read through the ORM."""
    async with sessions() as session:
        records = list(await session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    return [
        {"id": record.id, "at": record.at.isoformat(), "event": record.event, "actor": record.actor,
         "run_id": record.run_id, "app": record.app, "secret": record.secret, "detail": record.detail_fields(),
         "prev_hash": record.prev_hash, "hash": record.hash}
        for record in records
    ]


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def parse_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return list(reader.fieldnames or []), list(reader)


# --- export formats -------------------------------------------------------------------------------


async def test_jsonl_export_matches_records(database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(database.sessions)

    result = secretbot(database.url, "audit", "export", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    exported = parse_jsonl(result.stdout)
    assert exported == await stored_records(database.sessions)
    assert [list(record) for record in exported] == [list(EXPORT_COLUMNS)] * len(exported)
    assert result.stderr.strip() == "exported 6 audit records"


async def test_jsonl_export_verifies_alone(database: AuditDatabase, tmp_path: Path) -> None:
    # Everything a reader needs to check the chain without secretbot's database.
    await write_records(database.sessions)

    exported = parse_jsonl(secretbot(database.url, "audit", "export", cwd=tmp_path).stdout)

    previous = audit.GENESIS_HASH
    for record in exported:
        entry = AuditEntry(event=record["event"], actor=record["actor"], run_id=record["run_id"], app=record["app"],
                           secret=record["secret"], detail=record["detail"])
        assert record["prev_hash"] == previous
        assert record["hash"] == record_hash(record["prev_hash"], datetime.fromisoformat(record["at"]), entry)
        previous = record["hash"]


async def test_csv_export_matches_jsonl(database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(database.sessions)
    output = tmp_path / "audit.csv"

    result = secretbot(database.url, "audit", "export", "--format", "csv", "--output", str(output), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == f"exported 6 audit records to {output}"
    header, rows = parse_csv(output.read_text(encoding="utf-8"))
    assert header == list(EXPORT_COLUMNS)
    expected = await stored_records(database.sessions)
    assert len(rows) == len(expected)
    for row, record in zip(rows, expected, strict=True):
        assert json.loads(row["detail"]) == record["detail"]
        for column in EXPORT_COLUMNS:
            if column == "detail":
                continue
            value = record[column]
            assert row[column] == ("" if value is None else str(value)), column


async def test_csv_to_stdout_has_header(sqlite_database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(sqlite_database.sessions, count=2)

    result = secretbot(sqlite_database.url, "audit", "export", "--format", "csv", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    header, rows = parse_csv(result.stdout)
    assert header == list(EXPORT_COLUMNS)
    assert [row["id"] for row in rows] == ["1", "2"]


async def test_empty_log_exports_nothing(sqlite_database: AuditDatabase, tmp_path: Path) -> None:
    jsonl = secretbot(sqlite_database.url, "audit", "export", cwd=tmp_path)
    csv_result = secretbot(sqlite_database.url, "audit", "export", "--format", "csv", cwd=tmp_path)

    assert jsonl.returncode == 0
    assert jsonl.stdout == ""
    assert jsonl.stderr.strip() == "exported 0 audit records"
    assert csv_result.stdout.splitlines() == [",".join(EXPORT_COLUMNS)]


# --- --since ----------------------------------------------------------------------------------------


TIMES = [datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2025, 2, 1, 12, 0, 0, tzinfo=UTC),
         datetime(2025, 2, 1, 12, 0, 0, 500_000, tzinfo=UTC), datetime(2025, 3, 1, 8, 30, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("since", "first_index"),
    [
        ("2025-02-01", 1),
        ("2025-02-01T12:00:00Z", 1),
        ("2025-02-01T13:00:00+01:00", 1),
        ("2025-02-01T12:00:00.1", 2),
        ("2025-02-01 12:00:01", 3),
        ("2025-03-02", 4),
        ("2000-01-01", 0),
    ],
)
async def test_since_filters_by_time(
    database: AuditDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, since: str, first_index: int
) -> None:
    for moment in TIMES:
        monkeypatch.setattr(audit, "utcnow", lambda moment=moment: moment)
        await audit.append(database.sessions, AuditEntry(event="run.requested", detail={"at": moment.isoformat()}))

    result = secretbot(database.url, "audit", "export", "--since", since, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    exported = parse_jsonl(result.stdout)
    assert [record["at"] for record in exported] == [moment.isoformat() for moment in TIMES[first_index:]]


@pytest.mark.parametrize("since", ["2025-13-01", "2025-02-30", "yesterday", "01/02/2025", ""])
async def test_bad_since_is_named(sqlite_database: AuditDatabase, tmp_path: Path, since: str) -> None:
    result = secretbot(sqlite_database.url, "audit", "export", "--since", since, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "--since" in result.stderr
    assert f"{since!r} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp" in result.stderr


# --- output file and errors --------------------------------------------------------------------------


async def test_output_file_is_private(sqlite_database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(sqlite_database.sessions, count=1)
    output = tmp_path / "audit.jsonl"

    result = secretbot(sqlite_database.url, "audit", "export", "--output", str(output), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert output.stat().st_mode & 0o777 == 0o600
    assert len(parse_jsonl(output.read_text())) == 1


async def test_existing_output_not_overwritten(sqlite_database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(sqlite_database.sessions, count=1)
    output = tmp_path / "audit.jsonl"
    output.write_text("keep me\n")

    result = secretbot(sqlite_database.url, "audit", "export", "--output", str(output), cwd=tmp_path)

    assert result.returncode == 2
    assert f"secretbot: {output} already exists" in result.stderr
    assert output.read_text() == "keep me\n"


async def test_missing_database_leaves_no_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.db"
    output = tmp_path / "audit.jsonl"

    result = secretbot(f"sqlite+aiosqlite:///{missing}", "audit", "export", "--output", str(output), cwd=tmp_path)

    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert not missing.exists()
    assert not output.exists()


@pytest.mark.parametrize("args", [("--format", "xml"), ("--bogus",), ("extra",)])
async def test_usage_errors_exit_2(sqlite_database: AuditDatabase, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = secretbot(sqlite_database.url, "audit", "export", *args, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""


# --- large logs --------------------------------------------------------------------------------------


def insert_bulk(url: str, count: int) -> None:
    """Insert `count` rows straight into the SQLite table; the chain does not matter to the export."""
    path = url.split("///", 1)[1]
    detail = json.dumps({"digest": "ab" * 32, "note": "x" * 200}, sort_keys=True)
    rows = ((index, f"2025-03-01 12:00:{index % 60:02d}.000000", "step.done", f"U{index:08d}", f"run{index}",
             "hotel-voice-bot", "JWT_SECRET", detail, f"{index:064x}", f"{index + 1:064x}")
            for index in range(1, count + 1))
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO audit_log (id, at, event, actor, run_id, app, secret, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


class LineCounter(io.TextIOBase):
    """A sink that keeps only a count, so the measured memory is the export's own."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


async def test_export_holds_one_batch(sqlite_database: AuditDatabase) -> None:
    count = 15_000
    insert_bulk(sqlite_database.url, count)

    tracemalloc.start()
    try:
        sink = LineCounter()
        exported = await write_export(sqlite_database.sessions, sink, export_format="jsonl", since=None)
        _current, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        async with sqlite_database.sessions() as session:
            everything = (await session.execute(select(AuditRecord.__table__))).all()
        _current, loaded_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert exported == count
    assert sink.lines == count
    assert len(everything) == count
    # Reading every row at once takes several times what the export holds.
    assert streaming_peak * 4 < loaded_peak, (streaming_peak, loaded_peak)


def export_first_line(url: str, cwd: Path) -> tuple[str, int, str]:
    """Run `audit export`, read one line and close the pipe, like `| head -1`; return line, status, stderr."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "DATABASE_URL": url}
    process = subprocess.Popen([str(SECRETBOT), "audit", "export"], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline().decode()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    return first, process.wait(timeout=60), stderr


async def test_closed_pipe_ends_quietly(sqlite_database: AuditDatabase, tmp_path: Path) -> None:
    # 5,000 records are far more than a pipe buffers, so the export meets the closed pipe.
    insert_bulk(sqlite_database.url, 5_000)

    first, returncode, stderr = export_first_line(sqlite_database.url, tmp_path)

    assert json.loads(first)["id"] == 1
    assert returncode == 1
    assert "Traceback" not in stderr


# --- audit verify ------------------------------------------------------------------------------------


async def test_verify_reports_intact_chain(database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(database.sessions)

    result = secretbot(database.url, "audit", "verify", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "audit log intact: 6 records"


async def test_verify_names_changed_record(database: AuditDatabase, tmp_path: Path) -> None:
    await write_records(database.sessions)
    async with database.sessions.begin() as session:
        record = await session.get(AuditRecord, 3)
        assert record is not None
        record.actor = "U0MALLORY"

    result = secretbot(database.url, "audit", "verify", cwd=tmp_path)

    assert result.returncode == 1
    assert "audit log broken at record 3" in result.stderr
    assert "the 2 records before it" in result.stderr


async def test_export_keeps_changed_record(database: AuditDatabase, tmp_path: Path) -> None:
    # An export is how a changed log gets examined, so it shows the row as it is stored now.
    await write_records(database.sessions, count=3)
    async with database.sessions.begin() as session:
        record = await session.get(AuditRecord, 2)
        assert record is not None
        record.at = record.at + timedelta(days=1)
        record.detail = "not json"

    result = secretbot(database.url, "audit", "export", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    exported = parse_jsonl(result.stdout)
    assert exported[1]["detail"] == "not json"
    assert [record["id"] for record in exported] == [1, 2, 3]


async def test_verify_missing_database_leaves_no_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = secretbot(f"sqlite+aiosqlite:///{missing}", "audit", "verify", cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize(("args", "expected"), [
    (("--since", "9999-12-31T23:59:59-12:00"), "out of range"),
    (("--output", ""), "FILE is empty"),
])
async def test_edge_arguments_exit_2(sqlite_database: AuditDatabase, tmp_path: Path, args: tuple[str, ...],
                                     expected: str) -> None:
    result = secretbot(sqlite_database.url, "audit", "export", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
