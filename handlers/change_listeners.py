"""Bolt listeners of `/secret add`, `/secret unset`, the add form and the Restore button.

Slack allows 3 seconds for an acknowledgement, so each listener acknowledges before it
reads Fly's list or the database. The runs themselves check Fly's list again at their first
step, because it can change between the command and the run.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.errors import SecretbotError
from bot.restores import claim_restore, release_restore, restore_claim
from bot.runbook.engine import AlreadyDecided, AlreadyOpen, Engine, Invalid, Rejected
from bot.runbook.views import RunView
from handlers import add_form, messages
from handlers.command_text import RotateCommand, SecretChangeCommand
from handlers.detach import respond_at_ack
from handlers.inventory_listeners import Reply, StartRotation
from handlers.observer import SLACK_FAILURES, SlackObserver
from handlers.payloads import modal_submission, user_id_of
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

_RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}\Z")


def listing_problem(parsed: SecretChangeCommand, listed: list[str]) -> str | None:
    """Return why the command cannot start given the names Fly lists on the app, or None if it can."""
    if parsed.kind == "add" and parsed.name in listed:
        return (f"{parsed.name} is already set on {parsed.app}, so there is nothing to add. To change its value, "
                f"use `/secret rotate {parsed.name}`.")
    if parsed.kind == "unset" and parsed.name not in listed:
        same_letters = [name for name in listed if name.lower() == parsed.name.lower()]
        close = difflib.get_close_matches(parsed.name, listed, n=1, cutoff=0.6)
        suggestions = same_letters or close
        hint = f" Did you mean `{suggestions[0]}`?" if suggestions else ""
        if same_letters:
            hint += " Secret names are case-sensitive."
        return f"{parsed.name} is not set on {parsed.app} (`flyctl secrets list`), so there is nothing to unset.{hint}"
    return None


@dataclass
class ChangeCommands:
    """The dependencies of the add and unset listeners and the work each does after its acknowledgement."""

    engine: Engine
    observer: SlackObserver
    start_rotation: StartRotation

    async def start(self, parsed: SecretChangeCommand, *, user_id: str, reply: Reply) -> None:
        """Check the name against Fly's list, then start the add or unset run like a rotation."""
        try:
            listed = [secret.name for secret in await self.engine.services.flyctl.list_secrets(parsed.app)]
        except SecretbotError as exc:
            logger.warning("reading secrets before %s failed app=%s user=%s error=%s", parsed.kind, parsed.app,
                           user_id, exc)
            await reply(messages.rejected_reply(f"the secrets of {parsed.app} could not be read from Fly ({exc}); "
                                                "try again"))
            return
        problem = listing_problem(parsed, listed)
        if problem is not None:
            logger.info("%s rejected by Fly's list user=%s app=%s secret=%s", parsed.kind, user_id, parsed.app,
                        parsed.name)
            await reply(messages.rejected_reply(problem))
            return
        run = RotateCommand(names=parsed.names, app=parsed.app, reason=parsed.reason, kind=parsed.kind)
        await self.start_rotation(run, user_id=user_id, engine=self.engine, observer=self.observer, reply=reply)

    async def form_submitted(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Pass the add form's choices and value to the engine, and show any problem inline in the form."""
        user_id = user_id_of(body)
        submission = modal_submission(view)
        if submission is None:
            logger.warning("ignored an add form with malformed metadata")
            await ack()
            return
        run_id, position = submission.run_id, submission.position
        values = add_form.submitted_values(submission.state_values)
        run = await self.engine.get_run(run_id)
        if not isinstance(user_id, str) or run is None:
            await ack()
            return
        for name in run.secret_names:
            # An empty field is left out of Slack's state; the step reads it as "no value".
            values.setdefault(name, "")

        result = await self.engine.submit(run_id=run_id, position=position, action=add_form.DEFINE_ACTION,
                                          user_id=user_id, values=values)
        first_block = add_form.error_block(run.secret_names[0])
        if isinstance(result, Invalid):
            await ack(response_action="errors", errors={
                add_form.error_block(name): problem for name, problem in result.problems.items()})
        elif isinstance(result, Rejected):
            await ack(response_action="errors", errors={first_block: result.reason})
        elif isinstance(result, AlreadyDecided):
            await ack(response_action="errors", errors={
                first_block: messages.already_decided_reply(result.user_id, result.action, result.decided_at)})
        else:
            await ack()

    async def restore_clicked(self, body: dict[str, Any], action: dict[str, Any], *, reply: Reply) -> None:
        """Start one restore run for an unset run's kept backup. A later click gets a reply naming who started it."""
        user_id = user_id_of(body)
        run_id = str(action.get("value", ""))
        if not isinstance(user_id, str) or not _RUN_ID_PATTERN.match(run_id):
            await reply(messages.rejected_reply("this button is not recognised"))
            return
        run = await self.engine.get_run(run_id)
        position = _backup_step(run) if run is not None else None
        if run is None or position is None:
            await reply(messages.rejected_reply(f"run {run_id} is not an unset, so there is nothing to restore"))
            return
        sessions = self.engine.services.sessions
        claim = await restore_claim(sessions, run_id=run.id, position=position)
        if claim is not None:
            logger.info("restore already claimed run_id=%s user=%s claimed_by=%s", run.id, user_id, claim.user_id)
            await reply(messages.restore_taken_reply(claim.user_id, claim.claimed_at))
            return
        if not messages.offers_restore(run):
            await reply(messages.rejected_reply(f"run {run.id} kept no backup that it removed from Fly, "
                                                "so there is nothing to restore"))
            return

        refusal = await self._refusal(run, user_id)
        if refusal is not None:
            logger.info("restore rejected run_id=%s user=%s", run.id, user_id)
            await reply(messages.rejected_reply(refusal))
            return
        if not await claim_restore(sessions, run_id=run.id, position=position, user_id=user_id):
            claim = await restore_claim(sessions, run_id=run.id, position=position)
            if claim is not None:
                await reply(messages.restore_taken_reply(claim.user_id, claim.claimed_at))
            else:
                await reply(messages.rejected_reply("another click was being handled; press Restore again"))
            return

        result = await self.engine.start_run(kind="restore", app=run.app, secret_names=run.secret_names,
                                             requester=user_id, reason=f"restore after unset run {run.id}")
        if isinstance(result, AlreadyOpen | Rejected):
            # Nothing was started, so the offer opens again.
            logger.info("restore not started run_id=%s user=%s result=%s", run.id, user_id, type(result).__name__)
            await release_restore(sessions, run_id=run.id, position=position, user_id=user_id)
            if isinstance(result, AlreadyOpen):
                link = await self.observer.permalink(result.run_id)
                await reply(messages.already_open_reply(result.secret, run.app, link))
            else:
                await reply(messages.rejected_reply(result.reason))
            return

        logger.info("restore started run_id=%s unset_run=%s user=%s app=%s", result.run.id, run.id, user_id, run.app)
        link = await self.observer.permalink(result.run.id)
        await self.observer.reply(run.id, messages.restore_started_reply(user_id, link))
        await self._refresh_parent(run.id)
        await reply(messages.started_reply(result.run, link))

    async def _refusal(self, run: RunView, user_id: str) -> str | None:
        """Return why `user_id` may not restore, or None: the unset's requester or an approver, and an operator."""
        approvers = (await self.engine.services.resolve_people()).slack.approvers
        if user_id not in (run.requester, *approvers):
            return ("only the requester of the unset or an approver can restore it; the restore then waits for "
                    "an approver, as a rotation does")
        if not await self.engine.services.may_operate(user_id):
            return "only the operators listed in slack.operators can start a runbook; ask one of them"
        return None

    async def _refresh_parent(self, run_id: str) -> None:
        """Redraw the unset's message, which now names who pressed Restore instead of showing the button."""
        thread = await self.observer.thread_of(run_id)
        run = await self.engine.get_run(run_id)
        if thread is None or run is None:
            return
        text, blocks = messages.parent_message(run)
        try:
            await self.observer.client.chat_update(channel=thread.channel, ts=thread.message_ts, text=text,
                                                   blocks=blocks)
        except SLACK_FAILURES as exc:
            logger.warning("updating the unset message failed run_id=%s error=%s", run_id, type(exc).__name__)


def _backup_step(run: RunView) -> int | None:
    """Return the position of an unset run's backup step, on which the Restore claim is recorded."""
    if run.kind != "unset":
        return None
    return next((step.position for step in run.steps if step.kind == "keep_backup"), None)


def register_changes(app: AsyncApp, commands: ChangeCommands) -> None:
    @app.view(add_form.ADD_MODAL_CALLBACK)
    @respond_at_ack
    @after_ack_turns
    async def add_form_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        # Validation and storage take milliseconds; inline errors can only go in the acknowledgement.
        await commands.form_submitted(ack, body, view)

    @app.action(messages.RESTORE_ACTION_ID)
    @respond_at_ack
    @after_ack_turns
    async def restore_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                             respond: AsyncRespond) -> None:
        await ack()

        async def reply(text: str) -> None:
            await respond(response_type="ephemeral", replace_original=False, text=text)

        await commands.restore_clicked(body, action, reply=reply)
