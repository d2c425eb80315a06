"""The order of secrets by urgency and their counts per state, shared by every status view.

It sits in the inventory package, next to the states it orders, so that the inventory's
status snapshot (status_cache.py) can use it without importing the query module
bot/overview.py, which imports the inventory.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.inventory.schedule import SecretStatus, State
from bot.policy import Priority

# Rank of each state: the states a person must act on come first. Within a state, the
# earliest due date comes first, so the most overdue secret leads the list.
STATE_ORDER = {
    State.OVERDUE: 0,
    State.STAGED: 1,
    State.DUE_SOON: 2,
    State.CHANGED_OUTSIDE: 3,
    State.RUNNING: 4,
    State.SNOOZED: 5,
    State.OK: 6,
}
PRIORITY_ORDER = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


def by_urgency(statuses: Iterable[SecretStatus]) -> list[SecretStatus]:
    """Sort statuses most urgent first: by state, then due date, priority, app and name."""
    return sorted(statuses, key=lambda status: (
        STATE_ORDER[status.state], status.due_at, PRIORITY_ORDER[status.priority], status.app, status.name))


def count_states(statuses: Iterable[SecretStatus]) -> dict[State, int]:
    """Count secrets per state, in urgency order, leaving out states no secret is in."""
    counts = {state: 0 for state in STATE_ORDER}
    for status in statuses:
        counts[status.state] += 1
    return {state: count for state, count in counts.items() if count}
