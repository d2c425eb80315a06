"""Signed requests to the bot's HTTP endpoint, built and sent the way Slack sends them.

    driver = SlackDriver(bot_url=f"{bot_root}/slack/events", signing_secret=SECRET, slack=stand_in)
    response = await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id="C0123OPS")
    assert response.status == 200
    assert response.elapsed < 3  # Slack shows the user an error after 3 s without a response

Bodies are built as strings, signed, and sent byte for byte as signed: Slack signs
`v0:<timestamp>:<raw body>` with HMAC-SHA256 and the app's signing secret, and the bot
must check the signature over exactly those bytes. Payloads take their trigger_id and
response_url from the stand-in, and `click` reads buttons from the message the stand-in
holds, so a test clicks only what a user could see.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict

from .slack_api import SlackStandin
from .slack_state import View

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"

# Marks a `value=` argument the caller left out, because None removes the value.
_UNSET: Any = object()


class SendOptions(TypedDict, total=False):
    """Signing options that every send accepts.

    `timestamp` replaces the current time (to send a stale request), `signature`
    replaces the computed `v0=` signature, and `sign=False` omits both headers.
    """

    timestamp: int | str
    signature: str
    sign: bool


@dataclass(frozen=True)
class DriverResponse:
    """The bot's HTTP response, with the time it took and the payload that was sent."""

    status: int
    text: str
    headers: Mapping[str, str]
    elapsed: float  # seconds from sending the request to reading the whole response
    payload: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass(frozen=True)
class _Button:
    block_id: str
    element: dict[str, Any]

    @property
    def action_id(self) -> str:
        return str(self.element.get("action_id", ""))


class SlackDriver:
    """Sends slash commands, button clicks, view submissions and events to the bot."""

    def __init__(
        self,
        *,
        bot_url: str,
        signing_secret: str,
        slack: SlackStandin,
        team_id: str = "T0TEAM",
        verification_token: str = "legacy-verification-token",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        self.slack = slack
        self.team_id = team_id
        # Slack still sends the deprecated verification token; bolt ignores it.
        self.verification_token = verification_token
        self.timeout = timeout
        # Set to send every request on one session, whose connections stay open between
        # requests as a proxy's do; by default each request gets a new connection.
        self.session: aiohttp.ClientSession | None = None

    @property
    def _team(self) -> dict[str, Any]:
        return {"id": self.team_id, "domain": self.slack.workspace.team_domain}

    def _user(self, user_id: str) -> dict[str, Any]:
        name = self.slack.user_name(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def signature_for(self, body: str, timestamp: str) -> str:
        """Return Slack's `v0=<hex>` signature of `body` sent at `timestamp`."""
        base = f"v0:{timestamp}:{body}".encode()
        return "v0=" + hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()

    async def slash_command(
        self,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        command: str = "/secret",
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Send `command text` as typed by `user_id` in `channel_id`, with Slack's form fields in Slack's order."""
        fields = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.slack.workspace.team_domain,
            "channel_id": channel_id,
            "channel_name": self.slack.channel_name(channel_id),
            "user_id": user_id,
            "user_name": self.slack.user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": self.slack.workspace.app_id,
            "is_enterprise_install": "false",
            "response_url": self.slack.new_response_url(channel=channel_id, user=user_id),
            "trigger_id": self.slack.new_trigger_id(user_id),
        }
        return await self.send(urlencode(fields), content_type=FORM_CONTENT_TYPE, payload=fields, **options)

    async def click(
        self,
        *,
        channel: str,
        ts: str,
        action_id: str,
        user_id: str,
        block_id: str | None = None,
        value: Any = _UNSET,
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Click the button `action_id` in the current content of message `ts` in the stand-in.

        Raises LookupError naming the buttons that exist when no button (or more than
        one, without `block_id`) matches. `value=` replaces the button's value, to forge
        a payload, and None removes it.
        """
        message = self.slack.message(channel, ts)
        ephemeral = self.slack.workspace.find_ephemeral(ts) if message is None else None
        if message is not None:
            blocks = message.blocks
            message_object = message.to_api(self.team_id)
        elif ephemeral is not None:
            blocks = ephemeral.blocks
            message_object = {"type": "message", "ts": ts, "text": ephemeral.text, "blocks": ephemeral.blocks}
        else:
            raise LookupError(f"No message with ts {ts} in channel {channel} to click {action_id!r} in.")
        button = _find_button(blocks, action_id=action_id, block_id=block_id, where=f"message {ts} in {channel}")

        container: dict[str, Any] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": message is None,
        }
        if message is not None and message.is_reply:
            container["thread_ts"] = message.thread_ts

        payload = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": self.slack.workspace.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self.slack.new_trigger_id(user_id),
            "team": self._team,
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self.slack.channel_name(channel)},
            "message": message_object,
            "state": {"values": {}},
            "response_url": self.slack.new_response_url(channel=channel, user=user_id, original_ts=ts),
            "actions": [_button_action(button, value)],
        }
        return await self._send_payload(payload, **options)

    async def click_view(
        self,
        *,
        view_id: str,
        action_id: str,
        user_id: str,
        block_id: str | None = None,
        value: Any = _UNSET,
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Click the button `action_id` in an open modal or a Home tab; raises LookupError like `click`."""
        view = self.slack.view(view_id)
        if view is None or not view.is_open:
            raise LookupError(f"No open view {view_id} to click {action_id!r} in.")
        button = _find_button(view.blocks, action_id=action_id, block_id=block_id, where=f"view {view_id}")
        payload = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": self.slack.workspace.app_id,
            "token": self.verification_token,
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": self.slack.new_trigger_id(user_id),
            "team": self._team,
            "enterprise": None,
            "is_enterprise_install": False,
            "view": self._view_object(view, _input_states(view, {})),
            "state": {"values": _input_states(view, {})},
            "actions": [_button_action(button, value)],
        }
        return await self._send_payload(payload, **options)

    async def submit_view(
        self,
        *,
        view_id: str,
        user_id: str,
        values: Mapping[str, Mapping[str, Any]],
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Submit the open modal `view_id` with `values` as {block_id: {action_id: value}}.

        A plain value becomes the element's state (`value`, `selected_option`,
        `selected_user`...) by the element's type; a dict is used as the state itself.
        Inputs left out are sent empty, as Slack does. After the bot responds, the
        stand-in closes, updates or pushes the modal as the response requests.
        """
        view = self.slack.view(view_id)
        if view is None or not view.is_open:
            raise LookupError(f"No open modal {view_id} to submit.")
        payload = {
            "type": "view_submission",
            "team": self._team,
            "user": self._user(user_id),
            "api_app_id": self.slack.workspace.app_id,
            "token": self.verification_token,
            "trigger_id": self.slack.new_trigger_id(user_id),
            "view": self._view_object(view, _input_states(view, values)),
            "response_urls": [],
            "enterprise": None,
            "is_enterprise_install": False,
        }
        response = await self._send_payload(payload, **options)
        self.slack.apply_view_response(view_id, status=response.status, body=response.text)
        return response

    async def event(
        self,
        event: Mapping[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        event_id: str | None = None,
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Deliver an Events API event. With `retry_num`, send Slack's retry headers too.

        Pass the `event_id` of an earlier delivery (from `response.payload`) to send
        the same event again, as Slack's retries do.
        """
        now = time.time()
        inner = {"event_ts": f"{now:.6f}", **event}
        envelope = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "api_app_id": self.slack.workspace.app_id,
            "event": inner,
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(now),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.slack.workspace.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        headers: dict[str, str] = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return await self.send(
            json.dumps(envelope), content_type="application/json", payload=envelope, headers=headers, **options
        )

    async def send(
        self,
        body: str,
        *,
        content_type: str,
        payload: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Sign `body` and POST it unchanged to the bot; `payload` is only kept on the response."""
        request_headers = {"Content-Type": content_type, "User-Agent": SLACK_USER_AGENT}
        if options.get("sign", True):
            timestamp = str(options.get("timestamp", int(time.time())))
            request_headers["X-Slack-Request-Timestamp"] = timestamp
            signature = options["signature"] if "signature" in options else self.signature_for(body, timestamp)
            request_headers["X-Slack-Signature"] = signature
        request_headers.update(headers or {})

        # trust_env=False keeps proxy variables from routing 127.0.0.1 traffic elsewhere.
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            session = self.session
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession(trust_env=False, timeout=timeout))
            async with session.post(self.bot_url, data=body.encode(), headers=request_headers,
                                    timeout=timeout) as response:
                text = await response.text()
                elapsed = time.monotonic() - started
                result = DriverResponse(
                    status=response.status,
                    text=text,
                    headers=CIMultiDict(response.headers),
                    elapsed=elapsed,
                    payload=payload or {},
                )
        logger.debug("Sent signed request to the bot status=%d elapsed=%.3f", result.status, elapsed)
        return result

    async def _send_payload(self, payload: dict[str, Any], **options: Unpack[SendOptions]) -> DriverResponse:
        # urlencode escapes the &, + and % that the JSON may contain.
        body = urlencode({"payload": json.dumps(payload)})
        return await self.send(body, content_type=FORM_CONTENT_TYPE, payload=payload, **options)

    def _view_object(self, view: View, state_values: dict[str, Any]) -> dict[str, Any]:
        workspace = self.slack.workspace
        return view.to_api(
            team_id=workspace.team_id, app_id=workspace.app_id, bot_id=workspace.bot_id, state_values=state_values
        )


def _iter_buttons(blocks: list[dict[str, Any]]) -> Iterator[_Button]:
    for block in blocks:
        block_id = str(block.get("block_id", ""))
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if isinstance(element, dict) and element.get("type") == "button":
                    yield _Button(block_id=block_id, element=element)
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            yield _Button(block_id=block_id, element=accessory)


def _find_button(blocks: list[dict[str, Any]], *, action_id: str, block_id: str | None, where: str) -> _Button:
    buttons = list(_iter_buttons(blocks))
    matches = [
        button
        for button in buttons
        if button.action_id == action_id and (block_id is None or button.block_id == block_id)
    ]
    if len(matches) == 1:
        return matches[0]

    existing = ", ".join(f"{button.action_id} (block {button.block_id})" for button in buttons) or "none"
    if not matches:
        raise LookupError(f"No button with action_id {action_id!r} in {where}. Buttons there: {existing}.")
    raise LookupError(
        f"Several buttons with action_id {action_id!r} in {where}, so pass block_id. Buttons there: {existing}."
    )


def _button_action(button: _Button, value: Any) -> dict[str, Any]:
    action: dict[str, Any] = {
        "type": "button",
        "action_id": button.action_id,
        "block_id": button.block_id,
        "text": button.element.get("text"),
        "action_ts": f"{time.time():.6f}",
    }
    if "value" in button.element:
        action["value"] = button.element["value"]
    if "style" in button.element:
        action["style"] = button.element["style"]
    if value is None:
        action.pop("value", None)
    elif value is not _UNSET:
        action["value"] = value
    return action


def _input_states(view: View, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Build `view.state.values` for every input block, filling in the given values."""
    inputs: dict[tuple[str, str], dict[str, Any]] = {}
    for block in view.blocks:
        element = block.get("element")
        if block.get("type") == "input" and isinstance(element, dict):
            inputs[(str(block.get("block_id")), str(element.get("action_id")))] = element

    for block_id, actions in values.items():
        for action_id in actions:
            if (block_id, action_id) not in inputs:
                known = ", ".join(f"{b}/{a}" for b, a in inputs) or "none"
                raise LookupError(f"No input {block_id}/{action_id} in view {view.id}. Inputs there: {known}.")

    states: dict[str, Any] = {}
    for (block_id, action_id), element in inputs.items():
        value = values.get(block_id, {}).get(action_id)
        states.setdefault(block_id, {})[action_id] = _element_state(element, value)
    return states


def _element_state(element: dict[str, Any], value: Any) -> dict[str, Any]:
    """Return the state Slack reports for an input element holding `value` (None when empty)."""
    element_type = element.get("type")
    if isinstance(value, dict):
        return {"type": element_type, **value}

    if element_type in ("static_select", "external_select", "radio_buttons"):
        return {"type": element_type, "selected_option": _option(element, value)}
    if element_type in ("multi_static_select", "multi_external_select", "checkboxes"):
        return {"type": element_type, "selected_options": [_option(element, item) for item in value or []]}
    selected_keys = {
        "users_select": "selected_user",
        "multi_users_select": "selected_users",
        "conversations_select": "selected_conversation",
        "multi_conversations_select": "selected_conversations",
        "channels_select": "selected_channel",
        "multi_channels_select": "selected_channels",
        "datepicker": "selected_date",
        "timepicker": "selected_time",
    }
    key = selected_keys.get(str(element_type), "value")
    if value is None and str(element_type).startswith("multi_"):
        value = []
    return {"type": element_type, key: value}


def _option(element: dict[str, Any], value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    for option in element.get("options", []):
        if option.get("value") == value:
            return dict(option)
    return {"text": {"type": "plain_text", "text": str(value)}, "value": str(value)}
