"""Acknowledgement latency and throughput of secretbot and of the bare bolt baseline, side by side.

At each concurrency level the same batch of signed requests goes first to the baseline
and then to secretbot: `/secret status`, `/secret rotate` on secrets no earlier batch
used, and clicks on the Approve button of the runs those rotations started. The level
ends when every approved run has ended, so one level's rollouts do not load the next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.environment import (
    APPROVER,
    CHANNEL,
    REQUESTER,
    SIGNING_SECRET,
    World,
    secret_name,
)
from bench.load import LoadResult, RequestRecorder, send_load, summarize
from bench.runs import wait_for_approval_buttons, wait_for_replies, wait_until_ended
from tests.botprocess import BotProcess, free_port

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Baseline:
    """The bare bolt app (bench.baseline) running as its own process."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "PYTHONPATH": str(REPO)}
        # Popen returns once the child is forked, which is quick enough to do on the event loop.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "bench.baseline", str(self.port)], env=env, cwd=REPO, stdin=subprocess.DEVNULL)
        await wait_healthy(self.url, timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


async def wait_healthy(url: str, *, timeout: float, interval: float = 0.01) -> float:
    """Poll `url`/healthz every `interval` seconds until it returns 200; return the seconds waited."""
    started = time.monotonic()
    async with aiohttp.ClientSession(trust_env=False) as session:
        while time.monotonic() - started < timeout:
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(interval)
    raise TimeoutError(f"{url}/healthz did not return 200 within {timeout} s")


@dataclass
class AckReport:
    results: list[LoadResult] = field(default_factory=list)
    # Ended statuses of the runs approved during the measurement, e.g. {"done": 600}.
    run_outcomes: Counter[str] = field(default_factory=Counter)
    runs_started: int = 0


KINDS = ("status", "rotate", "click")
# `/secret help` is acknowledged with its reply and does nothing after it, so it measures the
# acknowledgement path alone. Spot checks can ask for it; the recorded run does not send it.
EXTRA_KINDS = ("help",)


async def measure_acks(world: World, bot: BotProcess, baseline: Baseline, *, levels: tuple[int, ...],
                       requests: int, first_secret: int, run_timeout: float,
                       kinds: tuple[str, ...] = KINDS) -> AckReport:
    """Send `requests` of each kind at each level in `levels`; rotations use secrets from `first_secret` on.

    `kinds` leaves kinds out; a click needs the rotations of its level, so "click" needs "rotate".
    """
    if "click" in kinds and "rotate" not in kinds:
        raise ValueError(f"kinds {kinds} has click without rotate; clicks approve the runs the rotations start")
    recorder = RequestRecorder(world.slack)
    report = AckReport()
    seen: set[str] = set()
    next_secret = first_secret

    async def load(kind: str, bodies: list[dict[str, str]], concurrency: int) -> None:
        for target, url in (("bolt", f"{baseline.url}/slack/events"), ("secretbot", bot.events_url)):
            raw = await send_load(url, bodies, concurrency=concurrency)
            result = summarize(raw, target=target, kind=kind, concurrency=concurrency)
            report.results.append(result)
            logger.info("%s %s c=%d p50=%.1fms p99=%.1fms max=%.1fms rps=%.0f errors=%d", target, kind, concurrency,
                        result.p50_ms, result.p99_ms, result.max_ms, result.requests_per_second, result.errors)

    for concurrency in levels:
        if "help" in kinds:
            for _ in range(requests):
                await recorder.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL)
            await load("help", recorder.take(), concurrency)
        if "status" in kinds:
            for _ in range(requests):
                await recorder.slash_command("status", user_id=REQUESTER, channel_id=CHANNEL)
            commands = recorder.take()
            await load("status", commands, concurrency)
            # As runs are waited for below: the replies the bot still owes would load the next kind.
            await wait_for_replies(world.slack, commands, timeout=run_timeout)
        if "rotate" not in kinds:
            continue

        for index in range(next_secret, next_secret + requests):
            await recorder.slash_command(f"rotate {secret_name(index)} --app {world.fleet.app_of(index)} benchmark",
                                         user_id=REQUESTER, channel_id=CHANNEL)
        next_secret += requests
        await load("rotate", recorder.take(), concurrency)

        parents = await wait_for_approval_buttons(world.slack, requests, exclude=seen, timeout=run_timeout)
        seen.update(parent.ts for parent in parents)
        report.runs_started += len(parents)
        if "click" not in kinds:
            continue
        for parent in parents:
            await recorder.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
        await load("click", recorder.take(), concurrency)

        report.run_outcomes += await wait_until_ended(world.slack, [parent.ts for parent in parents],
                                                      timeout=run_timeout)
    return report
