"""Listeners whose HTTP response goes to Slack at their `ack()`, while their work goes on in a task of their own.

bolt has two ways to run a listener over HTTP. With `process_before_response=False` it
starts the listener as a task and then checks every 10 ms whether `ack()` has been called.
So each acknowledgement waits up to 10 ms after the listener is done with it, and during
a burst each waiting request wakes the event loop a hundred times a second. With
`process_before_response=True` bolt awaits the listener and sends the response when the
listener returns, which would hold the response until the after-ack work is finished.

secretbot uses the second way, and `respond_at_ack` makes each listener return as soon
as it calls `ack()` (or ends, or raises, whichever comes first): the rest of the listener
goes on in its own task. So the response is sent the moment it is ready, and no request
polls. `check_every_listener_detached` rejects an app with a listener registered
without it, because such a listener would hold its response until its work is done.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncApp

logger = logging.getLogger(__name__)

# Slack's limit for an acknowledgement. A listener that has neither acknowledged nor ended
# by then gets an empty response, because Slack has already shown the user a timeout.
ACK_WAIT_SECONDS = 3.0
# Set on every listener `respond_at_ack` returns, so the app check can find one without it.
_MARK = "__secretbot_respond_at_ack__"

Listener = Callable[..., Coroutine[Any, Any, Any]]


def respond_at_ack(listener: Listener) -> Listener:
    """Wrap a bolt listener so that bolt sends its response once the listener has called `ack()`.

    Listeners without an `ack` argument (event listeners: bolt acknowledges the event
    after they return) are started as a task and return at once.
    """

    @functools.wraps(listener)
    async def detached(**arguments: Any) -> Any:
        ack = arguments.get("ack")
        acknowledged = asyncio.get_running_loop().create_future()
        if ack is not None:
            async def ack_and_signal(*args: Any, **options: Any) -> Any:
                result = await ack(*args, **options)
                if not acknowledged.done():
                    acknowledged.set_result(None)
                return result

            arguments = {**arguments, "ack": ack_and_signal}
        else:
            acknowledged.set_result(None)
        work = asyncio.create_task(listener(**arguments), name=f"listener {listener.__name__}")
        _running.add(work)
        work.add_done_callback(functools.partial(_finished, listener.__name__, acknowledged))
        try:
            await asyncio.wait({work, acknowledged}, timeout=ACK_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The request was abandoned. The work goes on past its response, so `_finished` logs its failure.
            acknowledged.cancel()
            raise
        if acknowledged.done():
            # Acknowledged: the response is sent now, and the work ends in its task, which logs a failure.
            return None
        if work.done():
            # Ended or failed before any ack: bolt responds as it would have, with 500 for a failure.
            return work.result()
        # Marks the work as past its response, so `_finished` logs its failure.
        acknowledged.cancel()
        logger.warning("listener %s timed out: no ack() and no end within %.0f s; sending an empty response",
                       listener.__name__, ACK_WAIT_SECONDS)
        return None

    setattr(detached, _MARK, True)
    return detached


# Tasks of listeners that have responded and still run. The event loop keeps only weak
# references to tasks, so without this set a running task could be garbage-collected.
_running: set[asyncio.Task[Any]] = set()


def _finished(name: str, acknowledged: asyncio.Future[None], task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled() or not acknowledged.done():
        # Not responded yet, so `detached` hands the outcome to bolt.
        return
    error = task.exception()
    if error is not None:
        # bolt logs a listener's failure when it runs the whole listener; this part ran without it.
        logger.error("listener %s failed after its acknowledgement (%s)", name, type(error).__name__,
                     exc_info=error)


async def drain(timeout: float) -> None:
    """Wait up to `timeout` seconds for the listener work of this event loop that has responded and still runs.

    Called at shutdown after the server stops taking requests. Listeners that open a modal
    (Enter value, Snooze) have no after-ack turn, so this set alone tracks them: without the
    wait, a click acknowledged just before the signal would get no modal and no log line.
    What is still running after `timeout` is logged and left to the caller, which stops the process.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    announced = False
    # Listener work that starts while this waits (a request already inside the endpoint when
    # shutdown began) is waited for too, so the set is read again after each wait.
    while True:
        # Tests run several event loops in one process; asyncio.wait takes tasks of its own loop only.
        mine = {task for task in _running if task.get_loop() is loop}
        if not mine:
            return
        if not announced:
            logger.info("waiting for %d acknowledged listener(s) to finish", len(mine))
            announced = True
        remaining = deadline - loop.time()
        if remaining > 0:
            await asyncio.wait(mine, timeout=remaining)
            continue
        logger.warning("%d acknowledged listener(s) still running after %.1f s at shutdown; %s",
                       len(mine), timeout, ", ".join(sorted(task.get_name() for task in mine)))
        return


def check_every_listener_detached(app: AsyncApp) -> None:
    """Raise if a listener of `app` was registered without `respond_at_ack`.

    bolt keeps its listeners in `_async_listeners` (slack_bolt 1.30). A version that
    renamed it would make this check find nothing, so an app without listeners is rejected too.
    """
    listeners = getattr(app, "_async_listeners", None)
    if not listeners:
        raise RuntimeError("found no listeners on the bolt app to check; has slack_bolt renamed _async_listeners?")
    missing = [getattr(listener.ack_function, "__name__", repr(listener.ack_function))
               for listener in listeners if not getattr(listener.ack_function, _MARK, False)]
    if missing:
        raise RuntimeError(f"listener(s) {', '.join(missing)} lack @respond_at_ack, so bolt would "
                           "respond only when they return; add it above each listener's other decorators")
