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

Why a fingerprint computed by the database and not a change counter: the fingerprint of
10,000 rows took 19 ms on SQLite, mostly in its worker thread and so off the event loop,
and 14 ms on PostgreSQL. A counter bumped by triggers would cost about as much as a one-row
read (0.4 ms), but it needs a new table in the models and a migration. Its triggers must be
written in two SQL dialects, and SQLite drops them whenever a migration rebuilds the
inventory table. On PostgreSQL every transaction that writes the inventory would take a
lock on the counter's row. A due time stored per row, with the states counted in SQL,
needs a schema change as well, and a rewrite of every row whenever the policy changes,
because a secret's priority comes from secretbot.toml.

NOTE: the fingerprint still reads every row, so its cost grows with the inventory. The
trigger-bumped counter is the next step if inventories grow well past 10,000 secrets.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, cached_property
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
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
from bot.inventory.urgency import PRIORITY_ORDER, STATE_ORDER, count_states
from bot.policy import Policy
from bot.storage.models import InventorySecret

logger = logging.getLogger(__name__)

# Snapshots kept: all apps and the apps last requested with `--app`. Each takes about
# 0.5 kB per secret (5.2 MB for 10,000, measured with tracemalloc).
MAX_SNAPSHOTS = 8
# Rows placed between two yields to the event loop while a snapshot is read.
ROWS_PER_SLICE = 1000
# Separates the rows in a fingerprint. The quoted values never contain it unquoted.
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


class _Entry(NamedTuple):
    """One secret's place in a snapshot.

    The first four fields are by_urgency's order within a state, so entries sort by it.
    (app, name) is unique, so the fields after them never decide an order.
    """

    due_at: datetime
    priority_rank: int
    app: str
    name: str
    id: int
    row_text: str
    staged: bool
    outside: bool
    snoozed_until: datetime | None


class _Selection(NamedTuple):
    counts: dict[State, int]
    # The entries the reply shows first, each with the state it must have at `now`.
    shown: list[tuple[_Entry, State]]


class Snapshot:
    """The present secrets of one read, placed with one policy and sorted by due time."""

    def __init__(self, *, policy: Policy, fingerprint: str, entries: list[_Entry]) -> None:
        self.policy = policy
        self.fingerprint = fingerprint
        self._window = timedelta(days=policy.reminders.window_days)
        entries.sort()
        self.total = len(entries)
        self.apps = len({entry.app for entry in entries})
        self._entries = entries
        self._staged = [entry for entry in entries if entry.staged]
        # A staged secret stays staged whatever the time; every other one moves with the clock.
        self._timed = [entry for entry in entries if not entry.staged]
        self._timed_due = [entry.due_at for entry in self._timed]
        self._outside = [entry for entry in self._timed if entry.outside]
        self._outside_due = [entry.due_at for entry in self._outside]
        self._snoozes = sorted((entry for entry in self._timed if entry.snoozed_until is not None),
                               key=_snooze_end)
        self._snooze_ends = [_snooze_end(entry) for entry in self._snoozes]

    def is_current(self, *, fingerprint: str, policy: Policy) -> bool:
        return self.policy is policy and self.fingerprint == fingerprint

    @cached_property
    def _by_key(self) -> dict[tuple[str, str], _Entry]:
        # Built when a call first finds an open run, because it takes 0.9 MB for 10,000
        # secrets (tracemalloc) and most calls find none.
        return {(entry.app, entry.name): entry for entry in self._entries}

    def select(self, now: datetime, open_runs: Collection[tuple[str, str]], limit: int) -> _Selection:
        """Count the secrets per state at `now` and pick the `limit` most urgent, as assess and by_urgency would.

        assess's chain of states becomes ranges of the due-time order: due at or before `now`
        is overdue, due by `now` plus the reminder window is due soon, and a snooze that has
        not ended turns either into snoozed. Comparing `due_at <= now + window` is the same
        as assess's `now >= due_at - window`, because datetime arithmetic is exact.
        """
        soon = now + self._window
        overdue_end = bisect_right(self._timed_due, now)
        soon_end = bisect_right(self._timed_due, soon)
        outside_start = bisect_right(self._outside_due, soon)
        snoozed = sorted(entry for entry in self._snoozes[bisect_right(self._snooze_ends, now):]
                         if entry.due_at <= soon)
        snoozed_overdue = sum(1 for entry in snoozed if entry.due_at <= now)
        outside_later = len(self._outside) - outside_start
        counts = {
            State.OVERDUE: overdue_end - snoozed_overdue,
            State.STAGED: len(self._staged),
            State.DUE_SOON: soon_end - overdue_end - (len(snoozed) - snoozed_overdue),
            State.CHANGED_OUTSIDE: outside_later,
            State.RUNNING: 0,
            State.SNOOZED: len(snoozed),
            State.OK: len(self._timed) - soon_end - outside_later,
        }

        # A running rotation comes first in assess's chain, so it takes its secret out of
        # whichever state the snapshot put it in.
        running = sorted(self._by_key[key] for key in open_runs if key in self._by_key) if open_runs else []
        for entry in running:
            counts[self._state_without_run(entry, now, soon)] -= 1
            counts[State.RUNNING] += 1
        running_keys = {(entry.app, entry.name) for entry in running}

        sections: dict[State, Iterable[_Entry]] = {
            State.OVERDUE: (entry for entry in self._timed[:overdue_end] if not _snoozed(entry, now)),
            State.STAGED: self._staged,
            State.DUE_SOON: (entry for entry in self._timed[overdue_end:soon_end] if not _snoozed(entry, now)),
            State.CHANGED_OUTSIDE: self._outside[outside_start:],
            State.RUNNING: running,
            State.SNOOZED: snoozed,
            State.OK: (entry for entry in self._timed[soon_end:] if not entry.outside),
        }
        ordered: Iterator[tuple[_Entry, State]] = (
            (entry, state)
            for state in STATE_ORDER
            for entry in sections[state]
            if state is State.RUNNING or (entry.app, entry.name) not in running_keys
        )
        return _Selection(counts={state: counts[state] for state in STATE_ORDER if counts[state]},
                          shown=list(islice(ordered, limit)))

    @staticmethod
    def _state_without_run(entry: _Entry, now: datetime, soon: datetime) -> State:
        if entry.staged:
            return State.STAGED
        if entry.due_at <= now:
            return State.SNOOZED if _snoozed(entry, now) else State.OVERDUE
        if entry.due_at <= soon:
            return State.SNOOZED if _snoozed(entry, now) else State.DUE_SOON
        return State.CHANGED_OUTSIDE if entry.outside else State.OK


def _snoozed(entry: _Entry, now: datetime) -> bool:
    return entry.snoozed_until is not None and entry.snoozed_until > now


def _snooze_end(entry: _Entry) -> datetime:
    assert entry.snoozed_until is not None
    return entry.snoozed_until


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


class StatusCache:
    """Snapshots of the inventory by app (None for all apps), each reused while the database's fingerprint matches it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._snapshots: OrderedDict[str | None, Snapshot] = OrderedDict()
        # Snapshots read since start-up, for tests and the benchmark to tell a reuse from a read.
        self.snapshots_read = 0

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
            fingerprint = await session.scalar(_fingerprint_query(dialect, for_app=app is not None), {"app": app}) or ""
            open_runs = await read_open_runs(session, app)

        snapshot = self._snapshots.get(app)
        # Two tries: a listed row that changed after the fingerprint was read makes the
        # first one fail, and the second reads a new snapshot.
        for _attempt in range(2):
            if snapshot is None or not snapshot.is_current(fingerprint=fingerprint, policy=policy):
                snapshot = await self._read_snapshot(app, policy, dialect)
                fingerprint = snapshot.fingerprint
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
        assessor = Assessor(policy, datetime.min)
        entries: list[_Entry] = []
        texts: list[str] = []
        # One string object per app, not one per row.
        apps: dict[str, str] = {}
        async with self.sessions() as session:
            rows = await session.execute(_snapshot_query(dialect, for_app=app is not None), {"app": app})
            for count, result in enumerate(rows, start=1):
                row = _SnapshotRow._make(result)
                priority, _interval_days, due_at = assessor.schedule(row)
                fly_status = row.fly_status
                entries.append(_Entry(
                    due_at=due_at, priority_rank=PRIORITY_ORDER[priority], app=apps.setdefault(row.app, row.app),
                    name=row.name, id=row.id,
                    row_text=row.row_text,
                    staged=fly_status is not None and fly_status.lower() == STAGED_STATUS,
                    outside=row.rotation_source == "outside", snoozed_until=row.snoozed_until))
                texts.append(row.row_text)
                if count % ROWS_PER_SLICE == 0:
                    await asyncio.sleep(0)
        # Built from the rows this snapshot holds, not read separately, so that it describes
        # exactly them even if a write lands between two statements.
        snapshot = Snapshot(policy=policy, fingerprint=_ROW_SEPARATOR.join(texts), entries=entries)
        self.snapshots_read += 1
        self._snapshots[app] = snapshot
        self._snapshots.move_to_end(app)
        while len(self._snapshots) > MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)
        logger.debug("status snapshot read app=%s secrets=%d", app, snapshot.total)
        return snapshot

    async def _read_shown(self, shown: list[tuple[_Entry, State]], *, policy: Policy, now: datetime,
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
    """Select the fingerprint of the present rows: their texts joined in the order of their IDs."""
    separator: ColumnElement[str] = literal_column(f"'{_ROW_SEPARATOR}'")
    if dialect == "postgresql":
        return select(func.string_agg(_row_text(dialect), aggregate_order_by(separator, _TABLE.id))).where(
            *_present(for_app=for_app))
    # SQLite before 3.44 has no ORDER BY inside an aggregate; it feeds group_concat the rows
    # in the subquery's order. Another order would only make the fingerprint differ, and so
    # read a new snapshot each time, which a test would notice.
    texts = (select(_row_text(dialect).label("row_text")).where(*_present(for_app=for_app)).order_by(_TABLE.id)
             .subquery())
    return select(func.group_concat(texts.c.row_text, separator))


@cache
def _snapshot_query(dialect: str, *, for_app: bool) -> Select[Any]:
    """Select the present rows' columns of _SnapshotRow, in the fingerprint's order."""
    return (select(_TABLE.id, _TABLE.app, *read_columns(_SNAPSHOT_FIELDS), _row_text(dialect).label("row_text"))
            .where(*_present(for_app=for_app)).order_by(_TABLE.id))


@cache
def _shown_query(dialect: str) -> Select[Any]:
    """Select the ID, text and status columns of the present rows among the bound parameter "ids"."""
    return (select(_TABLE.id, _row_text(dialect).label("row_text"), *read_columns(StatusColumns._fields))
            .where(_TABLE.id.in_(bindparam("ids", expanding=True)), _TABLE.removed_at.is_(None)))
