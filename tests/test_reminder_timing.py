"""The daily reminder's due date and wake-up time, through daylight saving and clock jumps."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.reminders.timing import (
    MAX_SLEEP_SECONDS,
    due_now,
    reminder_instant,
    sleep_seconds,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
NINE = time(9, 0)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_instant_in_winter_and_summer() -> None:
    assert reminder_instant(date(2026, 1, 15), NINE, BERLIN) == utc(2026, 1, 15, 8, 0)
    assert reminder_instant(date(2026, 7, 15), NINE, BERLIN) == utc(2026, 7, 15, 7, 0)


def test_nine_oclock_follows_new_york_spring_change() -> None:
    # Clocks go from 02:00 EST to 03:00 EDT on 2026-03-08: 09:00 moves from 14:00 to 13:00 UTC.
    assert reminder_instant(date(2026, 3, 7), NINE, NEW_YORK) == utc(2026, 3, 7, 14, 0)
    assert reminder_instant(date(2026, 3, 8), NINE, NEW_YORK) == utc(2026, 3, 8, 13, 0)


def test_nine_oclock_follows_berlin_autumn_change() -> None:
    # Clocks go from 03:00 CEST back to 02:00 CET on 2026-10-25.
    assert reminder_instant(date(2026, 10, 24), NINE, BERLIN) == utc(2026, 10, 24, 7, 0)
    assert reminder_instant(date(2026, 10, 25), NINE, BERLIN) == utc(2026, 10, 25, 8, 0)


def test_spring_gap_fires_when_clocks_jump() -> None:
    # 02:30 does not exist in New York on 2026-03-08; 03:00 EDT (07:00 UTC) is the first valid instant.
    assert reminder_instant(date(2026, 3, 8), time(2, 30), NEW_YORK) == utc(2026, 3, 8, 7, 0)


def test_spring_gap_in_berlin() -> None:
    # 02:15 does not exist in Berlin on 2026-03-29; the jump is at 01:00 UTC.
    assert reminder_instant(date(2026, 3, 29), time(2, 15), BERLIN) == utc(2026, 3, 29, 1, 0)


def test_gap_start_itself_is_the_jump() -> None:
    assert reminder_instant(date(2026, 3, 8), time(2, 0), NEW_YORK) == utc(2026, 3, 8, 7, 0)


def test_fall_overlap_fires_first_occurrence() -> None:
    # 01:30 happens twice in New York on 2026-11-01: first in EDT (05:30 UTC), then in EST (06:30 UTC).
    assert reminder_instant(date(2026, 11, 1), time(1, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)


def test_fall_overlap_not_due_again_in_second_hour() -> None:
    at = time(2, 30)
    # 02:30 CEST on 2026-10-25 is 00:30 UTC; 02:30 CET an hour later is the repeat.
    first = due_now(utc(2026, 10, 25, 0, 30), at=at, zone=BERLIN)
    repeat = due_now(utc(2026, 10, 25, 1, 30), at=at, zone=BERLIN)
    assert first.local_date == date(2026, 10, 25)
    assert repeat.local_date == date(2026, 10, 25)
    assert repeat.next_at == utc(2026, 10, 26, 1, 30)


def test_not_due_before_time() -> None:
    due = due_now(utc(2026, 1, 15, 7, 59, 59), at=NINE, zone=BERLIN)
    assert due.local_date is None
    assert due.next_at == utc(2026, 1, 15, 8, 0)


def test_due_at_exact_time() -> None:
    due = due_now(utc(2026, 1, 15, 8, 0), at=NINE, zone=BERLIN)
    assert due.local_date == date(2026, 1, 15)
    assert due.next_at == utc(2026, 1, 16, 8, 0)


def test_late_send_same_day() -> None:
    # A bot that starts at 17:00 local still owes the 09:00 reminder of that day.
    assert due_now(utc(2026, 1, 15, 16, 0), at=NINE, zone=BERLIN).local_date == date(2026, 1, 15)


def test_missed_previous_day_not_sent() -> None:
    # Down from before 09:00 yesterday until 08:00 today: yesterday's reminder is not owed today.
    due = due_now(utc(2026, 1, 16, 7, 0), at=NINE, zone=BERLIN)
    assert due.local_date is None
    assert due.next_at == utc(2026, 1, 16, 8, 0)


def test_local_date_not_utc_date() -> None:
    # 23:30 UTC on Jan 15 is already Jan 16 in Berlin; the Jan 16 reminder at 00:15 is due.
    due = due_now(utc(2026, 1, 15, 23, 30), at=time(0, 15), zone=BERLIN)
    assert due.local_date == date(2026, 1, 16)


def test_late_send_on_spring_change_day() -> None:
    due = due_now(utc(2026, 3, 8, 12, 0), at=time(2, 30), zone=NEW_YORK)
    assert due.local_date == date(2026, 3, 8)
    assert due.next_at == utc(2026, 3, 9, 6, 30)


def test_clock_jump_forward_still_due_once_per_date() -> None:
    # The clock jumps from 08:55 to 11:00 local: the reminder is due for that date, and the
    # next one is tomorrow, so the ledger gets one date and nothing is skipped.
    before = due_now(utc(2026, 1, 15, 7, 55), at=NINE, zone=BERLIN)
    after = due_now(utc(2026, 1, 15, 10, 0), at=NINE, zone=BERLIN)
    assert before.local_date is None
    assert after.local_date == date(2026, 1, 15)


def test_clock_jump_backward_returns_same_date() -> None:
    # After sending at 09:00 the clock is set back to 08:30, then runs past 09:00 again:
    # the same local date is due both times, which the ledger has already marked as posted.
    sent = due_now(utc(2026, 1, 15, 8, 0), at=NINE, zone=BERLIN)
    set_back = due_now(utc(2026, 1, 15, 7, 30), at=NINE, zone=BERLIN)
    again = due_now(utc(2026, 1, 15, 8, 1), at=NINE, zone=BERLIN)
    assert set_back.local_date is None
    assert sent.local_date == again.local_date


def test_sleep_capped_at_a_minute() -> None:
    now = utc(2026, 1, 15, 0, 0)
    assert sleep_seconds(now, now + timedelta(hours=8)) == MAX_SLEEP_SECONDS


def test_sleep_until_due_when_sooner() -> None:
    now = utc(2026, 1, 15, 0, 0)
    assert sleep_seconds(now, now + timedelta(seconds=5)) == 5.0


def test_sleep_never_negative() -> None:
    now = utc(2026, 1, 15, 0, 0)
    assert sleep_seconds(now, now - timedelta(seconds=5)) == 0.0


def test_naive_now_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        due_now(datetime(2026, 1, 15, 9, 0), at=NINE, zone=BERLIN)


def test_every_day_of_year_due_once() -> None:
    # Across a whole year in New York, each date's instant is on that local date and
    # strictly after the previous date's, through both changes.
    previous = reminder_instant(date(2025, 12, 31), time(2, 30), NEW_YORK)
    for offset in range(365):
        local_date = date(2026, 1, 1) + timedelta(days=offset)
        instant = reminder_instant(local_date, time(2, 30), NEW_YORK)
        assert instant.astimezone(NEW_YORK).date() == local_date, local_date
        assert instant > previous, local_date
        previous = instant
