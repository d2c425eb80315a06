"""Due dates and states of inventory rows at fixed times, against the 30, 90 and 180-day policies."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.inventory import State, assess, reminder_section
from bot.policy import InventorySettings, Policy, Priority, builtin_policy
from bot.storage.models import InventorySecret

NOW = datetime(2025, 6, 15, 9, 0, tzinfo=UTC)
FIRST_SEEN = datetime(2024, 1, 1, tzinfo=UTC)
WINDOW_DAYS = 7

# Built-in priorities: JWT_SECRET is high (30 days), OPENAI_API_KEY medium (90 days),
# WAHA_TOKEN low (180 days).
HIGH, MEDIUM, LOW = "JWT_SECRET", "OPENAI_API_KEY", "WAHA_TOKEN"


@pytest.fixture
def policy() -> Policy:
    return builtin_policy()


def row(name: str = HIGH, *, age_days: float | None = None, first_seen_at: datetime = FIRST_SEEN,
        rotation_source: str = "secretbot", fly_status: str = "Deployed", **fields: object) -> InventorySecret:
    """Build an inventory row whose last rotation was `age_days` before NOW (None: unknown)."""
    last_rotated_at = None if age_days is None else NOW - timedelta(days=age_days)
    return InventorySecret(app="hotel-voice-bot", name=name, digest="digest-1", fly_status=fly_status,
                           first_seen_at=first_seen_at, last_seen_at=NOW, last_rotated_at=last_rotated_at,
                           rotation_source=rotation_source, **fields)


def test_priorities_match_the_schedule(policy: Policy) -> None:
    assert policy.priority_of(HIGH) is Priority.HIGH
    assert policy.priority_of(MEDIUM) is Priority.MEDIUM
    assert policy.priority_of(LOW) is Priority.LOW
    assert [priority.interval_days for priority in (Priority.HIGH, Priority.MEDIUM, Priority.LOW)] == [30, 90, 180]


def test_29_days_high_is_due_soon(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=29), policy=policy, now=NOW)
    assert status.state is State.DUE_SOON
    assert status.due_at == NOW + timedelta(days=1)
    assert status.days_until_due == 1
    assert status.overdue_days == 0
    assert not status.is_overdue
    assert status.age_days == 29


def test_30_days_high_is_due_today(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=30), policy=policy, now=NOW)
    assert status.state is State.OVERDUE
    assert status.due_at == NOW
    assert status.is_overdue
    assert status.overdue_days == 0
    assert status.days_until_due == 0


@pytest.mark.parametrize(("name", "age_days", "state", "overdue_days", "days_until_due"), [
    (HIGH, 29, State.DUE_SOON, 0, 1),
    (HIGH, 30, State.OVERDUE, 0, 0),
    (HIGH, 200, State.OVERDUE, 170, 0),
    (MEDIUM, 29, State.OK, 0, 61),
    (MEDIUM, 30, State.OK, 0, 60),
    (MEDIUM, 200, State.OVERDUE, 110, 0),
    (LOW, 29, State.OK, 0, 151),
    (LOW, 30, State.OK, 0, 150),
    (LOW, 200, State.OVERDUE, 20, 0),
])
def test_age_against_each_policy(policy: Policy, name: str, age_days: int, state: State, overdue_days: int,
                                 days_until_due: int) -> None:
    status = assess(row(name, age_days=age_days), policy=policy, now=NOW)
    assert status.state is state
    assert status.overdue_days == overdue_days
    assert status.days_until_due == days_until_due
    assert status.interval_days == policy.priority_of(name).interval_days


def test_unknown_rotation_due_from_first_seen(policy: Policy) -> None:
    first_seen = NOW - timedelta(days=100)
    status = assess(row(MEDIUM, age_days=None, first_seen_at=first_seen, rotation_source="unknown"),
                    policy=policy, now=NOW)
    assert status.due_at == first_seen + timedelta(days=90)
    assert status.state is State.OVERDUE
    assert status.overdue_days == 10
    assert status.age_days == 100


def test_unknown_rotation_new_secret_not_due(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=None, first_seen_at=NOW, rotation_source="unknown"), policy=policy, now=NOW)
    assert status.due_at == NOW + timedelta(days=30)
    assert status.state is State.OK
    assert status.age_days == 0


def test_last_rotation_wins_over_first_seen(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=3, first_seen_at=NOW - timedelta(days=400)), policy=policy, now=NOW)
    assert status.due_at == NOW + timedelta(days=27)
    assert status.state is State.OK


def test_unlisted_secret_uses_default_priority(policy: Policy) -> None:
    status = assess(row("SOME_OTHER_TOKEN", age_days=100), policy=policy, now=NOW)
    assert status.priority is Priority.MEDIUM
    assert status.overdue_days == 10

    low_default = replace(policy, inventory=InventorySettings(default_priority=Priority.LOW))
    status = assess(row("SOME_OTHER_TOKEN", age_days=100), policy=low_default, now=NOW)
    assert status.priority is Priority.LOW
    assert status.state is State.OK


def test_window_edge_is_due_soon(policy: Policy) -> None:
    edge = assess(row(HIGH, age_days=30 - WINDOW_DAYS), policy=policy, now=NOW)
    assert edge.state is State.DUE_SOON
    assert reminder_section(edge, window_days=WINDOW_DAYS) is State.DUE_SOON

    before = assess(row(HIGH, age_days=30 - WINDOW_DAYS - 1 / 86400), policy=policy, now=NOW)
    assert before.state is State.OK
    assert reminder_section(before, window_days=WINDOW_DAYS) is None


def test_due_instant_is_overdue(policy: Policy) -> None:
    due = assess(row(HIGH, age_days=30), policy=policy, now=NOW)
    assert reminder_section(due, window_days=WINDOW_DAYS) is State.OVERDUE

    just_before = assess(row(HIGH, age_days=30 - 1 / 86400), policy=policy, now=NOW)
    assert just_before.state is State.DUE_SOON
    assert just_before.days_until_due == 0
    assert reminder_section(just_before, window_days=WINDOW_DAYS) is State.DUE_SOON


def test_snoozed_overdue_left_out(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=40, snoozed_until=NOW + timedelta(days=2), snoozed_by="U0AAA",
                        snooze_reason="vendor outage"), policy=policy, now=NOW)
    assert status.state is State.SNOOZED
    assert status.snoozed
    assert status.overdue_days == 10
    assert reminder_section(status, window_days=WINDOW_DAYS) is None


def test_snoozed_due_soon_left_out(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=27, snoozed_until=NOW + timedelta(days=1)), policy=policy, now=NOW)
    assert status.state is State.SNOOZED
    assert reminder_section(status, window_days=WINDOW_DAYS) is None


def test_expired_snooze_is_overdue_again(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=40, snoozed_until=NOW), policy=policy, now=NOW)
    assert status.state is State.OVERDUE
    assert not status.snoozed
    assert reminder_section(status, window_days=WINDOW_DAYS) is State.OVERDUE


def test_staged_shown_but_listed_by_due_date(policy: Policy) -> None:
    overdue = assess(row(HIGH, age_days=40, fly_status="Staged"), policy=policy, now=NOW)
    assert overdue.state is State.STAGED
    assert overdue.staged
    assert reminder_section(overdue, window_days=WINDOW_DAYS) is State.OVERDUE

    fresh = assess(row(HIGH, age_days=1, fly_status="Staged"), policy=policy, now=NOW)
    assert fresh.state is State.STAGED
    assert reminder_section(fresh, window_days=WINDOW_DAYS) is None


def test_running_rotation_left_out(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=40, fly_status="Staged"), policy=policy, now=NOW, open_run_id="run123")
    assert status.state is State.RUNNING
    assert status.open_run_id == "run123"
    assert reminder_section(status, window_days=WINDOW_DAYS) is None


def test_changed_outside_restarts_schedule(policy: Policy) -> None:
    noticed = NOW - timedelta(days=2)
    status = assess(row(HIGH, age_days=2, rotation_source="outside", changed_outside_at=noticed),
                    policy=policy, now=NOW)
    assert status.state is State.CHANGED_OUTSIDE
    assert status.changed_outside_at == noticed
    assert status.due_at == noticed + timedelta(days=30)
    assert reminder_section(status, window_days=WINDOW_DAYS) is None


def test_changed_outside_long_ago_is_overdue(policy: Policy) -> None:
    status = assess(row(HIGH, age_days=31, rotation_source="outside", changed_outside_at=NOW - timedelta(days=31)),
                    policy=policy, now=NOW)
    assert status.state is State.OVERDUE
    assert status.overdue_days == 1
