"""Append-only audit trail with a hash chain.

Each record stores the SHA-256 of the previous record's hash plus its own fields, so a
changed or deleted record breaks every hash after it. Details hold digests and IDs only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import StorageError
from bot.loop_local import LoopLocal
from bot.storage.models import AuditRecord, utcnow

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Two writers that read the same last record collide on the unique prev_hash; the loser
# reads again and retries. Within one process appends take turns (see _append_lock), so
# collisions come only from another process. More than this in a row means something is wrong.
MAX_APPEND_ATTEMPTS = 20

# One lock per session factory and event loop. Without it, fifty steps finishing at once in
# one process all read the same last record, all but one lose, and a step could exhaust its
# retries while its own process kept winning the race against it.
_append_locks: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], LoopLocal[asyncio.Lock]] = (
    weakref.WeakKeyDictionary())
# Records read per query by verify_chain.
VERIFY_BATCH_SIZE = 1000


@dataclass(frozen=True)
class AuditEntry:
    event: str
    actor: str | None = None
    run_id: str | None = None
    app: str | None = None
    secret: str | None = None
    detail: Mapping[str, Any] | None = None


def record_hash(prev_hash: str, at: datetime, entry: AuditEntry) -> str:
    body = json.dumps(
        {
            "at": at.isoformat(),
            "event": entry.event,
            "actor": entry.actor,
            "run_id": entry.run_id,
            "app": entry.app,
            "secret": entry.secret,
            "detail": dict(entry.detail or {}),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


async def append(sessions: async_sessionmaker[AsyncSession], entry: AuditEntry) -> AuditRecord:
    """Append one record in its own transaction; raise StorageError if it cannot be written."""
    for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
        try:
            async with _append_lock(sessions), sessions.begin() as session:
                return await _append_in(session, entry)
        except IntegrityError:
            logger.info("audit append raced another writer; retrying attempt=%d event=%s", attempt, entry.event)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot write audit record {entry.event!r}: {type(exc).__name__}") from exc
    raise StorageError(f"could not append audit record {entry.event!r} after {MAX_APPEND_ATTEMPTS} attempts")


async def append_with(
    sessions: async_sessionmaker[AsyncSession],
    entries: Sequence[AuditEntry],
    change: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> None:
    """Run `change` and append `entries` in one transaction, so neither lands without the other.

    On a race with another writer the whole transaction is retried, so `change` must read
    what it needs inside the session it is given.
    """
    for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
        try:
            async with _append_lock(sessions), sessions.begin() as session:
                if change is not None:
                    await change(session)
                for entry in entries:
                    await _append_in(session, entry)
                return
        except IntegrityError:
            logger.info("audit append raced another writer; retrying attempt=%d events=%s", attempt,
                        ",".join(entry.event for entry in entries))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot write audit records: {type(exc).__name__}") from exc
    raise StorageError(f"could not append audit records after {MAX_APPEND_ATTEMPTS} attempts")


def _append_lock(sessions: async_sessionmaker[AsyncSession]) -> asyncio.Lock:
    """Return the lock, of the running event loop, that makes this process's appends through `sessions` take turns."""
    locks = _append_locks.get(sessions)
    if locks is None:
        locks = _append_locks[sessions] = LoopLocal(asyncio.Lock)
    return locks.get()


async def _append_in(session: AsyncSession, entry: AuditEntry) -> AuditRecord:
    last = await session.scalar(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1))
    prev_hash = last.hash if last else GENESIS_HASH
    at = utcnow()
    # Timestamps are stored to the microsecond; the hash covers the same value that reads back.
    record = AuditRecord(
        at=at,
        event=entry.event,
        actor=entry.actor,
        run_id=entry.run_id,
        app=entry.app,
        secret=entry.secret,
        detail=json.dumps(dict(entry.detail or {}), sort_keys=True),
        prev_hash=prev_hash,
        hash=record_hash(prev_hash, at, entry),
    )
    session.add(record)
    await session.flush()
    return record


async def verify_chain(sessions: async_sessionmaker[AsyncSession], *,
                       batch_size: int = VERIFY_BATCH_SIZE) -> tuple[int, int | None]:
    """Check every record's hash; return (records checked, id of the first bad record or None).

    Records are read in batches by id, each in a new session, so memory stays flat however
    long the log is (a session keeps every entity it loaded). A record whose detail is not
    valid JSON counts as a broken record, like any other change.
    """
    expected_prev = GENESIS_HASH
    checked = 0
    last_id: int | None = None
    while True:
        async with sessions() as session:
            query = select(AuditRecord).order_by(AuditRecord.id).limit(batch_size)
            if last_id is not None:
                query = query.where(AuditRecord.id > last_id)
            batch = list(await session.scalars(query))
        if not batch:
            return checked, None
        for record in batch:
            try:
                detail = record.detail_fields()
            except (ValueError, TypeError):  # not JSON, or NULL: the stored detail was changed by hand
                return checked, record.id
            entry = AuditEntry(event=record.event, actor=record.actor, run_id=record.run_id, app=record.app,
                               secret=record.secret, detail=detail)
            if record.prev_hash != expected_prev or record.hash != record_hash(record.prev_hash, record.at, entry):
                return checked, record.id
            expected_prev = record.hash
            checked += 1
        last_id = batch[-1].id


async def records_for_run(sessions: async_sessionmaker[AsyncSession], run_id: str) -> list[AuditRecord]:
    async with sessions() as session:
        result = await session.scalars(
            select(AuditRecord).where(AuditRecord.run_id == run_id).order_by(AuditRecord.id)
        )
        return list(result)
