"""The async engine, session factory and schema migration at start-up."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.errors import StorageError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# SQLite waits this long for another writer before reporting "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the latest revision; raise StorageError naming DATABASE_URL if that fails."""

    def upgrade(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), "head")

    # SQLAlchemy 2.1 passes asyncpg's connection failures (refused, SSL declined, unknown host)
    # through unwrapped, as OSError subclasses.
    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(_failure_message(engine.url, exc)) from exc
    logger.info("database schema is at the latest revision")


def _failure_message(url: URL, exc: Exception) -> str:
    """Describe a failed connection or migration with the URL, the cause and what to check."""
    shown = _shown_url(url)
    cause = _cause(exc)
    if url.get_backend_name() == "sqlite" and "unable to open database file" in cause:
        folder = Path(url.database or ".").resolve().parent
        return (
            f"cannot open the SQLite database file of DATABASE_URL {shown} ({cause}); "
            f"check that the folder {folder} exists and that secretbot can write to it"
        )
    if isinstance(exc, ConnectionRefusedError):
        hint = "check that PostgreSQL is running and accepts connections on that host and port"
    elif isinstance(exc, socket.gaierror):
        hint = "check the host name in DATABASE_URL"
    elif isinstance(exc, TimeoutError):
        hint = "check the host, the port and any firewall between secretbot and the database"
    elif isinstance(exc, ConnectionError) and "SSL" in str(exc):
        # asyncpg raises a plain ConnectionError when the server replies "N" (no SSL) to its SSLRequest.
        hint = (
            "the server does not accept SSL; remove sslmode=require (or ssl=require) from DATABASE_URL "
            "or enable SSL on the server"
        )
    elif isinstance(exc, OSError):
        hint = "check the host and port in DATABASE_URL"
    else:
        return f"database migration failed for DATABASE_URL {shown}: {cause}"
    return f"cannot connect to the database at DATABASE_URL {shown} ({cause}); {hint}"


def _shown_url(url: URL) -> str:
    """Render the URL with the password masked and any `password` query parameter left out."""
    return url.difference_update_query(["password"]).render_as_string(hide_password=True)


def _cause(exc: Exception) -> str:
    # SQLAlchemy wraps the driver's error in `orig`, and asyncpg's own error is that one's __cause__.
    original: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        original = exc.orig.__cause__ or exc.orig
    lines = str(original).splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}".rstrip(": ")


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Return whether the database responds and its schema is at the latest revision."""

    def read_revision(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        current = await connection.run_sync(read_revision)
    return current == head


@asynccontextmanager
async def connect_existing(url: str) -> AsyncIterator[AsyncEngine]:
    """Connect to the bot's database for a command-line tool, which must never create or migrate it.

    Raises StorageError when a SQLite file does not exist (connecting would create an empty
    one), when the database cannot be reached, or when its schema is not the latest.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "")
        if not path.exists():
            raise StorageError(
                f"the SQLite database file {path.resolve()} of DATABASE_URL does not exist; "
                "check DATABASE_URL, or start the bot once to create it"
            )
    engine = create_engine(url)
    try:
        try:
            current = await schema_is_current(engine)
        except (SQLAlchemyError, OSError) as exc:
            # The URL may carry a password, so only the error's type is shown.
            raise StorageError(f"cannot reach the database in DATABASE_URL: {type(exc).__name__}") from exc
        if not current:
            raise StorageError("the database schema is not current; start the bot once to migrate it")
        yield engine
    finally:
        await engine.dispose()
