"""Bolt listeners of `/secret diagnose` and its three fix buttons.

The command replies only to the person who typed it, as `/secret status` does. It is
read-only, so anyone may run it. A fix button needs the right to start a runbook
(slack.operators), checked when it is clicked, because the reply may be seen by
someone else (a shared screen) or a click forged. Every listener acknowledges before it
calls Fly, because Slack allows 3 seconds for the acknowledgement.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.diagnose import NOT_DEPLOYED, Fix, diagnose
from bot.errors import CommandError, SecretbotError
from bot.fixes import deploy_staged, restart_app
from bot.flyctl import FlyctlClient
from bot.operations import LockBusy
from bot.policy import APP_NAME_PATTERN, SECRET_NAME_PATTERN, Policy
from bot.runbook.engine import Engine
from handlers import diagnose_views, messages
from handlers.command_text import (
    DIAGNOSE_USAGE,
    DiagnoseCommand,
    rotate_target,
    unknown_secret_error,
)
from handlers.detach import respond_at_ack
from handlers.inventory_listeners import StartRotation
from handlers.observer import SlackObserver
from handlers.payloads import user_id_of
from handlers.reminder_views import parse_button_value
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

HANDLED_ACTION_IDS = tuple(diagnose_views.FIX_ACTION_IDS.values())
FIX_ACTION_PATTERN = re.compile("^(" + "|".join(re.escape(action_id) for action_id in HANDLED_ACTION_IDS) + r")\Z")
_FIX_BY_ACTION = {action_id: fix for fix, action_id in diagnose_views.FIX_ACTION_IDS.items()}


@dataclass
class DiagnoseCommands:
    engine: Engine
    policy: Policy
    observer: SlackObserver
    start_rotation: StartRotation

    async def run_command(self, parsed: DiagnoseCommand, *, user_id: str, ack: AsyncAck,
                          respond: AsyncRespond) -> None:
        await ack(response_type="ephemeral", text=diagnose_views.checking_ack(parsed.name, parsed.app))
        services = self.engine.services
        try:
            diagnosis = await diagnose(services.flyctl, services.backups, app=parsed.app, name=parsed.name)
            if not diagnosis.listed and diagnosis.listing_read and parsed.name not in self.policy.secrets:
                # Neither on Fly nor in secretbot.toml: most likely a typo, so name the closest secret.
                known = {status.name for status in await services.inventory.statuses(app=parsed.app)}
                raise unknown_secret_error(parsed.name, sorted(known | set(self.policy.secrets)), app=parsed.app,
                                           usage=DIAGNOSE_USAGE)
        except CommandError as exc:
            await _reply(respond, str(exc))
            return
        except SecretbotError as exc:
            logger.warning("diagnose failed user=%s app=%s secret=%s error=%s", user_id, parsed.app, parsed.name, exc)
            await _reply(respond, messages.rejected_reply(f"the checks could not run ({exc})"))
            return
        fix = diagnosis.fix(rotatable=parsed.name in self.policy.secrets)
        text, blocks = diagnose_views.diagnosis_message(diagnosis, fix=fix)
        logger.info("diagnosis sent user=%s app=%s secret=%s fix=%s", user_id, parsed.app, parsed.name,
                    fix.value if fix else "none")
        response = await respond(response_type="ephemeral", replace_original=False, text=text, blocks=blocks)
        if response.status_code != 200:
            logger.warning("diagnosis with blocks rejected user=%s status=%d; sending the text alone", user_id,
                           response.status_code)
            await _reply(respond, text)

    async def fix_clicked(self, body: dict[str, Any], action: dict[str, Any], *, respond: AsyncRespond) -> None:
        user_id = user_id_of(body)
        fix = _FIX_BY_ACTION.get(str(action.get("action_id", "")))
        target = _split_target(action.get("value"))
        if user_id is None or fix is None or target is None or target[0] not in self.policy.fly.apps:
            logger.warning("ignored a diagnose button with a malformed payload action_id=%r", action.get("action_id"))
            await _reply(respond, "This button is not recognised; nothing was changed.")
            return
        app, name = target
        services = self.engine.services
        if not await services.may_operate(user_id):
            logger.info("diagnose fix rejected: not an operator user=%s app=%s fix=%s", user_id, app, fix.value)
            await _reply(respond, diagnose_views.not_allowed_reply(fix))
            return
        if fix is Fix.ROTATE:
            await self._rotate(app, name, user_id=user_id, respond=respond)
            return

        logger.info("diagnose fix started user=%s app=%s fix=%s", user_id, app, fix.value)
        await _reply(respond, diagnose_views.fix_started_reply(fix, app))
        try:
            if fix is Fix.DEPLOY:
                staged = await _not_deployed(services.flyctl, app)
                result = await deploy_staged(services, app=app, user_id=user_id, names=staged)
            else:
                result = await restart_app(services, app=app, user_id=user_id)
        except LockBusy as exc:
            await _reply(respond, diagnose_views.busy_reply(str(exc)))
            return
        except SecretbotError as exc:
            logger.warning("diagnose fix failed user=%s app=%s fix=%s error=%s", user_id, app, fix.value, exc)
            await _reply(respond, messages.rejected_reply(f"the fix could not run ({exc})"))
            return
        await _reply(respond, diagnose_views.fix_result_reply(fix, result))

    async def _rotate(self, app: str, name: str, *, user_id: str, respond: AsyncRespond) -> None:
        try:
            parsed = rotate_target(app, name, self.policy)
        except CommandError as exc:
            await _reply(respond, messages.rejected_reply(str(exc)))
            return
        if self.policy.slack.channel is None:
            await _reply(respond, "No runbook channel is configured; set slack.channel in secretbot.toml.")
            return

        async def reply(text: str) -> None:
            await _reply(respond, text)

        logger.info("rotation requested from a diagnosis user=%s app=%s secrets=%s", user_id, app,
                    ",".join(parsed.names))
        await self.start_rotation(parsed, user_id=user_id, engine=self.engine, observer=self.observer, reply=reply)


async def _not_deployed(flyctl: FlyctlClient, app: str) -> tuple[str, ...]:
    """Read which secrets are Staged or Partial now; the diagnosis may be minutes old."""
    return tuple(sorted(secret.name for secret in await flyctl.list_secrets(app) if secret.status in NOT_DEPLOYED))


def register_diagnose(app: AsyncApp, commands: DiagnoseCommands) -> None:
    """Register the fix buttons; `/secret diagnose` itself is dispatched by the `/secret` listener."""

    @app.action(FIX_ACTION_PATTERN)
    @respond_at_ack
    @after_ack_turns
    async def fix_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await commands.fix_clicked(body, action, respond=respond)


def _split_target(value: Any) -> tuple[str, str] | None:
    target = parse_button_value(str(value or ""))
    if target is None or not APP_NAME_PATTERN.match(target[0]) or not SECRET_NAME_PATTERN.match(target[1]):
        return None
    return target


async def _reply(respond: AsyncRespond, text: str) -> None:
    await respond(response_type="ephemeral", replace_original=False, text=text)
