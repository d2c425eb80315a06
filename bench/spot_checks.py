"""Short before/after checks of one part of the benchmark, for a machine that other work shares.

    .venv/bin/python -m bench.spot_checks memory --restart    # idle resident memory of a bot and of bolt
    .venv/bin/python -m bench.spot_checks acks --levels 50    # ack latency, fewer requests than the record
    .venv/bin/python -m bench.spot_checks acks --profile /tmp/acks.txt   # the same under py-spy

They use the recorded benchmark's parts (bench.ack, bench.footprint), so a figure here
is measured as in BENCHMARKS.md but with fewer samples. They print and write nothing else.
`--profile` runs `py-spy record` (in the `bench` extra) on the bot process for the whole
measurement and writes its raw output (collapsed stacks, with thread names).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from bench.ack import KINDS, Baseline, measure_acks
from bench.environment import Fleet, World, clear_proxy_variables, new_slack, postgres_database
from bench.footprint import resident_mb, start_timed
from tests.botprocess import BotProcess

logger = logging.getLogger("bench.spot_checks")

# The recorded run's fleet: 20 apps and 1,320 secrets, so `/secret status` lists as many.
APPS = 20
SECRETS = 1320
SETTLE_SECONDS = 5.0


@contextlib.asynccontextmanager
async def running_bot(world: World, *, postgres: str | None,
                      source: Path | None) -> AsyncIterator[tuple[BotProcess, float]]:
    """Start a bot on a new database (SQLite, or one on the `postgres` server) and stop it afterwards.

    Yields the bot and the seconds from its start to the first 200 from /healthz.

    With `source`, the bot imports bot/, handlers/ and runbooks/ from that folder instead
    of the repository, which measures another version of the code under the same load.
    """
    async with contextlib.AsyncExitStack() as stack:
        database_url = None
        if postgres is not None:
            database_url = await stack.enter_async_context(postgres_database(postgres))
        bot = world.bot("main", database_url=database_url)
        if source is not None:
            # PYTHONPATH comes before the editable install's finder on sys.path.
            bot.extra_env["PYTHONPATH"] = str(source.resolve())
        started_in = await start_timed(bot)
        stack.push_async_callback(bot.stop_async)
        yield bot, started_in


async def wait_for_first_sync(bot: BotProcess, *, timeout: float = 300.0) -> None:
    """Wait until the bot's log shows its start-up inventory sync finished.

    The sync of the fleet (20 flyctl calls and 1,320 new secrets to record) kept the
    bot busy for several seconds after /healthz, so a measurement started right after
    SETTLE_SECONDS measured the acknowledgements beside it. The recorded run starts its
    50-client level only after the 1-client one, when the sync is long over.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while "inventory sync finished" not in bot.log():
        if loop.time() > deadline:
            raise TimeoutError(f"the bot's start-up inventory sync did not finish within {timeout:.0f} s; "
                               f"see {bot.log_path}")
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def py_spy(pid: int, output: Path | None) -> Iterator[None]:
    """Record the process `pid` with py-spy while the block runs, when `output` is given."""
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy")
    recorder = subprocess.Popen([executable, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                                 "--threads", "--idle", "--nonblocking", "--output", str(output)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        # py-spy writes its output when interrupted.
        recorder.send_signal(signal.SIGINT)
        _, errors = recorder.communicate(timeout=60)
        if recorder.returncode not in (0, -signal.SIGINT):
            logger.warning("py-spy exited with %s: %s", recorder.returncode, errors.decode(errors="replace")[-500:])


async def check_memory(root: Path, arguments: argparse.Namespace) -> None:
    fleet = Fleet(apps=APPS, secrets=SECRETS)
    async with new_slack() as slack:
        world = World(root=root, slack=slack, fleet=fleet)
        baseline = Baseline()
        await baseline.start()
        try:
            assert baseline.process is not None
            bolt_rss = resident_mb(baseline.process.pid)
            for attempt in range(arguments.repeat):
                async with running_bot(world, postgres=arguments.postgres,
                                       source=arguments.bot_source) as (bot, started_in):
                    await asyncio.sleep(SETTLE_SECONDS)
                    assert bot.process is not None
                    first = resident_mb(bot.process.pid)
                    started = f"healthy {started_in:.2f} s after start"
                    if arguments.restart:
                        # The same database again, as on a deploy: the schema is already current.
                        await bot.stop_async()
                        restarted = await start_timed(bot)
                        await asyncio.sleep(SETTLE_SECONDS)
                        again = (f"; after a restart {resident_mb(bot.process.pid):.1f} MB, "
                                 f"healthy {restarted:.2f} s after start")
                    else:
                        again = ""
                    print(f"idle resident memory, start {attempt + 1}: secretbot {first:.1f} MB ({started}){again}; "
                          f"bolt {bolt_rss:.1f} MB")
                # Each start gets a new database, as in the recorded run.
                shutil.rmtree(world.root / "main", ignore_errors=True)
        finally:
            baseline.stop()


async def check_acks(root: Path, arguments: argparse.Namespace) -> None:
    levels = tuple(int(level) for level in arguments.levels.split(","))
    fleet = Fleet(apps=APPS, secrets=max(SECRETS, arguments.requests * len(levels)))
    async with new_slack() as slack:
        world = World(root=root, slack=slack, fleet=fleet)
        baseline = Baseline()
        await baseline.start()
        try:
            async with running_bot(world, postgres=arguments.postgres, source=arguments.bot_source) as (bot, _):
                await wait_for_first_sync(bot)
                await asyncio.sleep(SETTLE_SECONDS)
                assert bot.process is not None
                with py_spy(bot.process.pid, arguments.profile):
                    report = await measure_acks(world, bot, baseline, levels=levels, requests=arguments.requests,
                                                first_secret=0, run_timeout=600, kinds=tuple(arguments.kinds.split(",")))
        finally:
            baseline.stop()
    print(f"{'kind':7s} {'clients':>7s} {'target':10s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s} "
          f"{'req/s':>7s} {'errors':>6s} {'p99/bolt':>8s}")
    bolt_p99: dict[tuple[str, int], float] = {}
    for result in report.results:
        ratio = ""
        if result.target == "bolt":
            bolt_p99[(result.kind, result.concurrency)] = result.p99_ms
        else:
            ratio = f"{result.p99_ms / bolt_p99[(result.kind, result.concurrency)]:.2f}"
        print(f"{result.kind:7s} {result.concurrency:7d} {result.target:10s} {result.p50_ms:8.1f} "
              f"{result.p95_ms:8.1f} {result.p99_ms:8.1f} {result.max_ms:8.1f} {result.requests_per_second:7.0f} "
              f"{result.errors:6d} {ratio:>8s}")
    print(f"runs approved: {report.runs_started}, ended: {dict(report.run_outcomes)}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    clear_proxy_variables()
    parser = argparse.ArgumentParser(prog="python -m bench.spot_checks", description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("memory", "acks"))
    parser.add_argument("--postgres", metavar="ADMIN_URL", default=None,
                        help="run the bot on a new database on this PostgreSQL server instead of SQLite")
    parser.add_argument("--repeat", type=int, default=1, help="memory: how many bots to start, one after another")
    parser.add_argument("--restart", action="store_true",
                        help="memory: also restart each bot on its database and read its memory again")
    parser.add_argument("--levels", default="50", help="acks: comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=100, help="acks: requests of each kind per level")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="acks: comma-separated kinds to send (help, status, rotate, click); click needs rotate")
    parser.add_argument("--profile", type=Path, default=None, help="acks: write a py-spy raw profile of the bot here")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, databases)")
    parser.add_argument("--bot-source", type=Path, default=None, metavar="DIR",
                        help="run the bot from the bot/, handlers/ and runbooks/ folders in DIR (another version)")
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="secretbot-spot-"))
    try:
        check = check_memory if arguments.check == "memory" else check_acks
        asyncio.run(check(root, arguments))
    finally:
        if arguments.keep:
            print(f"kept the working folder {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
