"""The inventory sync records an outside change once, and treats a hand-restored value as an outside change."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

import asyncpg

from bot.storage.db import create_session_factory
from tests import test_inventory_sync
from tests.test_inventory_sync import APP, Harness, open_database

# The inventory sync tests' fixtures: a sync harness on SQLite, or on SQLite and PostgreSQL.
harness = test_inventory_sync.harness
any_harness = test_inventory_sync.any_harness
any_database_url = test_inventory_sync.any_database_url

# Long enough for both syncs to list the app and read its rows, well under SQLite's busy timeout.
HOLD_SECONDS = 3.0


@contextlib.asynccontextmanager
async def writes_held(url: str) -> AsyncIterator[None]:
    """Block writes to the inventory (reads go on) until the block ends, so two syncs read the same rows."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    transaction = pg.transaction()
    await transaction.start()
    await pg.execute("LOCK TABLE inventory IN SHARE MODE")
    try:
        yield
    finally:
        await transaction.rollback()
        await pg.close()


async def test_two_processes_record_outside_change_once(any_harness: Harness, any_database_url: str) -> None:
    # A second engine is a second connection pool, as a second bot process or `secretbot sync` would have.
    other_engine = await open_database(any_database_url)
    try:
        first = any_harness.sync((APP,))
        second = any_harness.sync((APP,), sessions=create_session_factory(other_engine))
        await first.sync_all()
        any_harness.clock.advance(days=1)
        any_harness.fly.set_secret(APP, "JWT_SECRET", "set-by-hand")

        async with writes_held(any_database_url):
            both = asyncio.gather(first.sync_all(), second.sync_all())
            await asyncio.sleep(HOLD_SECONDS)
        await both
    finally:
        await other_engine.dispose()

    records = await any_harness.records("inventory.changed_outside")
    assert len(records) == 1


async def test_hand_restored_old_value_is_outside_change(harness: Harness) -> None:
    sync = harness.sync((APP,))
    await sync.sync_all()
    for version, run_id in ((1, "0000000000a1"), (2, "0000000000a2")):
        harness.clock.advance(days=30)
        harness.fly.set_secret(APP, "JWT_SECRET", f"value-{version}")
        await harness.add_run(run_id, "JWT_SECRET", open_run=False,
                              digest_after=harness.fly.secret_digest(APP, "JWT_SECRET"))
        await sync.sync_all()
    harness.clock.advance(days=5)
    # The README's restore path: `secretbot backup show ... | fly secrets set NAME=-` puts version 1 back.
    harness.fly.set_secret(APP, "JWT_SECRET", "value-1")

    result = (await sync.sync_all())[0]
    row = (await harness.rows())["JWT_SECRET"]

    assert result.changed_outside == ("JWT_SECRET",)
    assert row.rotation_source == "outside"
