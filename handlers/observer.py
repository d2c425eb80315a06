"""Shows runs in Slack: one parent message per run, kept current, and a reply per event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.policy import Policy
from bot.runbook.views import RunView, StepView
from bot.storage.models import RunThread
from handlers import messages

logger = logging.getLogger(__name__)

# Exceptions of a Web API call: an error response from Slack, or no response at all.
SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


class SlackObserver:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        sessions: async_sessionmaker[AsyncSession],
        policy: Policy,
        load_run: Callable[[str], Awaitable[RunView | None]],
        resolved_policy: Callable[[], Policy] | None = None,
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.policy = policy
        self.load_run = load_run
        # The policy with user groups expanded, for membership checks; the file's own
        # entries (groups included) are what the messages name.
        self.resolved_policy = resolved_policy or (lambda: policy)
        # Parent updates for one run are sent one at a time and always render the latest
        # state, because chat.update has no version check and two updates can cross.
        self._locks: dict[str, asyncio.Lock] = {}
        # Slack's error code per run whose parent message could not be posted.
        self.post_errors: dict[str, str] = {}

    async def thread_of(self, run_id: str) -> RunThread | None:
        async with self.sessions() as session:
            return await session.get(RunThread, run_id)

    async def permalink(self, run_id: str) -> str | None:
        thread = await self.thread_of(run_id)
        if thread is None:
            return None
        try:
            response = await self.client.chat_getPermalink(channel=thread.channel, message_ts=thread.message_ts)
        except SLACK_FAILURES as exc:
            logger.warning("chat.getPermalink failed run_id=%s error=%s", run_id, _error_code(exc))
            return None
        link = response.get("permalink")
        return link if isinstance(link, str) else None

    async def run_created(self, run: RunView) -> bool:
        if await self.thread_of(run.id) is not None:
            return True
        channel = self.policy.slack.channel
        if channel is None:
            logger.error("no slack.channel configured; run %s is not shown in Slack", run.id)
            self.post_errors[run.id] = "no slack.channel configured"
            return False
        text, blocks = messages.parent_message(run)
        try:
            response = await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        except SLACK_FAILURES as exc:
            logger.error("posting the run message failed run_id=%s channel=%s error=%s",
                         run.id, channel, _error_code(exc))
            self.post_errors[run.id] = _error_code(exc)
            return False
        async with self.sessions.begin() as session:
            session.add(RunThread(run_id=run.id, surface="slack", channel=response["channel"],
                                  message_ts=response["ts"]))
        logger.info("run message posted run_id=%s channel=%s ts=%s", run.id, response["channel"], response["ts"])
        if run.kind in messages.ALERT_KINDS:
            await self._announce_incident(run)
        return True

    async def _announce_incident(self, run: RunView) -> None:
        break_glass = (not self.policy.slack.compromised_requires_approval
                       and run.requester in self.resolved_policy().slack.approvers)
        await self._reply(run.id, messages.approvers_notice(run, self.policy.slack.approvers, break_glass=break_glass))
        security = self.policy.slack.security_channel
        if security is None:
            return
        text = messages.security_notice(run, await self.permalink(run.id))
        try:
            await self.client.chat_postMessage(channel=security, text=text)
        except SLACK_FAILURES as exc:
            logger.warning("security channel notice failed run_id=%s channel=%s error=%s",
                           run.id, security, _error_code(exc))
            await self._reply(run.id, messages.security_notice_failed(security, _error_code(exc)))

    async def step_changed(self, run: RunView, step: StepView) -> None:
        await self._refresh_parent(run.id)
        reply = messages.step_reply(run, step)
        if reply is not None:
            await self._reply(run.id, reply)

    async def step_progress(self, run: RunView, step: StepView, message: str) -> None:
        await self._reply(run.id, messages.progress_reply(run, step, message))

    async def run_finished(self, run: RunView) -> None:
        await self._refresh_parent(run.id)
        await self._reply(run.id, messages.summary_reply(run))

    async def _refresh_parent(self, run_id: str) -> None:
        lock = self._locks.setdefault(run_id, asyncio.Lock())
        async with lock:
            thread = await self.thread_of(run_id)
            run = await self.load_run(run_id)
            if thread is None or run is None:
                return
            text, blocks = messages.parent_message(run)
            try:
                await self.client.chat_update(channel=thread.channel, ts=thread.message_ts, text=text, blocks=blocks)
            except SLACK_FAILURES as exc:
                logger.warning("updating the run message failed run_id=%s error=%s", run_id, _error_code(exc))
            if run.finished:
                self._locks.pop(run_id, None)

    async def reply(self, run_id: str, text: str) -> None:
        """Post a reply in a run's thread, for events that are not step changes."""
        await self._reply(run_id, text)

    async def _reply(self, run_id: str, text: str) -> None:
        thread = await self.thread_of(run_id)
        if thread is None:
            logger.warning("no Slack thread for run %s; reply dropped", run_id)
            return
        try:
            await self.client.chat_postMessage(channel=thread.channel, thread_ts=thread.message_ts, text=text)
        except SLACK_FAILURES as exc:
            logger.warning("thread reply failed run_id=%s error=%s", run_id, _error_code(exc))


def _error_code(exc: Exception) -> str:
    if not isinstance(exc, SlackApiError):
        return type(exc).__name__
    response = exc.response
    try:
        return str(response.get("error") or response.status_code)
    except AttributeError:
        return type(exc).__name__
