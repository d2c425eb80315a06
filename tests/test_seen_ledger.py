"""Where the replay ledger keeps its keys. With SQLite they are in a file beside the database
file, so recording a request does not wait for the database's write lock. With PostgreSQL
they are in the database's seen_requests table, written through a connection of the ledger's own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import SeenRequest
from bot.storage.seen import SeenRequests


async def test_sqlite_ledger_is_beside_database(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}"))
    await migrate(engine)
    try:
        ledger = SeenRequests(create_session_factory(engine))
        assert await ledger.first_time("signature:one")
        async with engine.connect() as connection:
            in_database = (await connection.execute(text("SELECT count(*) FROM seen_requests"))).scalar_one()
    finally:
        await engine.dispose()

    assert ledger.ledger_file() == tmp_path / "bot.seen-requests.db"
    assert (tmp_path / "bot.seen-requests.db").exists()
    assert in_database == 0


async def test_postgres_ledger_is_database_table(postgres_url: str) -> None:
    engine = create_engine(normalize_database_url(postgres_url))
    await migrate(engine)
    try:
        ledger = SeenRequests(create_session_factory(engine))
        assert await ledger.first_time("signature:one")
        assert not await ledger.first_time("signature:one")
        async with engine.connect() as connection:
            in_database = (await connection.execute(text("SELECT count(*) FROM seen_requests"))).scalar_one()
    finally:
        await ledger.close()
        await engine.dispose()

    assert ledger.ledger_file() is None
    assert in_database == 1


async def test_memory_database_uses_its_table() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    await migrate(engine)
    try:
        ledger = SeenRequests(create_session_factory(engine))
        assert await ledger.first_time("event:Ev01")
        assert not await ledger.first_time("event:Ev01")
    finally:
        await engine.dispose()

    assert ledger.ledger_file() is None


async def test_ledger_ignores_database_write_lock(tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    engine = create_engine(normalize_database_url(f"sqlite:///{database}"))
    await migrate(engine)
    # Another connection holds the database's write lock, as a run's transaction does.
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        ledger = SeenRequests(create_session_factory(engine))
        started = time.monotonic()
        first = await asyncio.wait_for(ledger.first_time("signature:while-locked"), timeout=5)
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await engine.dispose()

    assert first
    assert elapsed < 1.0


async def test_ledger_shared_by_processes(tmp_path: Path) -> None:
    url = normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}")
    engines = [create_engine(url), create_engine(url)]
    await migrate(engines[0])
    try:
        first, second = (SeenRequests(create_session_factory(engine)) for engine in engines)
        assert await first.first_time("signature:shared")
        seen_by_second = await second.first_time("signature:shared")
        new_for_second = await second.first_time("signature:other")
    finally:
        for engine in engines:
            await engine.dispose()

    assert not seen_by_second
    assert new_for_second


async def test_keys_from_database_table_carried_over(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}"))
    await migrate(engine)
    try:
        # Recorded by a version that kept the keys in the database's own table.
        async with create_session_factory(engine).begin() as session:
            await session.execute(insert(SeenRequest).values(key="signature:before-upgrade", seen_at=datetime.now(UTC)))
        ledger = SeenRequests(create_session_factory(engine))
        replay = await ledger.first_time("signature:before-upgrade")
        fresh = await ledger.first_time("signature:after-upgrade")
    finally:
        await engine.dispose()

    assert not replay
    assert fresh


async def test_first_times_one_write_per_request(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}"))
    await migrate(engine)
    try:
        ledger = SeenRequests(create_session_factory(engine))
        assert await ledger.first_time("event:Ev02")
        results = await asyncio.gather(ledger.first_times(["signature:a", "event:Ev02"]),
                                       ledger.first_times(["signature:b", "event:Ev03"]),
                                       ledger.first_times(["signature:c", "event:Ev03"]))
    finally:
        await engine.dispose()

    assert results[0] == [True, False]
    assert results[1] == [True, True]
    assert results[2] == [True, False]


async def test_keys_arriving_meanwhile_share_a_write(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}"))
    await migrate(engine)
    ledger = SeenRequests(create_session_factory(engine))
    assert await ledger.first_time("signature:opened")
    assert ledger._store is not None
    store = ledger._store
    writes: list[list[str]] = []
    original = store.insert

    async def counted(keys: list[str], **options: object) -> set[str]:
        writes.append(keys)
        return await original(keys, **options)  # type: ignore[arg-type]

    store.insert = counted  # type: ignore[method-assign]

    async def request(key: str, turns_before: int) -> bool:
        # Stands for a request whose parsing takes `turns_before` more turns of the event loop.
        for _ in range(turns_before):
            await asyncio.sleep(0)
        return await ledger.first_time(key)

    try:
        results = await asyncio.gather(request("signature:a", 0), request("signature:b", 1))
    finally:
        await engine.dispose()

    assert results == [True, True]
    assert writes == [["signature:a", "signature:b"]]
    # 1 is NORMAL: the ledger file commits without an fsync each time.
    assert store._connection.execute("PRAGMA synchronous").fetchone() == (1,)  # type: ignore[attr-defined]


async def test_postgres_ledger_writes_while_pool_is_busy(postgres_url: str) -> None:
    # Every connection of the bot's pool is taken, as by the queries of many runs at once.
    url = normalize_database_url(postgres_url)
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=30)
    await migrate(engine)
    ledger = SeenRequests(create_session_factory(engine))
    try:
        async with engine.connect() as busy:
            await busy.execute(text("SELECT 1"))
            first = await asyncio.wait_for(ledger.first_time("signature:pool-busy"), timeout=5)
            again = await asyncio.wait_for(ledger.first_time("signature:pool-busy"), timeout=5)
    finally:
        await ledger.close()
        await engine.dispose()

    assert first
    assert not again


async def test_postgres_ledger_reopens_after_close(postgres_url: str) -> None:
    engine = create_engine(normalize_database_url(postgres_url))
    await migrate(engine)
    ledger = SeenRequests(create_session_factory(engine))
    try:
        assert await ledger.first_time("signature:before-close")
        await ledger.close()
        assert not await ledger.first_time("signature:before-close")
    finally:
        await ledger.close()
        await engine.dispose()


async def test_removed_ledger_file_opened_again(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}"))
    await migrate(engine)
    try:
        first = SeenRequests(create_session_factory(engine))
        assert await first.first_time("signature:before")
        ledger = first.ledger_file()
        assert ledger is not None
        for path in ledger.parent.glob(f"{ledger.name}*"):
            path.unlink()

        assert await first.first_time("signature:after")
        # Another process, or this one restarted, reads the file at the path: the key is there.
        second = SeenRequests(create_session_factory(engine))
        assert not await second.first_time("signature:after")
    finally:
        await engine.dispose()

    assert ledger.exists()
