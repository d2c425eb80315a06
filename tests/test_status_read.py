"""InventoryStore.statuses reads Core rows and builds statuses without the dataclass's
__init__, and must return exactly what assess returns for the ORM rows, on both databases."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.inventory import SecretStatus, State, assess
from bot.inventory.schedule import Assessor
from bot.inventory.store import InventoryStore
from bot.policy import InventorySettings, Priority, builtin_policy
from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import InventorySecret, Run, RunSecret

NOW = datetime(2026, 6, 15, 9, 30, 12, 345678, tzinfo=UTC)
APPS = ("hotel-voice-bot", "hotel-worker")
# Rows on more apps than the policy lists, so that every state occurs among them.
ROW_APPS = (*APPS, *(f"hotel-extra-{index}" for index in range(6)))
# Names the built-in policy configures (three priorities) and names it does not.
NAMES = ("JWT_SECRET", "OPENAI_API_KEY", "WAHA_TOKEN", "STRIPE_KEY", "LEGACY_TOKEN", "SENTRY_DSN")


class FixedClock:
    def now(self) -> datetime:
        return NOW


def random_rows(seed: int) -> list[InventorySecret]:
    """Rows in every state: ages around each due date, snoozes, staged and outside changes, chosen policies."""
    generator = random.Random(seed)

    def moment(days: float) -> datetime:
        return NOW - timedelta(days=days, microseconds=generator.randrange(1_000_000))

    rows = []
    for app in ROW_APPS:
        for name in NAMES:
            rows.append(InventorySecret(
                app=app, name=name, digest=f"d-{generator.random()}",
                fly_status=generator.choice(["Deployed", "Staged", "staged", None]),
                first_seen_at=moment(generator.uniform(0, 400)), last_seen_at=NOW,
                removed_at=moment(1) if generator.random() < 0.1 else None,
                last_rotated_at=moment(generator.choice([1, 25, 29.5, 30, 85, 179, 200])) if generator.random() < 0.8
                else None,
                rotation_source=generator.choice(["unknown", "secretbot", "outside", "operator"]),
                last_run_id=generator.choice([None, "run00000001"]),
                changed_outside_at=moment(3) if generator.random() < 0.3 else None,
                snoozed_until=NOW + timedelta(days=generator.choice([-1, 2])) if generator.random() < 0.3 else None,
                snoozed_by="U0AAA" if generator.random() < 0.3 else None,
                snooze_reason="waiting on the vendor" if generator.random() < 0.2 else None,
                priority=generator.choice([None, "high", "low", "urgent"]),
                value_source=generator.choice([None, "generated", "provider"])))
    return rows


async def filled_store(engine: AsyncEngine, rows: list[InventorySecret]) -> InventoryStore:
    await migrate(engine)
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        session.add_all(rows)
        session.add(Run(id="run00000002", kind="rotate", app=APPS[0], requester="U0AAA", status="running"))
        await session.flush()
        session.add(RunSecret(run_id="run00000002", position=0, app=APPS[0], name="WAHA_TOKEN"))
    policy = dataclasses.replace(builtin_policy(), inventory=InventorySettings(default_priority=Priority.MEDIUM))
    policy = dataclasses.replace(policy, fly=dataclasses.replace(policy.fly, apps=(APPS[0],)))
    return InventoryStore(sessions=sessions, policy=policy, clock=FixedClock())


async def reference_statuses(store: InventoryStore) -> list[SecretStatus]:
    """Assess the ORM rows one at a time, as the inventory store did before it read Core rows."""
    async with store.sessions() as session:
        rows = list(await session.scalars(select(InventorySecret).where(InventorySecret.removed_at.is_(None))
                                          .order_by(InventorySecret.app, InventorySecret.name)))
        open_runs = {(secret.app, secret.name): secret.run_id
                     for secret in await session.scalars(select(RunSecret).where(RunSecret.open.is_(True)))}
    return [assess(row, policy=store.policy, now=NOW, open_run_id=open_runs.get((row.app, row.name)))
            for row in rows]


async def check_statuses_match(url: str) -> None:
    engine = create_engine(normalize_database_url(url))
    try:
        store = await filled_store(engine, random_rows(seed=7))
        expected = await reference_statuses(store)
        read = await store.statuses()
        by_app = await store.statuses(app=APPS[1])
    finally:
        await engine.dispose()

    assert read == expected
    assert [dataclasses.asdict(status) for status in read] == [dataclasses.asdict(status) for status in expected]
    assert by_app == [status for status in expected if status.app == APPS[1]]
    assert {status.state for status in read} == set(State)
    assert all(status.first_seen_at.tzinfo is UTC for status in read)


async def test_statuses_match_assess_sqlite(tmp_path: Path) -> None:
    await check_statuses_match(f"sqlite:///{tmp_path}/bot.db")


async def test_statuses_match_assess_postgres(postgres_url: str) -> None:
    await check_statuses_match(postgres_url)


def test_assessor_sets_every_field() -> None:
    row = random_rows(seed=1)[0]
    status = Assessor(builtin_policy(), NOW).assess(row, "run00000003")
    fields = {field.name for field in dataclasses.fields(SecretStatus)}
    assert set(vars(status)) == fields
    assert status == SecretStatus(**{name: getattr(status, name) for name in fields})


def test_built_status_is_frozen() -> None:
    status = Assessor(builtin_policy(), NOW).assess(random_rows(seed=2)[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.name = "OTHER"  # type: ignore[misc]
    assert hash(status) == hash(SecretStatus(**vars(status)))
