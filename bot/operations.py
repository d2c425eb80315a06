"""Changes to a Fly app that are not runbook runs: an env file import, a staged deploy, a restart.

Each one holds the app's change lock (`AppLocks`) like a run does, under an operation ID
that starts with OPERATION_PREFIX. No run row shows that the operation still lives, so
`hold_app_lock` refreshes the lock in the background while the operation works, and
another process takes the lock over only once it has gone unrefreshed for OPERATION_LEASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.errors import SecretbotError
from bot.runbook.context import OPERATION_LEASE, OPERATION_PREFIX, AppLocks

logger = logging.getLogger(__name__)

# A third of the lease, so two refreshes may fail in a row before the lock counts as stale.
HEARTBEAT_SECONDS = OPERATION_LEASE.total_seconds() / 3
# How often a waiting operation tries the lock again.
POLL_SECONDS = 0.5


class LockBusy(SecretbotError):
    """Another run or operation holds the app's change lock, and the caller chose not to wait."""

    def __init__(self, app: str, holder: str) -> None:
        super().__init__(f"{app} is being changed by {describe_holder(holder)}; try again when it has finished")
        self.app = app
        self.holder = holder


def new_operation_id(kind: str) -> str:
    """Return an ID such as `op-import-1a2b3c4d5e6f`; at most 32 characters, like a run ID column."""
    return f"{OPERATION_PREFIX}{kind}-{secrets.token_hex(6)}"[:32]


def describe_holder(holder: str) -> str:
    """Name a lock holder for people: a run ID, an operation ID or another process."""
    if holder.startswith(OPERATION_PREFIX):
        return f"operation `{holder}`"
    if holder == "another process":
        return "another bot process"
    return f"run `{holder}`"


@contextlib.asynccontextmanager
async def hold_app_lock(locks: AppLocks, app: str, operation_id: str, *,
                        on_wait: Callable[[str], Awaitable[None]] | None = None,
                        wait: bool = True) -> AsyncIterator[None]:
    """Hold `app`'s change lock for the block, refreshing it until the block ends, then release it.

    With `wait`, the call waits for the current holder and awaits `on_wait(holder)` once
    per new holder. Without it, LockBusy is raised at once when the lock is held.
    """
    announced: str | None = None
    while (holder := await locks.try_acquire(app, operation_id)) is not None:
        if not wait:
            raise LockBusy(app, holder)
        if holder != announced:
            logger.info("waiting for the app lock operation=%s app=%s holder=%s", operation_id, app, holder)
            announced = holder
            if on_wait is not None:
                await on_wait(holder)
        await asyncio.sleep(POLL_SECONDS)

    logger.info("app lock taken operation=%s app=%s", operation_id, app)
    heartbeat = asyncio.create_task(_refresh(locks, app, operation_id), name=f"lock-{operation_id}")
    try:
        yield
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await locks.release_run(operation_id)
        logger.info("app lock released operation=%s app=%s", operation_id, app)


async def _refresh(locks: AppLocks, app: str, operation_id: str) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            if not await locks.refresh(app, operation_id):
                logger.error("app lock lost while the operation runs operation=%s app=%s", operation_id, app)
                return
        except Exception as exc:  # noqa: BLE001 - the next refresh retries; the lease allows two misses
            logger.warning("app lock refresh failed operation=%s app=%s error=%s", operation_id, app,
                           type(exc).__name__)
