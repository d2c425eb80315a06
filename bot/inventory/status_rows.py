"""The inventory columns that a status is built from, read as Core rows, and the open runs that mark them.

InventoryStore.statuses and the status cache both read through here, so a status built
from a cached snapshot's rows is built from the same columns as one from a full read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Dialect, Select, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import UserDefinedType

from bot.storage.models import InventorySecret, RunSecret, UTCDateTime

OpenRuns = dict[tuple[str, str], str]


class UTCTimestamp(UserDefinedType[datetime]):
    """Reads a UTCDateTime column into the same aware UTC datetime in one call per value.

    UTCDateTime, a TypeDecorator, converts each value in two Python calls (the dialect's
    parser, then process_result_value). For the timestamps of 10,000 inventory entities
    that took about a tenth of /secret status. SQLite returns the stored text, which is
    parsed with datetime.fromisoformat as SQLAlchemy's SQLite dialect parses it, and
    asyncpg returns an aware datetime.
    """

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "TIMESTAMP"

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], datetime | None]:
        return _utc_timestamp


def _utc_timestamp(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StatusColumns(NamedTuple):
    """One row of the status query, in its column order.

    A SQLAlchemy Row reads a column by name in about 0.4 µs, and assess reads a dozen of
    them, while a NamedTuple's fields read about ten times faster.
    """

    app: str
    name: str
    priority: str | None
    value_source: str | None
    fly_status: str | None
    rotation_source: str
    last_run_id: str | None
    snoozed_by: str | None
    snooze_reason: str | None
    first_seen_at: datetime
    last_rotated_at: datetime | None
    changed_outside_at: datetime | None
    snoozed_until: datetime | None


def read_columns(names: tuple[str, ...]) -> list[ColumnElement[Any]]:
    """Return the inventory columns of `names`, with timestamps read through UTCTimestamp."""
    table = InventorySecret.__table__.c
    columns: list[ColumnElement[Any]] = []
    for name in names:
        column = table[name]
        is_timestamp = isinstance(column.type, UTCDateTime)
        columns.append(type_coerce(column, UTCTimestamp()).label(name) if is_timestamp else column)
    return columns


def _status_query() -> Select[Any]:
    """Select the present secrets' columns that assess reads, in StatusColumns' order, by app and name."""
    table = InventorySecret.__table__.c
    return select(*read_columns(StatusColumns._fields)).where(table.removed_at.is_(None)).order_by(table.app,
                                                                                                 table.name)


STATUS_QUERY = _status_query()


async def read_open_runs(session: AsyncSession, app: str | None) -> OpenRuns:
    """Return the ID of each open run by the (app, name) of its secrets, for one app or all."""
    query = select(RunSecret.app, RunSecret.name, RunSecret.run_id).where(RunSecret.open.is_(True))
    if app is not None:
        query = query.where(RunSecret.app == app)
    return {(row.app, row.name): row.run_id for row in await session.execute(query)}
