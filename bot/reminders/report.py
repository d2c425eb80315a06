"""The content of one daily reminder: overdue secrets, those due soon, and the snoozed ones.

Pure: it orders the statuses that InventoryStore.statuses() returned and imports nothing of Slack.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from bot.inventory.schedule import SecretStatus, State, reminder_section
from bot.policy import Priority

_PRIORITY_RANK = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


@dataclass(frozen=True)
class AppGroup:
    """The listed secrets of one app, most urgent first."""

    app: str
    secrets: tuple[SecretStatus, ...]


@dataclass(frozen=True)
class Reminder:
    """One day's reminder for one channel."""

    local_date: date
    window_days: int
    # Most overdue first; ties go to the higher priority, then app and name.
    overdue: tuple[SecretStatus, ...]
    # Soonest due first.
    due_soon: tuple[SecretStatus, ...]
    # Snoozed secrets that would be listed without their snooze, the snooze ending first.
    snoozed: tuple[SecretStatus, ...]
    all_clear: bool
    # Secrets whose rotation run the bot opened itself (auto_rotate), still open; each
    # status's open_run_id names the run. They are listed without a Rotate now button.
    automatic: tuple[SecretStatus, ...] = ()

    @property
    def items(self) -> int:
        """The number of listed secrets (overdue and due soon)."""
        return len(self.overdue) + len(self.due_soon)

    @property
    def nothing_due(self) -> bool:
        return self.items == 0

    @property
    def should_post(self) -> bool:
        return not self.nothing_due or self.all_clear or bool(self.automatic)

    def ranked(self) -> tuple[SecretStatus, ...]:
        """Return every listed secret, most urgent first: the overdue ones, then those due soon."""
        return self.overdue + self.due_soon


def build_reminder(statuses: Iterable[SecretStatus], *, local_date: date, window_days: int,
                   all_clear: bool, automatic: Collection[tuple[str, str]] = ()) -> Reminder:
    """Sort statuses into the overdue, due-soon, snoozed and automatic parts of a reminder.

    `automatic` holds the (app, secret) pairs whose open run the bot opened by itself.
    """
    overdue: list[SecretStatus] = []
    due_soon: list[SecretStatus] = []
    snoozed: list[SecretStatus] = []
    opened: list[SecretStatus] = []
    for status in statuses:
        if status.open_run_id is not None and (status.app, status.name) in automatic:
            opened.append(status)
            continue
        section = reminder_section(status, window_days=window_days)
        if section is State.OVERDUE:
            overdue.append(status)
        elif section is State.DUE_SOON:
            due_soon.append(status)
        elif _snoozed_while_due(status, window_days):
            snoozed.append(status)

    overdue.sort(key=lambda item: (item.due_at, _PRIORITY_RANK[item.priority], item.app, item.name))
    due_soon.sort(key=lambda item: (item.due_at, _PRIORITY_RANK[item.priority], item.app, item.name))
    snoozed.sort(key=lambda item: (item.snoozed_until, item.app, item.name))
    opened.sort(key=lambda item: (item.due_at, item.app, item.name))
    return Reminder(local_date=local_date, window_days=window_days, overdue=tuple(overdue),
                    due_soon=tuple(due_soon), snoozed=tuple(snoozed), all_clear=all_clear, automatic=tuple(opened))


def _snoozed_while_due(status: SecretStatus, window_days: int) -> bool:
    if not status.snoozed or status.open_run_id is not None:
        return False
    return status.now >= status.due_at - timedelta(days=window_days)


def group_by_app(secrets: Iterable[SecretStatus]) -> tuple[AppGroup, ...]:
    """Group secrets by app, keeping their order; apps come in the order of their first secret."""
    groups: dict[str, list[SecretStatus]] = {}
    for status in secrets:
        groups.setdefault(status.app, []).append(status)
    return tuple(AppGroup(app=app, secrets=tuple(items)) for app, items in groups.items())
