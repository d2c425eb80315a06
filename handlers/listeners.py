"""Bolt listeners: the `/secret` command, the step buttons and the events we subscribe to.

Slack allows 3 seconds for the acknowledgement, so every listener calls `ack()` before any
database or network work. bolt returns the HTTP response at that point, and the rest of
the listener runs in the background.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import CommandError
from bot.inventory.sync import InventorySync
from bot.policy import Policy
from bot.runbook.engine import Accepted, AlreadyDecided, AlreadyOpen, Engine, Invalid, Rejected
from handlers import messages
from handlers.add_form import DEFINE_ACTION, add_modal
from handlers.change_listeners import ChangeCommands, register_changes
from handlers.command_text import (
    CancelCommand,
    Command,
    DiagnoseCommand,
    HelpCommand,
    HistoryCommand,
    RecordDateCommand,
    RotateCommand,
    SecretChangeCommand,
    StatusCommand,
    SyncCommand,
    help_text,
    parse_command,
)
from handlers.detach import check_every_listener_detached, respond_at_ack
from handlers.diagnose_listeners import DiagnoseCommands, register_diagnose
from handlers.inventory_listeners import InventoryCommands, Reply, register_inventory
from handlers.form_opening import form_failure_text, open_form, slack_error_code
from handlers.observer import SLACK_FAILURES, SlackObserver
from handlers.payloads import modal_submission, user_id_of
from handlers.recovery_listeners import register_recovery
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

STEP_ACTION_PATTERN = re.compile(rf"^{messages.ACTION_PREFIX}(approve|deny|done|restore|regenerate)$")
# These buttons open a form instead of deciding at once.
FORM_ACTION_PATTERN = re.compile(rf"^{messages.ACTION_PREFIX}(enter|review|{DEFINE_ACTION})$")
_VALUE_PATTERN = re.compile(r"^([0-9a-f]{12}):([0-9]{1,3})$")
_RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}\Z")


async def _parse_before_ack(text: str, policy: Policy, engine: Engine) -> tuple[Command, bool]:
    """Parse a `/secret` command for its ack; return it and whether it must be parsed again after the ack.

    Secrets added with `/secret add` are accepted by their stored policy. The policies read
    last are tried first, because a read of the database before the ack waits behind the
    runs' work under load. No stored choice is ever removed, so a stale copy lacks at most
    the names added since it was read, and that changes what a command means in two ways
    only. A newly added name is rejected as unknown: the command is parsed again with a
    fresh read before the ack, so the user never sees a wrong error. Or a newly added
    lower-case name is taken for the first word of the reason: a command that starts a run
    and has a reason is parsed again after the ack (`_parse_after_ack`), before anything starts.
    """
    try:
        parsed = parse_command(text, policy.with_added(engine.services.policy.added))
    except CommandError:
        return await _parse_fresh(text, policy, engine), False
    return parsed, isinstance(parsed, RotateCommand | SecretChangeCommand) and parsed.reason is not None


async def _parse_fresh(text: str, policy: Policy, engine: Engine) -> Command:
    # Concurrent commands share one read that began after each of them (bot/shared_reads.py).
    added = await engine.services.refresh_added_policies()
    return parse_command(text, policy.with_added(added))


async def _parse_after_ack(text: str, acknowledged: Command, policy: Policy, engine: Engine,
                           respond: AsyncRespond) -> Command | None:
    """Parse the command again with a fresh read, and reply to the user if it now reads differently.

    Return the command to act on, or None when the fresh reading is an error (after replying with it).
    """
    try:
        parsed = await _parse_fresh(text, policy, engine)
    except CommandError as exc:
        await respond(response_type="ephemeral", replace_original=False,
                      text=f"{exc}\n(A secret was added with `/secret add` a moment ago, which changes how the "
                           "command reads.) Nothing was started.")
        return None
    if parsed != acknowledged and isinstance(parsed, RotateCommand | SecretChangeCommand):
        await respond(response_type="ephemeral", replace_original=False,
                      text=f"A secret was added with `/secret add` a moment ago, so the command reads differently: "
                           f"{messages.starting_ack(parsed.kind, parsed.names, parsed.app)}")
    return parsed


def register(app: AsyncApp, *, engine: Engine, policy: Policy, observer: SlackObserver,
             inventory_sync: InventorySync | None = None) -> None:
    inventory = InventoryCommands(engine=engine, policy=policy, observer=observer, inventory_sync=inventory_sync,
                                  start_rotation=_start_rotation)
    diagnosis = DiagnoseCommands(engine=engine, policy=policy, observer=observer, start_rotation=_start_rotation)
    changes = ChangeCommands(engine=engine, observer=observer, start_rotation=_start_rotation)

    # bolt tries listeners in the order they were registered, and each one that does not
    # match adds CPU to the dispatch (12 more listeners took one from 0.5 to 0.62 ms,
    # measured in-process). The command and the run buttons, which carry the load during an
    # incident, go first. No two listeners match the same request (tests/test_listener_order.py),
    # so the order changes nothing else.
    _register_core(app, engine=engine, policy=policy, observer=observer, inventory=inventory,
                   diagnosis=diagnosis, changes=changes)
    register_inventory(app, inventory)
    register_diagnose(app, diagnosis)
    register_recovery(app, engine=engine, observer=observer)
    register_changes(app, changes)
    check_every_listener_detached(app)


def _register_core(app: AsyncApp, *, engine: Engine, policy: Policy, observer: SlackObserver,
                   inventory: InventoryCommands, diagnosis: DiagnoseCommands, changes: ChangeCommands) -> None:
    """Register the `/secret` command, the run's step and form buttons, and the value form."""

    @app.command("/secret")
    @respond_at_ack
    @after_ack_turns
    async def secret_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        user_id = str(command.get("user_id", ""))
        text = str(command.get("text", ""))
        try:
            parsed, parse_again = await _parse_before_ack(text, policy, engine)
        except CommandError as exc:
            # The reason is not logged: it may quote what the user typed, which could be a value.
            logger.info("command rejected user=%s", user_id)
            await ack(response_type="ephemeral", text=str(exc))
            return
        if isinstance(parsed, HelpCommand):
            await ack(response_type="ephemeral", text=help_text())
            return
        if isinstance(parsed, StatusCommand | HistoryCommand | RecordDateCommand | SyncCommand):
            await inventory.run_command(parsed, user_id=user_id, ack=ack, respond=respond)
            return
        if isinstance(parsed, DiagnoseCommand):
            await diagnosis.run_command(parsed, user_id=user_id, ack=ack, respond=respond)
            return
        if isinstance(parsed, CancelCommand):
            await ack(response_type="ephemeral", text=f"Cancelling run `{parsed.run_id}`…")
            result = await engine.cancel(run_id=parsed.run_id, user_id=user_id,
                                         reason=parsed.reason or "no reason given")
            reply = (messages.rejected_reply(result.reason) if isinstance(result, Rejected)
                     else f"Run `{parsed.run_id}` is cancelled; nothing more will be changed by it.")
            await respond(response_type="ephemeral", replace_original=False, text=reply)
            return
        if policy.slack.channel is None:
            await ack(response_type="ephemeral",
                      text="No runbook channel is configured; set slack.channel in secretbot.toml.")
            return

        await ack(response_type="ephemeral", text=messages.starting_ack(parsed.kind, parsed.names, parsed.app))
        if parse_again:
            reread = await _parse_after_ack(text, parsed, policy, engine, respond)
            if not isinstance(reread, RotateCommand | SecretChangeCommand):
                return
            parsed = reread
        if isinstance(parsed, SecretChangeCommand):
            await changes.start(parsed, user_id=user_id, reply=_ephemeral_reply(respond))
            return
        await _start_rotation(parsed, user_id=user_id, engine=engine, observer=observer,
                              reply=_ephemeral_reply(respond))

    @app.action(STEP_ACTION_PATTERN)
    @respond_at_ack
    @after_ack_turns
    async def step_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        user_id = user_id_of(body)
        match = _VALUE_PATTERN.match(str(action.get("value", "")))
        name_match = STEP_ACTION_PATTERN.match(str(action.get("action_id", "")))
        if not isinstance(user_id, str) or match is None or name_match is None:
            logger.warning("ignored a step button with a malformed payload action_id=%r", action.get("action_id"))
            await respond(response_type="ephemeral", replace_original=False,
                          text="This button is not recognised; nothing was changed.")
            return

        result = await engine.submit(run_id=match.group(1), position=int(match.group(2)),
                                     action=name_match.group(1), user_id=user_id)
        if isinstance(result, Rejected):
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.rejected_reply(result.reason))
        elif isinstance(result, AlreadyDecided):
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.already_decided_reply(result.user_id, result.action, result.decided_at))
        elif isinstance(result, Invalid):
            # Buttons carry no values, so only the value form receives this result.
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.rejected_reply("; ".join(result.problems.values())))
        else:
            assert isinstance(result, Accepted)

    @app.action(FORM_ACTION_PATTERN)
    @respond_at_ack
    async def enter_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                           respond: AsyncRespond) -> None:
        await ack()
        user_id = user_id_of(body)
        match = _VALUE_PATTERN.match(str(action.get("value", "")))
        trigger_id = body.get("trigger_id")
        if not isinstance(user_id, str) or match is None or not isinstance(trigger_id, str):
            logger.warning("ignored an enter-value button with a malformed payload")
            await respond(response_type="ephemeral", replace_original=False,
                          text="This button is not recognised; nothing was changed.")
            return

        # The trigger_id expires 3 seconds after the click, so only quick reads happen first.
        checked = await engine.check_answer(run_id=match.group(1), position=int(match.group(2)), user_id=user_id)
        if isinstance(checked, Rejected):
            await respond(response_type="ephemeral", replace_original=False,
                          text=messages.rejected_reply(checked.reason))
            return
        run, step_kind = checked
        step = run.steps[int(match.group(2))]
        # check_answer refreshed the stored policies of added secrets, which the value form needs.
        inputs = step_kind.inputs(run, engine.services.policy)
        try:
            form_action = str(action.get("action_id", ""))[len(messages.ACTION_PREFIX):]
            view = (add_modal(run, step, inputs, policy) if form_action == DEFINE_ACTION
                    else messages.value_modal(run, step, inputs, action=form_action))
            await open_form(client, trigger_id=trigger_id, view=view)
        except SLACK_FAILURES as exc:
            logger.warning("views.open failed run_id=%s app=%s secrets=%s step=%s error=%s", run.id, run.app,
                           ",".join(run.secret_names), step.kind, slack_error_code(exc) or type(exc).__name__)
            try:
                await respond(response_type="ephemeral", replace_original=False, text=form_failure_text("form", exc))
            except SLACK_FAILURES as reply_error:
                # Slack is unreachable for the reply as well; the warning above is all that is left.
                logger.warning("reply about the unopened form not sent run_id=%s error=%s", run.id,
                               type(reply_error).__name__)

    @app.view(messages.VALUE_MODAL_CALLBACK)
    @respond_at_ack
    @after_ack_turns
    async def values_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = user_id_of(body)
        submission = modal_submission(view)
        if submission is None:
            logger.warning("ignored a value form with malformed metadata")
            await ack()
            return
        entered = messages.values_from_view(submission.state_values)
        first_block = next(iter(f"{messages.VALUE_BLOCK_PREFIX}{name}" for name in entered), "")
        if not isinstance(user_id, str) or not entered:
            await ack()
            return

        # Validation and storage take milliseconds, or up to 1 s (MATCH_WAIT_SECONDS in
        # bot/value_checks.py) when a value_pattern is slow. The acknowledgement must reach Slack
        # within 3 s, and inline errors can only be shown in it.
        result = await engine.submit(run_id=submission.run_id, position=submission.position,
                                     action=str(submission.metadata.get("action", "enter")), user_id=user_id,
                                     values=entered)
        if isinstance(result, Invalid):
            await ack(response_action="errors", errors={
                f"{messages.VALUE_BLOCK_PREFIX}{name}": problem for name, problem in result.problems.items()})
        elif isinstance(result, Rejected):
            await ack(response_action="errors", errors={first_block: result.reason})
        elif isinstance(result, AlreadyDecided):
            await ack(response_action="errors", errors={
                first_block: messages.already_decided_reply(result.user_id, result.action, result.decided_at)})
        else:
            await ack()


def _ephemeral_reply(respond: AsyncRespond) -> Reply:
    async def reply(text: str) -> None:
        await respond(response_type="ephemeral", replace_original=False, text=text)

    return reply


async def _start_rotation(
    parsed: RotateCommand, *, user_id: str, engine: Engine, observer: SlackObserver, reply: Reply
) -> None:
    """Start the runbook of a command or a Rotate button and tell the requester where to follow it."""
    result = await engine.start_run(kind=parsed.kind, app=parsed.app, secret_names=parsed.names,
                                    requester=user_id, reason=parsed.reason)
    if isinstance(result, AlreadyOpen):
        link = await observer.permalink(result.run_id)
        if result.step_title is not None and result.step_status is not None:
            await reply(messages.takeover_rejected_reply(
                result.secret, parsed.app, run_id=result.run_id, step_title=result.step_title,
                step_status=result.step_status, requester=result.requester, approvers=result.approvers,
                permalink=link))
            return
        await reply(messages.already_open_reply(result.secret, parsed.app, link))
        return
    if isinstance(result, Rejected):
        await reply(messages.rejected_reply(result.reason))
        return
    error = observer.post_errors.pop(result.run.id, None)
    if error is not None:
        await reply(messages.not_posted_reply(observer.policy.slack.channel, error))
        return
    link = await observer.permalink(result.run.id)
    await reply(messages.started_reply(result.run, link))
