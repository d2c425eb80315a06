"""Scale: the inventory sync, the daily reminder, `/secret status` and `/secret history`, in-process.

Each measurement calls the functions the bot's listeners and scheduler call
(InventorySync.sync_all, read_reminder and reminder_messages, InventoryStore.status_overview
with status_overview_message, secret_history with history_message) on a SQLite database,
the default DATABASE_URL. The inventory is filled by a real sync through the flyctl
stand-in, wrapped so that every flyctl call takes `flyctl_delay` seconds longer.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.environment import Fleet, World, policy_text
from bot.audit import GENESIS_HASH, AuditEntry, record_hash
from bot.config import load_policy
from bot.flyctl import FlyctlClient
from bot.inventory import InventorySync
from bot.inventory.store import InventoryStore
from bot.overview import secret_history
from bot.reminders.scheduler import read_reminder
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import AuditRecord, InventorySecret
from handlers.reminder_views import reminder_messages
from handlers.status_views import STATUS_LINES_MAX, history_message, status_overview_message
from tests.botprocess import FLY_TOKEN

# Each query is timed this many times and the median is reported, after one warm-up call.
REPEATS = 7
# Rotation ages are spread over this many days, so that secrets of every priority are overdue, due soon and fine.
AGE_SPREAD_DAYS = 400


@dataclass(frozen=True)
class QueryTimes:
    """Median times of the status and history replies with `audit_records` records in the audit log.

    `status_ms` is a reply while the inventory is unchanged, which reuses the status
    snapshot. `status_after_change_ms` is the first reply after one secret changed, which
    reads a new snapshot.
    """

    audit_records: int
    status_ms: float
    status_after_change_ms: float
    history_ms: float


@dataclass(frozen=True)
class ScalePoint:
    """Timings at one inventory size: the syncs in seconds, the rest in milliseconds."""

    apps: int
    secrets: int
    # The first sync records every secret as new, with an audit record each; the second finds no change.
    first_sync_s: float
    second_sync_s: float
    sync_failed_apps: int
    reminder_ms: float
    reminder_items: int
    queries: list[QueryTimes]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slow_flyctl(world: World, delay: float) -> Path:
    """Write a wrapper that makes each flyctl stand-in call last at least `delay` seconds in total.

    The wrapper sleeps for what is left of `delay` after the stand-in exits, because a real
    flyctl call spends its second waiting on the network, not running Python as the stand-in does.
    """
    wrapper = world.root / "bin" / "flyctl-slow"
    wrapper.write_text(
        "#!/bin/bash\n"
        "started=$EPOCHREALTIME\n"
        f"'{world.flyctl}' \"$@\"\n"
        "code=$?\n"
        f"left=$(awk -v s=\"$started\" -v n=\"$EPOCHREALTIME\" 'BEGIN {{ r = {delay} - (n - s); "
        "printf \"%.3f\", (r > 0 ? r : 0) }')\n"
        "sleep \"$left\"\n"
        "exit $code\n"
    )
    wrapper.chmod(0o755)
    return wrapper


async def median_ms(call: Callable[[], Awaitable[object]],
                    prepare: Callable[[], Awaitable[object]] | None = None) -> float:
    """Return the median time of REPEATS calls after one warm-up call; `prepare` runs untimed before each."""
    await call()
    samples = []
    for _ in range(REPEATS):
        if prepare is not None:
            await prepare()
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


async def age_inventory(sessions: async_sessionmaker[AsyncSession], *, seed: int) -> None:
    """Give every secret a last rotation between 0 and AGE_SPREAD_DAYS days ago, the same for each run."""
    generator = random.Random(seed)
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        ids = list(await session.scalars(select(InventorySecret.id).order_by(InventorySecret.id)))
        # An UPDATE by primary key for each row, sent as one executemany.
        await session.execute(update(InventorySecret), [
            {"id": row_id, "last_rotated_at": now - timedelta(days=generator.uniform(0, AGE_SPREAD_DAYS)),
             "rotation_source": "operator"}
            for row_id in ids])


async def fill_audit_log(sessions: async_sessionmaker[AsyncSession], fleet: Fleet, *, records: int) -> None:
    """Append `records` hash-chained audit records spread over the fleet's secrets.

    The chain is computed with the same record_hash as bot.audit, but inserted in bulk,
    because appending one record per transaction would take minutes at this size.
    """
    async with sessions.begin() as session:
        last = await session.scalar(text("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1"))
        prev_hash = last or GENESIS_HASH
        at = datetime.now(UTC) - timedelta(days=1)
        batch: list[dict[str, Any]] = []
        for index in range(records):
            secret_index = index % fleet.secrets
            entry = AuditEntry(event="step_finished", actor="U0AAA", run_id=f"{index:012x}",
                               app=fleet.app_of(secret_index), secret=f"BENCH_{secret_index:05d}",
                               detail={"step": "record"})
            at += timedelta(milliseconds=1)
            digest = record_hash(prev_hash, at, entry)
            batch.append({"at": at, "event": entry.event, "actor": entry.actor, "run_id": entry.run_id,
                          "app": entry.app, "secret": entry.secret, "detail": '{"step": "record"}',
                          "prev_hash": prev_hash, "hash": digest})
            prev_hash = digest
            if len(batch) == 5000:
                await session.execute(insert(AuditRecord), batch)
                batch = []
        if batch:
            await session.execute(insert(AuditRecord), batch)


async def measure_scale(world: World, *, audit_steps: list[int], flyctl_delay: float,
                        sync_concurrency: int) -> ScalePoint:
    """Sync the world's fleet twice through a slow flyctl, then time the reminder, and status and
    history at each audit log size in `audit_steps` (ascending)."""
    fleet = world.fleet
    config = world.root / "scale.toml"
    config.write_text(policy_text(fleet, sync_concurrency=sync_concurrency))
    policy = load_policy(config, required=True)
    database = create_engine(f"sqlite+aiosqlite:///{world.root / 'scale.db'}")
    try:
        await migrate(database)
        sessions = create_session_factory(database)
        flyctl = FlyctlClient(executable=str(slow_flyctl(world, flyctl_delay)), api_token=FLY_TOKEN,
                              work_dir=world.root / "scale-flyctl-work", config_dir=world.root / "scale-flyctl-config",
                              command_timeout=policy.fly.command_timeout)
        sync = InventorySync(flyctl=flyctl, sessions=sessions, policy=policy)

        started = time.perf_counter()
        results = await sync.sync_all()
        first_sync = time.perf_counter() - started
        started = time.perf_counter()
        results += await sync.sync_all()
        second_sync = time.perf_counter() - started

        await age_inventory(sessions, seed=fleet.secrets)
        store = InventoryStore(sessions=sessions, policy=policy)

        async def reminder() -> int:
            built = await read_reminder(store, policy, date.today())
            reminder_messages(built)
            return built.items

        async def status() -> None:
            # What the status listener runs after its acknowledgement.
            status_overview_message(await store.status_overview(limit=STATUS_LINES_MAX), app=None)

        snoozes = iter(range(1, 1_000_000))

        async def snooze_one() -> None:
            # A new snooze end on one secret: the smallest change that makes the next reply read again.
            async with sessions.begin() as session:
                await session.execute(update(InventorySecret).where(InventorySecret.id == 1).values(
                    snoozed_until=datetime.now(UTC) + timedelta(days=1, seconds=next(snoozes))))

        # A secret in the middle of the fleet; fill_audit_log gives every secret the same share of records.
        history_app, history_name = fleet.app_of(fleet.secrets // 2), f"BENCH_{fleet.secrets // 2:05d}"

        async def history() -> None:
            history_message(await secret_history(sessions, app=history_app, name=history_name))

        queries = []
        filled = 0
        for records in audit_steps:
            await fill_audit_log(sessions, fleet, records=records - filled)
            filled = records
            queries.append(QueryTimes(audit_records=records, status_ms=await median_ms(status),
                                      status_after_change_ms=await median_ms(status, prepare=snooze_one),
                                      history_ms=await median_ms(history)))

        return ScalePoint(
            apps=fleet.apps,
            secrets=fleet.secrets,
            first_sync_s=round(first_sync, 2),
            second_sync_s=round(second_sync, 2),
            sync_failed_apps=sum(1 for result in results if not result.ok),
            reminder_ms=await median_ms(reminder),
            reminder_items=await reminder(),
            queries=queries,
        )
    finally:
        await database.dispose()
