"""The audit trail's hash chain on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import audit
from bot.audit import GENESIS_HASH, AuditEntry, record_hash, records_for_run, verify_chain
from bot.errors import StorageError
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import AuditRecord

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_URL = f"postgresql+asyncpg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
POSTGRES_DSN = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
CONCURRENT_APPENDS = 50


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=2):
            return True
    except OSError:
        return False


def use_schema(engine: AsyncEngine, schema: str) -> None:
    # Each test gets its own schema, so tests running at the same time on the shared
    # `test` database never see each other's tables.
    # SET is transactional in PostgreSQL, so it runs in autocommit mode. Inside a
    # transaction, the pool's rollback on checkin would undo it.
    def set_search_path(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET SESSION search_path TO {schema}")
        cursor.close()
        dbapi_connection.autocommit = autocommit

    event.listen(engine.sync_engine, "connect", set_search_path, insert=True)


@pytest.fixture(params=["sqlite", "postgresql"])
async def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    if request.param == "sqlite":
        engine = create_engine("sqlite+aiosqlite:///" + str(tmp_path / "audit.db"))
        await migrate(engine)
        yield create_session_factory(engine)
        await engine.dispose()
        return

    if not postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    schema = f"audit_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=10)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        engine = create_engine(POSTGRES_URL)
        use_schema(engine, schema)
        try:
            await migrate(engine)
            yield create_session_factory(engine)
        finally:
            await engine.dispose()
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


async def append_many(sessions: async_sessionmaker[AsyncSession], count: int) -> list[AuditRecord]:
    records = []
    for index in range(count):
        entry = AuditEntry(
            event="step.done",
            actor=f"U0{index:04d}",
            run_id="run1" if index % 2 == 0 else "run2",
            app="hotel-voice-bot",
            secret="JWT_SECRET",
            detail={"position": index, "digest": f"{index:08x}"},
        )
        records.append(await audit.append(sessions, entry))
    return records


async def execute(sessions: async_sessionmaker[AsyncSession], statement: str, **params: object) -> None:
    async with sessions.begin() as session:
        await session.execute(text(statement), params)


# --- an untouched chain ---------------------------------------------------------------------


async def test_empty_chain_verifies(sessions: async_sessionmaker[AsyncSession]) -> None:
    assert await verify_chain(sessions) == (0, None)


async def test_appended_chain_verifies(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append_many(sessions, 6)
    assert await verify_chain(sessions) == (6, None)


async def test_first_record_links_to_genesis(sessions: async_sessionmaker[AsyncSession]) -> None:
    [first] = await append_many(sessions, 1)
    assert first.prev_hash == GENESIS_HASH


async def test_each_record_links_to_previous(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 5)
    for previous, current in zip(records, records[1:]):
        assert current.prev_hash == previous.hash


async def test_stored_hash_covers_stored_fields(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append_many(sessions, 3)
    async with sessions() as session:
        stored = list(await session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    for record in stored:
        entry = AuditEntry(
            event=record.event,
            actor=record.actor,
            run_id=record.run_id,
            app=record.app,
            secret=record.secret,
            detail=record.detail_fields(),
        )
        assert record.hash == record_hash(record.prev_hash, record.at, entry)


async def test_odd_detail_values_verify(sessions: async_sessionmaker[AsyncSession]) -> None:
    detail = {"z": 1, "a": [1, 2.5, None, True], "nested": {"b": "ü\u2028<!channel>", "a": ""}, "big": 2**60}
    await audit.append(sessions, AuditEntry(event="run.requested", detail=detail))
    await audit.append(sessions, AuditEntry(event="run.requested", detail=None))
    await audit.append(sessions, AuditEntry(event="run.requested", detail={}))
    assert await verify_chain(sessions) == (3, None)


async def test_whole_second_timestamp_verifies(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    # isoformat() drops the fraction when microseconds are zero, and the value read back must agree.
    monkeypatch.setattr(audit, "utcnow", lambda: datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))
    await audit.append(sessions, AuditEntry(event="run.requested"))
    assert await verify_chain(sessions) == (1, None)


async def test_records_for_run_filters_and_orders(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append_many(sessions, 6)
    records = await records_for_run(sessions, "run2")
    assert [record.actor for record in records] == ["U00001", "U00003", "U00005"]


async def test_concurrent_appends_keep_chain(sessions: async_sessionmaker[AsyncSession]) -> None:
    entries = [AuditEntry(event=f"event.{index}", run_id="run1") for index in range(CONCURRENT_APPENDS)]
    async with asyncio.timeout(120):
        records = await asyncio.gather(*(audit.append(sessions, entry) for entry in entries))
    assert len({record.id for record in records}) == CONCURRENT_APPENDS
    assert await verify_chain(sessions) == (CONCURRENT_APPENDS, None)
    stored = await records_for_run(sessions, "run1")
    assert sorted(record.event for record in stored) == sorted(entry.event for entry in entries)


async def test_appends_in_one_process_take_turns(sessions: async_sessionmaker[AsyncSession],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # Appends through one session factory wait for each other instead of racing for the
    # chain's tail, so a burst of steps finishing at once never spends a retry.
    async def change(session: AsyncSession) -> None:
        await session.execute(text("SELECT 1"))

    caplog.set_level("INFO", logger="bot.audit")
    async with asyncio.timeout(120):
        await asyncio.gather(
            *(audit.append(sessions, AuditEntry(event="single")) for _ in range(CONCURRENT_APPENDS)),
            *(audit.append_with(sessions, [AuditEntry(event="pair"), AuditEntry(event="pair")], change)
              for _ in range(CONCURRENT_APPENDS)),
        )
    assert [record.message for record in caplog.records if "raced another writer" in record.message] == []
    assert await verify_chain(sessions) == (3 * CONCURRENT_APPENDS, None)


async def test_second_factory_still_retries(sessions: async_sessionmaker[AsyncSession]) -> None:
    # Another process has its own factory and its own turns; the unique prev_hash and the
    # retry keep the chain whole between the two.
    engine = sessions.kw["bind"]
    other = create_session_factory(create_engine(str(engine.url.render_as_string(hide_password=False))))
    if engine.dialect.name == "postgresql":
        schema = (await _current_schema(sessions))
        use_schema(other.kw["bind"], schema)
    try:
        async with asyncio.timeout(120):
            await asyncio.gather(*(audit.append(factory, AuditEntry(event="two-writers"))
                                   for _ in range(CONCURRENT_APPENDS) for factory in (sessions, other)))
    finally:
        await other.kw["bind"].dispose()
    assert await verify_chain(sessions) == (2 * CONCURRENT_APPENDS, None)


async def _current_schema(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions() as session:
        return str(await session.scalar(text("SELECT current_schema()")))


async def test_append_after_concurrent_burst(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with asyncio.timeout(120):
        await asyncio.gather(*(audit.append(sessions, AuditEntry(event="burst")) for _ in range(20)))
    await audit.append(sessions, AuditEntry(event="after"))
    assert await verify_chain(sessions) == (21, None)


# --- tampering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("event", "run.succeeded"),
        ("actor", "U0MALLORY"),
        ("run_id", "other"),
        ("app", "other-app"),
        ("secret", "ENCRYPTION_KEY"),
        ("detail", json.dumps({"digest": "ffffffff", "position": 2}, sort_keys=True)),
    ],
)
async def test_changed_field_detected(sessions: async_sessionmaker[AsyncSession], column: str, value: str) -> None:
    records = await append_many(sessions, 5)
    target = records[2]
    await execute(sessions, f"UPDATE audit_log SET {column} = :value WHERE id = :id", value=value, id=target.id)
    assert await verify_chain(sessions) == (2, target.id)


@pytest.mark.parametrize("detail", ["not json {", "", "[1, 2]"])
async def test_unreadable_detail_detected(sessions: async_sessionmaker[AsyncSession], detail: str) -> None:
    records = await append_many(sessions, 4)
    target = records[1]
    await execute(sessions, "UPDATE audit_log SET detail = :value WHERE id = :id", value=detail, id=target.id)
    assert await verify_chain(sessions) == (1, target.id)


async def test_verify_reads_in_batches(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 7)
    assert await verify_chain(sessions, batch_size=3) == (7, None)
    await execute(sessions, "UPDATE audit_log SET actor = 'U0MALLORY' WHERE id = :id", id=records[5].id)
    assert await verify_chain(sessions, batch_size=3) == (5, records[5].id)


async def test_changed_time_detected(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 4)
    target = records[1]
    async with sessions.begin() as session:
        row = await session.get(AuditRecord, target.id)
        assert row is not None
        row.at = datetime(2020, 1, 1, tzinfo=UTC)
    assert await verify_chain(sessions) == (1, target.id)


async def test_changed_null_field_detected(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 3)
    await execute(sessions, "UPDATE audit_log SET actor = NULL WHERE id = :id", id=records[0].id)
    assert await verify_chain(sessions) == (0, records[0].id)


async def test_rehashed_record_breaks_next(sessions: async_sessionmaker[AsyncSession]) -> None:
    # Someone who recomputes the changed record's own hash still breaks the link to the next one.
    records = await append_many(sessions, 4)
    target = records[1]
    forged = AuditEntry(
        event="step.done",
        actor="U0MALLORY",
        run_id="run2",
        app="hotel-voice-bot",
        secret="JWT_SECRET",
        detail={"position": 1, "digest": "00000001"},
    )
    async with sessions.begin() as session:
        row = await session.get(AuditRecord, target.id)
        assert row is not None
        row.actor = "U0MALLORY"
        row.hash = record_hash(row.prev_hash, row.at, forged)
    assert await verify_chain(sessions) == (2, records[2].id)


async def test_deleted_record_detected(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 5)
    await execute(sessions, "DELETE FROM audit_log WHERE id = :id", id=records[2].id)
    assert await verify_chain(sessions) == (2, records[3].id)


async def test_deleted_first_record_detected(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 3)
    await execute(sessions, "DELETE FROM audit_log WHERE id = :id", id=records[0].id)
    assert await verify_chain(sessions) == (0, records[1].id)


async def test_reordered_records_detected(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 5)
    first, second = records[1].id, records[3].id
    parking = max(record.id for record in records) + 1000
    await execute(sessions, "UPDATE audit_log SET id = :new WHERE id = :old", new=parking, old=first)
    await execute(sessions, "UPDATE audit_log SET id = :new WHERE id = :old", new=first, old=second)
    await execute(sessions, "UPDATE audit_log SET id = :new WHERE id = :old", new=second, old=parking)
    assert await verify_chain(sessions) == (1, first)


async def test_append_continues_from_last_record(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = await append_many(sessions, 2)
    latest = await audit.append(sessions, AuditEntry(event="run.succeeded"))
    assert latest.prev_hash == records[-1].hash


# --- failures ------------------------------------------------------------------------------------


async def test_taken_tail_raises_storage_error(sessions: async_sessionmaker[AsyncSession]) -> None:
    # A row that already claims the last record's hash as its predecessor makes every
    # attempt collide on the unique prev_hash, so append must give up with StorageError.
    [last] = await append_many(sessions, 1)
    await execute(
        sessions,
        "INSERT INTO audit_log (id, at, event, detail, prev_hash, hash) VALUES (:id, :at, 'ghost', '{}', :prev, :hash)",
        id=last.id - 1000,
        at=datetime(2025, 1, 1, tzinfo=UTC),
        prev=last.hash,
        hash="f" * 64,
    )
    with pytest.raises(StorageError) as info:
        async with asyncio.timeout(60):
            await audit.append(sessions, AuditEntry(event="run.requested"))
    assert "run.requested" in str(info.value)


async def test_unreachable_database_raises_storage_error(tmp_path: Path) -> None:
    engine = create_engine("sqlite+aiosqlite:///" + str(tmp_path / "missing-dir" / "audit.db"))
    try:
        with pytest.raises(StorageError):
            await audit.append(create_session_factory(engine), AuditEntry(event="run.requested"))
    finally:
        await engine.dispose()
