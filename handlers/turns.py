"""Turns for the work a listener does after its acknowledgement.

bolt acknowledges as soon as a listener calls `ack()` and runs the rest of the listener in
the background, on the same event loop that reads, checks and acknowledges the next
request. During a burst (an incident, fifty people clicking) every listener's after-ack
work is ready at once, and a new request's acknowledgement waits behind all of it in the
loop's queue. So a listener past its `ack()` first waits until no request is being
acknowledged (at most QUIET_WAIT_SECONDS, so a steady stream of requests cannot hold the
work back for long), then for one of a few turns: the acknowledgements of a burst go out
first, and the work follows in the order it arrived. The endpoints mark each request with
`acknowledging()` from the moment it is read until its response is sent.
Event listeners, which bolt acknowledges before calling them, take a turn before they start.
Every call is tracked, so shutdown can finish the work it has acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from bot.loop_local import LoopLocal

logger = logging.getLogger(__name__)

# Listeners allowed past their ack() at once. The work after an ack is mostly waiting on
# the database, Slack and flyctl, so a few at a time keep the loop busy without queueing
# acknowledgements behind many of them.
AFTER_ACK_TURNS = 4
# A listener gives its turn back after this many seconds even if it has not finished, so
# long work (`/secret sync` of every app, a diagnosis) holds up the others only briefly.
# Most after-ack work (a run row, an audit record, one Slack post) ends well within it.
TURN_HOLD_SECONDS = 0.1
# The maximum wait of a listener's after-ack work for a moment when no request is being
# acknowledged. Slack's 3-second limit applies to the acknowledgement, not to this work, and
# a burst of 200 requests is acknowledged in a fraction of a second.
QUIET_WAIT_SECONDS = 1.0
# The time with no request in progress before the work goes on. Clients send their next
# request a moment after reading a response, so during a burst the count of requests in
# progress can touch zero between two waves. The benchmark saw this once per 50 requests.
QUIET_AFTER_SECONDS = 0.02

Listener = Callable[..., Coroutine[Any, Any, Any]]


class AfterAckTurns:
    """A decorator for bolt listeners: after `ack()`, the listener waits for a turn to go on.

    Listeners that open a modal after their ack must not use it: Slack's trigger_id
    expires 3 seconds after the click, and a wait for a turn could outlast it.
    """

    def __init__(self, limit: int = AFTER_ACK_TURNS, hold_seconds: float = TURN_HOLD_SECONDS,
                 quiet_wait_seconds: float = QUIET_WAIT_SECONDS) -> None:
        if limit < 1:
            raise ValueError(f"the number of after-ack turns must be at least 1, not {limit}")
        if hold_seconds <= 0:
            raise ValueError(f"the maximum hold of a turn must be more than 0 seconds, not {hold_seconds}")
        if quiet_wait_seconds < 0:
            raise ValueError(f"the wait for no acknowledgement in progress must be 0 seconds or more, "
                             f"not {quiet_wait_seconds}")
        self.limit = limit
        self.hold_seconds = hold_seconds
        self.quiet_wait_seconds = quiet_wait_seconds
        self._loops: LoopLocal[_LoopTurns] = LoopLocal(lambda: _LoopTurns(limit))
        # Listener calls in progress, so shutdown can wait for work it has acknowledged.
        self._running: set[asyncio.Task[Any]] = set()
        self._waiting = 0
        self._stopping = False

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Mark one request as being read, checked and acknowledged while the block runs."""
        turns = self._loops.get()
        turns.begin()
        try:
            yield
        finally:
            turns.end()

    def __call__(self, listener: Listener) -> Listener:
        # bolt reads the argument names through __wrapped__ (functools.wraps sets it) and
        # passes every argument by name, so the wrapper takes keyword arguments only.
        @functools.wraps(listener)
        async def in_turn(**arguments: Any) -> Any:
            ack = arguments.get("ack")
            turn: _Turn | None = None
            acknowledged = False

            async def ack_then_wait(*args: Any, **options: Any) -> Any:
                nonlocal turn, acknowledged
                assert ack is not None  # only passed to listeners that take an ack
                result = await ack(*args, **options)
                # Only the first ack waits: a second one may not take a turn of its own.
                if not acknowledged:
                    acknowledged = True
                    turn = await self._take()
                return result

            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                if ack is None:
                    # An event listener takes no ack: bolt acknowledged the event before calling
                    # it, so all of its work comes after the ack and waits for a turn first.
                    turn = await self._take()
                    return await listener(**arguments)
                return await listener(**{**arguments, "ack": ack_then_wait})
            finally:
                if turn is not None:
                    turn.give_back()
                if task is not None:
                    self._running.discard(task)

        return in_turn

    async def _take(self) -> _Turn | None:
        """Wait for a turn and return it; at shutdown, return None at once."""
        if self._stopping:
            return None
        turns = self._loops.get()
        self._waiting += 1
        try:
            if not turns.quiet.is_set():
                # Bounded, so a steady stream of requests cannot hold the work back for long.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(turns.quiet.wait(), self.quiet_wait_seconds)
                if self._stopping:
                    return None
            turn = await _Turn.take(turns.semaphore, self.hold_seconds)
        finally:
            self._waiting -= 1
        return turn

    async def drain(self, timeout: float) -> None:
        """Let every waiting listener go on, and wait up to `timeout` seconds for all of them to end.

        Called at shutdown after the server stops taking requests: a command that was
        acknowledged has been promised to the user, so its work must not be dropped while
        it waits for a turn. What is still running after `timeout` is left to the caller,
        which stops the process.
        """
        self._stopping = True
        turns = self._loops.existing()
        if turns is not None:
            turns.quiet.set()
            # An asyncio.Semaphore (unlike a BoundedSemaphore) may be released past its
            # limit, which wakes every waiter; the limit no longer matters at shutdown.
            for _ in range(self._waiting):
                turns.semaphore.release()
        if not self._running:
            return
        logger.info("waiting for %d acknowledged request(s) to finish", len(self._running))
        _done, pending = await asyncio.wait(set(self._running), timeout=timeout)
        if pending:
            logger.warning("%d acknowledged request(s) still running after %.0f s at shutdown",
                           len(pending), timeout)


class _LoopTurns:
    """The turns of one event loop: asyncio primitives belong to the loop that first waits on them."""

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        # Set once no request has been in progress for QUIET_AFTER_SECONDS.
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.acknowledging = 0
        self._settling: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        self.acknowledging += 1
        self.quiet.clear()
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None

    def end(self) -> None:
        self.acknowledging -= 1
        if self.acknowledging == 0:
            self._settling = asyncio.get_running_loop().call_later(QUIET_AFTER_SECONDS, self._settled)

    def _settled(self) -> None:
        self._settling = None
        if self.acknowledging == 0:
            self.quiet.set()


class _Turn:
    """One listener's hold on a turn, given back when it ends or when its time is up, once."""

    def __init__(self, semaphore: asyncio.Semaphore, hold_seconds: float) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore
        self._timer = asyncio.get_running_loop().call_later(hold_seconds, self.give_back)

    @classmethod
    async def take(cls, semaphore: asyncio.Semaphore, hold_seconds: float) -> _Turn:
        await semaphore.acquire()
        return cls(semaphore, hold_seconds)

    def give_back(self) -> None:
        self._timer.cancel()
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


after_ack_turns = AfterAckTurns()
