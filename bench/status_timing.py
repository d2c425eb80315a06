"""Time `/secret status` and the daily reminder in-process, without the slow sync of bench.scale.

    .venv/bin/python -m bench.status_timing                      # 1,000 and 10,000 secrets
    .venv/bin/python -m bench.status_timing --sizes 10000 --profile status

The inventory rows are inserted in bulk, as a finished sync leaves them (digest, Deployed,
first and last seen) and then aged like bench.scale does, so the timed code reads the
same rows as in the recorded benchmark. Kinds of call timed, all for all apps:

- status: what the `/secret status` listener runs after its acknowledgement,
  InventoryStore.status_overview and status_overview_message, with the inventory
  unchanged since the call before (the snapshot is reused).
- status_changed: the same after one secret was snoozed (untimed) before each call, so
  every call reads a new snapshot.
- status_full: InventoryStore.statuses, by_urgency and status_message, the full read that
  the listener ran before the status cache and that bench.scale times.
- reminder: the daily reminder's read and messages.

`--profile` prints a pyinstrument profile of one kind (pyinstrument is in the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.environment import Fleet, policy_text
from bench.scale import age_inventory
from bot.config import load_policy
from bot.inventory.store import InventoryStore
from bot.inventory.urgency import by_urgency
from bot.reminders.scheduler import read_reminder
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.models import InventorySecret
from handlers.reminder_views import reminder_messages
from handlers.status_views import (
    STATUS_LINES_MAX,
    status_message,
    status_overview_message,
)


async def fill_inventory(sessions: async_sessionmaker[AsyncSession], fleet: Fleet) -> None:
    """Insert one row per secret of `fleet`, as the first sync records a secret it finds."""
    seen_at = datetime.now(UTC) - timedelta(days=1)
    rows = [{"app": fleet.app_of(index), "name": f"BENCH_{index:05d}", "digest": secrets.token_hex(8),
             "fly_status": "Deployed", "first_seen_at": seen_at, "last_seen_at": seen_at,
             "rotation_source": "unknown"}
            for index in range(fleet.secrets)]
    async with sessions.begin() as session:
        await session.execute(insert(InventorySecret), rows)


async def timed_ms(call: Callable[[], Awaitable[object]], repeats: int,
                   prepare: Callable[[], Awaitable[object]] | None = None) -> tuple[list[float], list[float]]:
    """Call once to warm up, then `repeats` times; return each call's wall-clock and CPU milliseconds.

    `prepare`, if given, runs before each call and is not timed. The CPU time is the whole
    process's, aiosqlite's worker thread included. It varies less than the wall-clock time
    when other processes compete for the cores.
    """
    await call()
    wall, cpu = [], []
    for _ in range(repeats):
        if prepare is not None:
            await prepare()
        started, started_cpu = time.perf_counter(), time.process_time()
        await call()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return wall, cpu


async def measure(root: Path, secret_count: int, *, repeats: int, profile: str | None) -> None:
    fleet = Fleet(apps=max(1, secret_count // 50), secrets=secret_count)
    config = root / f"status-{secret_count}.toml"
    config.write_text(policy_text(fleet))
    policy = load_policy(config, required=True)
    database = create_engine(f"sqlite+aiosqlite:///{root / f'status-{secret_count}.db'}")
    try:
        await migrate(database)
        sessions = create_session_factory(database)
        await fill_inventory(sessions, fleet)
        await age_inventory(sessions, seed=fleet.secrets)
        store = InventoryStore(sessions=sessions, policy=policy)

        async def status() -> None:
            status_overview_message(await store.status_overview(limit=STATUS_LINES_MAX), app=None)

        async def status_full() -> None:
            status_message(by_urgency(await store.statuses()), app=None)

        async def reminder() -> None:
            reminder_messages(await read_reminder(store, policy, date.today()))

        snoozes = iter(range(1, 1_000_000))

        async def snooze_one() -> None:
            async with sessions.begin() as session:
                await session.execute(update(InventorySecret).where(InventorySecret.id == 1).values(
                    snoozed_until=datetime.now(UTC) + timedelta(days=1, seconds=next(snoozes))))

        calls = {"status": status, "status_changed": status, "status_full": status_full, "reminder": reminder}
        preparations = {"status_changed": snooze_one}
        for kind, call in calls.items():
            wall, cpu = await timed_ms(call, repeats, prepare=preparations.get(kind))
            print(f"{kind:14s} secrets={secret_count:6d} median={statistics.median(wall):7.1f} ms "
                  f"min={min(wall):7.1f} ms max={max(wall):7.1f} ms cpu median={statistics.median(cpu):7.1f} ms")
        if profile is not None:
            await profile_call(calls[profile], prepare=preparations.get(profile))
    finally:
        await database.dispose()


async def profile_call(call: Callable[[], Awaitable[object]],
                       prepare: Callable[[], Awaitable[object]] | None = None) -> None:
    """Profile five calls; `prepare`, if given, runs before each call with the profiler paused."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    for _ in range(5):
        if prepare is not None:
            await prepare()
        profiler.start()
        await call()
        profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.status_timing", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of secrets")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each kind after one warm-up call")
    parser.add_argument("--profile", choices=("status", "status_changed", "status_full", "reminder"), default=None,
                        help="also print a pyinstrument profile of five calls of this kind at each size")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="secretbot-status-") as folder:
        for size in (int(size) for size in arguments.sizes.split(",")):
            asyncio.run(measure(Path(folder), size, repeats=arguments.repeats, profile=arguments.profile))


if __name__ == "__main__":
    main()
