"""Signed request bodies for the load client, the client process itself, and the latency summary."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any, Unpack

from bench.environment import SIGNING_SECRET
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import DriverResponse, SendOptions, SlackDriver

Request = dict[str, str]


class RequestRecorder(SlackDriver):
    """A SlackDriver that keeps each body it would send instead of sending it.

    The bodies carry the stand-in's real trigger_ids, response_urls and buttons. The load
    client signs and sends them later, so building them costs nothing during the measurement.
    """

    def __init__(self, slack: SlackStandin) -> None:
        super().__init__(bot_url="http://127.0.0.1:9/unused", signing_secret=SIGNING_SECRET, slack=slack)
        self.recorded: list[Request] = []

    async def send(self, body: str, *, content_type: str, payload: dict[str, Any] | None = None,
                   headers: Any = None, **options: Unpack[SendOptions]) -> DriverResponse:
        self.recorded.append({"body": body, "content_type": content_type})
        return DriverResponse(status=0, text="", headers={}, elapsed=0.0, payload=payload or {})

    def take(self) -> list[Request]:
        requests, self.recorded = self.recorded, []
        return requests


@dataclass(frozen=True)
class LoadResult:
    """Latencies of one batch of requests, in milliseconds, with the error count."""

    target: str
    kind: str
    concurrency: int
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    requests_per_second: float
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile, so p99 of 200 samples is the second largest."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def summarize(raw: dict[str, Any], *, target: str, kind: str, concurrency: int) -> LoadResult:
    latencies_ms = [seconds * 1000 for seconds in raw["latencies"]]
    errors = sum(1 for status in raw["statuses"] if status != 200)
    return LoadResult(
        target=target,
        kind=kind,
        concurrency=concurrency,
        requests=len(latencies_ms),
        p50_ms=round(statistics.median(latencies_ms), 2),
        p95_ms=round(percentile(latencies_ms, 0.95), 2),
        p99_ms=round(percentile(latencies_ms, 0.99), 2),
        max_ms=round(max(latencies_ms), 2),
        requests_per_second=round(len(latencies_ms) / raw["wall_seconds"], 1),
        errors=errors,
    )


async def send_load(url: str, requests: list[Request], *, concurrency: int) -> dict[str, Any]:
    """Run the load client in its own process and return its raw result."""
    plan = {"url": url, "signing_secret": SIGNING_SECRET, "concurrency": concurrency, "requests": requests}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loader",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate(json.dumps(plan).encode())
    if process.returncode != 0:
        raise RuntimeError(f"the load client failed with exit code {process.returncode}:\n{stderr.decode()}")
    result: dict[str, Any] = json.loads(stdout)
    return result
