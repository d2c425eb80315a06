"""The async engine, session factory and schema migration at start-up."""

from __future__ import annotations

import ast
import asyncio
import fcntl
import functools
import logging
import os
import stat
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Alembic's table of applied revisions (its default name, which env.py keeps).
VERSION_TABLE = "alembic_version"

# The key of the PostgreSQL advisory lock that migrations take: any fixed 64-bit number
# that nothing else in the database uses ("secretbt" in ASCII).
MIGRATION_LOCK_KEY = 0x7365637265746274
# Appended to a SQLite file's path for the file that migrations lock.
MIGRATION_LOCK_SUFFIX = ".migrate-lock"

# SQLite waits this long for another writer before reporting "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Owner read and write only: the SQLite files hold encrypted backups, audit records and run state.
PRIVATE_FILE_MODE = 0o600
# The files SQLite keeps beside a database in WAL mode.
SQLITE_SIDE_FILE_SUFFIXES = ("-wal", "-shm")


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


def sqlite_file(url: URL) -> Path | None:
    """Return the database file of a SQLite URL, or None for another database or one held in memory."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    # With uri=true the database is a `file:` URI, not a path, and SQLite opens it as such.
    if url.query.get("mode") == "memory" or url.query.get("uri") in ("true", "1"):
        return None
    return Path(url.database or "")


# What the bot's main SQLite file holds, for the warning about a file open to other users.
DATABASE_CONTENTS = "encrypted backups, audit records and run state"


def create_private_file(path: Path, contents: str = DATABASE_CONTENTS) -> None:
    """Create `path` empty with mode 0600 before SQLite opens it, or warn if an existing one is open to others.

    `contents` says in the warning what the file holds.

    SQLite would create the file with mode 0644, readable by every user of the machine.
    It gives the -wal and -shm files it makes later the mode of the database file, so they
    are private too. An existing file keeps its mode, because its owner may have chosen it.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        _warn_if_shared(path, contents)
        return
    except OSError:
        # A missing or read-only folder: opening the database fails next and names the folder to fix.
        return
    os.close(descriptor)
    logger.info("SQLite file created, readable by its owner only path=%s", path)


def _warn_if_shared(path: Path, contents: str) -> None:
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILE_SUFFIXES)):
        try:
            mode = candidate.stat().st_mode
        except OSError:
            continue
        # A folder in the file's place fails when SQLite opens it, with its own error.
        if stat.S_ISREG(mode) and mode & 0o077:
            logger.warning("SQLite file %s is readable or writable by other users (mode %03o), and it contains "
                           "%s; run `chmod 600 %s` so that only its owner can open it",
                           candidate, mode & 0o777, contents, candidate)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the latest revision; raise StorageError naming DATABASE_URL if that fails.

    Alembic is imported only when an existing schema must be upgraded, because its
    modules, with the Mako and Pygments modules it imports, stay in memory for the life of
    the process. A bot restarted on a migrated database idled at 96 to 97 MB when every
    start imported alembic, and at 87 to 88 MB without it (bench.spot_checks memory
    --restart, 2 shared cores). An empty database gets the head schema directly.
    """
    created = False
    path = sqlite_file(engine.url)
    if path is not None:
        create_private_file(path)
    # SQLAlchemy 2.1 passes asyncpg's connection failures (refused, SSL declined, unknown host)
    # through unwrapped, as OSError subclasses.
    try:
        async with engine.connect() as connection:
            current = await current_revision(connection)
        if current == head_revision():
            logger.info("database schema is at the latest revision revision=%s", current)
            return
        # Two processes started together on a new database (two Machines after a deploy)
        # would both create or upgrade it, and one would fail on tables the other made.
        # Under the lock the revision is read again, so the second finds the first's work.
        async with _migration_lock(engine.url), engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            current = await current_revision(connection)
            if current == head_revision():
                logger.info("database schema brought to the latest revision by another process revision=%s",
                            current)
                return
            created = current is None and await connection.run_sync(_create_if_empty)
            if not created:
                await connection.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(_failure_message(engine.url, exc)) from exc
    if created:
        logger.info("database schema created at the latest revision revision=%s", head_revision())
    else:
        logger.info("database schema migrated to the latest revision from=%s to=%s", current, head_revision())


@asynccontextmanager
async def _migration_lock(url: URL) -> AsyncIterator[None]:
    """Hold an exclusive lock on a SQLite file's migration lock file; a no-op for other databases.

    PostgreSQL takes an advisory lock inside the migration's transaction instead. SQLite
    runs each CREATE TABLE in a transaction of its own, so the file lock is what keeps two
    processes' migrations apart. The lock file (`secretbot.db.migrate-lock` beside
    `secretbot.db`) stays, because deleting a lock file races with the next process opening it.
    """
    path = Path(url.database or "") if url.get_backend_name() == "sqlite" else None
    if path is None or url.database in (None, "", ":memory:") or not path.resolve().parent.is_dir():
        # A missing folder is reported by the connection, with the fix, not here.
        yield
        return
    descriptor = os.open(f"{path}{MIGRATION_LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # flock blocks, so it waits in a thread while another process migrates.
        await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def _create_if_empty(connection: Connection) -> bool:
    """Create the whole schema at the head revision in a database with no tables; return whether it did.

    A new database needs no history, so its tables come from the models and the head
    revision is recorded as alembic would record it. That keeps alembic out of a first
    start's memory as well (see `migrate`). tests/test_fresh_schema.py checks that the
    tables, columns, keys and indexes made this way equal those the migrations make.
    """
    if inspect(connection).get_table_names():
        return False
    from bot.storage.models import Base

    Base.metadata.create_all(connection)
    versions = MetaData()
    version_table = Table(VERSION_TABLE, versions,
                          Column("version_num", String(32), nullable=False),
                          PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))
    versions.create_all(connection)
    connection.execute(version_table.insert().values(version_num=head_revision()))
    return True


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


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
    """Return whether the database responds and its schema is at the latest revision.

    Plain SQL, so that /healthz and connect_existing do not import alembic.
    """
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        current = await current_revision(connection)
    return current == head_revision()


async def current_revision(connection: AsyncConnection) -> str | None:
    """Return the revision recorded in the database, or None before the first migration.

    A table with several rows (branches merged by hand) is returned as None too, so it
    never compares equal to the head and a migration is attempted, which reports the problem.
    """
    has_table = await connection.run_sync(lambda sync: inspect(sync).has_table(VERSION_TABLE))
    if not has_table:
        return None
    rows = (await connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).scalars().all()
    return rows[0] if len(rows) == 1 else None


@functools.cache
def head_revision() -> str:
    """Return the latest revision of the migration scripts, read without importing alembic.

    Each script in migrations/versions assigns `revision` and `down_revision` at module
    level, as alembic's template writes them. The head is the one revision that no
    script names as its `down_revision`. tests/test_schema_revision.py compares the
    result with alembic's own head.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        assigned = _module_constants(script, ("revision", "down_revision"))
        revision = assigned.get("revision")
        if not isinstance(revision, str):
            raise StorageError(f"the migration script {script} assigns no string `revision`; fix the script")
        revisions.add(revision)
        down = assigned.get("down_revision")
        parents.update([down] if isinstance(down, str) else list(down or ()))
    heads = revisions - parents
    if len(heads) != 1:
        raise StorageError(f"the migration scripts in {MIGRATIONS_DIR / 'versions'} have {len(heads)} heads "
                           f"({', '.join(sorted(heads)) or 'none'}) instead of one; merge them with alembic")
    return heads.pop()


def _module_constants(script: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Return the literal values assigned to `names` at the top level of a Python file."""
    values: dict[str, Any] = {}
    for node in ast.parse(script.read_text(encoding="utf-8"), filename=str(script)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            values[target.id] = ast.literal_eval(value)
    return values


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
