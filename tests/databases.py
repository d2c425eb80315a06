"""The database that a test's bot process uses: a SQLite file or a PostgreSQL database.

End-to-end tests run once per backend. `conftest.py` sets `backend` for each test, and
`BotProcess` picks its database from it, so a test reads and changes the bot's rows
through `BotDatabase.query` and `execute` and works unchanged on both.

Both take SQL with `?` placeholders. Timestamp parameters must be aware datetimes: each
backend converts them to the form its column holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

POSTGRES_ADMIN_DSN = os.environ.get("SECRETBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# Set by the autouse fixture in conftest.py before each test; read when a BotProcess is built.
backend = SQLITE

# PostgreSQL databases created during the current test, dropped when it ends.
_created: list[str] = []

T = TypeVar("T")


class BotDatabase(Protocol):
    kind: str

    @property
    def url(self) -> str: ...

    def query(self, sql: str, *params: Any) -> list[Any]: ...

    def execute(self, sql: str, *params: Any) -> None: ...

    def contents(self) -> bytes: ...

    def exists(self) -> bool: ...


@dataclass
class SqliteDatabase:
    path: Path
    kind: str = SQLITE

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        connection = sqlite3.connect(self.path)
        connection.row_factory = sqlite3.Row
        try:
            return list(connection.execute(sql, _sqlite_params(params)))
        finally:
            connection.close()

    def execute(self, sql: str, *params: Any) -> None:
        connection = sqlite3.connect(self.path)
        try:
            connection.execute(sql, _sqlite_params(params))
            connection.commit()
        finally:
            connection.close()

    def contents(self) -> bytes:
        """The file and its WAL, where recent writes sit until a checkpoint."""
        data = b""
        for suffix in ("", "-wal", "-shm", "-journal"):
            candidate = Path(str(self.path) + suffix)
            if candidate.exists():
                data += candidate.read_bytes()
        return data

    def exists(self) -> bool:
        return self.path.exists()


@dataclass
class PostgresDatabase:
    dsn: str
    kind: str = POSTGRESQL
    _tables: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.dsn

    @property
    def name(self) -> str:
        return self.dsn.rsplit("/", 1)[1]

    def query(self, sql: str, *params: Any) -> list[Any]:
        return _run(self._fetch(_numbered(sql, len(params)), params))

    def execute(self, sql: str, *params: Any) -> None:
        _run(self._fetch(_numbered(sql, len(params)), params))

    def contents(self) -> bytes:
        """Every row of every table as text, to search for values that must not be stored."""
        return _run(self._dump())

    def exists(self) -> bool:
        rows = _run(_admin_fetch("SELECT 1 FROM pg_database WHERE datname = $1", self.name))
        return bool(rows)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        import asyncpg

        connection = await asyncpg.connect(self.dsn, timeout=5)
        try:
            return list(await connection.fetch(sql, *_postgres_params(params)))
        finally:
            await connection.close()

    async def _dump(self) -> bytes:
        import asyncpg

        connection = await asyncpg.connect(self.dsn, timeout=5)
        try:
            tables = [row["tablename"] for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            parts = []
            for table in tables:
                rows = await connection.fetch(f'SELECT row_to_json(t)::text AS row FROM "{table}" t')
                parts.extend(row["row"] for row in rows)
            return "\n".join(parts).encode()
        finally:
            await connection.close()


def for_workdir(workdir: Path) -> BotDatabase:
    """The database of the bot whose working folder is `workdir`, on the current backend.

    A restarted bot gets the same folder and so the same database. The PostgreSQL name is
    derived from the folder and created on first use.
    """
    if backend == SQLITE:
        return SqliteDatabase(workdir / "secretbot.db")
    name = "secretbot_e2e_" + hashlib.sha256(str(workdir).encode()).hexdigest()[:16]
    if name not in _created:
        _run(_admin_fetch(f'CREATE DATABASE "{name}"'))
        _created.append(name)
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    return PostgresDatabase(f"{base}/{name}")


def from_url(url: str) -> BotDatabase:
    """The test database behind a DATABASE_URL that a test chose itself."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return SqliteDatabase(Path(url[len(prefix):]))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    if url.startswith("postgresql+asyncpg://"):
        return PostgresDatabase("postgresql://" + url[len("postgresql+asyncpg://"):])
    raise ValueError(f"no test database for DATABASE_URL {url!r}")


def postgres_available() -> str | None:
    """None when the PostgreSQL server answers, else the reason it does not."""
    try:
        _run(_admin_fetch("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means the backend cannot run
        return f"PostgreSQL at {POSTGRES_ADMIN_DSN} is not available: {exc}"
    return None


def drop_created() -> None:
    """Drop the PostgreSQL databases created during the test that just ended."""
    while _created:
        name = _created.pop()
        _run(_admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_fetch(sql: str, *params: Any) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        return list(await connection.fetch(sql, *params))
    finally:
        await connection.close()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to completion from synchronous code, even inside a running event loop.

    The async tests call these helpers directly, so the query runs on a private loop in a
    short-lived thread. It blocks the test's loop for the few milliseconds a query takes.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _numbered(sql: str, count: int) -> str:
    numbered = sql
    for index in range(1, count + 1):
        numbered = numbered.replace("?", f"${index}", 1)
    return numbered


def _sqlite_params(params: Sequence[Any]) -> tuple[Any, ...]:
    # SQLAlchemy keeps SQLite timestamps as naive UTC text with microseconds.
    return tuple(_sqlite_text(value) if isinstance(value, datetime) else value for value in params)


def _sqlite_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime given; pass an aware UTC datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _postgres_params(params: Sequence[Any]) -> list[Any]:
    for value in params:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
    return list(params)


def is_missing_table(exc: Exception) -> bool:
    """Whether `exc` says a table does not exist yet (the bot creates it at start-up)."""
    return bool(re.search(r"no such table|does not exist", str(exc)))
