"""An empty database gets the head schema from the models, without alembic: the result must
be the schema the migrations build, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import StorageError
from bot.settings import normalize_database_url
from bot.storage.db import _alembic_config, create_engine, head_revision, migrate
from bot.storage.models import Base

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one backend: the first for the migrations, the second for migrate().

    A synchronous fixture, because postgres_url runs its own event loop to create a database.
    """
    if request.param == "sqlite":
        yield (f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}", f"sqlite+aiosqlite:///{tmp_path / 'created.db'}")
        return
    first = request.getfixturevalue("postgres_url")
    second = f"{first}_created"
    asyncio.run(_admin(first, f'CREATE DATABASE "{second.rsplit("/", 1)[1]}"'))
    try:
        yield normalize_database_url(first), normalize_database_url(second)
    finally:
        asyncio.run(_admin(first, f'DROP DATABASE IF EXISTS "{second.rsplit("/", 1)[1]}" WITH (FORCE)'))


async def _admin(dsn: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
async def engines(urls: tuple[str, str]) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    migrated, created = create_engine(urls[0]), create_engine(urls[1])
    try:
        yield migrated, created
    finally:
        await migrated.dispose()
        await created.dispose()


async def upgrade_with_alembic(engine: AsyncEngine) -> None:
    def upgrade(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


def describe(connection: Connection) -> dict[str, Any]:
    """Every table's columns, keys and indexes, in a form that compares equal across two databases.

    Columns are compared as a set: a migration that adds a column puts it last, which the
    models need not do, and nothing reads columns by position.
    """
    inspector = inspect(connection)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        columns = sorted((column["name"], str(column["type"]), column["nullable"], _default(column.get("default")))
                         for column in inspector.get_columns(table))
        indexes = sorted(
            (index["name"], tuple(index["column_names"]), bool(index["unique"]),
             json.dumps({key: str(value) for key, value in index.get("dialect_options", {}).items()}, sort_keys=True))
            for index in inspector.get_indexes(table))
        uniques = sorted((unique["name"], tuple(unique["column_names"]))
                         for unique in inspector.get_unique_constraints(table))
        primary = tuple(inspector.get_pk_constraint(table)["constrained_columns"])
        foreign = sorted((tuple(key["constrained_columns"]), key["referred_table"], tuple(key["referred_columns"]))
                         for key in inspector.get_foreign_keys(table))
        tables[table] = {"columns": columns, "indexes": indexes, "uniques": uniques, "primary": primary,
                         "foreign": foreign}
    return tables


def _default(default: object) -> str:
    # On PostgreSQL a table that a batch migration rebuilt keeps the sequence made for its
    # temporary copy ('_alembic_tmp_decisions_id_seq'); only the sequence's name differs.
    text = str(default)
    return "nextval(sequence)" if text.startswith("nextval(") else text


async def test_created_schema_equals_migrated_schema(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    migrated, created = engines
    await upgrade_with_alembic(migrated)
    await migrate(created)
    async with migrated.connect() as connection:
        expected = await connection.run_sync(describe)
    async with created.connect() as connection:
        actual = await connection.run_sync(describe)
    assert sorted(actual) == sorted(expected)
    for table in expected:
        assert actual[table] == expected[table], table
    # The partial unique index on open runs is what keeps one open run per secret.
    assert any(index[0] == "uq_run_secrets_open" and index[2] for index in actual["run_secrets"]["indexes"])


async def test_migrations_match_models(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    migrated, _created = engines
    await upgrade_with_alembic(migrated)

    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

    async with migrated.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_created_schema_records_head_and_upgrades_as_noop(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    _migrated, created = engines
    await migrate(created)
    async with created.connect() as connection:
        versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    assert versions == [head_revision()]
    # Alembic accepts the recorded revision as its own: an upgrade finds nothing to do.
    await upgrade_with_alembic(created)
    async with created.connect() as connection:
        versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    assert versions == [head_revision()]


async def test_database_with_tables_is_not_created_over(tmp_path: Path) -> None:
    # A database that contains tables but no revision is not empty: migrate leaves it to
    # alembic, which reports the clash. Creating from the models would have skipped the
    # existing table and built the rest around it without a word.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY)"))
        with pytest.raises(StorageError, match="runs"):
            await migrate(engine)
    finally:
        await engine.dispose()


def test_first_start_imports_no_alembic(tmp_path: Path) -> None:
    code = f"""
        import asyncio, json, sys
        from bot.storage.db import create_engine, migrate

        async def main():
            engine = create_engine("sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
            await migrate(engine)
            await engine.dispose()

        asyncio.run(main())
        print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("alembic", "mako"))))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


RACE_CHILD = """
import asyncio, sys, time
from bot.storage.db import create_engine, migrate
import bot.storage.models  # imported before the start time, so both start their work together

url, start_at = sys.argv[1], float(sys.argv[2])

async def main():
    engine = create_engine(url)
    while time.time() < start_at:
        await asyncio.sleep(0.0005)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()

asyncio.run(main())
print("migrated")
"""


def test_two_processes_migrate_one_new_database(urls: tuple[str, str]) -> None:
    # Two Machines started by one deploy migrate the same empty database at the same moment.
    url = urls[0]
    start_at = time.time() + 3
    children = [subprocess.Popen([sys.executable, "-c", RACE_CHILD, url, str(start_at)], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
                for _ in range(3)]
    outcomes = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], [error for _out, error in outcomes]
    assert all(output.strip().endswith("migrated") for output, _error in outcomes)

    async def revisions() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return list((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars())
        finally:
            await engine.dispose()

    assert asyncio.run(revisions()) == [head_revision()]
