"""A snapshot of the inventory for `/secret status`: each present secret placed by its due time.

A snapshot keeps the columns that place each secret in the reply: due time, priority, app,
name, and whether it is staged, changed outside secretbot or snoozed. Its entries are
sorted by due time, so `select` applies the current time by bisection and picks the most
urgent secrets without reading the database. bot/inventory/status_cache.py reads the
rows, checks whether a snapshot is still current, and updates or replaces it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime, timedelta
from functools import cached_property
from itertools import islice
from typing import NamedTuple

from bot.inventory.schedule import State
from bot.inventory.urgency import STATE_ORDER
from bot.policy import Policy

# A snapshot update edits the sorted lists in place while the entries removed and added
# number at most 1/EDITS_IN_PLACE_DIVISOR of the entries, and otherwise sorts them anew.
# For 10,000 entries the two took about as long (8 ms) at 1,000 edits, measured on
# generated entries.
EDITS_IN_PLACE_DIVISOR = 10


class SnapshotEntry(NamedTuple):
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


class Selection(NamedTuple):
    counts: dict[State, int]
    # The entries the reply shows first, each with the state it must have at `now`.
    shown: list[tuple[SnapshotEntry, State]]


class Snapshot:
    """The present secrets of one read, placed with one policy and sorted by due time."""

    def __init__(self, *, policy: Policy, fingerprint: str | None, entries: list[SnapshotEntry]) -> None:
        self.policy = policy
        # The fingerprint of exactly these entries' rows, or None when a row changed while
        # the snapshot was updated, so that the next call updates it again.
        self.fingerprint = fingerprint
        self._window = timedelta(days=policy.reminders.window_days)
        entries.sort()
        self.entries = entries
        self.by_text = {entry.row_text: entry for entry in entries}
        self._app_sizes = Counter(entry.app for entry in entries)
        self._staged = [entry for entry in entries if entry.staged]
        # A staged secret stays staged whatever the time; every other one moves with the clock.
        self._timed = [entry for entry in entries if not entry.staged]
        self._timed_due = [entry.due_at for entry in self._timed]
        self._outside = [entry for entry in self._timed if entry.outside]
        self._outside_due = [entry.due_at for entry in self._outside]
        self._snoozes = sorted((entry for entry in self._timed if entry.snoozed_until is not None),
                               key=_snooze_end)
        self._snooze_ends = [_snooze_end(entry) for entry in self._snoozes]

    @property
    def total(self) -> int:
        return len(self.entries)

    @property
    def apps(self) -> int:
        return len(self._app_sizes)

    def updated(self, *, fingerprint: str | None, removed: list[SnapshotEntry], added: list[SnapshotEntry]) -> Snapshot:
        """Return a copy without the `removed` entries, which must be this snapshot's, and with the `added` ones."""
        if (len(removed) + len(added)) * EDITS_IN_PLACE_DIVISOR > len(self.entries):
            gone = {entry.id for entry in removed}
            return Snapshot(policy=self.policy, fingerprint=fingerprint,
                            entries=[entry for entry in self.entries if entry.id not in gone] + added)

        # Few edits: each is a bisection and a memmove in every list the entry belongs to,
        # instead of a sort and a pass over every entry.
        copy = Snapshot.__new__(Snapshot)
        copy.policy, copy.fingerprint, copy._window = self.policy, fingerprint, self._window
        copy.entries, copy._staged = list(self.entries), list(self._staged)
        copy._timed, copy._timed_due = list(self._timed), list(self._timed_due)
        copy._outside, copy._outside_due = list(self._outside), list(self._outside_due)
        copy._snoozes, copy._snooze_ends = list(self._snoozes), list(self._snooze_ends)
        copy.by_text, copy._app_sizes = dict(self.by_text), Counter(self._app_sizes)
        for entry in removed:
            copy._edit(entry, add=False)
        for entry in added:
            copy._edit(entry, add=True)
        return copy

    def _edit(self, entry: SnapshotEntry, *, add: bool) -> None:
        """Add `entry` to, or remove it from, every list it belongs in, keeping each list's order."""
        _edit_sorted(self.entries, entry, add=add)
        if add:
            self.by_text[entry.row_text] = entry
            self._app_sizes[entry.app] += 1
        else:
            del self.by_text[entry.row_text]
            self._app_sizes[entry.app] -= 1
            if not self._app_sizes[entry.app]:
                del self._app_sizes[entry.app]
        if entry.staged:
            _edit_sorted(self._staged, entry, add=add)
            return
        _edit_sorted(self._timed, entry, add=add, keys=self._timed_due)
        if entry.outside:
            _edit_sorted(self._outside, entry, add=add, keys=self._outside_due)
        if entry.snoozed_until is not None:
            # Sorted by snooze end only, so an entry goes anywhere among equal ends. select
            # sorts the snoozes it picks again.
            end = entry.snoozed_until
            if add:
                index = bisect_right(self._snooze_ends, end)
                self._snoozes.insert(index, entry)
                self._snooze_ends.insert(index, end)
            else:
                index = self._snoozes.index(entry, bisect_left(self._snooze_ends, end))
                del self._snoozes[index]
                del self._snooze_ends[index]

    @cached_property
    def _by_key(self) -> dict[tuple[str, str], SnapshotEntry]:
        # Built when a call first finds an open run, because it takes 0.9 MB for 10,000
        # secrets (tracemalloc) and most calls find none.
        return {(entry.app, entry.name): entry for entry in self.entries}

    def select(self, now: datetime, open_runs: Collection[tuple[str, str]], limit: int) -> Selection:
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

        sections: dict[State, Iterable[SnapshotEntry]] = {
            State.OVERDUE: (entry for entry in self._timed[:overdue_end] if not is_snoozed(entry, now)),
            State.STAGED: self._staged,
            State.DUE_SOON: (entry for entry in self._timed[overdue_end:soon_end] if not is_snoozed(entry, now)),
            State.CHANGED_OUTSIDE: self._outside[outside_start:],
            State.RUNNING: running,
            State.SNOOZED: snoozed,
            State.OK: (entry for entry in self._timed[soon_end:] if not entry.outside),
        }
        ordered: Iterator[tuple[SnapshotEntry, State]] = (
            (entry, state)
            for state in STATE_ORDER
            for entry in sections[state]
            if state is State.RUNNING or (entry.app, entry.name) not in running_keys
        )
        return Selection(counts={state: counts[state] for state in STATE_ORDER if counts[state]},
                          shown=list(islice(ordered, limit)))

    @staticmethod
    def _state_without_run(entry: SnapshotEntry, now: datetime, soon: datetime) -> State:
        if entry.staged:
            return State.STAGED
        if entry.due_at <= now:
            return State.SNOOZED if is_snoozed(entry, now) else State.OVERDUE
        if entry.due_at <= soon:
            return State.SNOOZED if is_snoozed(entry, now) else State.DUE_SOON
        return State.CHANGED_OUTSIDE if entry.outside else State.OK


def _edit_sorted(items: list[SnapshotEntry], entry: SnapshotEntry, *, add: bool, keys: list[datetime] | None = None) -> None:
    """Insert `entry` into, or delete it from, sorted `items`, and its due time into the parallel `keys`.

    Entries differ at the latest in their IDs, so bisection finds an entry's exact place.
    """
    index = bisect_left(items, entry)
    if add:
        items.insert(index, entry)
        if keys is not None:
            keys.insert(index, entry.due_at)
        return
    assert items[index] is entry, f"entry id={entry.id} is not in this snapshot"
    del items[index]
    if keys is not None:
        del keys[index]


def is_snoozed(entry: SnapshotEntry, now: datetime) -> bool:
    return entry.snoozed_until is not None and entry.snoozed_until > now


def _snooze_end(entry: SnapshotEntry) -> datetime:
    assert entry.snoozed_until is not None
    return entry.snoozed_until
