"""Run the whole benchmark on 127.0.0.1 and print the results; BENCHMARKS.md explains each number.

    .venv/bin/python -m bench                 # the recorded run, at the sizes in BENCHMARKS.md
    .venv/bin/python -m bench --quick         # a smoke run with small counts, about two minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ack import Baseline, measure_acks
from bench.batching import measure_batch
from bench.environment import (
    Fleet,
    World,
    clear_proxy_variables,
    new_slack,
    postgres_database,
)
from bench.footprint import resident_mb, start_timed, startup_seconds
from bench.report import machine_description, print_results
from bench.runs import complete_runs
from bench.scale import measure_scale

logger = logging.getLogger("bench")

BATCH_SIZES = (1, 5, 10)
# Apps the latency runs spread over; runs on one app take its lock one after another.
LATENCY_APPS = 20
# Seconds the bot gets after /healthz for its start-up sync and reminder check before idle memory is read.
SETTLE_SECONDS = 5.0


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run (not for the record)")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind per concurrency level")
    parser.add_argument("--levels", default="1,50,200", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--runs", type=int, default=1000, help="completed runs before the second memory reading")
    parser.add_argument("--scale-secrets", type=int, default=10_000, help="secrets in the full-size inventory")
    parser.add_argument("--scale-apps", type=int, default=200, help="apps in the full-size inventory")
    parser.add_argument("--audit-records", type=int, default=100_000, help="audit records at full size")
    parser.add_argument("--flyctl-delay", type=float, default=1.0, help="seconds each flyctl call in the sync lasts at least")
    parser.add_argument("--sync-concurrency", type=int, default=8, help="inventory.sync_concurrency for the sync")
    parser.add_argument("--output", type=Path, default=Path("bench/results.json"), help="where to write the JSON")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, databases)")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default=None,
                        help="run the measured bot on a new database on this PostgreSQL server "
                             "(e.g. postgresql://postgres@127.0.0.1:5432/test) instead of SQLite")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.requests, arguments.levels, arguments.runs = 20, "1,10", 100
        arguments.scale_secrets, arguments.scale_apps, arguments.audit_records = 1000, 20, 10_000
        arguments.flyctl_delay = 0.2
        if arguments.output == Path("bench/results.json"):
            arguments.output = Path("bench/results-quick.json")
    return arguments


async def bot_section(root: Path, arguments: argparse.Namespace) -> dict[str, Any]:
    """Measure latency, footprint and batching against one bot process and the baseline."""
    levels = tuple(int(level) for level in arguments.levels.split(","))
    latency_secrets = arguments.requests * len(levels)
    run_secrets = max(arguments.runs, latency_secrets)
    batch_first = run_secrets
    # Every app gets sum(BATCH_SIZES) more secrets, so app 0 has enough for every batch.
    fleet = Fleet(apps=LATENCY_APPS, secrets=run_secrets + LATENCY_APPS * sum(BATCH_SIZES))
    result: dict[str, Any] = {"fleet": {"apps": fleet.apps, "secrets": fleet.secrets}}

    async with new_slack() as slack:
        world = World(root=root / "bot-world", slack=slack, fleet=fleet)
        baseline = Baseline()
        await baseline.start()
        try:
            assert baseline.process is not None
            result["baseline_idle_rss_mb"] = resident_mb(baseline.process.pid)

            logger.info("timing start-up")
            startup_bot = world.bot("startup")
            result["startup"] = await startup_seconds(startup_bot, starts=5)
            # Idle memory of a restart on a database that exists, as after every deploy; the
            # main bot below starts on a new database. A start that upgrades an older schema
            # keeps alembic's modules in memory, which neither of these imports.
            await start_timed(startup_bot)
            try:
                await asyncio.sleep(SETTLE_SECONDS)
                assert startup_bot.process is not None
                result["idle_rss_after_restart_mb"] = resident_mb(startup_bot.process.pid)
            finally:
                await startup_bot.stop_async()

            async with contextlib.AsyncExitStack() as stack:
                database_url = None
                if arguments.postgres is not None:
                    database_url = await stack.enter_async_context(postgres_database(arguments.postgres))
                result["database"] = "postgresql" if database_url else "sqlite"
                bot = world.bot("main", database_url=database_url)
                await start_timed(bot)
                stack.push_async_callback(bot.stop_async)
                await asyncio.sleep(SETTLE_SECONDS)
                assert bot.process is not None
                result["idle_rss_mb"] = resident_mb(bot.process.pid)

                logger.info("measuring acknowledgements levels=%s requests=%d", levels, arguments.requests)
                acks = await measure_acks(world, bot, baseline, levels=levels, requests=arguments.requests,
                                          first_secret=0, run_timeout=900)
                result["ack"] = [item.as_dict() for item in acks.results]
                outcomes = Counter(acks.run_outcomes)

                remaining = list(range(latency_secrets, arguments.runs))
                for start in range(0, len(remaining), 100):
                    logger.info("completing runs %d of %d", latency_secrets + start, arguments.runs)
                    outcomes += await complete_runs(world, bot, remaining[start:start + 100], concurrency=20,
                                                    timeout=900)
                result["runs_completed"] = dict(outcomes)
                result["rss_after_runs_mb"] = resident_mb(bot.process.pid)

                logger.info("measuring batching")
                batch_names = [name for name in fleet.secrets_of(0) if int(name.split("_")[1]) >= batch_first]
                batches = []
                for size in BATCH_SIZES:
                    names, batch_names = batch_names[:size], batch_names[size:]
                    batch = await measure_batch(world, bot, app=fleet.app_names[0], names=names, timeout=300)
                    batches.append(batch.as_dict())
                result["batching"] = batches
        finally:
            baseline.stop()
    return result


async def scale_section(root: Path, arguments: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure the sync, reminder, status and history at 1/10 of the full size and at the full size."""
    points = []
    for fraction in (10, 1):
        fleet = Fleet(apps=arguments.scale_apps // fraction, secrets=arguments.scale_secrets // fraction)
        logger.info("measuring scale apps=%d secrets=%d", fleet.apps, fleet.secrets)
        async with new_slack() as slack:
            world = World(root=root / f"scale-{fleet.secrets}", slack=slack, fleet=fleet)
            point = await measure_scale(world, audit_steps=[arguments.audit_records // 10, arguments.audit_records],
                                        flyctl_delay=arguments.flyctl_delay,
                                        sync_concurrency=arguments.sync_concurrency)
        points.append(point.as_dict())
    return points


async def run(arguments: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="secretbot-bench-"))
    logger.info("working folder %s", root)
    started = time.monotonic()
    try:
        results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_description(),
            "python": platform.python_version(),
            "options": {key: str(value) for key, value in vars(arguments).items()},
        }
        results.update(await bot_section(root, arguments))
        results["scale"] = await scale_section(root, arguments)
        results["duration_s"] = round(time.monotonic() - started, 1)
        return results
    finally:
        if arguments.keep:
            logger.info("kept the working folder %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    clear_proxy_variables()
    arguments = parse_arguments()
    results = asyncio.run(run(arguments))
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print_results(results)
    print(f"\nWrote {arguments.output}")


if __name__ == "__main__":
    main()
