"""Footprint: resident memory of a process and the time from process start to `/healthz` returning 200."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.ack import wait_healthy
from tests.botprocess import BotProcess


def resident_mb(pid: int) -> float:
    """Return VmRSS of `pid` from /proc in MB (2**20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise LookupError(f"no VmRSS line in /proc/{pid}/status")


async def start_timed(bot: BotProcess, *, timeout: float = 30.0) -> float:
    """Start `bot` and return the seconds from Popen to the first 200 from /healthz, polled every 10 ms."""
    (bot.workdir / "secretbot.toml").write_text(bot.config)
    executable = Path(sys.executable).parent / "secretbot"
    with bot.log_path.open("ab") as log:
        started = time.monotonic()
        # Popen, not asyncio's subprocess API, because BotProcess stops a Popen; it returns once forked.
        bot.process = subprocess.Popen(  # noqa: ASYNC220
            [str(executable), "serve"], cwd=bot.workdir, env=bot.environment(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        await wait_healthy(bot.url, timeout=timeout)
    except BaseException:
        bot.process.kill()
        bot.process.wait(timeout=10)
        raise
    return time.monotonic() - started


async def startup_seconds(bot: BotProcess, *, starts: int) -> dict[str, float]:
    """Time a first start (empty database, so the migrations run) and `starts` restarts on the same database."""
    first = await start_timed(bot)
    await bot.stop_async()
    restarts = []
    for _ in range(starts):
        restarts.append(await start_timed(bot))
        await bot.stop_async()
    return {
        "first_start_s": round(first, 3),
        "restart_median_s": round(statistics.median(restarts), 3),
        "restart_max_s": round(max(restarts), 3),
    }
