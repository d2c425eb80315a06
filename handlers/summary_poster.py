"""Posts the summary of a run started from a terminal to the runbook channel.

Such a run has no thread in Slack, so its summary is one top-level message with the
checklist, who started it and from which host. It carries no buttons: the run belongs
to the terminal that started it, and nothing in Slack can act on it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.summaries import RunSummary, SummaryPostError
from handlers.messages import RUN_STATUS_TEXT, STATUS_ICONS, TEXT_LIMIT, escape, truncate
from handlers.observer import SLACK_FAILURES
from handlers.slack_app import create_client

logger = logging.getLogger(__name__)

# The operator waits at the end of a break-glass run while the summary is posted, and
# Slack may be down then, so each request gives up sooner than the bot's own calls.
TERMINAL_TIMEOUT_SECONDS = 8


def terminal_client(*, token: str, base_url: str) -> AsyncWebClient:
    """Return a Web API client for `secretbot run`, with a shorter timeout than the bot's."""
    client = create_client(token=token, base_url=base_url)
    client.timeout = TERMINAL_TIMEOUT_SECONDS
    return client


def summary_text(summary: RunSummary, *, queued_at: datetime | None = None) -> str:
    """Build the mrkdwn summary of a terminal run; `queued_at` marks one posted late from the queue."""
    status = RUN_STATUS_TEXT.get(summary.status, summary.status)
    lines = [f":computer: *Summary: {escape(summary.headline)}* is *{status}* (started from a terminal, not in Slack)"]
    started_by = f"Started by `{escape(summary.requester)}`"
    if summary.operator:
        started_by += f" (operator: {escape(summary.operator)})"
    lines.append(f"{started_by} on host `{escape(summary.hostname)}`")
    if summary.reason:
        lines.append(f"Reason: {escape(summary.reason)}")
    for position, step in enumerate(summary.steps, start=1):
        lines.append(_step_line(position, step.title, step.status, step.detail, step.actor))
    for secret in summary.secrets:
        if secret.before or secret.after:
            lines.append(f"{escape(secret.name)}: digest `{secret.before or '?'}` → `{secret.after or 'unchanged'}`")
    took = f"Took {_duration(summary.created_at, summary.finished_at)}; " if summary.finished_at else ""
    lines.append(f"{took}run `{summary.run_id}`.")
    if summary.status != "succeeded" and summary.outcome:
        lines.append(f"Reason for stopping: {escape(truncate(summary.outcome, 1500))}")
    if queued_at is not None:
        lines.append(f"_Posted late: Slack could not be reached when the run ended at {queued_at:%Y-%m-%d %H:%M} UTC._")
    return truncate("\n".join(lines), TEXT_LIMIT)


def _step_line(position: int, title: str, status: str, detail: str | None, actor: str | None) -> str:
    line = f"{STATUS_ICONS.get(status, ':grey_question:')} {position}. *{escape(title)}*"
    if status == "pending":
        # The summary is written once the run has ended, so a pending step never ran.
        return line + " (not run)"
    if detail and status in ("done", "skipped", "failed"):
        line += f": {escape(detail)}"
    if actor and status in ("done", "failed"):
        line += f" (`{escape(actor)}`)"
    return line


def _duration(start: datetime, end: datetime) -> str:
    seconds = int((end - start).total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s"


class SlackSummaryPoster:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, summary: RunSummary, *, channel: str, queued_at: datetime | None) -> str:
        """Post the summary as plain mrkdwn text; raise SummaryPostError with Slack's error code."""
        try:
            text = summary_text(summary, queued_at=queued_at)
            response = await self.client.chat_postMessage(channel=channel, text=text)
        except SLACK_FAILURES as exc:
            error = _error_code(exc)
            logger.warning("run summary not accepted by Slack run_id=%s channel=%s error=%s",
                           summary.run_id, channel, error)
            raise SummaryPostError(f"chat.postMessage to {channel} failed: {error}") from exc
        return str(response["ts"])


def _error_code(exc: Exception) -> str:
    if isinstance(exc, SlackApiError) and exc.response is not None:
        error = exc.response.get("error")
        if error:
            return str(error)
    return type(exc).__name__
