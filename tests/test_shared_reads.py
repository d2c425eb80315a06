"""Work shared by concurrent callers. A fresh read gives each caller a read that began after its
call, so a burst of callers costs at most two reads. Joined calls share the run in progress."""

from __future__ import annotations

import asyncio

import pytest

from bot.shared_reads import FreshSharedRead, JoinedCalls


class Source:
    """A value that callers change, read slowly, with a count of reads and the value each began with."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.gate = asyncio.Event()
        self.fail = False

    async def read(self) -> int:
        self.reads += 1
        seen = self.value
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("read failed")
        return seen


async def test_burst_shares_two_reads() -> None:
    source = Source()
    shared = FreshSharedRead(source.read)
    first = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    later = [asyncio.create_task(shared.get()) for _ in range(20)]
    await asyncio.sleep(0)
    source.gate.set()
    results = await asyncio.gather(first, *later)
    assert source.reads == 2
    assert results == [0] * 21


async def test_read_begins_after_call() -> None:
    source = Source()
    shared = FreshSharedRead(source.read)
    early = asyncio.create_task(shared.get())
    while source.reads == 0:
        await asyncio.sleep(0)
    # A change, then a caller who must see it: the running read began before the change.
    source.value = 1
    late = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    source.gate.set()
    assert await early == 0
    assert await late == 1


async def test_reads_again_after_the_last_one_ended() -> None:
    source = Source()
    source.gate.set()
    shared = FreshSharedRead(source.read)
    assert await shared.get() == 0
    source.value = 2
    assert await shared.get() == 2
    assert source.reads == 2


async def test_failure_reaches_waiting_callers() -> None:
    source = Source()
    source.fail = True
    shared = FreshSharedRead(source.read)
    first = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    second = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    source.gate.set()
    with pytest.raises(RuntimeError):
        await first
    with pytest.raises(RuntimeError):
        await second
    source.fail = False
    assert await shared.get() == 0


async def test_cancelled_caller_leaves_the_read_to_the_others() -> None:
    source = Source()
    shared = FreshSharedRead(source.read)
    leaving = asyncio.create_task(shared.get())
    staying = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    source.gate.set()
    assert await staying == 0
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_joined_calls_share_one_run_per_key() -> None:
    calls = JoinedCalls[str, int]()
    runs: list[str] = []
    release = asyncio.Event()

    async def work(key: str) -> int:
        runs.append(key)
        await release.wait()
        return len(runs)

    waiting = [asyncio.create_task(calls.get(key, lambda key=key: work(key))) for key in ("a", "a", "b", "a")]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiting)
    assert sorted(runs) == ["a", "b"]
    assert results[0] == results[1] == results[3]
    # A call after the run ended starts a new one.
    assert await calls.get("a", lambda: work("a")) == 3


async def test_joined_calls_fail_in_every_caller_and_survive_a_cancelled_one() -> None:
    calls = JoinedCalls[str, int]()
    release = asyncio.Event()

    async def failing() -> int:
        await release.wait()
        raise OSError("database unreachable")

    first = asyncio.create_task(calls.get("a", failing))
    second = asyncio.create_task(calls.get("a", failing))
    third = asyncio.create_task(calls.get("a", failing))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    for task in (second, third):
        with pytest.raises(OSError, match="unreachable"):
            await task
    with pytest.raises(asyncio.CancelledError):
        await first
