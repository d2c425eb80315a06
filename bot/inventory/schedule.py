"""When each secret is due, and the state shown for it in the reminder and the status views.

A secret is due `interval` days after its last rotation; when that is unknown, after the
day it was first seen. It is overdue from the moment it is due, so a 30-day secret that
is 30 days old shows as overdue by 0 days ("due today").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from bot.policy import Policy, Priority
from bot.storage.models import InventorySecret


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
    # Whether the policy describes the secret (how its value is made) and lists its app in
    # fly.apps. A rotation can be started only when both are true.
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


def assess(row: InventorySecret, *, policy: Policy, now: datetime, open_run_id: str | None = None) -> SecretStatus:
    """Work out the due time and state of one inventory row at `now`."""
    priority = policy.priority_of(row.name)
    basis = row.last_rotated_at or row.first_seen_at
    due_at = basis + timedelta(days=priority.interval_days)
    window = timedelta(days=policy.reminders.window_days)
    snoozed = row.snoozed_until is not None and row.snoozed_until > now

    # The first matching state wins: what a person must act on comes before what is fine.
    if open_run_id is not None:
        state = State.RUNNING
    elif (row.fly_status or "").lower() == STAGED_STATUS:
        state = State.STAGED
    elif now >= due_at:
        state = State.SNOOZED if snoozed else State.OVERDUE
    elif now >= due_at - window:
        state = State.SNOOZED if snoozed else State.DUE_SOON
    elif row.rotation_source == "outside":
        state = State.CHANGED_OUTSIDE
    else:
        state = State.OK

    return SecretStatus(
        app=row.app,
        name=row.name,
        priority=priority,
        interval_days=priority.interval_days,
        first_seen_at=row.first_seen_at,
        last_rotated_at=row.last_rotated_at,
        rotation_source=row.rotation_source,
        due_at=due_at,
        now=now,
        state=state,
        fly_status=row.fly_status,
        changed_outside_at=row.changed_outside_at,
        snoozed_until=row.snoozed_until,
        snoozed_by=row.snoozed_by,
        snooze_reason=row.snooze_reason,
        open_run_id=open_run_id,
        last_run_id=row.last_run_id,
        known_secret=policy.secret(row.name) is not None,
        known_app=row.app in policy.fly.apps,
    )


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
