"""InventoryStore.status_overview reuses a snapshot of the inventory between calls, and must
return exactly what a full read returns after every kind of change, on both databases.

Each test compares the overview with StatusOverview.from_statuses(by_urgency(statuses())),
and the `/secret status` replies built from each. It checks from the cache's counters that
the change was noticed and how: a snapshot updated from its changed rows, a snapshot read in
full, or the snapshot reused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.flyctl import FlySecret
from bot.inventory import InventoryStore, InventorySync, State
from bot.inventory.schedule import Assessor
from bot.inventory.status_cache import StatusOverview
from bot.inventory.urgency import by_urgency
from bot.policy import InventorySettings, Priority, ReminderSettings, builtin_policy
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory
from bot.storage.models import InventorySecret, Run, RunSecret
from handlers.status_views import (
    MIN_STATUS_LINE_LENGTH,
    STATUS_LINES_MAX,
    status_line,
    status_message,
    status_overview_message,
)
from tests.test_status_read import APPS, NOW, filled_store, random_rows


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current


class ListingClient:
    """Returns a fixed `flyctl secrets list` per app; the sync's own handling of it is what runs."""

    def __init__(self) -> None:
        self.listings: dict[str, list[FlySecret]] = {}

    async def list_secrets(self, app: str) -> list[FlySecret]:
        return self.listings[app]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bot.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[InventoryStore]:
    engine = create_engine(normalize_database_url(database_url))
    try:
        filled = await filled_store(engine, random_rows(seed=11))
        filled.clock = ManualClock(NOW)
        yield filled
    finally:
        await engine.dispose()


async def full_overview(store: InventoryStore, *, app: str | None = None,
                        limit: int | None = None) -> StatusOverview:
    return StatusOverview.from_statuses(by_urgency(await store.statuses(app=app)), limit=limit)


async def assert_matches_full_read(store: InventoryStore, *, app: str | None = None) -> None:
    """Compare the overview with a full read: a short list, the reply, and every status.

    The short list comes first: a changed row that a call shows makes it read a new
    snapshot, so only a call that shows few rows depends on the fingerprint alone.
    """
    expected = await full_overview(store, app=app)
    short = await store.status_overview(app=app, limit=3)
    assert short == await full_overview(store, app=app, limit=3)

    reply = status_overview_message(await store.status_overview(app=app, limit=STATUS_LINES_MAX), app=app)
    assert reply == status_message(expected.statuses, app=app)

    everything = await store.status_overview(app=app, limit=10_000)
    assert everything == expected
    assert [dataclasses.asdict(status) for status in everything.statuses] == [
        dataclasses.asdict(status) for status in expected.statuses]


def bulk_rows(count: int) -> list[InventorySecret]:
    """Deployed secrets spread over the two apps of APPS, rotated between 0 and 120 days ago."""
    return [InventorySecret(
        app=APPS[index % 2], name=f"BULK_{index:03d}", digest=f"d{index}", fly_status="Deployed",
        first_seen_at=NOW - timedelta(days=200), last_seen_at=NOW,
        last_rotated_at=NOW - timedelta(days=index % 120, hours=index), rotation_source="operator")
        for index in range(count)]


def snapshots_read(store: InventoryStore) -> int:
    return store._status_cache.snapshots_read


def snapshots_updated(store: InventoryStore) -> int:
    return store._status_cache.snapshots_updated


def rows_placed(store: InventoryStore) -> int:
    return store._status_cache.rows_placed


async def present_names(store: InventoryStore, app: str) -> list[str]:
    return [status.name for status in await store.statuses(app=app)]


async def test_unchanged_inventory_reuses_snapshot(store: InventoryStore) -> None:
    await assert_matches_full_read(store)
    read = snapshots_read(store)

    await assert_matches_full_read(store)

    assert read == 1
    assert snapshots_read(store) == read


async def test_one_app_matches_full_read(store: InventoryStore) -> None:
    await assert_matches_full_read(store, app=APPS[1])
    await assert_matches_full_read(store, app="no-such-app")

    await store.snooze(app=APPS[1], name=(await present_names(store, APPS[1]))[0], days=3, reason=None,
                       actor="U0AAA")

    await assert_matches_full_read(store, app=APPS[1])


async def test_clock_crossing_every_boundary(store: InventoryStore) -> None:
    """Move the clock to each due time, each start of the due-soon window and each snooze end, and either side."""
    clock = store.clock
    assert isinstance(clock, ManualClock)
    window = timedelta(days=store.policy.reminders.window_days)
    boundaries: set[datetime] = set()
    for status in await store.statuses():
        boundaries.update((status.due_at, status.due_at - window))
        if status.snoozed_until is not None:
            boundaries.add(status.snoozed_until)
    await assert_matches_full_read(store)
    read = snapshots_read(store)

    tick = timedelta(microseconds=1)
    for boundary in sorted(boundaries):
        for moment in (boundary - tick, boundary, boundary + tick):
            clock.current = moment
            expected = await full_overview(store)
            assert await store.status_overview(limit=10_000) == expected, moment
            assert await store.status_overview(limit=STATUS_LINES_MAX) == expected, moment

    assert len(boundaries) > 50
    assert snapshots_read(store) == read


async def test_sync_changes_are_seen(store: InventoryStore) -> None:
    await assert_matches_full_read(store)
    before = await full_overview(store)
    # An overdue secret that a list of three does not show is removed from Fly.
    removed = [status for status in before.statuses[3:] if status.state is State.OVERDUE][-1]
    app = removed.app
    async with store.sessions() as session:
        rows = list(await session.scalars(select(InventorySecret).where(
            InventorySecret.app == app, InventorySecret.removed_at.is_(None), InventorySecret.name != removed.name)
            .order_by(InventorySecret.name)))
    listing = ListingClient()
    sync = InventorySync(flyctl=listing, sessions=store.sessions, policy=store.policy,  # type: ignore[arg-type]
                         clock=store.clock)
    # Another secret gets a digest no run set, and one appears.
    listing.listings[app] = [FlySecret(name=row.name, digest=row.digest or "", status=row.fly_status)
                             for row in rows]
    listing.listings[app][0] = FlySecret(name=rows[0].name, digest="digest-set-outside", status="Deployed")
    listing.listings[app].append(FlySecret(name="NEW_SECRET", digest="digest-new", status="Staged"))

    read, updated = snapshots_read(store), snapshots_updated(store)
    result = await sync.sync_app(app)
    assert result.ok, result.error
    await assert_matches_full_read(store)
    assert snapshots_read(store) == read
    assert snapshots_updated(store) == updated + 1

    # A second, identical sync only moves last_seen_at, which no status shows.
    result = await sync.sync_app(app)
    assert result.ok, result.error
    await assert_matches_full_read(store)
    assert snapshots_read(store) == read
    assert snapshots_updated(store) == updated + 1
    after = await full_overview(store)
    assert after.counts != before.counts
    assert removed.name not in await present_names(store, app)
    assert "NEW_SECRET" in await present_names(store, app)


@pytest.mark.parametrize("change", [
    "rotation", "chosen_policy", "snooze", "record_date", "removed", "value_age", "hand_update", "run_opened",
])
async def test_store_change_is_seen(store: InventoryStore, change: str) -> None:
    """Each change moves a secret that a list of three does not show into another state, or out of the list."""
    await assert_matches_full_read(store)
    read, updated = snapshots_read(store), snapshots_updated(store)
    before = await full_overview(store)
    unshown = before.statuses[3:]
    overdue = [status for status in unshown if status.state is State.OVERDUE][-1]
    ok = [status for status in unshown if status.state is State.OK][-1]

    if change == "rotation":
        await store.record_rotation(app=overdue.app, digests={overdue.name: "digest-after"}, run_id="run00000009")
    elif change == "chosen_policy":
        # A name the built-in policy does not list, due within the 7-day window at high
        # priority (30 days) but not at its current priority.
        chosen = next(status for status in unshown if status.name not in store.policy.secrets
                      and status.state is State.OK and status.age_days >= 23)
        await store.record_policy(app=chosen.app, name=chosen.name, priority="high", value_source="generated")
    elif change == "snooze":
        await store.snooze(app=overdue.app, name=overdue.name, days=14, reason="vendor outage", actor="U0BBB")
    elif change == "record_date":
        await store.record_date(app=ok.app, name=ok.name, rotated_at=NOW - timedelta(days=400), actor="U0BBB")
    elif change == "removed":
        await store.record_removed(app=ok.app, names=[ok.name], run_id="run00000009")
    elif change == "value_age":
        await store.record_value_age(app=ok.app, name=ok.name, created_at=NOW - timedelta(days=400),
                                     run_id="run00000009")
    elif change == "hand_update":
        async with store.sessions.begin() as session:
            await session.execute(update(InventorySecret).where(
                InventorySecret.app == ok.app, InventorySecret.name == ok.name).values(fly_status="Staged"))
    elif change == "run_opened":
        async with store.sessions.begin() as session:
            session.add(Run(id="run00000010", kind="rotate", app=overdue.app, requester="U0AAA", status="running"))
            await session.flush()
            session.add(RunSecret(run_id="run00000010", position=0, app=overdue.app, name=overdue.name))

    await assert_matches_full_read(store)
    after = await full_overview(store)
    assert (after.total, after.counts) != (before.total, before.counts)
    assert snapshots_read(store) == read
    if change == "run_opened":
        # Open runs are read on every call and laid over the snapshot.
        assert snapshots_updated(store) == updated
    else:
        assert snapshots_updated(store) == updated + 1


async def ok_unshown(store: InventoryStore) -> Any:
    """Return the least urgent OK secret, which a list of three does not show before or after a change."""
    return [status for status in (await full_overview(store)).statuses[3:] if status.state is State.OK][-1]


@pytest.mark.parametrize("change", ["removed", "added", "changed"])
async def test_update_reads_changed_rows_only(store: InventoryStore, change: str) -> None:
    """One row goes, comes or changes: the snapshot is updated with that row alone, and counts it right."""
    await assert_matches_full_read(store)
    read, updated, placed = snapshots_read(store), snapshots_updated(store), rows_placed(store)
    before = await full_overview(store)
    ok = await ok_unshown(store)

    if change == "removed":
        await store.record_removed(app=ok.app, names=[ok.name], run_id="run00000009")
    elif change == "added":
        async with store.sessions.begin() as session:
            session.add(InventorySecret(app=ok.app, name="ADDED_SECRET", digest="digest-added", fly_status="Staged",
                                        first_seen_at=NOW, last_seen_at=NOW, rotation_source="unknown"))
    else:
        async with store.sessions.begin() as session:
            await session.execute(update(InventorySecret).where(
                InventorySecret.app == ok.app, InventorySecret.name == ok.name).values(fly_status="Staged"))

    await assert_matches_full_read(store)
    after = await full_overview(store)
    assert after.counts != before.counts
    assert snapshots_read(store) == read
    assert snapshots_updated(store) == updated + 1
    assert rows_placed(store) == placed + (0 if change == "removed" else 1)


async def test_app_snapshots_update_apart(store: InventoryStore) -> None:
    """A row moved between apps leaves one app's snapshot and joins the other's, and stays once in the all-apps one."""
    first, second = APPS
    # Enough rows per app that two changed rows stay within the share that an update reads.
    async with store.sessions.begin() as session:
        session.add_all(bulk_rows(40))
    for app in (None, first, second):
        await assert_matches_full_read(store, app=app)
    read, updated, placed = snapshots_read(store), snapshots_updated(store), rows_placed(store)
    moved = (await present_names(store, second))[0]
    snoozed = (await present_names(store, first))[0]

    async with store.sessions.begin() as session:
        await session.execute(update(InventorySecret).where(
            InventorySecret.app == second, InventorySecret.name == moved).values(app=first, name="MOVED_SECRET"))
    await store.snooze(app=first, name=snoozed, days=3, reason=None, actor="U0AAA")

    for app in (None, first, second):
        await assert_matches_full_read(store, app=app)
    assert "MOVED_SECRET" in await present_names(store, first)
    assert moved not in await present_names(store, second)
    assert snapshots_read(store) == read
    assert snapshots_updated(store) == updated + 3
    # The moved and the snoozed row, for the all-apps snapshot and the first app's. The
    # second app's snapshot only drops the moved row.
    assert rows_placed(store) == placed + 4


@pytest.mark.parametrize("share", ["quarter", "over_quarter"])
async def test_many_changes_read_in_full(store: InventoryStore, share: str) -> None:
    """Up to a quarter of the rows changed updates the snapshot, and more reads it in full."""
    await assert_matches_full_read(store)
    read, updated = snapshots_read(store), snapshots_updated(store)
    async with store.sessions() as session:
        ids = list(await session.scalars(select(InventorySecret.id).where(
            InventorySecret.removed_at.is_(None)).order_by(InventorySecret.id)))
    changed = len(ids) // 4 + (1 if share == "over_quarter" else 0)

    async with store.sessions.begin() as session:
        await session.execute(update(InventorySecret).where(InventorySecret.id.in_(ids[:changed])).values(
            snoozed_until=NOW + timedelta(days=1)))

    await assert_matches_full_read(store)
    if share == "quarter":
        assert (snapshots_read(store), snapshots_updated(store)) == (read, updated + 1)
    else:
        assert (snapshots_read(store), snapshots_updated(store)) == (read + 1, updated)


async def test_separator_in_value_reads_in_full(store: InventoryStore) -> None:
    """A value that contains the fingerprint's row separator, which splits its row's text in two."""
    await assert_matches_full_read(store)
    read = snapshots_read(store)
    ok = await ok_unshown(store)

    async with store.sessions.begin() as session:
        await session.execute(update(InventorySecret).where(
            InventorySecret.app == ok.app, InventorySecret.name == ok.name).values(fly_status="Deployed;'x','y',"))

    await assert_matches_full_read(store)
    assert snapshots_read(store) == read + 1


@pytest.mark.parametrize("name", ["IT'S_KEY", "BACK\\SLASH_KEY"])
async def test_quoted_name_is_updated(store: InventoryStore, database_url: str, name: str) -> None:
    """A changed row is found again by the app and name that its fingerprint text quotes.

    PostgreSQL's quote_nullable writes a string with a backslash as E'...', which the
    update does not parse, so it reads the snapshot in full instead.
    """
    await assert_matches_full_read(store)
    read, updated = snapshots_read(store), snapshots_updated(store)
    ok = await ok_unshown(store)

    async with store.sessions.begin() as session:
        await session.execute(update(InventorySecret).where(
            InventorySecret.app == ok.app, InventorySecret.name == ok.name).values(name=name, fly_status="Staged"))

    await assert_matches_full_read(store)
    assert name in await present_names(store, ok.app)
    if "\\" in name and not database_url.startswith("sqlite"):
        assert (snapshots_read(store), snapshots_updated(store)) == (read + 1, updated)
    else:
        assert (snapshots_read(store), snapshots_updated(store)) == (read, updated + 1)


async def test_write_during_update_is_seen(store: InventoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row that changes between the fingerprint and the update's read, then changes back.

    The update contains the row's newest columns, which no fingerprint read so far describes,
    so the call after the row changes back must not reuse the snapshot.
    """
    await assert_matches_full_read(store)
    cache = store._status_cache
    update_snapshot = cache._update_snapshot
    ok = await ok_unshown(store)
    written = []

    async def set_fly_status(value: str) -> None:
        async with store.sessions.begin() as session:
            await session.execute(update(InventorySecret).where(
                InventorySecret.app == ok.app, InventorySecret.name == ok.name).values(fly_status=value))

    async def write_then_update(*arguments: Any) -> Any:
        if not written:
            await set_fly_status("Staged")
            written.append(ok.name)
        return await update_snapshot(*arguments)

    # A new text that leaves the secret OK, so that the next call updates the snapshot.
    await set_fly_status("deployed")
    monkeypatch.setattr(cache, "_update_snapshot", write_then_update)
    assert await store.status_overview(limit=3) == await full_overview(store, limit=3)
    assert written

    await set_fly_status("deployed")
    await assert_matches_full_read(store)


async def test_run_finishing_is_seen(store: InventoryStore) -> None:
    await assert_matches_full_read(store)
    async with store.sessions.begin() as session:
        await session.execute(update(RunSecret).values(open=None))
        await session.execute(update(Run).values(status="succeeded"))

    await assert_matches_full_read(store)


async def test_shown_column_change_is_seen(store: InventoryStore) -> None:
    """A column that only shows in the line is read with the shown rows, without a new snapshot."""
    app = APPS[0]
    names = await present_names(store, app)
    await store.snooze(app=app, name=names[0], days=2, reason="first reason", actor="U0AAA")
    await assert_matches_full_read(store)
    read = snapshots_read(store)

    async with store.sessions.begin() as session:
        await session.execute(update(InventorySecret).where(
            InventorySecret.app == app, InventorySecret.name == names[0]).values(
            snooze_reason="second reason", snoozed_by="U0CCC"))

    await assert_matches_full_read(store)
    overview = await store.status_overview(limit=10_000)
    snoozed = [status for status in overview.statuses if status.app == app and status.name == names[0]]
    assert [status.snooze_reason for status in snoozed] == ["second reason"]
    assert snapshots_read(store) == read


async def test_write_between_reads_is_seen(store: InventoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that lands after the fingerprint was read and before the shown rows are."""
    await assert_matches_full_read(store)
    cache = store._status_cache
    read_shown = cache._read_shown
    written = []

    most_overdue = (await full_overview(store)).statuses[0]
    assert most_overdue.state is State.OVERDUE
    assert (await full_overview(store)).counts[State.OVERDUE] > 1

    async def write_then_read(shown: list[Any], **arguments: Any) -> Any:
        if not written:
            # The most overdue secret becomes due exactly now: still overdue, but last of them.
            async with store.sessions.begin() as session:
                await session.execute(update(InventorySecret).where(
                    InventorySecret.app == most_overdue.app, InventorySecret.name == most_overdue.name).values(
                    last_rotated_at=NOW - timedelta(days=most_overdue.interval_days)))
            written.append(most_overdue.name)
        return await read_shown(shown, **arguments)

    monkeypatch.setattr(cache, "_read_shown", write_then_read)
    overview = await store.status_overview(limit=STATUS_LINES_MAX)

    assert written
    assert overview == await full_overview(store, limit=STATUS_LINES_MAX)


async def test_policy_change_is_seen(store: InventoryStore) -> None:
    await assert_matches_full_read(store)
    read, updated = snapshots_read(store), snapshots_updated(store)

    store.policy = dataclasses.replace(store.policy, inventory=InventorySettings(default_priority=Priority.HIGH))
    await assert_matches_full_read(store)
    store.policy = dataclasses.replace(store.policy, reminders=ReminderSettings(window_days=60))
    await assert_matches_full_read(store)

    assert snapshots_read(store) == read + 2
    assert snapshots_updated(store) == updated


async def test_second_store_write_is_seen(store: InventoryStore, database_url: str) -> None:
    """Another bot process on the same database: its own engine, sessions and store."""
    await assert_matches_full_read(store)
    before = await full_overview(store)
    overdue = [status for status in before.statuses[3:] if status.state is State.OVERDUE][-1]
    ok = [status for status in before.statuses[3:] if status.state is State.OK][-1]
    other_engine = create_engine(normalize_database_url(database_url))
    try:
        other = InventoryStore(sessions=create_session_factory(other_engine), policy=store.policy,
                               clock=store.clock)
        await other.snooze(app=overdue.app, name=overdue.name, days=5, reason=None, actor="U0BBB")
        await other.record_date(app=ok.app, name=ok.name, rotated_at=NOW - timedelta(days=400), actor="U0BBB")
    finally:
        await other_engine.dispose()

    await assert_matches_full_read(store)
    assert (await full_overview(store)).counts != before.counts


async def test_truncated_reply_matches(store: InventoryStore) -> None:
    """Enough secrets that the reply ends with the count of those left out."""
    async with store.sessions.begin() as session:
        session.add_all(bulk_rows(400))

    expected = await full_overview(store)
    text, blocks = status_overview_message(await store.status_overview(limit=STATUS_LINES_MAX), app=None)

    assert (text, blocks) == status_message(expected.statuses, app=None)
    assert "more (" in blocks[-1]["elements"][0]["text"]


def test_shortest_status_line_fits_limit() -> None:
    """STATUS_LINES_MAX assumes that no status line is shorter than MIN_STATUS_LINE_LENGTH."""
    assessor = Assessor(builtin_policy(), NOW)
    lengths = {}
    for index, row in enumerate(random_rows(seed=3)):
        status = assessor.assess(row, "r" if index % 5 == 0 else None)
        # The shortest app, name and run ID that could occur, and no snooze details.
        short = dataclasses.replace(status, app="a", name="N", snoozed_by=None, snooze_reason=None,
                                    open_run_id="r" if status.open_run_id else None)
        lengths[short.state] = min(lengths.get(short.state, 10_000), len(status_line(short)))

    assert set(lengths) == set(State)
    assert min(lengths.values()) >= MIN_STATUS_LINE_LENGTH
