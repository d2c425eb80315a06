"""A record of Slack requests already handled (the replay ledger), kept on disk so it survives
restarts and is shared by every bot process on the same database.

Slack retries an Events API delivery that was not acknowledged within 3 seconds up to
three times (at once, after 1 minute and after 5 minutes), each with a new timestamp and
signature but the same `event_id`. A replayed request, by contrast, repeats the exact
signature within the 5-minute timestamp window.

Where the keys live:

- With a SQLite database file, in a SQLite file of their own beside it, named after it
  (`secretbot.db` keeps them in `secretbot.seen-requests.db`). Every request is recorded
  before it is acknowledged, and SQLite has one writer per file: in the main file that
  write queued behind the transactions of runs started by earlier requests (audit
  records, steps), which made acknowledgements under load take seconds. Processes that
  share the database file share this file too.
- With PostgreSQL, or an in-memory SQLite database, in the `seen_requests` table of the
  database itself. PostgreSQL inserts of different keys do not wait for each other. On
  PostgreSQL the ledger writes through a connection of its own (`close()` releases it):
  through the shared pool, each write waited for a connection behind the queries of
  every run in progress.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.clock import Clock, SystemClock
from bot.storage.db import create_private_file
from bot.storage.models import SeenRequest

logger = logging.getLogger(__name__)

# Longer than Slack's last event retry (5 minutes after the first delivery) and the
# signature timestamp window (5 minutes), with a margin.
KEEP_FOR = timedelta(hours=1)
# Old keys are deleted on every this-many-th insert, which keeps the table small without
# a delete on every request.
PRUNE_EVERY = 200
# Added to the SQLite database file's stem for the ledger file: secretbot.db -> secretbot.seen-requests.db.
LEDGER_FILE_INFIX = ".seen-requests"
# Another process may hold the ledger file's write lock for one short insert. Past 2 s the
# request gets 503 rather than outliving Slack's 3 s limit for an acknowledgement.
LEDGER_BUSY_TIMEOUT_SECONDS = 2.0
# SQLite accepts 32,766 bound parameters per statement; two per key, so a burst is written in slices.
MAX_KEYS_PER_INSERT = 1000


class _KeyStore(Protocol):
    async def insert(self, keys: list[str], *, now: datetime, prune_before: datetime | None) -> set[str]:
        """Insert the keys not recorded yet and return those; first delete keys older than `prune_before`."""
        ...


class SeenRequests:
    """Records request keys, in one transaction for all requests that arrive together.

    A transaction per request made concurrent requests queue for SQLite's single writer,
    whose busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so a burst of 200
    clicks took seconds to acknowledge. Keys that arrive while a write is in progress wait
    for the next write and share it (group commit).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self.sessions = sessions
        self.clock = clock or SystemClock()
        self._inserts = 0
        self._waiting: list[tuple[tuple[str, ...], asyncio.Future[list[bool]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._store: _KeyStore | None = None
        # The ledger's own engine on PostgreSQL, once the first key is written.
        self._own_engine: AsyncEngine | None = None

    async def first_time(self, key: str) -> bool:
        """Record `key`; return False if it was recorded before (by this or another process).

        Raises the database's error (SQLAlchemyError) when the write fails.
        """
        return (await self.first_times((key,)))[0]

    async def first_times(self, keys: Sequence[str]) -> list[bool]:
        """Record several keys of one request in one write; return for each whether it is new.

        Raises the database's error (SQLAlchemyError) when the write fails.
        """
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((tuple(keys), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="seen-requests-writer")
        return await future

    async def close(self) -> None:
        """Close the ledger's own PostgreSQL connection, if it opened one. Later writes open it again."""
        engine, self._own_engine = self._own_engine, None
        if engine is not None:
            self._store = None
            await engine.dispose()

    def ledger_file(self) -> Path | None:
        """Return the SQLite file the keys are written to, or None when they are in the database itself."""
        bind = self.sessions.kw.get("bind")
        return ledger_file_for(bind.url) if bind is not None else None

    async def _write_waiting(self) -> None:
        # One turn of the event loop first: requests whose bytes arrived with this one are
        # still being parsed, and their keys then join this write instead of each waiting
        # for a write of their own. In spot checks of 50 concurrent clients this, with the
        # ledger file's synchronous=NORMAL, took the p99 acknowledgement from 1.31-1.41 to
        # 1.11-1.34 times bare bolt's.
        await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = self._waiting, []
            keys = list(dict.fromkeys(key for request_keys, _ in batch for key in request_keys))
            try:
                inserted = await self._insert(keys)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which reports it
                for _keys, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            claimed: set[str] = set()
            for request_keys, future in batch:
                # The same key twice in one batch (a replay sent at once): only the first is new.
                firsts = [key in inserted and key not in claimed for key in request_keys]
                claimed.update(request_keys)
                if not future.done():
                    future.set_result(firsts)

    async def _insert(self, keys: list[str]) -> set[str]:
        now = self.clock.now()
        before, self._inserts = self._inserts, self._inserts + len(keys)
        prune_before = now - KEEP_FOR if self._inserts // PRUNE_EVERY > before // PRUNE_EVERY else None
        if self._store is None:
            self._store = await self._open_store(now)
        return await self._store.insert(keys, now=now, prune_before=prune_before)

    async def _open_store(self, now: datetime) -> _KeyStore:
        path = self.ledger_file()
        if path is None:
            bind = self.sessions.kw.get("bind")
            if bind is not None and bind.dialect.name == "postgresql":
                # One connection is enough: the writes are serialized by `_write_waiting`.
                self._own_engine = create_async_engine(bind.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
                logger.info("replay ledger opened in the database's seen_requests table, on a connection of its own")
                return _DatabaseTable(async_sessionmaker(self._own_engine, expire_on_commit=False))
            logger.info("replay ledger opened in the database's seen_requests table")
            return _DatabaseTable(self.sessions)

        # Before the ledger file, SQLite databases kept the keys in their seen_requests table.
        # Keys from the last hour are carried over, so that a request seen just before an
        # upgrade is still recognised after it.
        async with self.sessions() as session:
            recent = (await session.execute(select(SeenRequest.key, SeenRequest.seen_at)
                                            .where(SeenRequest.seen_at >= now - KEEP_FOR))).all()
        ledger = _LedgerFile(path)
        await ledger.carry_over([(key, seen_at.timestamp()) for key, seen_at in recent])
        logger.info("replay ledger opened file=%s carried_over=%d", path, len(recent))
        return ledger


def ledger_file_for(url: URL) -> Path | None:
    """Return the ledger file for a database URL: beside a SQLite database file, None for any other database."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        return None
    database = Path(url.database or "")
    return database.with_name(f"{database.stem}{LEDGER_FILE_INFIX}{database.suffix}")


class _DatabaseTable:
    """The keys in the database's own `seen_requests` table, written with SQLAlchemy."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def insert(self, keys: list[str], *, now: datetime, prune_before: datetime | None) -> set[str]:
        async with self.sessions.begin() as session:
            if prune_before is not None:
                result = await session.execute(delete(SeenRequest).where(SeenRequest.seen_at < prune_before))
                logger.debug("pruned seen requests rows=%d", result.rowcount)  # type: ignore[attr-defined]
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            # A Core statement: the ORM's unit of work costs more than the insert itself here.
            statement = (insert(SeenRequest).values([{"key": key, "seen_at": now} for key in keys])
                         .on_conflict_do_nothing().returning(SeenRequest.key))
            return set((await session.execute(statement)).scalars())


class _LedgerFile:
    """The keys in a SQLite file of their own, written by one worker thread with Python's sqlite3 module.

    One thread and one connection are enough, because every write is a group commit of
    whatever arrived meanwhile. The worker is a ThreadPoolExecutor thread, which Python
    stops when it exits, so the ledger needs no shutdown call.
    """

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS seen_requests (key TEXT PRIMARY KEY, seen_at REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix_seen_requests_seen_at ON seen_requests (seen_at)",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seen-requests")
        self._connection: sqlite3.Connection | None = None
        # (device, inode) of the file the connection has open, to notice it being removed or replaced.
        self._identity: tuple[int, int] | None = None

    async def insert(self, keys: list[str], *, now: datetime, prune_before: datetime | None) -> set[str]:
        cutoff = prune_before.timestamp() if prune_before is not None else None
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._insert, keys, now.timestamp(),
                                                                cutoff)

    async def carry_over(self, keys: list[tuple[str, float]]) -> None:
        """Add keys with the times they were first seen, leaving keys already in the file as they are."""
        await asyncio.get_running_loop().run_in_executor(self._worker, self._carry_over, keys)

    def _carry_over(self, keys: list[tuple[str, float]]) -> None:
        statement = "INSERT INTO seen_requests (key, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING"
        try:
            connection = self._current_connection()
            with connection:
                connection.executemany(statement, keys)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc

    def _insert(self, keys: list[str], seen_at: float, prune_before: float | None) -> set[str]:
        statement = ""
        try:
            connection = self._current_connection()
            inserted: set[str] = set()
            with connection:
                if prune_before is not None:
                    statement = "DELETE FROM seen_requests WHERE seen_at < ?"
                    pruned = connection.execute(statement, (prune_before,)).rowcount
                    logger.debug("pruned seen requests rows=%d", pruned)
                for start in range(0, len(keys), MAX_KEYS_PER_INSERT):
                    part = keys[start:start + MAX_KEYS_PER_INSERT]
                    statement = ("INSERT INTO seen_requests (key, seen_at) VALUES "
                                 + ", ".join(["(?, ?)"] * len(part)) + " ON CONFLICT DO NOTHING RETURNING key")
                    parameters = [value for key in part for value in (key, seen_at)]
                    inserted.update(row[0] for row in connection.execute(statement, parameters))
            return inserted
        except sqlite3.Error as exc:
            # The callers catch SQLAlchemy's errors, as raised for the database's own table, so
            # sqlite3's error is wrapped the way SQLAlchemy wraps a driver's error.
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc

    def _current_connection(self) -> sqlite3.Connection:
        """Return the open connection, or a new one if the file at `path` is no longer the one it has open.

        A connection to a removed file keeps writing to it unseen, while another process
        (or this one after a restart) creates a new file, and the two then no longer see
        each other's keys. One stat per write (a few microseconds) catches that.
        """
        if self._connection is not None and self._identity != _file_identity(self.path):
            logger.warning("replay ledger file %s was removed or replaced while open; opening it again, so "
                           "requests recorded only in the old file are not recognised as replays", self.path)
            self._connection.close()
            self._connection = None
        return self._connection or self._open()

    def _open(self) -> sqlite3.Connection:
        create_private_file(self.path, contents="the signatures of recent Slack requests")
        connection = sqlite3.connect(self.path, timeout=LEDGER_BUSY_TIMEOUT_SECONDS, check_same_thread=False)
        deadline = time.monotonic() + LEDGER_BUSY_TIMEOUT_SECONDS
        while True:
            try:
                # WAL, as for the main file: a commit appends to the log instead of rewriting pages.
                connection.execute("PRAGMA journal_mode=WAL")
                # No fsync per commit (WAL still syncs at checkpoints). A commit survives the
                # process being killed. A power loss or an OS crash can undo the last ones;
                # what that allows is one replay of those requests within their 5 minutes.
                # The audit database keeps the default, FULL.
                connection.execute("PRAGMA synchronous=NORMAL")
                with connection:
                    for statement in self._SCHEMA:
                        connection.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                # Connections that open a new ledger file at once race to switch it to WAL, and
                # SQLite can report "database is locked" to a loser instead of waiting.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    connection.close()
                    raise
                time.sleep(0.05)
            except sqlite3.Error:
                connection.close()
                raise
        self._connection = connection
        self._identity = _file_identity(self.path)
        return connection


def _file_identity(path: Path) -> tuple[int, int] | None:
    """Return (device, inode) of `path`, or None if it does not exist."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino
