"""A value kept per running event loop, for asyncio locks, semaphores and events.

An asyncio primitive belongs to the event loop that first waits on it. One process can
run more than one loop (each `asyncio.run` makes a new one: the CLI, the tests), so a
module-level primitive made in one loop would fail in the next. Entries go away with
their loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopLocal(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        """Return the running loop's value, made on first use. Call only from inside a running loop."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._factory()
        return value

    def existing(self) -> T | None:
        """Return the running loop's value if it was ever made, without making it."""
        return self._values.get(asyncio.get_running_loop())
