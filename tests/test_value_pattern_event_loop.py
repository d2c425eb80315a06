"""A slow value_pattern is matched off the event loop, so other coroutines run meanwhile."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.policy import Priority, SecretPolicy, Source
from bot.steps.values import check_entered_value
from bot.value_checks import (
    MATCH_TIMEOUT_SECONDS,
    MATCH_WAIT_SECONDS,
    value_pattern_problem,
)

# Each passes the configuration check and backtracks until regex's timeout on this value.
SLOW_PATTERNS = ["(a{1,100}){1,100}b", "(a|aa)+", "(.*a){12}"]
SLOW_VALUE = "a" * 2000 + "!"
# Eight people submitting the value form at the same moment.
SUBMISSIONS = 8
TICK_SECONDS = 0.005


def provider(value_pattern: str) -> SecretPolicy:
    return SecretPolicy(name="OPENAI_API_KEY", priority=Priority.HIGH, source=Source.PROVIDER,
                        value_pattern=value_pattern)


async def largest_tick_gap(work: asyncio.Task[object]) -> float:
    """Sleep in short ticks until `work` is done; return the longest time between two ticks."""
    gaps = []
    last = time.perf_counter()
    while not work.done():
        await asyncio.sleep(TICK_SECONDS)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return max(gaps)


@pytest.mark.parametrize("pattern", SLOW_PATTERNS)
async def test_slow_match_leaves_loop_running(pattern: str, caplog: pytest.LogCaptureFixture) -> None:
    assert value_pattern_problem(pattern) is None

    started = time.perf_counter()
    check = asyncio.create_task(check_entered_value(provider(pattern), SLOW_VALUE))
    gap = await largest_tick_gap(check)
    elapsed = time.perf_counter() - started
    problem = check.result()

    assert problem is not None
    assert f"took longer than {MATCH_TIMEOUT_SECONDS} s of CPU time" in problem
    assert "a" * 20 not in problem
    # The match took at least regex's timeout, most of it CPU time spent in the worker thread.
    assert elapsed >= MATCH_TIMEOUT_SECONDS * 0.8
    assert gap < MATCH_TIMEOUT_SECONDS / 2
    logged = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("value_pattern match timed out secret=OPENAI_API_KEY" in line for line in logged)
    assert not any("a" * 20 in line for line in logged)


async def test_concurrent_slow_matches_bounded() -> None:
    started = time.perf_counter()
    checks = [asyncio.create_task(check_entered_value(provider("(a|aa)+"), SLOW_VALUE))
              for _ in range(SUBMISSIONS)]
    gap = await largest_tick_gap(asyncio.create_task(asyncio.wait(checks)))
    elapsed = time.perf_counter() - started

    for check in checks:
        problem = check.result()
        assert problem is not None
        # Either regex's CPU timeout or, for a match queued behind the others, the wall-clock limit.
        assert "took longer than" in problem or f"did not finish within {MATCH_WAIT_SECONDS} s" in problem
    assert gap < MATCH_TIMEOUT_SECONDS / 2
    # Queued matches past the wall-clock limit are given up, so every result comes within it plus a margin.
    assert elapsed < MATCH_WAIT_SECONDS + 0.5


async def test_fitting_pattern_still_matched() -> None:
    assert await check_entered_value(provider("a+!"), SLOW_VALUE) is None
    assert await check_entered_value(provider("a+"), SLOW_VALUE) == "The value does not have the expected format (a+)."
