"""Work shared by concurrent callers: a read never older than the call, or any run in progress."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")


class FreshSharedRead(Generic[T]):
    """Run `read` for many concurrent callers at once, and give each a result that began after its call.

    A caller that arrives while no read runs starts one. A caller that arrives while a read
    runs cannot use it, because that read may have begun before a change the caller must
    see, such as a secret added a moment ago. It waits for the next read instead, which
    starts when the running one ends and serves every caller that queued meanwhile. A burst
    of fifty requests therefore costs two reads, not fifty, and none of them returns stale data.
    A failed read raises its exception in each of its callers.
    """

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._running: asyncio.Future[T] | None = None
        self._queued: asyncio.Future[T] | None = None

    async def get(self) -> T:
        future: asyncio.Future[T]
        if self._running is None:
            future = self._running = asyncio.ensure_future(self._read_now())
        else:
            if self._queued is None:
                self._queued = asyncio.ensure_future(self._read_after(self._running))
            future = self._queued
        # shield: one caller's cancellation must not cancel the read the others wait for.
        return await asyncio.shield(future)

    async def _read_now(self) -> T:
        try:
            return await self._read()
        finally:
            if self._running is asyncio.current_task():
                self._running = None

    async def _read_after(self, previous: asyncio.Future[T]) -> T:
        # Wait for the running read to end, whatever its outcome; its callers see that.
        await asyncio.wait([previous])
        self._running, self._queued = self._queued, None
        return await self._read_now()


class JoinedCalls(Generic[K, T]):
    """Concurrent calls with the same key share one run of their work; a call after it ends starts another.

    Unlike FreshSharedRead, a caller may get the result of a run that began before its
    call, so only views that show data, where nothing acts on the result, use it.
    A failed run raises its exception in each of its callers.
    """

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[T]] = {}

    async def get(self, key: K, work: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(work())
            running.add_done_callback(lambda _done: self._running.pop(key, None))
        # shield: one caller's cancellation must not cancel the run the others wait for.
        return await asyncio.shield(running)
