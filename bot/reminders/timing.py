"""When the daily reminder falls due, in the configured local time and time zone.

Pure functions of a UTC `now`, so every daylight-saving case can be tested with fixed
datetimes. The rules:

- A local time that does not exist on a day (the spring-forward gap) fires at the first
  valid instant after it, which is the moment the clocks jump forward.
- A local time that occurs twice (the fall-back overlap) fires at its first occurrence.
- Only today's reminder is ever due: a reminder missed on an earlier day is not sent late
  on the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# The scheduler re-reads the clock at least this often, so a wall clock that jumps forward
# or backward is noticed within a minute instead of after a long computed sleep.
MAX_SLEEP_SECONDS = 60.0


@dataclass(frozen=True)
class Due:
    """The scheduler's next step at one `now`."""

    # The local date whose reminder is due now, or None when today's time has not come yet.
    local_date: date | None
    # The next instant (UTC) at which a reminder falls due after `now`.
    next_at: datetime


def reminder_instant(local_date: date, at: time, zone: ZoneInfo) -> datetime:
    """Return the UTC instant of the reminder for `local_date` at wall-clock time `at` in `zone`."""
    # fold=0 picks the first occurrence of a time that the fall-back repeats.
    wall = datetime.combine(local_date, at.replace(tzinfo=None, fold=0))
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    return _end_of_gap(wall, zone)


def _end_of_gap(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the UTC instant at which the spring-forward gap containing `wall` ends.

    In a gap, fold=1 converts with the offset after the jump and fold=0 with the offset
    before it, so the jump lies between the two results. A binary search over whole
    seconds finds the first instant whose local wall time is at or after `wall`.
    """
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high


def due_now(now: datetime, *, at: time, zone: ZoneInfo) -> Due:
    """Return today's local date if its reminder instant has passed, and the next instant to wake for."""
    if now.tzinfo is None:
        raise ValueError("naive datetime given; pass an aware UTC datetime")
    today = now.astimezone(zone).date()
    today_at = reminder_instant(today, at, zone)
    if today_at <= now:
        return Due(local_date=today, next_at=reminder_instant(today + timedelta(days=1), at, zone))
    return Due(local_date=None, next_at=today_at)


def sleep_seconds(now: datetime, next_at: datetime) -> float:
    """Return how long to sleep before looking again: until `next_at`, but never more than a minute."""
    return max(0.0, min(MAX_SLEEP_SECONDS, (next_at - now).total_seconds()))


def local_today(now: datetime, zone: ZoneInfo) -> date:
    """Return the local date in `zone` at the UTC instant `now`."""
    return now.astimezone(zone).date()
