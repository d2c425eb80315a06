"""The inventory sync against the real flyctl stand-in and real SQLite and PostgreSQL databases.

A `ManualClock` fixes the time each sync notices things at. Wrapper scripts around the
stand-in add what it cannot do itself: a JSON shape no flyctl printed, and a slow call
that writes its start and end times so overlapping calls can be counted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import audit
from bot.flyctl import FlyctlClient
from bot.inventory import InventoryStore, InventorySync, State
from bot.policy import FlySettings, InventorySettings, Policy, builtin_policy
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import AuditRecord, InventorySecret, Run, RunSecret
from tests.botprocess import DEFAULT_CONFIG, SIGNING_SECRET, BotProcess
from tests.conftest import APPROVER, REQUESTER
from tests.flow import CHANNEL, query, wait_for_buttons, wait_for_parent, wait_for_status
from tests.standins.fly_state import STANDIN_PATH, FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

APP = "hotel-voice-bot"
STAGING = "hotel-staging"
ODD_APP = "odd-app"
TOKEN = "FlyV1 fm2_test-token-not-real"
START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
VALUES = {
    "JWT_SECRET": "old-jwt-secret-value",
    "ENCRYPTION_KEY": "00" * 32,
    "OPENAI_API_KEY": "sk-old-openai-key",
}


class ManualClock:
    """A clock that does not move until the test advances it."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


@dataclass
class Harness:
    fly: FlyState
    sessions: async_sessionmaker[AsyncSession]
    clock: ManualClock
    tmp_path: Path
    log_path: Path

    def client(self, executable: Path = STANDIN_PATH) -> FlyctlClient:
        return FlyctlClient(
            str(executable),
            api_token=TOKEN,
            work_dir=self.tmp_path / "work",
            config_dir=self.tmp_path / "home" / ".fly",
            command_timeout=30.0,
            extra_env=self.fly.env(log_path=self.log_path),
            kill_grace=2.0,
        )

    def sync(self, apps: tuple[str, ...] = (APP, STAGING), *, concurrency: int = 8,
             executable: Path = STANDIN_PATH, interval: float = 0.0,
             sessions: async_sessionmaker[AsyncSession] | None = None) -> InventorySync:
        return InventorySync(flyctl=self.client(executable), sessions=sessions or self.sessions,
                             policy=make_policy(apps, concurrency=concurrency, interval=interval), clock=self.clock)

    def store(self) -> InventoryStore:
        return InventoryStore(sessions=self.sessions, policy=make_policy((APP, STAGING)), clock=self.clock)

    async def rows(self, app: str = APP) -> dict[str, InventorySecret]:
        async with self.sessions() as session:
            found = await session.scalars(select(InventorySecret).where(InventorySecret.app == app))
            return {row.name: row for row in found}

    async def records(self, event: str) -> list[AuditRecord]:
        async with self.sessions() as session:
            found = await session.scalars(select(AuditRecord).where(AuditRecord.event == event)
                                          .order_by(AuditRecord.id))
            return list(found)

    async def add_run(self, run_id: str, name: str, *, open_run: bool, digest_after: str | None = None) -> None:
        async with self.sessions.begin() as session:
            session.add(Run(id=run_id, kind="rotate", app=APP, requester="U0AAA",
                            status="running" if open_run else "succeeded"))
            await session.flush()
            session.add(RunSecret(run_id=run_id, position=0, app=APP, name=name, digest_after=digest_after))
            await session.flush()
            if not open_run:
                # The engine closes a run this way. A None given to the insert gets the column's default, True.
                await session.execute(update(RunSecret).where(RunSecret.run_id == run_id).values(open=None))

    def unset(self, app: str, name: str) -> None:
        """Remove a secret the way a person would: `flyctl secrets unset` through the stand-in."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FLY_API_TOKEN": TOKEN,
               "HOME": str(self.tmp_path / "home"), **self.fly.env()}
        subprocess.run([sys.executable, str(STANDIN_PATH), "secrets", "unset", "--app", app, name],
                       env=env, cwd=self.tmp_path, check=True, capture_output=True, timeout=60)


def make_policy(apps: tuple[str, ...], *, concurrency: int = 8, interval: float = 0.0) -> Policy:
    return replace(builtin_policy(), fly=FlySettings(apps=apps, command_timeout=30.0),
                   inventory=InventorySettings(sync_interval=interval, sync_concurrency=concurrency))


def new_fly(tmp_path: Path, apps: tuple[str, ...] = (APP, STAGING)) -> FlyState:
    fly = FlyState(tmp_path / "fly-state.json")
    for app in apps:
        fly.add_app(app, machines=2)
    for name, value in VALUES.items():
        fly.set_secret(APP, name, value)
    if STAGING in apps:
        fly.set_secret(STAGING, "JWT_SECRET", "staging-jwt-secret")
    return fly


async def open_database(url: str) -> AsyncEngine:
    engine = create_engine(url)
    await migrate(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite+aiosqlite:///" + str(tmp_path / "inventory.db")
    # Synchronous, because postgres_url runs its own event loop to create the database.
    return normalize_database_url(request.getfixturevalue("postgres_url"))


async def make_harness(tmp_path: Path, url: str) -> AsyncIterator[Harness]:
    engine = await open_database(url)
    try:
        yield Harness(fly=new_fly(tmp_path), sessions=create_session_factory(engine), clock=ManualClock(START),
                      tmp_path=tmp_path, log_path=tmp_path / "flyctl-calls.jsonl")
    finally:
        await engine.dispose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async for value in make_harness(tmp_path, "sqlite+aiosqlite:///" + str(tmp_path / "inventory.db")):
        yield value


@pytest.fixture
async def any_harness(tmp_path: Path, any_database_url: str) -> AsyncIterator[Harness]:
    async for value in make_harness(tmp_path, any_database_url):
        yield value


def write_odd_flyctl(directory: Path, *, switch: Path) -> Path:
    """Write a flyctl that prints an unknown `secrets list` shape for ODD_APP while `switch` exists."""
    wrapper = directory / "odd-flyctl"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if [ -e '{switch}' ] && [ \"$1 $2 $4\" = 'secrets list {ODD_APP}' ]; then\n"
        "  printf '[{\"key\": \"JWT_SECRET\", \"hash\": \"0f1e2d\"}]'\n"
        "  exit 0\n"
        "fi\n"
        f"exec '{sys.executable}' '{STANDIN_PATH}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def write_slow_flyctl(directory: Path, *, timing: Path, seconds: float) -> Path:
    """Write a flyctl that takes `seconds` longer and appends its start and end times to `timing`."""
    wrapper = directory / "slow-flyctl"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo \"start $(date +%s.%N)\" >> '{timing}'\n"
        f"sleep {seconds}\n"
        f"'{sys.executable}' '{STANDIN_PATH}' \"$@\"\n"
        "status=$?\n"
        f"echo \"end $(date +%s.%N)\" >> '{timing}'\n"
        "exit $status\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def max_overlap(timing: Path) -> int:
    events = []
    for line in timing.read_text().splitlines():
        kind, stamp = line.split()
        # At equal times an end sorts before a start, so touching calls do not count as overlapping.
        events.append((float(stamp), 0 if kind == "end" else 1))
    running = highest = 0
    for _stamp, is_start in sorted(events):
        running += 1 if is_start else -1
        highest = max(highest, running)
    return highest


# --- first and repeated syncs -------------------------------------------------------------


async def test_first_sync_records_every_secret(harness: Harness) -> None:
    [result, staging] = await harness.sync().sync_all()
    rows = await harness.rows()

    assert result.ok
    assert staging.ok
    assert result.appeared == tuple(sorted(VALUES))
    assert result.secrets == len(VALUES)
    assert sorted(rows) == sorted(VALUES)
    for name, row in rows.items():
        assert row.digest == harness.fly.secret_digest(APP, name), name
        assert row.fly_status == "Deployed", name
        assert row.first_seen_at == START, name
        assert row.last_seen_at == START, name
        assert row.last_rotated_at is None, name
        assert row.rotation_source == "unknown", name
        assert row.removed_at is None, name


async def test_first_sync_one_summary_record(harness: Harness) -> None:
    await harness.sync().sync_all()
    records = await harness.records("inventory.appeared")
    mine = [record for record in records if record.app == APP]

    assert len(mine) == 1
    assert mine[0].secret is None
    detail = mine[0].detail_fields()
    assert detail["first_sync"] is True
    assert detail["count"] == len(VALUES)
    assert detail["digests"] == {name: harness.fly.secret_digest(APP, name) for name in VALUES}
    assert len([record for record in records if record.app == STAGING]) == 1
    for value in VALUES.values():
        assert value not in mine[0].detail


async def test_new_secret_due_from_first_seen(harness: Harness) -> None:
    await harness.sync().sync_all()
    statuses = {status.name: status for status in await harness.store().statuses(app=APP)}

    assert statuses["JWT_SECRET"].due_at == START + timedelta(days=30)
    assert statuses["OPENAI_API_KEY"].due_at == START + timedelta(days=90)


async def test_second_sync_changes_nothing(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    before = await audit.verify_chain(harness.sessions)
    later = harness.clock.advance(hours=1)

    result = (await sync.sync_all())[0]
    rows = await harness.rows()

    assert result.ok
    assert result.appeared == ()
    assert result.removed == ()
    assert result.changed_outside == ()
    assert await audit.verify_chain(harness.sessions) == before
    assert {row.last_seen_at for row in rows.values()} == {later}
    assert {row.first_seen_at for row in rows.values()} == {START}
    assert {row.last_rotated_at for row in rows.values()} == {None}


# --- digest changes -------------------------------------------------------------------------


async def test_outside_change_counts_as_rotation(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    noticed = harness.clock.advance(days=10)
    harness.fly.set_secret(APP, "JWT_SECRET", "value-set-from-a-laptop")

    result = (await sync.sync_all())[0]
    row = (await harness.rows())["JWT_SECRET"]
    status = {status.name: status for status in await harness.store().statuses(app=APP)}["JWT_SECRET"]

    assert result.changed_outside == ("JWT_SECRET",)
    assert row.digest == harness.fly.secret_digest(APP, "JWT_SECRET")
    assert row.rotation_source == "outside"
    assert row.changed_outside_at == noticed
    assert row.last_rotated_at == noticed
    assert status.due_at == noticed + timedelta(days=30)
    assert status.state is State.CHANGED_OUTSIDE


async def test_outside_change_audited_with_digests(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    old_digest = harness.fly.secret_digest(APP, "JWT_SECRET")
    noticed = harness.clock.advance(days=10)
    harness.fly.set_secret(APP, "JWT_SECRET", "value-set-from-a-laptop")

    await sync.sync_all()
    records = await harness.records("inventory.changed_outside")

    assert len(records) == 1
    assert records[0].app == APP
    assert records[0].secret == "JWT_SECRET"
    assert records[0].detail_fields() == {
        "digest_before": old_digest,
        "digest_after": harness.fly.secret_digest(APP, "JWT_SECRET"),
        "noticed_at": noticed.isoformat(),
    }
    assert "value-set-from-a-laptop" not in records[0].detail
    assert await audit.verify_chain(harness.sessions) == (3, None)


async def test_outside_change_clears_snooze(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    await harness.store().snooze(app=APP, name="JWT_SECRET", days=7, reason="waiting for vendor", actor="U0AAA")
    harness.clock.advance(days=1)
    harness.fly.set_secret(APP, "JWT_SECRET", "value-set-from-a-laptop")

    await sync.sync_all()
    row = (await harness.rows())["JWT_SECRET"]

    assert row.snoozed_until is None
    assert row.snooze_reason is None


async def test_open_run_change_left_to_run(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    old_digest = harness.fly.secret_digest(APP, "JWT_SECRET")
    await harness.add_run("run0001", "JWT_SECRET", open_run=True)
    harness.clock.advance(days=3)
    harness.fly.set_secret(APP, "JWT_SECRET", "value-from-the-run")

    result = (await sync.sync_all())[0]
    row = (await harness.rows())["JWT_SECRET"]

    assert result.ok
    assert result.changed_outside == ()
    assert await harness.records("inventory.changed_outside") == []
    assert row.digest == old_digest
    assert row.rotation_source == "unknown"


async def test_run_rotation_then_sync_not_outside(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    await harness.add_run("run0001", "JWT_SECRET", open_run=True)
    rotated = harness.clock.advance(days=3)
    harness.fly.set_secret(APP, "JWT_SECRET", "value-from-the-run")
    await sync.sync_all()
    new_digest = harness.fly.secret_digest(APP, "JWT_SECRET")
    # What the verify step does after it reads the new digest.
    await harness.store().record_rotation(app=APP, digests={"JWT_SECRET": new_digest}, run_id="run0001")
    harness.clock.advance(hours=1)

    result = (await sync.sync_all())[0]
    row = (await harness.rows())["JWT_SECRET"]

    assert result.changed_outside == ()
    assert row.digest == new_digest
    assert row.rotation_source == "secretbot"
    assert row.last_run_id == "run0001"
    assert row.last_rotated_at == rotated


async def test_finished_run_digest_not_outside(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    harness.fly.set_secret(APP, "JWT_SECRET", "value-from-the-run")
    # The run finished with its digest recorded, but its inventory write never happened.
    await harness.add_run("run0002", "JWT_SECRET", open_run=False,
                          digest_after=harness.fly.secret_digest(APP, "JWT_SECRET"))
    noticed = harness.clock.advance(days=2)

    result = (await sync.sync_all())[0]
    row = (await harness.rows())["JWT_SECRET"]

    assert result.changed_outside == ()
    assert await harness.records("inventory.changed_outside") == []
    assert row.digest == harness.fly.secret_digest(APP, "JWT_SECRET")
    assert row.rotation_source == "secretbot"
    assert row.last_run_id == "run0002"
    assert row.last_rotated_at == noticed


async def test_other_app_run_does_not_cover(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    # The open run is for JWT_SECRET on APP, so a change of the same name on STAGING is an outside change.
    await harness.add_run("run0003", "JWT_SECRET", open_run=True)
    harness.fly.set_secret(STAGING, "JWT_SECRET", "staging-value-from-a-laptop")

    results = await sync.sync_all()

    assert results[1].app == STAGING
    assert results[1].changed_outside == ("JWT_SECRET",)


# --- appearances, removals, staged ----------------------------------------------------------


async def test_removal_and_return(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    removed_at = harness.clock.advance(days=1)
    harness.unset(APP, "OPENAI_API_KEY")

    removal = (await sync.sync_all())[0]
    row = (await harness.rows())["OPENAI_API_KEY"]
    listed = [status.name for status in await harness.store().statuses(app=APP)]

    assert removal.removed == ("OPENAI_API_KEY",)
    assert row.removed_at == removed_at
    assert "OPENAI_API_KEY" not in listed
    removals = await harness.records("inventory.removed")
    assert [(record.app, record.secret) for record in removals] == [(APP, "OPENAI_API_KEY")]

    harness.clock.advance(days=1)
    harness.fly.set_secret(APP, "OPENAI_API_KEY", VALUES["OPENAI_API_KEY"])
    comeback = (await sync.sync_all())[0]
    row = (await harness.rows())["OPENAI_API_KEY"]

    assert comeback.appeared == ("OPENAI_API_KEY",)
    assert comeback.removed == ()
    assert row.removed_at is None
    assert row.first_seen_at == START
    appeared = [record for record in await harness.records("inventory.appeared") if record.secret is not None]
    assert len(appeared) == 1
    assert appeared[0].detail_fields()["returned"] is True
    assert appeared[0].detail_fields()["removed_at"] == removed_at.isoformat()


async def test_removal_recorded_once(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    harness.unset(APP, "OPENAI_API_KEY")
    await sync.sync_all()
    harness.clock.advance(days=1)

    result = (await sync.sync_all())[0]

    assert result.removed == ()
    assert len(await harness.records("inventory.removed")) == 1


async def test_later_appearance_one_record_each(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    seen = harness.clock.advance(days=1)
    harness.fly.set_secret(APP, "WAHA_TOKEN", "waha-token")
    harness.fly.set_secret(APP, "WAHA_API_KEY", "waha-api-key")

    result = (await sync.sync_all())[0]
    rows = await harness.rows()
    records = [record for record in await harness.records("inventory.appeared") if record.secret is not None]

    assert result.appeared == ("WAHA_API_KEY", "WAHA_TOKEN")
    assert [record.secret for record in records] == ["WAHA_API_KEY", "WAHA_TOKEN"]
    assert rows["WAHA_TOKEN"].first_seen_at == seen
    assert rows["WAHA_TOKEN"].last_rotated_at is None


async def test_staged_secret_flagged(harness: Harness) -> None:
    harness.fly.set_secret(APP, "WAHA_TOKEN", "waha-token", deployed=False)

    result = (await harness.sync().sync_all())[0]
    row = (await harness.rows())["WAHA_TOKEN"]
    status = {status.name: status for status in await harness.store().statuses(app=APP)}["WAHA_TOKEN"]

    assert result.staged == ("WAHA_TOKEN",)
    assert row.fly_status == "Staged"
    assert status.state is State.STAGED


@pytest.mark.parametrize("list_format", ["current", "v0.3", "legacy"])
async def test_every_list_format(harness: Harness, list_format: str) -> None:
    harness.fly.set_list_format(APP, list_format)

    result = (await harness.sync().sync_all())[0]
    rows = await harness.rows()

    assert result.ok
    assert {name: row.digest for name, row in rows.items()} == {
        name: harness.fly.secret_digest(APP, name) for name in VALUES
    }
    expected_status = "Deployed" if list_format == "current" else None
    assert {row.fly_status for row in rows.values()} == {expected_status}


async def test_list_format_change_not_outside(harness: Harness) -> None:
    sync = harness.sync()
    await sync.sync_all()
    harness.fly.set_list_format(APP, "legacy")

    result = (await sync.sync_all())[0]

    assert result.ok
    assert result.changed_outside == ()
    assert result.appeared == ()


# --- failures -------------------------------------------------------------------------------


async def test_unknown_shape_fails_naming_app(harness: Harness) -> None:
    harness.fly.add_app(ODD_APP)
    harness.fly.set_secret(ODD_APP, "JWT_SECRET", "odd-secret-value")
    switch = harness.tmp_path / "odd-shape-on"
    sync = harness.sync((APP, ODD_APP, STAGING), executable=write_odd_flyctl(harness.tmp_path, switch=switch))
    await sync.sync_all()
    switch.touch()
    harness.clock.advance(days=1)
    harness.fly.set_secret(APP, "JWT_SECRET", "changed-while-odd-app-fails")

    results = {result.app: result for result in await sync.sync_all()}
    odd_rows = await harness.rows(ODD_APP)

    error = results[ODD_APP].error or ""
    assert f"for app {ODD_APP}" in error
    assert "expected name and digest" in error
    assert results[APP].ok
    assert results[APP].changed_outside == ("JWT_SECRET",)
    assert results[STAGING].ok
    assert odd_rows["JWT_SECRET"].removed_at is None
    assert odd_rows["JWT_SECRET"].last_seen_at == START
    assert await harness.records("inventory.removed") == []


@pytest.mark.parametrize(("failure", "message"), [
    ("garbage_json", "is not JSON"),
    ("app_not_found", "not found"),
    ("panic", "exited with code 3"),
])
async def test_flyctl_failure_keeps_rows(harness: Harness, failure: str, message: str) -> None:
    sync = harness.sync()
    await sync.sync_all()
    harness.fly.inject(APP, "secrets list", failure)
    harness.clock.advance(days=1)

    results = await sync.sync_all()
    rows = await harness.rows()

    assert results[0].error is not None
    assert APP in results[0].error
    assert message in results[0].error
    assert results[1].ok
    assert {row.removed_at for row in rows.values()} == {None}
    assert {row.last_seen_at for row in rows.values()} == {START}


# --- concurrency ----------------------------------------------------------------------------


async def test_flyctl_calls_bounded(harness: Harness) -> None:
    apps = tuple(f"app-{index}" for index in range(6))
    for app in apps:
        harness.fly.add_app(app)
        harness.fly.set_secret(app, "JWT_SECRET", f"value-of-{app}")
    timing = harness.tmp_path / "timing.txt"
    sync = harness.sync(apps, concurrency=2,
                        executable=write_slow_flyctl(harness.tmp_path, timing=timing, seconds=0.4))

    results = await sync.sync_all()

    assert [result.ok for result in results] == [True] * len(apps)
    assert max_overlap(timing) == 2


async def test_apps_synced_at_once(harness: Harness) -> None:
    apps = tuple(f"app-{index}" for index in range(8))
    for app in apps:
        harness.fly.add_app(app)
        harness.fly.set_secret(app, "JWT_SECRET", f"value-of-{app}")
    timing = harness.tmp_path / "timing.txt"
    sync = harness.sync(apps, concurrency=8,
                        executable=write_slow_flyctl(harness.tmp_path, timing=timing, seconds=1.0))

    results = await sync.sync_all()

    assert [result.ok for result in results] == [True] * len(apps)
    # Each call sleeps 1 s before the stand-in starts, so eight calls started at once overlap.
    assert max_overlap(timing) >= 6


# --- both databases -------------------------------------------------------------------------


async def test_sync_on_each_database(any_harness: Harness) -> None:
    sync = any_harness.sync()
    first = (await sync.sync_all())[0]
    noticed = any_harness.clock.advance(days=5)
    any_harness.fly.set_secret(APP, "ENCRYPTION_KEY", "11" * 32)

    second = (await sync.sync_all())[0]
    row = (await any_harness.rows())["ENCRYPTION_KEY"]

    assert first.appeared == tuple(sorted(VALUES))
    assert second.changed_outside == ("ENCRYPTION_KEY",)
    assert row.changed_outside_at == noticed
    assert row.rotation_source == "outside"
    assert len(await any_harness.records("inventory.changed_outside")) == 1


async def test_concurrent_syncs_do_not_fail(any_harness: Harness, any_database_url: str) -> None:
    apps = tuple(f"app-{index}" for index in range(4))
    for app in apps:
        any_harness.fly.add_app(app)
        for name in VALUES:
            any_harness.fly.set_secret(app, name, f"{name}-of-{app}")
    # A second engine is a second connection pool, as a second bot process would have.
    other_engine = await open_database(any_database_url)
    try:
        first = any_harness.sync(apps)
        second = any_harness.sync(apps, sessions=create_session_factory(other_engine))

        results = await asyncio.gather(first.sync_all(), second.sync_all())
    finally:
        await other_engine.dispose()

    assert [result.error for batch in results for result in batch] == [None] * (2 * len(apps))
    for app in apps:
        assert sorted(await any_harness.rows(app)) == sorted(VALUES), app
    summaries = await any_harness.records("inventory.appeared")
    assert sorted(record.app for record in summaries if record.app is not None) == sorted(apps)
    assert (await audit.verify_chain(any_harness.sessions))[1] is None


# --- the periodic loop ----------------------------------------------------------------------


def list_calls(log_path: Path) -> list[str]:
    return [call["argv"][3] for call in FlyState.invocations(log_path) if call["argv"][:2] == ["secrets", "list"]]


async def test_periodic_sync_repeats_until_stopped(harness: Harness) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(harness.sync(interval=0.2).run_periodic(stop))

    deadline = asyncio.get_running_loop().time() + 30
    while list_calls(harness.log_path).count(APP) < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=30)

    assert list_calls(harness.log_path).count(APP) >= 3
    assert task.done()


async def test_zero_interval_syncs_once(harness: Harness) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(harness.sync(interval=0).run_periodic(stop))

    deadline = asyncio.get_running_loop().time() + 30
    while len(await harness.rows(STAGING)) == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    assert sorted(list_calls(harness.log_path)) == sorted([APP, STAGING])


# --- through the real process ---------------------------------------------------------------


def synced_count(bot: BotProcess, app: str) -> int:
    return bot.log().count(f"inventory synced app={app} ")


async def test_serve_syncs_and_rotation_is_secretbots(
    bot_dir: Path, slack: SlackStandin, fly: FlyState, flyctl_wrapper: Path
) -> None:
    # A short interval makes syncs run while the rotation is in progress, too.
    config = DEFAULT_CONFIG + "\n[inventory]\nsync_interval = 0.3\n"
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=config)
    await process.start()
    try:
        async def synced() -> bool:
            return len(query(process.database, "SELECT name FROM inventory")) == 5

        await slack.wait_for(synced, timeout=30, description="start-up sync filled the inventory")
        before = {row["name"]: dict(row) for row in
                  query(process.database, "SELECT * FROM inventory WHERE app = ?", APP)}

        fly.set_delay(0.3)
        driver = SlackDriver(bot_url=process.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
        parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
        await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await wait_for_status(slack, parent, "done", timeout=60)

        # Two more syncs of the app, so at least one started after the run finished.
        done_count = synced_count(process, APP)

        async def synced_after() -> bool:
            return synced_count(process, APP) >= done_count + 2

        await slack.wait_for(synced_after, timeout=30, description="syncs after the rotation")
    finally:
        await process.stop_async()

    assert sorted(before) == sorted(["JWT_SECRET", "ENCRYPTION_KEY", "WAHA_WEBHOOK_TOKEN", "OPENAI_API_KEY"])
    assert before["JWT_SECRET"]["last_rotated_at"] is None
    assert before["JWT_SECRET"]["rotation_source"] == "unknown"
    [run] = query(process.database, "SELECT id FROM runs")
    [row] = query(process.database, "SELECT * FROM inventory WHERE app = ? AND name = 'JWT_SECRET'", APP)
    assert row["digest"] == fly.secret_digest(APP, "JWT_SECRET")
    assert row["digest"] != before["JWT_SECRET"]["digest"]
    assert row["rotation_source"] == "secretbot"
    assert row["last_run_id"] == run["id"]
    assert row["last_rotated_at"] is not None
    assert row["changed_outside_at"] is None
    assert query(process.database, "SELECT * FROM audit_log WHERE event = 'inventory.changed_outside'") == []


async def test_sync_command_prints_each_app(tmp_path: Path, fly: FlyState, flyctl_wrapper: Path) -> None:
    database = tmp_path / "cli.db"
    engine = await open_database(f"sqlite+aiosqlite:///{database}")
    await engine.dispose()
    (tmp_path / "secretbot.toml").write_text(DEFAULT_CONFIG)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "FLYCTL": str(flyctl_wrapper),
        "FLY_API_TOKEN": TOKEN,
        "SECRETBOT_CONFIG": str(tmp_path / "secretbot.toml"),
    }
    command = [str(Path(sys.executable).parent / "secretbot"), "sync"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False)

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"{APP}: 4 secrets, 4 appeared, 0 removed, 0 changed outside secretbot, 0 staged",
        "hotel-staging: 1 secrets, 1 appeared, 0 removed, 0 changed outside secretbot, 0 staged",
    ]
    assert len(query(database, "SELECT * FROM inventory")) == 5

    fly.inject(APP, "secrets list", "garbage_json")
    failed = run()
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[0].startswith(f"{APP}: sync failed: flyctl secrets list --json for app {APP}")
    assert failed.stdout.splitlines()[1].startswith("hotel-staging: 1 secrets, 0 appeared")

    single = run("--app", "hotel-staging")
    assert single.returncode == 0, single.stderr
    assert [line.split(":")[0] for line in single.stdout.splitlines()] == ["hotel-staging"]

    unknown = run("--app", "not-configured")
    assert unknown.returncode == 2
    assert "app not-configured is not configured" in unknown.stderr
