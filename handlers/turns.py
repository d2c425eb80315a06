"""Turns for the work a listener does after its acknowledgement.

bolt acknowledges as soon as a listener calls `ack()` and runs the rest of the listener in
the background, on the same event loop that reads, checks and acknowledges the next
request. During a burst (an incident, fifty people clicking) every listener's after-ack
work is ready at once, and a new request's acknowledgement waits behind all of it in the
loop's queue. Letting only a few listeners past their `ack()` at a time keeps that queue
short: acknowledgements go out first, and the work follows in the order it arrived.
Event listeners, which bolt acknowledges before calling them, take a turn before they start.
Every call is tracked, so shutdown can finish the work it has acknowledged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

# Listeners allowed past their ack() at once. The work after an ack is mostly waiting on
# the database, Slack and flyctl, so a few at a time keep the loop busy without queueing
# acknowledgements behind many of them.
AFTER_ACK_TURNS = 4
# A listener gives its turn back after this many seconds even if it has not finished, so
# long work (`/secret sync` of every app, a diagnosis) holds up the others only briefly.
# Most after-ack work (a run row, an audit record, one Slack post) ends well within it.
TURN_HOLD_SECONDS = 0.1

Listener = Callable[..., Awaitable[Any]]


class AfterAckTurns:
    """A decorator for bolt listeners: after `ack()`, the listener waits for a turn to go on.

    Listeners that open a modal after their ack must not use it: Slack's trigger_id
    expires 3 seconds after the click, and a wait for a turn could outlast it.
    """

    def __init__(self, limit: int = AFTER_ACK_TURNS, hold_seconds: float = TURN_HOLD_SECONDS) -> None:
        if limit < 1:
            raise ValueError(f"the number of after-ack turns must be at least 1, not {limit}")
        if hold_seconds <= 0:
            raise ValueError(f"the maximum hold of a turn must be more than 0 seconds, not {hold_seconds}")
        self.limit = limit
        self.hold_seconds = hold_seconds
        # An asyncio semaphore belongs to the event loop that first waits on it.
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        # Listener calls in progress, so shutdown can wait for work it has acknowledged.
        self._running: set[asyncio.Task[Any]] = set()
        self._waiting = 0
        self._stopping = False

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.limit)
        return semaphore

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
        self._waiting += 1
        try:
            turn = await _Turn.take(self._semaphore(), self.hold_seconds)
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
        semaphore = self._semaphores.get(asyncio.get_running_loop())
        if semaphore is not None:
            # An asyncio.Semaphore (unlike a BoundedSemaphore) may be released past its
            # limit, which wakes every waiter; the limit no longer matters at shutdown.
            for _ in range(self._waiting):
                semaphore.release()
        if not self._running:
            return
        logger.info("waiting for %d acknowledged request(s) to finish", len(self._running))
        _done, pending = await asyncio.wait(set(self._running), timeout=timeout)
        if pending:
            logger.warning("%d acknowledged request(s) still running after %.0f s at shutdown",
                           len(pending), timeout)


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
