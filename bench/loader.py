"""The load client, run as its own process so its event loop shares nothing with the Slack stand-in.

    python -m bench.loader < plan.json > result.json

The plan is {"url", "signing_secret", "concurrency", "requests": [{"body", "content_type"}]}.
Each request is signed when it is sent, as Slack does, so the timestamp is current and
every signature is new. `concurrency` clients each send one request, wait for the whole
response and send the next; the result lists each request's status and latency in seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
from typing import Any

import aiohttp

TIMEOUT_SECONDS = 30.0


def sign(body: str, *, timestamp: str, signing_secret: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    requests: list[dict[str, str]] = plan["requests"]
    url: str = plan["url"]
    secret: str = plan["signing_secret"]
    concurrency = int(plan["concurrency"])
    statuses: list[int] = [0] * len(requests)
    latencies: list[float] = [0.0] * len(requests)
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            request = requests[index]
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": request["content_type"],
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": sign(request["body"], timestamp=timestamp, signing_secret=secret),
            }
            started = time.perf_counter()
            try:
                async with session.post(url, data=request["body"].encode(), headers=headers) as response:
                    await response.read()
                    statuses[index] = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
                statuses[index] = -1
            latencies[index] = time.perf_counter() - started

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"statuses": statuses, "latencies": latencies, "wall_seconds": wall, "client_errors": errors}


def main() -> None:
    plan = json.load(sys.stdin)
    json.dump(asyncio.run(run(plan)), sys.stdout)


if __name__ == "__main__":
    main()
