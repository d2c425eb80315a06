"""Bolt listeners for the inventory: status, history, recorded dates, sync, reminder buttons and the Home tab.

Every listener acknowledges before it reads the database or calls Fly, because Slack allows
3 seconds for the acknowledgement. The reply follows through the response_url or the Web API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any, Protocol

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import CommandError, SecretbotError
from bot.inventory import assess
from bot.inventory.sync import InventorySync
from bot.inventory.urgency import by_urgency
from bot.overview import open_runs, secret_history
from bot.policy import APP_NAME_PATTERN, SECRET_NAME_PATTERN, Policy
from bot.runbook.engine import Engine
from bot.shared_reads import JoinedCalls
from handlers import messages, status_views
from handlers.command_text import (
    HISTORY_USAGE,
    ROTATED_USAGE,
    HistoryCommand,
    RecordDateCommand,
    RotateCommand,
    StatusCommand,
    SyncCommand,
    rotate_target,
    unknown_secret_error,
)
from handlers.detach import respond_at_ack
from handlers.form_opening import form_failure_text, open_form, slack_error_code
from handlers.observer import SLACK_FAILURES, SlackObserver
from handlers.payloads import user_id_of
from handlers.reminder_views import (
    ROTATE_ACTION_ID,
    SNOOZE_ACTION_ID,
    parse_button_value,
)
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

# The Home tab's Rotate button is the reminder's "Rotate now" button, handled by one listener.
HOME_ROTATE_ACTION_ID = ROTATE_ACTION_ID
# Every action_id these listeners handle, for the check that each rendered button has a listener.
HANDLED_ACTION_IDS = (ROTATE_ACTION_ID, SNOOZE_ACTION_ID)
# Database errors that a command or form reports to the user instead of raising.
DATABASE_FAILURES = (SecretbotError, SQLAlchemyError, OSError)

Reply = Callable[[str], Awaitable[None]]
InventoryCommand = StatusCommand | HistoryCommand | RecordDateCommand | SyncCommand


class StartRotation(Protocol):
    async def __call__(self, parsed: RotateCommand, *, user_id: str, engine: Engine, observer: SlackObserver,
                       reply: Reply) -> None: ...


@dataclass
class InventoryCommands:
    """The dependencies of the inventory listeners and the work each one does after its acknowledgement."""

    engine: Engine
    policy: Policy
    observer: SlackObserver
    inventory_sync: InventorySync | None
    start_rotation: StartRotation
    # Status replies being built, by app (None for all apps); see `status`.
    _status_replies: JoinedCalls[str | None, tuple[str, list[dict[str, Any]]]] = field(
        default_factory=JoinedCalls, init=False)

    # ------------------------------------------------------------------ slash commands

    async def run_command(self, parsed: InventoryCommand, *, user_id: str, ack: AsyncAck,
                          respond: AsyncRespond) -> None:
        if isinstance(parsed, SyncCommand):
            await self.sync(parsed, ack=ack, respond=respond)
            return
        approvers = (await self.engine.services.resolve_people()).slack.approvers
        if isinstance(parsed, RecordDateCommand) and user_id not in approvers:
            logger.info("rotation date rejected: not an approver user=%s app=%s secret=%s",
                        user_id, parsed.app, parsed.name)
            await ack(response_type="ephemeral", text=status_views.approvers_only_reply(self.policy.slack.approvers))
            return

        await ack()
        try:
            if isinstance(parsed, StatusCommand):
                text, blocks = await self.status(parsed)
            elif isinstance(parsed, HistoryCommand):
                text, blocks = await self.history(parsed)
            else:
                text, blocks = await self.record_date(parsed, user_id=user_id)
        except CommandError as exc:
            # The message is not logged: it quotes what the user typed.
            logger.info("inventory command rejected user=%s", user_id)
            text, blocks = str(exc), []
        except DATABASE_FAILURES as exc:
            logger.warning("inventory command failed user=%s error=%s", user_id, type(exc).__name__)
            text, blocks = messages.rejected_reply(
                f"the request to the bot's database failed ({type(exc).__name__}); try again"), []
        if blocks:
            # bolt returns the response_url's answer instead of raising, so a rejection is checked here.
            response = await respond(response_type="ephemeral", replace_original=False, text=text, blocks=blocks)
            if response.status_code == 200:
                return
            logger.warning("reply with blocks rejected user=%s status=%d; sending the text alone", user_id,
                           response.status_code)
        await respond(response_type="ephemeral", replace_original=False, text=text)

    async def status(self, parsed: StatusCommand) -> tuple[str, list[dict[str, Any]]]:
        """Build the status reply, sharing one that is being built for the same app.

        Each reply still reads the inventory's fingerprint and formats up to STATUS_LINES_MAX
        lines. A burst of `/secret status` during an incident therefore shares the whole
        reply, so the event loop that acknowledges Slack's requests does the work once. A
        reply shared this way may miss a change committed after its read began, which a
        status view can afford because nothing acts on it.
        """
        return await self._status_replies.get(parsed.app, lambda: self._build_status(parsed.app))

    async def _build_status(self, app: str | None) -> tuple[str, list[dict[str, Any]]]:
        # Only the counts and the statuses that fit in the message are read; the reply equals
        # the one built from every status (tests/test_status_cache.py compares them).
        overview = await self.engine.services.inventory.status_overview(app=app,
                                                                        limit=status_views.STATUS_LINES_MAX)
        return status_views.status_overview_message(overview, app=app)

    async def history(self, parsed: HistoryCommand) -> tuple[str, list[dict[str, Any]]]:
        history = await secret_history(self.engine.services.sessions, app=parsed.app, name=parsed.name)
        if not history.records:
            known = await self._known_names(parsed.app)
            if parsed.name not in known:
                # No records, not configured and not on Fly: most likely a typo, so name the closest secret.
                raise unknown_secret_error(parsed.name, known, app=parsed.app, usage=HISTORY_USAGE)
        return status_views.history_message(history)

    async def record_date(self, parsed: RecordDateCommand, *, user_id: str) -> tuple[str, list[dict[str, Any]]]:
        inventory = self.engine.services.inventory
        row = await inventory.get(parsed.app, parsed.name)
        if (row is None or row.removed_at is not None) and self.inventory_sync is not None:
            # The secret may have been set on Fly since the last sync; read the app's list before rejecting.
            await self.inventory_sync.sync_app(parsed.app)
            row = await inventory.get(parsed.app, parsed.name)
        if row is None and parsed.name not in self.policy.secrets:
            raise unknown_secret_error(parsed.name, await self._known_names(parsed.app), app=parsed.app,
                                       usage=ROTATED_USAGE)

        now = self.engine.services.clock.now()
        # The date carries no time of day; midnight UTC is used, but never a moment after now.
        rotated_at = min(datetime.combine(parsed.rotated_on, time(0), tzinfo=UTC), now)
        await inventory.record_date(app=parsed.app, name=parsed.name, rotated_at=rotated_at, actor=user_id)

        status = next((item for item in await inventory.statuses(app=parsed.app) if item.name == parsed.name), None)
        if status is None:
            # The sync marked the secret removed from Fly, so it is not listed; show its schedule anyway.
            row = await inventory.get(parsed.app, parsed.name)
            assert row is not None
            status = assess(row, policy=self.policy, now=now)
        return status_views.recorded_date_reply(status), []

    async def _known_names(self, app: str) -> list[str]:
        names = {status.name for status in await self.engine.services.inventory.statuses(app=app)}
        return sorted(names | set(self.policy.secrets))

    async def sync(self, parsed: SyncCommand, *, ack: AsyncAck, respond: AsyncRespond) -> None:
        if self.inventory_sync is None:
            await ack(response_type="ephemeral",
                      text="The inventory sync is not running in this bot process, so nothing was read from Fly.")
            return
        apps = [parsed.app] if parsed.app is not None else list(self.policy.fly.apps)
        await ack(response_type="ephemeral", text=status_views.sync_started_ack(apps))
        results = await self.inventory_sync.sync_all(apps=apps)
        await respond(response_type="ephemeral", replace_original=False, text=status_views.sync_reply(results))

    # ------------------------------------------------------------------ reminder buttons and Home tab

    async def rotate_clicked(self, body: dict[str, Any], action: dict[str, Any], *, reply: Reply,
                             client: AsyncWebClient) -> None:
        """Start a rotation from a reminder's "Rotate now" or the Home tab's "Rotate", with the clicker as requester."""
        user_id = user_id_of(body)
        target = _split_target(action.get("value"))
        if user_id is None or target is None:
            logger.warning("ignored a rotate button with a malformed payload action_id=%r", action.get("action_id"))
            await reply("This button is not recognised; nothing was changed.")
            return
        added = await self.engine.services.refresh_added_policies()
        try:
            parsed = rotate_target(*target, self.policy.with_added(added))
        except CommandError as exc:
            await reply(messages.rejected_reply(str(exc)))
            return
        if self.policy.slack.channel is None:
            await reply("No runbook channel is configured; set slack.channel in secretbot.toml.")
            return

        logger.info("rotation requested from a button user=%s app=%s secrets=%s", user_id, parsed.app,
                    ",".join(parsed.names))
        await self.start_rotation(parsed, user_id=user_id, engine=self.engine, observer=self.observer, reply=reply)

    async def snooze_clicked(self, body: dict[str, Any], action: dict[str, Any], *, reply: Reply,
                             client: AsyncWebClient) -> None:
        """Open the Snooze form; the trigger_id expires 3 seconds after the click, so only one read happens first."""
        user_id = user_id_of(body)
        target = _split_target(action.get("value"))
        trigger_id = body.get("trigger_id")
        if user_id is None or target is None or not isinstance(trigger_id, str):
            logger.warning("ignored a snooze button with a malformed payload action_id=%r", action.get("action_id"))
            await reply("This button is not recognised; nothing was changed.")
            return
        app, name = target
        if app not in self.policy.fly.apps or await self.engine.services.inventory.get(app, name) is None:
            await reply(messages.rejected_reply(f"{name} on {app} is not in the inventory, so it cannot be snoozed"))
            return

        container = body.get("container")
        channel = body.get("channel")
        channel_id = channel.get("id") if isinstance(channel, dict) else None
        # A reply in the reminder's thread: the thread of a split reminder, or the reminder message itself.
        thread_ts = (container.get("thread_ts") or container.get("message_ts")) if isinstance(container, dict) else None
        snooze = status_views.SnoozeTarget(app=app, name=name, channel=channel_id if isinstance(channel_id, str) else None,
                                           thread_ts=thread_ts if isinstance(thread_ts, str) else None)
        reminders = self.policy.reminders
        try:
            await open_form(client, trigger_id=trigger_id, view=status_views.snooze_modal(
                snooze, max_days=reminders.max_snooze_days, reason_required=reminders.snooze_reason_required))
        except SLACK_FAILURES as exc:
            logger.warning("views.open failed for the snooze form app=%s secret=%s error=%s", app, name,
                           slack_error_code(exc) or type(exc).__name__)
            await reply(form_failure_text("snooze form", exc))

    async def snooze_submitted(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                               client: AsyncWebClient) -> None:
        user_id = user_id_of(body)
        target = status_views.SnoozeTarget.from_metadata(str(view.get("private_metadata", "")))
        if user_id is None or target is None:
            logger.warning("ignored a snooze form with malformed metadata")
            await ack()
            return
        state = view.get("state")
        state_values = state.get("values") if isinstance(state, dict) else None
        reminders = self.policy.reminders
        form = status_views.read_snooze_form(state_values if isinstance(state_values, dict) else {},
                                             max_days=reminders.max_snooze_days,
                                             reason_required=reminders.snooze_reason_required)
        if isinstance(form, dict):
            await ack(response_action="errors", errors=form)
            return

        if not await self.engine.services.may_operate(user_id):
            # Snoozing defers a rotation, so it needs the right to start one.
            logger.info("snooze rejected: not an operator user=%s app=%s secret=%s", user_id, target.app, target.name)
            await ack(response_action="errors", errors={
                status_views.SNOOZE_DAYS_BLOCK: "Only the operators in slack.operators can snooze a reminder."})
            return

        # The write takes milliseconds, and a failure can only be shown in the acknowledgement.
        days, reason = form
        try:
            until = await self.engine.services.inventory.snooze(app=target.app, name=target.name, days=days,
                                                                reason=reason, actor=user_id)
        except DATABASE_FAILURES as exc:
            logger.warning("snooze failed app=%s secret=%s user=%s error=%s", target.app, target.name, user_id,
                           type(exc).__name__)
            await ack(response_action="errors", errors={
                status_views.SNOOZE_DAYS_BLOCK: "The snooze could not be saved; nothing was changed. Try again."})
            return
        except CommandError as exc:
            logger.info("snooze rejected app=%s secret=%s user=%s: not listed on Fly", target.app, target.name,
                        user_id)
            await ack(response_action="errors", errors={status_views.SNOOZE_DAYS_BLOCK: str(exc)})
            return
        await ack()
        await self._confirm_snooze(client, user_id, target,
                                   status_views.snoozed_reply(user_id, target, days=days, until=until, reason=reason))

    async def _confirm_snooze(self, client: AsyncWebClient, user_id: str, target: status_views.SnoozeTarget,
                              text: str) -> None:
        """Reply in the reminder's thread, or tell the user alone if that fails."""
        if target.channel is not None and target.thread_ts is not None:
            try:
                await client.chat_postMessage(channel=target.channel, thread_ts=target.thread_ts, text=text)
                return
            except SLACK_FAILURES as exc:
                logger.warning("snooze confirmation not posted in the thread app=%s secret=%s error=%s",
                               target.app, target.name, type(exc).__name__)
        try:
            await client.chat_postMessage(channel=user_id, text=text)
        except SLACK_FAILURES as exc:
            logger.warning("snooze confirmation not sent app=%s secret=%s error=%s", target.app, target.name,
                           type(exc).__name__)

    async def publish_home(self, user_id: str, client: AsyncWebClient, *, notice: str | None = None) -> None:
        """Publish the Home tab with the current inventory and open runs, read afresh each time.

        `notice` is the reply to the clicker's last Home tab button, shown at the top.
        """
        try:
            statuses = by_urgency(await self.engine.services.inventory.statuses())
            runs = await open_runs(self.engine.services.sessions)
        except DATABASE_FAILURES as exc:
            logger.warning("home tab not published: database read failed user=%s error=%s", user_id,
                           type(exc).__name__)
            return
        shown_runs = runs[:status_views.MAX_HOME_RUNS]
        links = await asyncio.gather(*(self.observer.permalink(run.id) for run in shown_runs))
        view = status_views.home_view(
            statuses, runs, permalinks=dict(zip((run.id for run in shown_runs), links, strict=True)),
            rotate_action_id=HOME_ROTATE_ACTION_ID, can_rotate=lambda status: status.rotatable,
            now=self.engine.services.clock.now(), notice=notice)
        try:
            await client.views_publish(user_id=user_id, view=view)
        except SLACK_FAILURES as exc:
            logger.warning("views.publish failed user=%s error=%s", user_id, type(exc).__name__)
            return
        logger.info("home tab published user=%s secrets=%d open_runs=%d", user_id, len(statuses), len(runs))


def register_inventory(app: AsyncApp, commands: InventoryCommands) -> None:
    """Register the reminder buttons, the snooze form and the Home tab; `/secret` itself dispatches to `commands`."""

    @app.action(ROTATE_ACTION_ID)
    @respond_at_ack
    @after_ack_turns
    async def rotate_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                            respond: AsyncRespond | None = None) -> None:
        await ack()
        if not _from_view(body):
            await commands.rotate_clicked(body, action, reply=_clicker_reply(body, respond, client), client=client)
            return
        # A Home tab click has no response_url, so the reply is shown at the top of the tab.
        notices: list[str] = []

        async def note(text: str) -> None:
            notices.append(text)

        await commands.rotate_clicked(body, action, reply=note, client=client)
        user_id = user_id_of(body)
        if user_id is not None:
            await commands.publish_home(user_id, client, notice="\n".join(notices) or None)

    @app.action(SNOOZE_ACTION_ID)
    @respond_at_ack
    async def snooze_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                            respond: AsyncRespond | None = None) -> None:
        await ack()
        await commands.snooze_clicked(body, action, reply=_clicker_reply(body, respond, client), client=client)

    @app.view(status_views.SNOOZE_CALLBACK)
    @respond_at_ack
    @after_ack_turns
    async def snooze_form(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        await commands.snooze_submitted(ack, body, view, client)

    @app.event("app_home_opened")
    @respond_at_ack
    @after_ack_turns
    async def home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        user_id = event.get("user")
        # The event also fires for the Messages tab, which has no view to publish.
        if event.get("tab", "home") != "home" or not isinstance(user_id, str):
            return
        await commands.publish_home(user_id, client)


def _from_view(body: dict[str, Any]) -> bool:
    container = body.get("container")
    return isinstance(container, dict) and container.get("type") == "view"


def _split_target(value: Any) -> tuple[str, str] | None:
    """Split a button value "{app}:{name}" and check both names; None if it is malformed."""
    target = parse_button_value(str(value or ""))
    if target is None or not APP_NAME_PATTERN.match(target[0]) or not SECRET_NAME_PATTERN.match(target[1]):
        return None
    return target


def _clicker_reply(body: dict[str, Any], respond: AsyncRespond | None, client: AsyncWebClient) -> Reply:
    """Answer the clicker alone: in the channel through the response_url, or else by direct message.

    A click in a view carries no response_url, so bolt gives no `respond`.
    """
    user_id = user_id_of(body)

    async def reply(text: str) -> None:
        if respond is not None and not _from_view(body):
            try:
                await respond(response_type="ephemeral", replace_original=False, text=text)
            except SLACK_FAILURES as exc:
                logger.warning("reply to a click not sent user=%s error=%s", user_id, type(exc).__name__)
            return
        if user_id is None:
            return
        try:
            await client.chat_postMessage(channel=user_id, text=text)
        except SLACK_FAILURES as exc:
            logger.warning("reply to a Home tab click not sent user=%s error=%s", user_id, type(exc).__name__)

    return reply
