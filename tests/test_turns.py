"""Turns after the acknowledgement: the ack goes out at once, a few listeners go on at a time,
and a turn comes back when its listener ends, fails, or keeps it past the time limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slack_bolt.util.utils import get_arg_names_of_callable

from handlers.turns import AfterAckTurns


class RecordingAck:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **options: Any) -> None:
        self.calls.append(options)


async def test_bolt_sees_the_listener_arguments() -> None:
    turns = AfterAckTurns(limit=1)

    async def listener(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()

    assert get_arg_names_of_callable(turns(listener)) == ["ack", "body", "respond"]


async def test_only_limit_listeners_go_on_at_once() -> None:
    turns = AfterAckTurns(limit=2, hold_seconds=30)
    running = 0
    max_running = 0
    acks = [RecordingAck() for _ in range(8)]

    @turns
    async def listener(ack: Any) -> None:
        nonlocal running, max_running
        await ack(text="ok")
        running += 1
        max_running = max(max_running, running)
        await asyncio.sleep(0.05)
        running -= 1

    await asyncio.gather(*(listener(ack=ack) for ack in acks))
    assert max_running == 2
    assert all(ack.calls == [{"text": "ok"}] for ack in acks)


async def test_ack_is_sent_while_every_turn_is_taken() -> None:
    turns = AfterAckTurns(limit=1, hold_seconds=30)
    release = asyncio.Event()
    after_ack: list[str] = []

    @turns
    async def listener(ack: Any, name: str) -> None:
        await ack()
        after_ack.append(name)
        await release.wait()

    first = asyncio.create_task(listener(ack=RecordingAck(), name="first"))
    await asyncio.sleep(0.01)
    second_ack = RecordingAck()
    second = asyncio.create_task(listener(ack=second_ack, name="second"))
    await asyncio.sleep(0.05)
    # The second request is acknowledged, but its work waits for the first to end.
    assert second_ack.calls == [{}]
    assert after_ack == ["first"]
    release.set()
    await asyncio.gather(first, second)
    assert after_ack == ["first", "second"]


async def test_turn_comes_back_after_hold_limit() -> None:
    turns = AfterAckTurns(limit=1, hold_seconds=0.1)
    finished: list[str] = []
    never = asyncio.Event()

    @turns
    async def slow(ack: Any) -> None:
        await ack()
        await never.wait()

    @turns
    async def quick(ack: Any) -> None:
        await ack()
        finished.append("quick")

    holder = asyncio.create_task(slow(ack=RecordingAck()))
    await asyncio.sleep(0.01)
    async with asyncio.timeout(2):
        await quick(ack=RecordingAck())
    assert finished == ["quick"]
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder


async def test_turn_comes_back_after_failure() -> None:
    turns = AfterAckTurns(limit=1, hold_seconds=30)

    @turns
    async def failing(ack: Any) -> None:
        await ack()
        raise RuntimeError("listener failed")

    @turns
    async def quick(ack: Any) -> str:
        await ack()
        return "done"

    with pytest.raises(RuntimeError):
        await failing(ack=RecordingAck())
    async with asyncio.timeout(2):
        assert await quick(ack=RecordingAck()) == "done"


async def test_turn_is_given_back_once() -> None:
    # A listener that outlives its hold gives the turn back on time and again at its end.
    # Only the first may count, or the limit would grow by one each time.
    turns = AfterAckTurns(limit=1, hold_seconds=0.05)
    running = 0
    max_running = 0

    @turns
    async def listener(ack: Any) -> None:
        nonlocal running, max_running
        await ack()
        running += 1
        max_running = max(max_running, running)
        await asyncio.sleep(0.1)
        running -= 1

    await listener(ack=RecordingAck())
    await asyncio.gather(*(listener(ack=RecordingAck()) for _ in range(3)))
    # Each of the three keeps its turn for 0.05 s of its 0.1 s, so at most two overlap.
    assert max_running <= 2


async def test_event_listener_waits_for_turn() -> None:
    # bolt acknowledges an event before its listener runs, so the listener has no ack and
    # all of its work is after-ack work.
    turns = AfterAckTurns(limit=1, hold_seconds=30)
    release = asyncio.Event()
    started: list[str] = []

    @turns
    async def listener(event: dict[str, Any]) -> None:
        started.append(str(event["user"]))
        await release.wait()

    first = asyncio.create_task(listener(event={"user": "U0AAA"}))
    second = asyncio.create_task(listener(event={"user": "U0BBB"}))
    await asyncio.sleep(0.05)
    assert started == ["U0AAA"]
    release.set()
    async with asyncio.timeout(2):
        await asyncio.gather(first, second)
    assert started == ["U0AAA", "U0BBB"]


async def test_drain_waits_for_event_listeners() -> None:
    turns = AfterAckTurns(limit=1, hold_seconds=30)
    published: list[str] = []

    @turns
    async def listener(event: dict[str, Any]) -> None:
        await asyncio.sleep(0.1)
        published.append(str(event["user"]))

    task = asyncio.create_task(listener(event={"user": "U0AAA"}))
    await asyncio.sleep(0)
    await turns.drain(timeout=5)
    assert published == ["U0AAA"]
    assert task.done()


@pytest.mark.parametrize(("limit", "hold"), [(0, 1.0), (1, 0.0)])
def test_bad_settings_are_refused(limit: int, hold: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        AfterAckTurns(limit=limit, hold_seconds=hold)


async def test_drain_lets_waiting_listeners_finish() -> None:
    # At shutdown, requests that were acknowledged but wait for a turn must still do their work.
    turns = AfterAckTurns(limit=1, hold_seconds=30)
    never = asyncio.Event()
    done: list[int] = []

    @turns
    async def holder(ack: Any) -> None:
        await ack()
        await never.wait()

    @turns
    async def queued(ack: Any, number: int) -> None:
        await ack()
        done.append(number)

    holding = asyncio.create_task(holder(ack=RecordingAck()))
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(queued(ack=RecordingAck(), number=number)) for number in range(5)]
    await asyncio.sleep(0.05)
    assert done == []
    async with asyncio.timeout(5):
        await turns.drain(timeout=0.5)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert all(task.done() for task in waiting)
    # The holder outlived the timeout; drain returned anyway and left it to the caller.
    assert not holding.done()
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding


async def test_listener_after_drain_takes_no_turn() -> None:
    turns = AfterAckTurns(limit=1, hold_seconds=30)
    await turns.drain(timeout=0.1)

    @turns
    async def listener(ack: Any) -> str:
        await ack()
        return "ran"

    async with asyncio.timeout(2):
        assert await asyncio.gather(listener(ack=RecordingAck()), listener(ack=RecordingAck())) == ["ran", "ran"]


async def test_second_ack_takes_no_second_turn() -> None:
    turns = AfterAckTurns(limit=1, hold_seconds=30)

    @turns
    async def acks_twice(ack: Any) -> None:
        await asyncio.gather(ack(), ack())

    @turns
    async def quick(ack: Any) -> str:
        await ack()
        return "done"

    async with asyncio.timeout(2):
        await acks_twice(ack=RecordingAck())
        assert await quick(ack=RecordingAck()) == "done"


def signalling_listener(turns: AfterAckTurns, done: asyncio.Event) -> Any:
    """A listener in `turns` that sets `done` once its after-ack work runs."""

    @turns
    async def listener(ack: Any) -> None:
        await ack()
        done.set()

    return listener


async def test_work_waits_until_no_request_is_being_acknowledged() -> None:
    turns = AfterAckTurns(limit=4, hold_seconds=30, quiet_wait_seconds=30)
    order: list[str] = []

    @turns
    async def listener(ack: Any) -> None:
        await ack()
        order.append("work")

    with turns.acknowledging():
        task = asyncio.create_task(listener(ack=RecordingAck()))
        await asyncio.sleep(0.05)
        # The work waits while a request is still being acknowledged.
        assert order == []
        order.append("acknowledged")
    await asyncio.wait_for(task, 1)
    assert order == ["acknowledged", "work"]


async def test_work_waits_for_the_last_of_overlapping_acknowledgements() -> None:
    turns = AfterAckTurns(limit=4, hold_seconds=30, quiet_wait_seconds=30)
    done = asyncio.Event()
    listener = signalling_listener(turns, done)

    first = turns.acknowledging()
    first.__enter__()
    with turns.acknowledging():
        task = asyncio.create_task(listener(ack=RecordingAck()))
        first.__exit__(None, None, None)
        await asyncio.sleep(0.05)
        assert not done.is_set()
    await asyncio.wait_for(task, 1)
    assert done.is_set()


async def test_work_goes_on_after_the_quiet_wait_runs_out() -> None:
    # A steady stream of requests must not hold acknowledged work back for long.
    turns = AfterAckTurns(limit=4, hold_seconds=30, quiet_wait_seconds=0.1)
    done = asyncio.Event()
    listener = signalling_listener(turns, done)

    with turns.acknowledging():
        task = asyncio.create_task(listener(ack=RecordingAck()))
        await asyncio.wait_for(done.wait(), 2)
    await task


async def test_drain_wakes_work_that_waits_for_quiet() -> None:
    turns = AfterAckTurns(limit=4, hold_seconds=30, quiet_wait_seconds=30)
    done = asyncio.Event()
    listener = signalling_listener(turns, done)

    with turns.acknowledging():
        task = asyncio.create_task(listener(ack=RecordingAck()))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(turns.drain(timeout=5), 2)
        assert done.is_set()
    await task


def test_a_negative_quiet_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        AfterAckTurns(quiet_wait_seconds=-1)


async def test_a_moment_between_two_requests_does_not_release_the_work() -> None:
    # During a burst, clients send their next request just after reading a response, so the
    # count of requests in progress can touch zero between them.
    turns = AfterAckTurns(limit=4, hold_seconds=30, quiet_wait_seconds=30)
    done = asyncio.Event()
    listener = signalling_listener(turns, done)
    with turns.acknowledging():
        task = asyncio.create_task(listener(ack=RecordingAck()))
        await asyncio.sleep(0.01)
    with turns.acknowledging():
        await asyncio.sleep(0.05)
        assert not done.is_set()
    await asyncio.wait_for(task, 1)
    assert done.is_set()
