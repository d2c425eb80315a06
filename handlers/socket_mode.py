"""Socket Mode: Slack's requests arrive over a WebSocket that the bot opens, not over HTTP.

With SLACK_APP_TOKEN set, the bot calls apps.connections.open with that app-level token
and connects to the WebSocket URL it returns. Slack then sends each slash command, button
click, view submission and event as an envelope. The bot acknowledges each one by sending
back its `envelope_id`, with a payload when the response to a slash command or a view
submission has content.

Socket Mode requests are not signed. The app-level token authenticates the connection
itself, so the signature check of handlers/http.py does not apply and SLACK_SIGNING_SECRET
is not needed. Everything else that endpoint does applies to each envelope: the body shape
check, the database record of requests already handled, and bolt's dispatch, which
acknowledges as soon as a listener calls `ack()` and runs the slow work after it.

slack_sdk's aiohttp client keeps the connection: it pings Slack, and it opens a new
connection (through a new apps.connections.open) when Slack closes the current one,
sends a `disconnect` message, or stops returning pongs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import ConfigError
from bot.storage.seen import SeenRequests
from handlers.http import MalformedRequest, check_socket_payload, event_id_of
from handlers.slack_app import create_client
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

# slack_sdk's client logs through this logger. At DEBUG it writes every envelope it
# receives or sends, which can hold a value typed into a modal, and its error messages
# can contain the WebSocket URL, whose ticket opens a connection. _SdkLogFilter removes both.
SDK_LOGGER_NAME = "slack_sdk.socket_mode.aiohttp"

# Seconds between the client's pings. slack_sdk 3.48 replaces a closed connection at the
# next ping, and one that returns no pong for four intervals (about 20 s).
PING_INTERVAL_SECONDS = 5.0

# Errors of apps.connections.open that mean the token itself is wrong, so retrying cannot help.
_REJECTED_TOKEN_ERRORS = ("invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked",
                          "account_inactive")
_WEBSOCKET_URL = re.compile(r"wss?://\S+")


class SocketModeReceiver:
    """Receives Slack's requests over Socket Mode and hands each envelope to bolt.

    `check_token` runs at start-up and stops the bot on a token Slack rejects. `start`
    connects in the background, and `stop` closes the connection.
    """

    def __init__(self, app: AsyncApp, *, app_token: str, api_url: str, seen: SeenRequests | None) -> None:
        self.app = app
        self.app_token = app_token
        self.web_client = create_client(token=app_token, base_url=api_url)
        # Without a ledger (unit tests) repeated deliveries are not detected.
        self.seen = seen
        self.client: _LoggedSocketModeClient | None = None
        self._first_url: str | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def check_token(self) -> None:
        """Call apps.connections.open once, and stop start-up with a clear message if Slack rejects the token.

        The URL is kept for the first connection. When Slack cannot be reached, the
        client keeps trying after start-up, as it does after a lost connection.
        """
        try:
            response = await self.web_client.apps_connections_open(app_token=self.app_token)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error in _REJECTED_TOKEN_ERRORS:
                raise ConfigError(
                    f"Slack rejected SLACK_APP_TOKEN ({error}); create an app-level token with the "
                    "connections:write scope on the Slack app's Basic Information page, under App-Level Tokens, "
                    "and check that Socket Mode is on in the app's settings"
                ) from exc
            logger.warning("apps.connections.open failed at start-up (%s); will retry after start-up", error)
            return
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("Slack API unreachable at start-up (%s); will retry after start-up", type(exc).__name__)
            return
        url = response.get("url")
        self._first_url = url if isinstance(url, str) and url else None

    async def start(self) -> None:
        """Connect in the background, so that /healthz responds while the first connection is made."""
        sdk_logger = logging.getLogger(SDK_LOGGER_NAME)
        if not any(isinstance(existing, _SdkLogFilter) for existing in sdk_logger.filters):
            sdk_logger.addFilter(_SdkLogFilter())
        self.client = _LoggedSocketModeClient(
            app_token=self.app_token,
            web_client=self.web_client,
            logger=sdk_logger,
            ping_interval=PING_INTERVAL_SECONDS,
        )
        self.client.wss_uri = self._first_url
        self._first_url = None
        self.client.socket_mode_request_listeners.append(self.handle)
        self._connecting = asyncio.create_task(self.client.connect(), name="socket-mode-connect")
        logger.info("Socket Mode connecting")

    async def stop(self) -> None:
        """Close the connection, so that Slack delivers nothing more to this process."""
        if self.client is None:
            return
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with suppress(asyncio.CancelledError):
                await self._connecting
        try:
            await self.client.close()
        except (OSError, aiohttp.ClientError) as exc:
            logger.warning("Socket Mode connection did not close cleanly (%s)", type(exc).__name__)
        logger.info("Socket Mode disconnected; no more requests are received")

    async def handle(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        """Check, record and dispatch one envelope, then acknowledge it with bolt's response.

        An envelope that is malformed, or for which bolt returns an error status, is not
        acknowledged, because the HTTP endpoint returns an error status for those. Slack
        then shows the user an error, or delivers an event again.
        """
        # Work that listeners do after their acks waits while requests are being acknowledged.
        with after_ack_turns.acknowledging():
            await self._handle(client, request)

    async def _handle(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        started = time.monotonic()
        envelope_type = str(request.type)
        envelope_id = request.envelope_id
        try:
            check_socket_payload(envelope_type, request.payload)
        except MalformedRequest as exc:
            # The message names a field, never a value.
            logger.warning("rejected malformed Socket Mode envelope: %s type=%s envelope_id=%s",
                           exc, envelope_type, envelope_id)
            return

        try:
            repeated = await self._repeated(envelope_type, request.payload)
        except SQLAlchemyError as exc:
            # Without the ledger a repeat cannot be recognised, so nothing is handled.
            logger.error("cannot record the Socket Mode envelope as seen (%s); not acknowledging envelope_id=%s",
                         type(exc).__name__, envelope_id)
            return
        if repeated:
            logger.info("ignored a repeated Socket Mode delivery type=%s envelope_id=%s retry_attempt=%s "
                        "retry_reason=%s", envelope_type, envelope_id, request.retry_attempt,
                        request.retry_reason or "-")
            await self._acknowledge(client, envelope_id, None)
            return

        bolt_request = AsyncBoltRequest(mode="socket_mode", body=request.payload, headers=_retry_headers(request))
        bolt_response = await self.app.async_dispatch(bolt_request)
        if bolt_response.status != 200:
            logger.warning("not acknowledging Socket Mode envelope: bolt returned status=%d type=%s envelope_id=%s",
                           bolt_response.status, envelope_type, envelope_id)
            return
        await self._acknowledge(client, envelope_id, _acknowledgement_payload(bolt_response))
        logger.debug("acknowledged Socket Mode envelope type=%s envelope_id=%s ms=%.0f",
                     envelope_type, envelope_id, (time.monotonic() - started) * 1000)

    async def _repeated(self, envelope_type: str, payload: dict[str, Any]) -> bool:
        """Record the envelope and return True if it was recorded before, by this or another process.

        An event is known by its `event_id`, as on the HTTP endpoint, so a retried event
        is recognised whichever way it came. Any other envelope is known by a digest of
        its payload. Slack gives each slash command, click and view submission a
        trigger_id of its own, so only a repeated delivery of one request has the same digest.
        """
        if self.seen is None:
            return False
        event_id = event_id_of(payload) if envelope_type == "events_api" else None
        if event_id is not None:
            key = f"event:{event_id}"
        else:
            canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            key = "socket:" + hashlib.sha256(canonical.encode()).hexdigest()
        return not await self.seen.first_time(key)

    async def _acknowledge(self, client: AsyncBaseSocketModeClient, envelope_id: str,
                           payload: dict[str, Any] | None) -> None:
        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id, payload=payload))
        except (ConnectionError, aiohttp.ClientError, AttributeError) as exc:
            # AttributeError: the client has no connection at all while it reconnects.
            # The envelope is recorded as seen, so a delivery of it again is acknowledged
            # without being handled twice.
            logger.warning("could not acknowledge Socket Mode envelope_id=%s (%s); Slack may deliver it again",
                           envelope_id, type(exc).__name__)


def _retry_headers(request: SocketModeRequest) -> dict[str, str | Sequence[str]]:
    """Return the HTTP retry headers that carry the same information, as bolt's own adapter sets them."""
    headers: dict[str, str | Sequence[str]] = {}
    if request.retry_attempt is not None:
        headers["x-slack-retry-num"] = str(request.retry_attempt)
    if request.retry_reason:
        headers["x-slack-retry-reason"] = str(request.retry_reason)
    return headers


def _acknowledgement_payload(response: BoltResponse) -> dict[str, Any] | None:
    """Turn bolt's HTTP response into the payload of the acknowledgement, or None for an empty one.

    A JSON response (a view submission's response_action, a slash command's blocks) is sent
    as it is, and a plain-text response as the `text` of a message, as Slack reads an HTTP body.
    """
    body = response.body
    if not body:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.startswith("application/json"):
        document = json.loads(body)
        if isinstance(document, dict):
            return document
    return {"text": body}


class _LoggedSocketModeClient(SocketModeClient):
    """slack_sdk's aiohttp client, with log lines for each connect, disconnect and reconnect.

    It also requests a new URL after a rejected handshake. slack_sdk 3.48's connect()
    retries a failed handshake with the same URL every ping interval, so a URL that
    Slack no longer accepts would keep the bot disconnected for good. A trace hook on
    the handshake request clears the URL when the server responds with anything but
    101 Switching Protocols, and the next attempt calls apps.connections.open.
    """

    connections_opened: int = 0
    _traced_session: aiohttp.ClientSession | None = None

    async def connect(self) -> None:
        if self.aiohttp_client_session is not self._traced_session and not self.closed:
            # The session slack_sdk made in __init__ has not opened a connection yet.
            untraced = self.aiohttp_client_session
            self.aiohttp_client_session = aiohttp.ClientSession(trace_configs=[self._handshake_trace()])
            self._traced_session = self.aiohttp_client_session
            await untraced.close()

        previous = self.current_session
        if previous is not None and not self.closed:
            if previous.closed:
                logger.warning("Socket Mode connection lost close_code=%s; reconnecting", previous.close_code)
            else:
                logger.info("Socket Mode replacing the open connection")
        await super().connect()
        if self.closed or self.current_session is None or self.current_session is previous:
            return
        self.connections_opened += 1
        if self.connections_opened == 1:
            logger.info("Socket Mode connected")
        else:
            logger.info("Socket Mode reconnected connection=%d", self.connections_opened)

    def _handshake_trace(self) -> aiohttp.TraceConfig:
        async def on_request_end(_session: aiohttp.ClientSession, _context: object,
                                 params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status != 101:
                logger.warning("Socket Mode handshake rejected status=%d; requesting a new URL", params.response.status)
                self.wss_uri = None

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_request_end)
        return trace

    async def run_message_listeners(self, message: dict[str, Any], raw_message: str) -> None:
        kind = message.get("type")
        if kind == "hello":
            debug_info = message.get("debug_info")
            lifetime = debug_info.get("approximate_connection_time") if isinstance(debug_info, dict) else None
            logger.info("Socket Mode connection ready num_connections=%s approximate_connection_time=%s",
                        message.get("num_connections"), lifetime)
        elif kind == "disconnect":
            # slack_sdk opens a new connection for every reason, "warning" and "refresh_requested" alike.
            logger.info("Slack requested a new Socket Mode connection reason=%s", message.get("reason"))
        await super().run_message_listeners(message, raw_message)


class _SdkLogFilter(logging.Filter):
    """Drops slack_sdk's DEBUG lines and takes WebSocket URLs out of the others.

    An exception's traceback is replaced by its type name, because the message of a
    failed WebSocket handshake contains the URL.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return False
        message = _WEBSOCKET_URL.sub("<WebSocket URL>", record.getMessage())
        if record.exc_info is not None and record.exc_info[0] is not None:
            message += f" ({record.exc_info[0].__name__})"
        record.msg = message
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True
