"""Bolt listeners for the buttons on a run that ended badly: Retry, Roll back and Show logs.

Each is allowed for the run's requester and the approvers, and each starts a new run (or
reads logs) rather than changing the ended one, so the ended run's record stays as it was.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.errors import SecretbotError
from bot.runbook.engine import AlreadyOpen, Engine, Rejected
from bot.runbook.views import RunView
from handlers import messages
from handlers.command_text import MAX_REASON_LENGTH
from handlers.observer import SlackObserver

logger = logging.getLogger(__name__)

_RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}\Z")


def register_recovery(app: AsyncApp, *, engine: Engine, observer: SlackObserver) -> None:
    @app.action(messages.RETRY_ACTION_ID)
    async def retry_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           respond: AsyncRespond) -> None:
        await ack()
        checked = await _recovery_target(body, action, engine=engine, needs=messages.offers_retry)
        if isinstance(checked, str):
            await respond(response_type="ephemeral", replace_original=False, text=messages.rejected_reply(checked))
            return
        run, user_id = checked
        # The original reason is kept: for a compromised secret it is the incident's description.
        reason = f"retry of run {run.id}" + (f": {run.reason}" if run.reason else f" ({run.status})")
        result = await engine.start_run(kind=run.kind, app=run.app, secret_names=run.secret_names,
                                        requester=user_id, reason=reason[:MAX_REASON_LENGTH])
        if isinstance(result, AlreadyOpen):
            link = await observer.permalink(result.run_id)
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.already_open_reply(result.secret, run.app, link))
            return
        if isinstance(result, Rejected):
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.rejected_reply(result.reason))
            return
        logger.info("retry started run_id=%s retried=%s user=%s app=%s", result.run.id, run.id, user_id, run.app)
        link = await observer.permalink(result.run.id)
        await observer.reply(run.id, messages.retry_started_reply(user_id, link))
        await respond(response_type="ephemeral", replace_original=False, text=messages.started_reply(result.run, link))

    @app.action(messages.ROLLBACK_ACTION_ID)
    async def rollback_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                              respond: AsyncRespond) -> None:
        await ack()
        checked = await _recovery_target(body, action, engine=engine, needs=messages.offers_recovery)
        if isinstance(checked, str):
            await respond(response_type="ephemeral", replace_original=False, text=messages.rejected_reply(checked))
            return
        run, user_id = checked
        missing = await _names_without_verified_backup(engine, run)
        if missing:
            await respond(response_type="ephemeral", replace_original=False, text=messages.rejected_reply(
                f"no backup of {', '.join(missing)} was ever verified on Fly, so there is nothing to roll back to"))
            return
        result = await engine.start_run(kind="rollback", app=run.app, secret_names=run.secret_names,
                                        requester=user_id, reason=f"roll back after run {run.id} failed verification")
        if isinstance(result, AlreadyOpen):
            link = await observer.permalink(result.run_id)
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.already_open_reply(result.secret, run.app, link))
            return
        if isinstance(result, Rejected):
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.rejected_reply(result.reason))
            return
        link = await observer.permalink(result.run.id)
        await observer.reply(run.id, messages.rollback_started_reply(user_id, link))
        await respond(response_type="ephemeral", replace_original=False, text=messages.started_reply(result.run, link))

    @app.action(messages.LOGS_ACTION_ID)
    async def logs_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        checked = await _recovery_target(body, action, engine=engine, needs=messages.offers_recovery)
        if isinstance(checked, str):
            await respond(response_type="ephemeral", replace_original=False, text=messages.rejected_reply(checked))
            return
        run, user_id = checked
        try:
            lines = await engine.services.flyctl.recent_logs(run.app, limit=30)
        except SecretbotError as exc:
            logger.warning("reading logs failed run_id=%s app=%s error=%s", run.id, run.app, exc)
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.rejected_reply(f"the logs could not be read: {exc}"))
            return
        shown = [f"{line.timestamp} {line.instance or '-'} {line.level or '-'} {line.message}" for line in lines]
        await observer.reply(run.id, messages.logs_reply(run.app, shown))
        logger.info("logs shown run_id=%s app=%s user=%s lines=%d", run.id, run.app, user_id, len(shown))




def _user_id(body: dict[str, Any]) -> str | None:
    """Return the clicking user's ID from an interaction payload."""
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) else None


async def _names_without_verified_backup(engine: Engine, run: RunView) -> list[str]:
    backups = engine.services.backups
    if not backups.enabled:
        return list(run.secret_names)
    return [name for name in run.secret_names if await backups.latest_verified(run.app, name) is None]


async def _recovery_target(
    body: dict[str, Any], action: dict[str, Any], *, engine: Engine, needs: Callable[[RunView], bool]
) -> tuple[RunView, str] | str:
    """Return the ended run behind a Roll back, Show logs or Retry button and the clicker, or why not.

    `needs` is the check that the parent message used to show the button.
    """
    user_id = _user_id(body)
    run_id = str(action.get("value", ""))
    if not isinstance(user_id, str) or not _RUN_ID_PATTERN.match(run_id):
        return "this button is not recognised"
    run = await engine.get_run(run_id)
    if run is None or not needs(run):
        if needs is messages.offers_retry:
            return f"run {run_id} did not stop with a failure, so there is nothing to retry"
        return f"run {run_id} did not fail verification, so there is nothing to roll back"
    approvers = (await engine.services.refresh_people()).slack.approvers
    if user_id not in (run.requester, *approvers):
        return "only the requester or an approver can do this"
    return run, user_id
