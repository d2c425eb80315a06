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
from handlers.detach import respond_at_ack
from handlers.observer import SlackObserver
from handlers.payloads import user_id_of
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

NOT_ROLLED_BACK = "did not fail verification, so there is nothing to roll back"
_RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}\Z")


def register_recovery(app: AsyncApp, *, engine: Engine, observer: SlackObserver) -> None:
    async def start_follow_up(run: RunView, *, kind: str, reason: str, user_id: str,
                              respond: AsyncRespond) -> RunView | None:
        """Start a run on the ended run's secrets; reply and return None if it cannot start."""
        result = await engine.start_run(kind=kind, app=run.app, secret_names=run.secret_names,
                                        requester=user_id, reason=reason)
        if isinstance(result, AlreadyOpen):
            link = await observer.permalink(result.run_id)
            await _reply(respond, messages.already_open_reply(result.secret, run.app, link))
            return None
        if isinstance(result, Rejected):
            await _reply(respond, messages.rejected_reply(result.reason))
            return None
        return result.run

    @app.action(messages.RETRY_ACTION_ID)
    @respond_at_ack
    @after_ack_turns
    async def retry_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           respond: AsyncRespond) -> None:
        await ack()
        checked = await _recovery_target(body, action, engine=engine, needs=messages.offers_retry,
                                         not_offered="did not stop with a failure, so there is nothing to retry")
        if isinstance(checked, str):
            await _reply(respond, messages.rejected_reply(checked))
            return
        run, user_id = checked
        # The original reason is kept: for a compromised secret it is the incident's description.
        reason = f"retry of run {run.id}" + (f": {run.reason}" if run.reason else f" ({run.status})")
        started = await start_follow_up(run, kind=run.kind, reason=reason[:MAX_REASON_LENGTH], user_id=user_id,
                                        respond=respond)
        if started is None:
            return
        logger.info("retry started run_id=%s retried=%s user=%s app=%s", started.id, run.id, user_id, run.app)
        link = await observer.permalink(started.id)
        await observer.reply(run.id, messages.retry_started_reply(user_id, link))
        await _reply(respond, messages.started_reply(started, link))

    @app.action(messages.ROLLBACK_ACTION_ID)
    @respond_at_ack
    @after_ack_turns
    async def rollback_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                              respond: AsyncRespond) -> None:
        await ack()
        checked = await _recovery_target(body, action, engine=engine, needs=messages.offers_recovery,
                                         not_offered=NOT_ROLLED_BACK)
        if isinstance(checked, str):
            await _reply(respond, messages.rejected_reply(checked))
            return
        run, user_id = checked
        missing = await _names_without_verified_backup(engine, run)
        if missing:
            await _reply(respond, messages.rejected_reply(
                f"no backup of {', '.join(missing)} was ever verified on Fly, so there is nothing to roll back to"))
            return
        started = await start_follow_up(run, kind="rollback", user_id=user_id, respond=respond,
                                        reason=f"roll back after run {run.id} failed verification")
        if started is None:
            return
        link = await observer.permalink(started.id)
        await observer.reply(run.id, messages.rollback_started_reply(user_id, link))
        await _reply(respond, messages.started_reply(started, link))

    @app.action(messages.LOGS_ACTION_ID)
    @respond_at_ack
    @after_ack_turns
    async def logs_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        checked = await _recovery_target(body, action, engine=engine, needs=messages.offers_recovery,
                                         not_offered=NOT_ROLLED_BACK)
        if isinstance(checked, str):
            await _reply(respond, messages.rejected_reply(checked))
            return
        run, user_id = checked
        try:
            lines = await engine.services.flyctl.recent_logs(run.app, limit=30)
        except SecretbotError as exc:
            logger.warning("reading logs failed run_id=%s app=%s error=%s", run.id, run.app, exc)
            await _reply(respond, messages.rejected_reply(f"the logs could not be read: {exc}"))
            return
        shown = [f"{line.timestamp} {line.instance or '-'} {line.level or '-'} {line.message}" for line in lines]
        await observer.reply(run.id, messages.logs_reply(run.app, shown))
        logger.info("logs shown run_id=%s app=%s user=%s lines=%d", run.id, run.app, user_id, len(shown))


async def _reply(respond: AsyncRespond, text: str) -> None:
    """Answer the clicker alone, below the message they clicked in."""
    await respond(response_type="ephemeral", replace_original=False, text=text)


async def _names_without_verified_backup(engine: Engine, run: RunView) -> list[str]:
    backups = engine.services.backups
    if not backups.enabled:
        return list(run.secret_names)
    return [name for name in run.secret_names if await backups.latest_verified(run.app, name) is None]


async def _recovery_target(
    body: dict[str, Any], action: dict[str, Any], *, engine: Engine, needs: Callable[[RunView], bool],
    not_offered: str,
) -> tuple[RunView, str] | str:
    """Return the ended run behind a Roll back, Show logs or Retry button and the clicker, or the reason not.

    `needs` is the check that the parent message used to show the button, and
    `not_offered` the reason given when it fails.
    """
    user_id = user_id_of(body)
    run_id = str(action.get("value", ""))
    if not isinstance(user_id, str) or not _RUN_ID_PATTERN.match(run_id):
        return "this button is not recognised"
    run = await engine.get_run(run_id)
    if run is None or not needs(run):
        return f"run {run_id} {not_offered}"
    approvers = (await engine.services.resolve_people()).slack.approvers
    if user_id not in (run.requester, *approvers):
        return "only the requester or an approver can do this"
    return run, user_id
