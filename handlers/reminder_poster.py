"""Posts the daily reminder to Slack: the parent message, then any thread replies.

A message whose blocks Slack rejects (invalid_blocks, msg_blocks_too_long and the like)
is posted again as plain text, so a layout problem never costs the reminder itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.reminders.report import Reminder
from bot.reminders.scheduler import PostedReminder, ReminderPostError
from handlers import reminder_views
from handlers.observer import SLACK_FAILURES
from handlers.reminder_views import ReminderMessage

logger = logging.getLogger(__name__)

# Slack's errors for blocks or text it will not show; the same message as plain text is accepted.
LAYOUT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long"})


class SlackReminderPoster:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, reminder: Reminder, *, channel: str,
                   on_parent: Callable[[str], Awaitable[None]] | None = None) -> PostedReminder:
        """Post the parent message and its thread replies; raise ReminderPostError if the parent fails.

        A failed reply is logged and skipped, because the parent is already in the
        channel and posting it again would repeat the reminder.
        """
        messages = reminder_views.reminder_messages(reminder)
        parent_ts = await self._post(messages[0], channel=channel, thread_ts=None, part=1)
        if on_parent is not None:
            await on_parent(parent_ts)
        for part, message in enumerate(messages[1:], start=2):
            try:
                await self._post(message, channel=channel, thread_ts=parent_ts, part=part)
            except ReminderPostError as exc:
                logger.error("reminder reply not posted channel=%s date=%s part=%d of %d: %s", channel,
                             reminder.local_date, part, len(messages), exc)
        return PostedReminder(message_ts=parent_ts, messages=len(messages))

    async def _post(self, message: ReminderMessage, *, channel: str, thread_ts: str | None, part: int) -> str:
        try:
            response = await self.client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks,
                                                          thread_ts=thread_ts)
        except SlackApiError as exc:
            error = _error_code(exc)
            if error not in LAYOUT_ERRORS:
                raise ReminderPostError(f"chat.postMessage to {channel} failed: {error}") from exc
            logger.warning("reminder blocks rejected channel=%s part=%d error=%s; posting it as plain text",
                           channel, part, error)
            return await self._post_plain(message, channel=channel, thread_ts=thread_ts)
        except SLACK_FAILURES as exc:
            raise ReminderPostError(f"chat.postMessage to {channel} failed: {_error_code(exc)}") from exc
        return str(response["ts"])

    async def _post_plain(self, message: ReminderMessage, *, channel: str, thread_ts: str | None) -> str:
        try:
            response = await self.client.chat_postMessage(channel=channel, text=message.plain_text,
                                                          thread_ts=thread_ts)
        except SLACK_FAILURES as exc:
            raise ReminderPostError(f"chat.postMessage to {channel} failed as plain text too: "
                                    f"{_error_code(exc)}") from exc
        return str(response["ts"])


def _error_code(exc: Exception) -> str:
    if isinstance(exc, SlackApiError) and exc.response is not None:
        error = exc.response.get("error")
        if error:
            return str(error)
    return type(exc).__name__
