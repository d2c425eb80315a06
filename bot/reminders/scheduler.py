"""The daily reminder loop of `secretbot serve`, and `send_once`, which `secretbot remind` uses too.

The ledger in the database, not a flag in this process, decides whether a day's reminder
is still owed. So restarts, several bot processes and the command line post it once,
except when a process dies between posting and recording the post (see the ledger's
NOTE). The loop wakes at the reminder time and otherwise at least once a minute, so a
wall clock that jumps is noticed within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from bot.clock import Clock, SystemClock
from bot.errors import ConfigError, SecretbotError
from bot.inventory.store import InventoryStore
from bot.policy import Policy
from bot.reminders.ledger import ReminderLedger
from bot.reminders.report import Reminder, build_reminder
from bot.reminders.timing import due_now, sleep_seconds

if TYPE_CHECKING:
    from bot.metrics import BotMetrics

logger = logging.getLogger(__name__)


class ReminderPostError(SecretbotError):
    """Slack did not accept the reminder's first message, so nothing of it was posted."""


@dataclass(frozen=True)
class PostedReminder:
    # The ts of the parent message; thread replies hang under it.
    message_ts: str
    messages: int


class ReminderPoster(Protocol):
    """The destination of the reminder; handlers.reminder_poster implements it for Slack."""

    async def post(self, reminder: Reminder, *, channel: str,
                   on_parent: Callable[[str], Awaitable[None]] | None = None) -> PostedReminder:
        """Post the reminder in `channel`; raise ReminderPostError when its first message is rejected.

        `on_parent` is awaited with the first message's ts as soon as Slack accepts it,
        before any thread reply is sent.
        """
        ...


@dataclass(frozen=True)
class SendResult:
    """The result of `send_once` for one channel and local date."""

    channel: str
    local_date: date
    # "posted", "empty" (nothing due and no all-clear), or the ledger outcome of a lost claim.
    outcome: str
    items: int = 0
    message_ts: str | None = None
    # The process that has or finished the day's claim when this one did not win it.
    holder: str | None = None


POSTED = "posted"
EMPTY = "empty"
# Only counted in the metrics: send_once raises ReminderPostError instead of returning it.
FAILED = "failed"


async def read_reminder(store: InventoryStore, policy: Policy, local_date: date, *,
                        automatic: Collection[tuple[str, str]] = ()) -> Reminder:
    """Read the inventory and sort it into the reminder of `local_date`.

    `automatic` holds the (app, secret) pairs whose open run the bot opened by itself.
    """
    settings = policy.reminders
    return build_reminder(await store.statuses(), local_date=local_date, window_days=settings.window_days,
                          all_clear=settings.all_clear, automatic=automatic)


class ReminderScheduler:
    def __init__(self, *, store: InventoryStore, ledger: ReminderLedger, poster: ReminderPoster, policy: Policy,
                 clock: Clock | None = None, before_post: Callable[[], Awaitable[None]] | None = None,
                 metrics: BotMetrics | None = None,
                 read_automatic: Callable[[], Awaitable[Collection[tuple[str, str]]]] | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.poster = poster
        self.policy = policy
        self.clock = clock or SystemClock()
        # Runs after this process wins the day's claim and before the list is read, for
        # example an inventory sync, so only the process that posts pays for it.
        self.before_post = before_post
        # Counts posted, empty and failed reminders. A claim lost to another process is not counted.
        self.metrics = metrics
        # Reads the secrets whose open run the bot opened itself (auto_rotate), listed apart.
        self.read_automatic = read_automatic

    def channel(self) -> str:
        channel = self.policy.reminder_channel
        if channel is None:
            raise ConfigError("no channel for the daily reminder: set reminders.channel or slack.channel "
                              "in secretbot.toml")
        return channel

    async def send_once(self, *, local_date: date) -> SendResult:
        """Post the reminder of `local_date` unless another process has claimed or posted it.

        Raises ReminderPostError when Slack rejects the first message. The claim is then
        left to expire, so the post is retried after the ledger's lease.
        """
        channel = self.channel()
        claimed = await self.ledger.claim(channel=channel, local_date=local_date)
        if claimed.claim is None:
            return SendResult(channel=channel, local_date=local_date, outcome=claimed.outcome.value,
                              holder=claimed.holder)
        claim = claimed.claim

        if self.before_post is not None:
            try:
                await self.before_post()
            except Exception as exc:  # noqa: BLE001
                # A failed refresh must not cost the day's reminder; the stored inventory is used.
                logger.warning("refresh before the reminder failed (%s); using the stored inventory "
                               "channel=%s date=%s", type(exc).__name__, channel, local_date)

        automatic = await self.read_automatic() if self.read_automatic is not None else ()
        reminder = await read_reminder(self.store, self.policy, local_date, automatic=automatic)
        if not reminder.should_post:
            await self.ledger.mark_empty(claim)
            self._count(EMPTY)
            logger.info("reminder not posted: nothing due channel=%s date=%s snoozed=%d",
                        channel, local_date, len(reminder.snoozed))
            return SendResult(channel=channel, local_date=local_date, outcome=EMPTY)

        async def parent_posted(message_ts: str) -> None:
            # Marked before the thread replies, so a stop while they are sent (SIGTERM on a
            # deploy) does not leave a claim that another process takes over and posts again.
            await self.ledger.mark_posted(claim, message_ts=message_ts, items=reminder.items)

        try:
            posted = await self.poster.post(reminder, channel=channel, on_parent=parent_posted)
        except ReminderPostError as exc:
            self._count(FAILED)
            logger.error("reminder post failed channel=%s date=%s error=%s; retried after the claim expires",
                         channel, local_date, exc)
            raise
        self._count(POSTED)
        logger.info("reminder posted channel=%s date=%s overdue=%d due_soon=%d snoozed=%d messages=%d ts=%s",
                    channel, local_date, len(reminder.overdue), len(reminder.due_soon), len(reminder.snoozed),
                    posted.messages, posted.message_ts)
        return SendResult(channel=channel, local_date=local_date, outcome=POSTED, items=reminder.items,
                          message_ts=posted.message_ts)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.reminder_outcome(outcome)

    async def run(self, stop: asyncio.Event) -> None:
        """Post each day's reminder at the configured time until `stop` is set."""
        settings = self.policy.reminders
        if self.policy.reminder_channel is None:
            logger.warning("daily reminder is off: neither reminders.channel nor slack.channel is set")
            return
        zone = ZoneInfo(settings.timezone)
        logger.info("reminder scheduler started channel=%s time=%s timezone=%s owner=%s",
                    self.policy.reminder_channel, settings.time.isoformat(), settings.timezone, self.ledger.owner)
        # Only for logging: each (date, outcome) is logged at INFO once and at DEBUG after.
        reported: set[tuple[date, str]] = set()

        while not stop.is_set():
            due = due_now(self.clock.now(), at=settings.time, zone=zone)
            if due.local_date is not None:
                await self._check(due.local_date, reported)
            wait = sleep_seconds(self.clock.now(), due.next_at)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        logger.info("reminder scheduler stopped")

    async def _check(self, local_date: date, reported: set[tuple[date, str]]) -> None:
        try:
            result = await self.send_once(local_date=local_date)
        except ReminderPostError:
            return  # logged by send_once
        except Exception:
            # The loop must outlive a failed check (database down, a bug), so the next one can retry.
            logger.exception("reminder check failed date=%s; retrying within a minute", local_date)
            return
        if result.outcome in (POSTED, EMPTY):
            reported.add((local_date, result.outcome))
            return
        level = logging.DEBUG if (local_date, result.outcome) in reported else logging.INFO
        reported.add((local_date, result.outcome))
        logger.log(level, "reminder skipped: %s channel=%s date=%s holder=%s",
                   result.outcome, result.channel, local_date, result.holder or "-")
