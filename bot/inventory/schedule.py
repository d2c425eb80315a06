"""When each secret is due, and the state shown for it in the reminder and the status views.

A secret is due `interval` days after its last rotation; when that is unknown, after the
day it was first seen. It is overdue from the moment it is due, so a 30-day secret that
is 30 days old shows as overdue by 0 days ("due today").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from bot.policy import Policy, Priority, chosen_policy


class State(str, Enum):
    OK = "ok"
    DUE_SOON = "due soon"
    OVERDUE = "overdue"
    SNOOZED = "snoozed"
    RUNNING = "rotation running"
    CHANGED_OUTSIDE = "changed outside secretbot"
    STAGED = "staged"


# Fly's status for a value that is set but not yet rolled out to the machines.
STAGED_STATUS = "staged"
_PRIORITIES = {priority.value for priority in Priority}


class ScheduledRow(Protocol):
    """The inventory columns that a secret's priority and due time come from."""

    @property
    def name(self) -> str: ...
    @property
    def priority(self) -> str | None: ...
    @property
    def first_seen_at(self) -> datetime: ...
    @property
    def last_rotated_at(self) -> datetime | None: ...


class InventoryRow(ScheduledRow, Protocol):
    """The inventory columns that assess reads: an InventorySecret, or a row of InventoryStore's status query."""

    @property
    def app(self) -> str: ...
    @property
    def value_source(self) -> str | None: ...
    @property
    def fly_status(self) -> str | None: ...
    @property
    def rotation_source(self) -> str: ...
    @property
    def last_run_id(self) -> str | None: ...
    @property
    def changed_outside_at(self) -> datetime | None: ...
    @property
    def snoozed_until(self) -> datetime | None: ...
    @property
    def snoozed_by(self) -> str | None: ...
    @property
    def snooze_reason(self) -> str | None: ...


@dataclass(frozen=True)
class SecretStatus:
    """One secret of one app, with its due date and state at `now`."""

    app: str
    name: str
    priority: Priority
    interval_days: int
    first_seen_at: datetime
    last_rotated_at: datetime | None
    rotation_source: str
    due_at: datetime
    now: datetime
    state: State
    fly_status: str | None = None
    changed_outside_at: datetime | None = None
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None
    snooze_reason: str | None = None
    open_run_id: str | None = None
    last_run_id: str | None = None
    # Whether the policy or a choice stored at `/secret add` describes the secret (how its
    # value is made), and whether fly.apps lists its app. A rotation can be started only
    # when both are true.
    known_secret: bool = True
    known_app: bool = True

    @property
    def age_days(self) -> int:
        """Whole days since the last rotation, or since first seen when that is unknown."""
        return (self.now - (self.last_rotated_at or self.first_seen_at)).days

    @property
    def overdue_days(self) -> int:
        """Whole days past the due time: 0 on the day it falls due and before it."""
        return max(0, (self.now - self.due_at).days)

    @property
    def is_overdue(self) -> bool:
        return self.now >= self.due_at

    @property
    def days_until_due(self) -> int:
        """Whole days left before the due time; 0 when less than a day is left or it is past."""
        return max(0, (self.due_at - self.now).days)

    @property
    def rotatable(self) -> bool:
        return self.known_secret and self.known_app

    @property
    def staged(self) -> bool:
        return (self.fly_status or "").lower() == STAGED_STATUS

    @property
    def snoozed(self) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > self.now


def priority_for(row: ScheduledRow, policy: Policy) -> Priority:
    """Return a secret's priority: from secretbot.toml, else as chosen when secretbot added it, else the default."""
    if policy.secret(row.name) is None and row.priority in _PRIORITIES:
        return Priority(row.priority)
    return policy.priority_of(row.name)


def assess(row: InventoryRow, *, policy: Policy, now: datetime, open_run_id: str | None = None) -> SecretStatus:
    """Work out the due time and state of one inventory row at `now`."""
    return Assessor(policy, now).assess(row, open_run_id)


class Assessor:
    """Works out due times and states at one moment, with the policy's lookups done once for many rows.

    `/secret status`, the Home tab and the daily reminder assess every secret in the
    inventory, 10,000 in the benchmark, on the event loop that also acknowledges Slack's
    requests, so the work per row is kept small.
    """

    def __init__(self, policy: Policy, now: datetime) -> None:
        self.policy = policy
        self.now = now
        self._window = timedelta(days=policy.reminders.window_days)
        # Priority.interval_days is an enum property, which costs more than a dict lookup.
        self._intervals = {priority: (priority.interval_days, timedelta(days=priority.interval_days))
                           for priority in Priority}
        self._apps = frozenset(policy.fly.apps)

    def schedule(self, row: ScheduledRow) -> tuple[Priority, int, datetime]:
        """Return a row's priority, its interval in days and its due time, none of which depends on `now`."""
        priority = priority_for(row, self.policy)
        interval_days, interval = self._intervals[priority]
        return priority, interval_days, (row.last_rotated_at or row.first_seen_at) + interval

    def assess(self, row: InventoryRow, open_run_id: str | None = None) -> SecretStatus:
        """Work out the due time and state of one inventory row."""
        now = self.now
        priority, interval_days, due_at = self.schedule(row)
        first_seen_at, last_rotated_at, snoozed_until, fly_status = (
            row.first_seen_at, row.last_rotated_at, row.snoozed_until, row.fly_status)
        snoozed = snoozed_until is not None and snoozed_until > now

        # The first matching state wins: what a person must act on comes before what is fine.
        if open_run_id is not None:
            state = State.RUNNING
        elif fly_status is not None and fly_status.lower() == STAGED_STATUS:
            state = State.STAGED
        elif now >= due_at:
            state = State.SNOOZED if snoozed else State.OVERDUE
        elif now >= due_at - self._window:
            state = State.SNOOZED if snoozed else State.DUE_SOON
        elif row.rotation_source == "outside":
            state = State.CHANGED_OUTSIDE
        else:
            state = State.OK

        # A policy chosen at `/secret add` describes the value too, so such a secret can be
        # rotated. chosen_policy returns None without both choices, so it is only called with them.
        known_secret = self.policy.secret(row.name) is not None or (
            row.priority is not None and row.value_source is not None
            and chosen_policy(row.name, row.priority, row.value_source) is not None)
        return _new_status(
            app=row.app,
            name=row.name,
            priority=priority,
            interval_days=interval_days,
            first_seen_at=first_seen_at,
            last_rotated_at=last_rotated_at,
            rotation_source=row.rotation_source,
            due_at=due_at,
            now=now,
            state=state,
            fly_status=fly_status,
            changed_outside_at=row.changed_outside_at,
            snoozed_until=snoozed_until,
            snoozed_by=row.snoozed_by,
            snooze_reason=row.snooze_reason,
            open_run_id=open_run_id,
            last_run_id=row.last_run_id,
            known_secret=known_secret,
            known_app=row.app in self._apps,
        )


def _new_status(**values: Any) -> SecretStatus:
    """Build a SecretStatus from a value for every field, without the dataclass's __init__.

    A frozen dataclass's __init__ sets each field through object.__setattr__, which for
    these 19 fields took about 3 µs per status, a third of assessing a row. Filling the
    instance's __dict__ at once gives an equal object, as frozen, in about a quarter of
    that time. Every field must be given, because no default is applied;
    tests/test_status_read.py checks that Assessor gives each of them.
    """
    status = object.__new__(SecretStatus)
    status.__dict__.update(values)
    return status


def reminder_section(status: SecretStatus, *, window_days: int) -> State | None:
    """Return where the daily reminder lists a secret (overdue or due soon), or None to leave it out.

    Snoozed secrets and those with a rotation already running are left out of both lists.
    A staged secret is listed by its due date like any other.
    """
    if status.open_run_id is not None or status.snoozed:
        return None
    if status.is_overdue:
        return State.OVERDUE
    if status.now >= status.due_at - timedelta(days=window_days):
        return State.DUE_SOON
    return None
