"""Counts per state and the most urgent secrets for `/secret status`, reused while the inventory is unchanged.

A full read assesses every secret, though the reply lists at most STATUS_LINES_MAX of
them: 115 to 158 ms for 10,000 secrets in `python -m bench.status_timing` (2 shared
cores). A snapshot instead keeps what places each secret in the reply: its due time,
priority, app and name, and whether it is staged, changed outside secretbot or snoozed,
sorted by due time. Each call applies the current time to the snapshot by bisection, so a
secret that falls due moves from "due soon" to "overdue" without a new read. Then the
call reads, checks and assesses only the rows the reply lists.

Whether a snapshot is still current is decided on every call by a fingerprint of the
placing columns of every present row, built by the database (`_row_text`). Anything that
changes those columns changes it: this process, another bot process on the same database,
or an UPDATE typed by hand. The listed rows are read again with all their columns in the
same call, so a column that only shows in a line (a snooze reason, a run ID) needs no
fingerprint. Open runs are read on every call and laid over the snapshot, because runs
start and end more often than the inventory changes.

When the fingerprint differs, the snapshot is updated from it rather than read again. The
fingerprint is split into its rows' texts, and an entry whose text is gone leaves. Only the
rows with a new text are read and placed, found by the app and name that each text starts
with. One snoozed secret among 10,000 then costs 36 to 38 ms (CPU median), against 162 to
169 ms for reading and placing every row, and 31 to 33 ms for a call that reuses the
snapshot. Everything is read again when the policy changed, because it sets every
priority, and when more than MAX_CHANGED_SHARE of the rows are new or changed.

Why a fingerprint computed by the database and not a change counter: the fingerprint of
10,000 rows took 19 ms on SQLite, mostly in its worker thread and so off the event loop,
and 14 ms on PostgreSQL. A counter bumped by triggers would cost about as much as a one-row
read (0.4 ms), but it needs a new table in the models and a migration. Its triggers must be
written in two SQL dialects, and SQLite drops them whenever a migration rebuilds the
inventory table. On PostgreSQL every transaction that writes the inventory would take a
lock on the counter's row. A due time stored per row, with the states counted in SQL,
needs a schema change as well, and a rewrite of every row whenever the policy changes,
because a secret's priority comes from secretbot.toml.

Why the update finds changed rows by app and name: reading every row's ID and text instead
of the fingerprint took 36 ms of CPU against 28 ms (SQLite, median of 15 calls), and
adding each row's ID to its text made the fingerprint 2.5 ms slower on every call.

The measurements are from `python -m bench.status_timing --sizes 10000` (SQLite, 2 shared
cores), old and new code alternated three times.

NOTE: every call still renders every present row into the fingerprint, so its cost grows
with the inventory, whether or not anything changed. The trigger-bumped counter is the
next step if inventories grow well past 10,000 secrets.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.inventory.schedule import STAGED_STATUS, Assessor, SecretStatus, State
from bot.inventory.status_rows import (
    OpenRuns,
    StatusColumns,
    read_columns,
    read_open_runs,
)
from bot.inventory.status_snapshot import Snapshot, SnapshotEntry
from bot.inventory.urgency import PRIORITY_ORDER, count_states
from bot.policy import Policy
from bot.storage.models import InventorySecret

logger = logging.getLogger(__name__)

# Snapshots kept: all apps and the apps last requested with `--app`. Each takes about
# 0.5 kB per secret (5.4 MB for 10,000, measured with tracemalloc).
MAX_SNAPSHOTS = 8
# Rows placed between two yields to the event loop while a snapshot is read.
ROWS_PER_SLICE = 1000
# A snapshot is updated from its changed rows while at most this share of the present rows
# is new or changed. Past it, reading and placing the changed rows is estimated to save
# little over reading them all.
MAX_CHANGED_SHARE = 0.25
# Secrets bound in one query that reads changed rows, as two parameters each (app and
# name). SQLite before 3.32 allows 999 parameters.
KEYS_PER_QUERY = 400
# Separates the rows in a fingerprint. A value of a placing column may contain it inside
# its quotes, which the fingerprint query's row count reveals (see _row_texts).
_ROW_SEPARATOR = ";"

_TABLE = InventorySecret.__table__.c
# The columns that decide a secret's state and place in the reply, in fingerprint order.
_PLACING_COLUMNS: tuple[ColumnElement[Any], ...] = (
    _TABLE.app, _TABLE.name, _TABLE.priority, _TABLE.fly_status, _TABLE.rotation_source,
    func.coalesce(_TABLE.last_rotated_at, _TABLE.first_seen_at), _TABLE.snoozed_until,
)
_SNAPSHOT_FIELDS = ("name", "priority", "fly_status", "rotation_source", "first_seen_at", "last_rotated_at",
                    "snoozed_until")


@dataclass(frozen=True)
class StatusOverview:
    """The secrets of one app or of all apps at one moment: how many are in each state, and the most urgent."""

    total: int
    apps: int
    # Secrets per state in urgency order, without the states that no secret is in.
    counts: dict[State, int]
    # The first `limit` of the `total` secrets, most urgent first, in by_urgency's order.
    statuses: list[SecretStatus]

    @classmethod
    def from_statuses(cls, statuses: Sequence[SecretStatus], *, limit: int | None = None) -> StatusOverview:
        """Summarise statuses already sorted most urgent first, keeping the first `limit` (all by default)."""
        return cls(total=len(statuses), apps=len({status.app for status in statuses}),
                   counts=count_states(statuses), statuses=list(statuses[:limit]))


class _SnapshotRow(NamedTuple):
    """One row of the snapshot query: the columns that Assessor.schedule and the states read."""

    id: int
    app: str
    name: str
    priority: str | None
    fly_status: str | None
    rotation_source: str
    first_seen_at: datetime
    last_rotated_at: datetime | None
    snoozed_until: datetime | None
    row_text: str


class _Placer:
    """Turns snapshot rows into entries with one policy, counting the rows it schedules."""

    def __init__(self, policy: Policy) -> None:
        self._assessor = Assessor(policy, datetime.min)
        # One string object per app, not one per row.
        self._apps: dict[str, str] = {}
        self.placed = 0

    def entry(self, result: Any) -> SnapshotEntry:
        row = _SnapshotRow._make(result)
        priority, _interval_days, due_at = self._assessor.schedule(row)
        fly_status = row.fly_status
        self.placed += 1
        return SnapshotEntry(
            due_at=due_at, priority_rank=PRIORITY_ORDER[priority], app=self._apps.setdefault(row.app, row.app),
            name=row.name, id=row.id,
            row_text=row.row_text,
            staged=fly_status is not None and fly_status.lower() == STAGED_STATUS,
            outside=row.rotation_source == "outside", snoozed_until=row.snoozed_until)


class _Fingerprint(NamedTuple):
    """The fingerprint query's result: the present rows' texts joined in ID order, and how many rows there are."""

    text: str
    rows: int


class StatusCache:
    """Snapshots of the inventory by app (None for all apps), each reused while the database's fingerprint matches it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._snapshots: OrderedDict[str | None, Snapshot] = OrderedDict()
        # For tests and the benchmark to tell a reuse from an update or a full read:
        # snapshots read in full and snapshots updated from their changed rows since
        # start-up, and the rows scheduled by either.
        self.snapshots_read = 0
        self.snapshots_updated = 0
        self.rows_placed = 0

    async def overview(self, *, app: str | None, policy: Policy, now: datetime,
                       limit: int) -> StatusOverview | None:
        """Return the overview at `now`, or None when the caller must read every secret instead.

        That is on a database other than SQLite and PostgreSQL, and when listed rows changed
        during two reads in a row.
        """
        async with self.sessions() as session:
            dialect = session.get_bind().dialect.name
            if dialect not in ("sqlite", "postgresql"):
                return None
            text, rows = (await session.execute(_fingerprint_query(dialect, for_app=app is not None),
                                                {"app": app})).one()
            fingerprint = _Fingerprint(text=text or "", rows=rows)
            open_runs = await read_open_runs(session, app)

        snapshot = self._snapshots.get(app)
        # Two tries: a listed row that changed after the fingerprint was read makes the
        # first one fail, and the second reads a new snapshot.
        for _attempt in range(2):
            if snapshot is None or snapshot.policy is not policy:
                # Every priority and due time may differ under another policy.
                snapshot = await self._read_snapshot(app, policy, dialect)
            elif snapshot.fingerprint != fingerprint.text:
                snapshot = await self._update_snapshot(snapshot, app, dialect, fingerprint)
            selection = snapshot.select(now, open_runs, limit)
            statuses = await self._read_shown(selection.shown, policy=policy, now=now, open_runs=open_runs,
                                              dialect=dialect)
            if statuses is not None:
                return StatusOverview(total=snapshot.total, apps=snapshot.apps, counts=selection.counts,
                                      statuses=statuses)
            snapshot = None
        logger.info("status snapshot changed while it was read twice; reading every secret app=%s", app)
        return None

    async def _read_snapshot(self, app: str | None, policy: Policy, dialect: str) -> Snapshot:
        placer = _Placer(policy)
        entries: list[SnapshotEntry] = []
        texts: list[str] = []
        async with self.sessions() as session:
            rows = await session.execute(_snapshot_query(dialect, for_app=app is not None), {"app": app})
            for count, result in enumerate(rows, start=1):
                entry = placer.entry(result)
                entries.append(entry)
                texts.append(entry.row_text)
                if count % ROWS_PER_SLICE == 0:
                    await asyncio.sleep(0)
        # Built from the rows this snapshot holds, not read separately, so that it describes
        # exactly them even if a write lands between two statements.
        snapshot = Snapshot(policy=policy, fingerprint=_ROW_SEPARATOR.join(texts), entries=entries)
        self.snapshots_read += 1
        self._keep(app, snapshot, placed=placer.placed)
        logger.debug("status snapshot read app=%s secrets=%d", app, snapshot.total)
        return snapshot

    async def _update_snapshot(self, snapshot: Snapshot, app: str | None, dialect: str,
                               fingerprint: _Fingerprint) -> Snapshot:
        """Bring `snapshot` to the rows of `fingerprint`, reading only its new and changed rows.

        Reads the whole snapshot instead in three cases: more than MAX_CHANGED_SHARE of the
        rows are new or changed, a value contains the row separator, or a changed row's app
        or name is quoted in a form that _secret_key does not parse.
        """
        present = _row_texts(fingerprint)
        if present is None:
            logger.debug("status snapshot fingerprint has a separator inside a value; reading all app=%s", app)
            return await self._read_snapshot(app, snapshot.policy, dialect)
        # A new or changed row's text is not among the entries' texts, and the entry of a
        # changed or removed row has a text that is no longer present.
        changed = present.difference(snapshot.by_text)
        if len(changed) > MAX_CHANGED_SHARE * fingerprint.rows:
            logger.debug("status snapshot changed too much to update app=%s changed=%d rows=%d",
                         app, len(changed), fingerprint.rows)
            return await self._read_snapshot(app, snapshot.policy, dialect)
        keys = [_secret_key(text) for text in changed]
        if None in keys:
            logger.debug("status snapshot changed row has an app or name in another quoting; reading all app=%s",
                         app)
            return await self._read_snapshot(app, snapshot.policy, dialect)
        removed = [snapshot.by_text[text] for text in snapshot.by_text.keys() - present]

        placer = _Placer(snapshot.policy)
        read: list[SnapshotEntry] = []
        async with self.sessions() as session:
            for start in range(0, len(keys), KEYS_PER_QUERY):
                rows = await session.execute(_changed_rows_query(dialect, for_app=app is not None),
                                             {"app": app, "keys": keys[start:start + KEYS_PER_QUERY]})
                read.extend(placer.entry(result) for result in rows)

        # A row that changed or went after the fingerprint was read leaves the snapshot
        # without a fingerprint: its entries still describe rows as they were at some
        # moment, and the next call updates it again.
        current = len(read) == len(keys) and all(entry.row_text in changed for entry in read)
        updated = snapshot.updated(fingerprint=fingerprint.text if current else None, removed=removed, added=read)
        self.snapshots_updated += 1
        self._keep(app, updated, placed=placer.placed)
        logger.debug("status snapshot updated app=%s secrets=%d removed=%d read=%d",
                     app, updated.total, len(removed), len(read))
        return updated

    def _keep(self, app: str | None, snapshot: Snapshot, *, placed: int) -> None:
        self.rows_placed += placed
        self._snapshots[app] = snapshot
        self._snapshots.move_to_end(app)
        while len(self._snapshots) > MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)

    async def _read_shown(self, shown: list[tuple[SnapshotEntry, State]], *, policy: Policy, now: datetime,
                          open_runs: OpenRuns, dialect: str) -> list[SecretStatus] | None:
        """Read and assess the shown rows; return None if one changed since the snapshot placed it."""
        if not shown:
            return []
        ids = [entry.id for entry, _state in shown]
        async with self.sessions() as session:
            rows = {row[0]: row for row in await session.execute(_shown_query(dialect), {"ids": ids})}

        assessor = Assessor(policy, now)
        statuses = []
        for entry, state in shown:
            row = rows.get(entry.id)
            if row is None or row[1] != entry.row_text:
                return None
            columns = StatusColumns._make(row[2:])
            status = assessor.assess(columns, open_runs.get((columns.app, columns.name)))
            if status.state is not state:
                # Unchanged placing columns give the same state, so this is a bug in Snapshot.select.
                logger.warning("status snapshot placed a secret in the wrong state app=%s secret=%s "
                               "expected=%s assessed=%s; reading every secret",
                               columns.app, columns.name, state.value, status.state.value)
                return None
            statuses.append(status)
        return statuses


def _row_texts(fingerprint: _Fingerprint) -> set[str] | None:
    """Split a fingerprint into its rows' texts, or return None when a value contains the separator."""
    texts = fingerprint.text.split(_ROW_SEPARATOR) if fingerprint.rows else []
    # A separator inside a quoted value splits its row's text in two, and so shows as one
    # text more than the rows counted.
    return set(texts) if len(texts) == fingerprint.rows else None


# A row text's first two values, the app and the name, as quote and quote_nullable write a
# string. quote_nullable writes E'...' for a string with a backslash, which this leaves out.
_KEY_PATTERN = re.compile(r"'((?:[^']|'')*)','((?:[^']|'')*)',")


def _secret_key(text: str) -> tuple[str, str] | None:
    """Return the (app, name) of a row text, or None when either is quoted another way."""
    match = _KEY_PATTERN.match(text)
    if match is None:
        return None
    return match[1].replace("''", "'"), match[2].replace("''", "'")


# The queries are built once per dialect, because building their SQL expressions took
# about 2 ms of each call. The app, when there is one, is the bound parameter "app".


def _present(*, for_app: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_TABLE.removed_at.is_(None)]
    if for_app:
        conditions.append(_TABLE.app == bindparam("app"))
    return conditions


@cache
def _row_text(dialect: str) -> ColumnElement[str]:
    """Render a row's placing columns as SQL literals joined by commas.

    quote (SQLite) and quote_nullable (PostgreSQL) write NULL as NULL and a string in single
    quotes with its quotes doubled, so two different rows never render alike.
    """
    quote = func.quote if dialect == "sqlite" else func.quote_nullable
    text: ColumnElement[Any] = quote(_PLACING_COLUMNS[0])
    for column in _PLACING_COLUMNS[1:]:
        text = text.op("||")(literal_column("','")).op("||")(quote(column))
    return type_coerce(text, String())


@cache
def _fingerprint_query(dialect: str, *, for_app: bool) -> Select[Any]:
    """Select the fingerprint of the present rows: their texts joined in the order of their IDs, and their count."""
    separator: ColumnElement[str] = literal_column(f"'{_ROW_SEPARATOR}'")
    if dialect == "postgresql":
        return select(func.string_agg(_row_text(dialect), aggregate_order_by(separator, _TABLE.id)),
                      func.count()).where(*_present(for_app=for_app))
    # SQLite before 3.44 has no ORDER BY inside an aggregate; it feeds group_concat the rows
    # in the subquery's order. Another order would only make the fingerprint differ, and so
    # read a new snapshot each time, which a test would notice.
    texts = (select(_row_text(dialect).label("row_text")).where(*_present(for_app=for_app)).order_by(_TABLE.id)
             .subquery())
    return select(func.group_concat(texts.c.row_text, separator), func.count()).select_from(texts)


@cache
def _snapshot_query(dialect: str, *, for_app: bool) -> Select[Any]:
    """Select the present rows' columns of _SnapshotRow, in the fingerprint's order."""
    return (select(_TABLE.id, _TABLE.app, *read_columns(_SNAPSHOT_FIELDS), _row_text(dialect).label("row_text"))
            .where(*_present(for_app=for_app)).order_by(_TABLE.id))


@cache
def _changed_rows_query(dialect: str, *, for_app: bool) -> Select[Any]:
    """Select the columns of _SnapshotRow of the present rows whose (app, name) is among the bound parameter "keys".

    (app, name) is unique in the inventory table, so a key picks one row.
    """
    return _snapshot_query(dialect, for_app=for_app).where(
        tuple_(_TABLE.app, _TABLE.name).in_(bindparam("keys", expanding=True)))


@cache
def _shown_query(dialect: str) -> Select[Any]:
    """Select the ID, text and status columns of the present rows among the bound parameter "ids"."""
    return (select(_TABLE.id, _row_text(dialect).label("row_text"), *read_columns(StatusColumns._fields))
            .where(_TABLE.id.in_(bindparam("ids", expanding=True)), _TABLE.removed_at.is_(None)))
