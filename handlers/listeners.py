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

from bot.errors import CommandError
from bot.policy import Policy
from bot.runbook.engine import Accepted, AlreadyDecided, AlreadyOpen, Engine, Rejected
from handlers import messages
from handlers.command_text import HelpCommand, RotateCommand, help_text, parse_command
from handlers.observer import SlackObserver

logger = logging.getLogger(__name__)

STEP_ACTION_PATTERN = re.compile(rf"^{messages.ACTION_PREFIX}(approve|deny|done)$")
_VALUE_PATTERN = re.compile(r"^([0-9a-f]{12}):([0-9]{1,3})$")


def register(app: AsyncApp, *, engine: Engine, policy: Policy, observer: SlackObserver) -> None:
    @app.command("/secret")
    async def secret_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        user_id = str(command.get("user_id", ""))
        try:
            parsed = parse_command(str(command.get("text", "")), policy)
        except CommandError as exc:
            # The reason is not logged: it may quote what the user typed, which could be a value.
            logger.info("command rejected user=%s", user_id)
            await ack(response_type="ephemeral", text=str(exc))
            return
        if isinstance(parsed, HelpCommand):
            await ack(response_type="ephemeral", text=help_text())
            return
        if policy.slack.channel is None:
            await ack(response_type="ephemeral",
                      text="No runbook channel is configured; set slack.channel in secretbot.toml.")
            return

        await ack(response_type="ephemeral", text=messages.starting_ack(parsed.names, parsed.app))
        await _start_rotation(parsed, user_id=user_id, engine=engine, observer=observer, respond=respond)

    @app.action(STEP_ACTION_PATTERN)
    async def step_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        user = body.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
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
        else:
            assert isinstance(result, Accepted)

    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any]) -> None:
        # Subscribed for the Home tab dashboard. Returning 200 keeps Slack from retrying the event.
        logger.debug("app_home_opened user=%s", event.get("user"))


async def _start_rotation(
    parsed: RotateCommand, *, user_id: str, engine: Engine, observer: SlackObserver, respond: AsyncRespond
) -> None:
    result = await engine.start_run(kind="rotate", app=parsed.app, secret_names=parsed.names,
                                    requester=user_id, reason=parsed.reason)
    if isinstance(result, AlreadyOpen):
        link = await observer.permalink(result.run_id)
        await respond(response_type="ephemeral", replace_original=False,
                      text=messages.already_open_reply(result.secret, parsed.app, link))
        return
    error = observer.post_errors.pop(result.run.id, None)
    if error is not None:
        await respond(response_type="ephemeral", replace_original=False,
                      text=messages.not_posted_reply(observer.policy.slack.channel, error))
        return
    link = await observer.permalink(result.run.id)
    await respond(response_type="ephemeral", replace_original=False,
                  text=messages.started_reply(result.run, link))
