"""The lease a `secretbot run` process keeps on its run, so a run whose process died is recognised.

While the process lives, a thread refreshes `runs.heartbeat_at` every HEARTBEAT_SECONDS.
A thread, not a task: prompts block the event loop while the operator thinks, and the
lease must hold through that. A terminal run whose heartbeat is older than LEASE is
abandoned: its app lock counts as stale, and `secretbot run --abandon RUN_ID` may end it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from bot.storage.db import create_engine, create_session_factory
from bot.storage.models import Run, utcnow

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
# Four missed heartbeats, so one slow database write or a busy machine does not end a live run's lease.
LEASE = timedelta(seconds=60)


def lease_expired(heartbeat_at: datetime | None, fallback: datetime, *, now: datetime | None = None) -> bool:
    """Return True when a terminal run's lease has run out. `fallback` (the run's last update) is used without a heartbeat."""
    last = heartbeat_at or fallback
    return last < (now or utcnow()) - LEASE


class Heartbeat:
    """Refreshes one run's heartbeat from a background thread until `stop()`."""

    def __init__(self, database_url: str, *, interval: float = HEARTBEAT_SECONDS) -> None:
        self.database_url = database_url
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, run_id: str) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, args=(run_id,), name=f"heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _main(self, run_id: str) -> None:
        asyncio.run(self._beat(run_id))

    async def _beat(self, run_id: str) -> None:
        # An engine of its own: the main loop's connections belong to the main loop.
        engine = create_engine(self.database_url)
        sessions = create_session_factory(engine)
        try:
            while True:
                try:
                    async with sessions.begin() as session:
                        await session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
                except (SQLAlchemyError, OSError) as exc:
                    logger.warning("refreshing the run's heartbeat failed run_id=%s error=%s",
                                   run_id, type(exc).__name__)
                if await asyncio.to_thread(self._stop.wait, self.interval):
                    return
        finally:
            await engine.dispose()
