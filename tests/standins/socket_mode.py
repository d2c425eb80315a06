"""A local stand-in for Slack's Socket Mode WebSocket server: an aiohttp server on 127.0.0.1.

    async with SlackStandin(users=["U0AAA"]) as slack, SocketModeStandin(slack) as socket_mode:
        # start the bot with SLACK_APP_TOKEN=socket_mode.app_token, SLACK_API_URL=slack.base_url
        await socket_mode.wait_connected()
        ack = await socket_mode.deliver("slash_commands", fields)
        assert "Starting" in ack.text

It registers apps.connections.open with the Web API stand-in. Each call returns a URL
with a new ticket, and a ticket opens one connection, so every reconnect needs a new
apps.connections.open. A new connection gets Slack's `hello` message. `deliver` sends an
envelope on the newest open connection and waits for the acknowledgement that carries its
`envelope_id`. `drop` closes the connections from the server side, and
`request_reconnect` sends Slack's `disconnect` message instead.

SocketModeDriver sends the slash commands, clicks, view submissions and events that
SlackDriver builds, as envelopes over this stand-in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

from aiohttp import WSCloseCode, WSMsgType, web

from .slack_api import SlackStandin
from .slack_driver import DriverResponse, SendOptions, SlackDriver

logger = logging.getLogger(__name__)

DEFAULT_APP_TOKEN = "xapp-1-A0SECRETBOT-1-5f3c2a9e7b1d4c6e8a0b2d4f6a8c0e1f"
# Slack expects the acknowledgement within 3 seconds, as it expects the HTTP response.
ACK_TIMEOUT = 3.0
ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")
# Interactivity payloads whose acknowledgement may carry a response (a response_action, options).
_ANSWERED_INTERACTIONS = ("view_submission", "block_suggestion")


class AckTimeout(TimeoutError):
    """The bot did not acknowledge an envelope in time."""


@dataclass(frozen=True)
class Envelope:
    """One delivery of a request over Socket Mode."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    retry_attempt: int | None = None
    retry_reason: str | None = None

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "envelope_id": self.envelope_id,
            "payload": self.payload,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
        }
        if self.retry_attempt is not None:
            message["retry_attempt"] = self.retry_attempt
            message["retry_reason"] = self.retry_reason or ""
        return message


@dataclass(frozen=True)
class Acknowledgement:
    """A message from the bot that acknowledged an envelope."""

    envelope_id: str
    payload: dict[str, Any] | None
    connection: int  # Connection.number it arrived on
    # Seconds from sending the envelope, or None for an acknowledgement that no delivery waited for.
    elapsed: float | None

    @property
    def text(self) -> str:
        """The payload as JSON, or "" for a bare acknowledgement, to read like an HTTP response body."""
        return json.dumps(self.payload, ensure_ascii=False) if self.payload else ""


@dataclass
class Connection:
    """One WebSocket connection from the bot, numbered from 1 in the order they were opened."""

    number: int
    socket: web.WebSocketResponse
    request: web.Request
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None
    envelopes: list[Envelope] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None and not self.socket.closed


class SocketModeStandin:
    """Slack's side of Socket Mode for one app, served on 127.0.0.1."""

    def __init__(self, slack: SlackStandin, *, app_token: str = DEFAULT_APP_TOKEN,
                 ack_timeout: float = ACK_TIMEOUT) -> None:
        self.slack = slack
        self.app_token = app_token
        self.ack_timeout = ack_timeout
        self.connections: list[Connection] = []
        self.acknowledgements: list[Acknowledgement] = []
        # Handshakes rejected: with a missing, unknown or already used ticket, or by reject_next_handshakes.
        self.rejected_handshakes = 0
        # Messages from the bot that are neither JSON objects nor acknowledgements.
        self.problems: list[str] = []

        self._tickets: set[str] = set()
        self._rejections_requested = 0
        self._waiting: dict[str, tuple[asyncio.Future[Acknowledgement], float]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # Lifecycle

    async def start(self) -> None:
        """Serve WebSocket connections on a free port and serve apps.connections.open on the Web API stand-in."""
        app = web.Application()
        app.router.add_get("/link/", self._handle_link)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self.slack.enable_socket_mode(app_token=self.app_token, issue_url=self._issue_url)
        logger.info("Socket Mode stand-in started port=%d", self._port)

    async def stop(self) -> None:
        for connection in self.open_connections():
            await connection.socket.close(code=WSCloseCode.GOING_AWAY, message=b"stand-in stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for future, _sent_at in self._waiting.values():
            future.cancel()
        logger.info("Socket Mode stand-in stopped connections=%d", len(self.connections))

    async def __aenter__(self) -> SocketModeStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # Reading state

    def open_connections(self) -> list[Connection]:
        return [connection for connection in self.connections if connection.is_open]

    def acknowledgements_of(self, envelope_id: str) -> list[Acknowledgement]:
        return [ack for ack in self.acknowledgements if ack.envelope_id == envelope_id]

    def envelopes(self) -> list[Envelope]:
        """Every envelope sent, over all connections, in the order sent."""
        return [envelope for connection in self.connections for envelope in connection.envelopes]

    async def wait_connected(self, count: int = 1, *, timeout: float = 15.0) -> Connection:
        """Wait until `count` connections were opened in all and one is open; return the newest open one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.open_connections()
            if len(self.connections) >= count and current:
                return current[-1]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{len(self.connections)} Socket Mode connection(s) opened, {count} expected, "
                           f"{len(self.open_connections())} open after {timeout} s; "
                           f"{self.rejected_handshakes} handshake(s) rejected")

    # Deliveries and faults

    async def deliver(
        self,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        connect_timeout: float = 15.0,
    ) -> Acknowledgement:
        """Send `payload` in a new envelope and return the bot's acknowledgement.

        The envelope goes to the newest open connection, waiting up to `connect_timeout`
        seconds for one. Raises AckTimeout when no acknowledgement with the envelope's ID
        arrives, on any connection, within `ack_timeout` seconds.
        """
        if envelope_type not in ENVELOPE_TYPES:
            raise ValueError(f"envelope type {envelope_type!r} is not one of {', '.join(ENVELOPE_TYPES)}")
        accepts = envelope_type == "slash_commands" or (
            envelope_type == "interactive" and payload.get("type") in _ANSWERED_INTERACTIONS)
        if envelope_type == "events_api" and retry_attempt is None:
            # The stand-in marks a first event delivery with attempt 0 and an empty reason.
            retry_attempt, retry_reason = 0, ""
        envelope = Envelope(
            envelope_id=envelope_id or secrets.token_hex(16),
            type=envelope_type,
            payload=payload,
            accepts_response_payload=accepts,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )
        connection = await self.wait_connected(timeout=connect_timeout)

        future: asyncio.Future[Acknowledgement] = asyncio.get_running_loop().create_future()
        sent_at = time.monotonic()
        self._waiting[envelope.envelope_id] = (future, sent_at)
        connection.envelopes.append(envelope)
        try:
            await connection.socket.send_json(envelope.to_message())
            return await asyncio.wait_for(future, timeout=self.ack_timeout)
        except TimeoutError:
            raise AckTimeout(f"no acknowledgement of {envelope_type} envelope {envelope.envelope_id} within "
                             f"{self.ack_timeout} s (sent on connection {connection.number})") from None
        finally:
            self._waiting.pop(envelope.envelope_id, None)

    async def drop(self, *, abrupt: bool = False) -> int:
        """Close every open connection from the server side and return how many there were.

        A clean drop sends a WebSocket close frame (code 1001, going away). An abrupt one
        closes the TCP connection without it, as a failed network path would.
        """
        dropped = self.open_connections()
        for connection in dropped:
            if abrupt and connection.request.transport is not None:
                connection.request.transport.abort()
            else:
                await connection.socket.close(code=WSCloseCode.GOING_AWAY, message=b"stand-in dropped the connection")
        logger.info("Socket Mode stand-in dropped connections=%d abrupt=%s", len(dropped), abrupt)
        return len(dropped)

    def reject_next_handshakes(self, count: int = 1) -> None:
        """Reject the next `count` handshakes with 401 although their tickets are valid, and use the tickets up.

        This is how the stand-in plays a URL that Slack no longer accepts.
        """
        self._rejections_requested += count

    async def request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Send Slack's `disconnect` message on every open connection.

        With "warning" Slack announces that it will refresh the connection soon, and with
        "refresh_requested" that it does so now (Slack's Node SDK opens the new connection
        on the first and drops the old one on the second). The stand-in leaves closing
        the old connection to the bot.
        """
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
        for connection in self.open_connections():
            await connection.socket.send_json(message)

    # WebSocket side

    def _issue_url(self) -> str:
        if self._port is None:
            raise RuntimeError("The Socket Mode stand-in is not running: await start() first.")
        ticket = secrets.token_urlsafe(24)
        self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}&app_id={self.slack.workspace.app_id}"

    async def _handle_link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            self.rejected_handshakes += 1
            logger.warning("Socket Mode stand-in rejected a handshake with a missing, unknown or used ticket")
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        if self._rejections_requested > 0:
            self._rejections_requested -= 1
            self.rejected_handshakes += 1
            logger.info("Socket Mode stand-in rejected a handshake as reject_next_handshakes requested")
            return web.Response(status=401, text="invalid ticket")

        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        connection = Connection(number=len(self.connections) + 1, socket=socket, request=request,
                                opened_at=time.monotonic())
        self.connections.append(connection)
        await socket.send_json({
            "type": "hello",
            "num_connections": len(self.open_connections()),
            "debug_info": {"host": "applink-standin", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.slack.workspace.app_id},
        })
        logger.info("Socket Mode stand-in connection opened number=%d", connection.number)

        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self._receive(connection, message.data)
        connection.closed_at = time.monotonic()
        connection.close_code = socket.close_code
        logger.info("Socket Mode stand-in connection closed number=%d code=%s", connection.number, socket.close_code)
        return socket

    def _receive(self, connection: Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self.problems.append(f"connection {connection.number}: a message that is not JSON")
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not isinstance(envelope_id, str):
            self.problems.append(f"connection {connection.number}: a message without envelope_id")
            return
        payload = message.get("payload")
        waiting = self._waiting.get(envelope_id)
        elapsed = time.monotonic() - waiting[1] if waiting is not None else None
        ack = Acknowledgement(envelope_id=envelope_id, payload=payload if isinstance(payload, dict) else None,
                              connection=connection.number, elapsed=elapsed)
        self.acknowledgements.append(ack)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(ack)


def envelope_type_of(payload: Mapping[str, Any]) -> str:
    """Return the Socket Mode envelope type that carries `payload`."""
    if "command" in payload:
        return "slash_commands"
    if payload.get("type") == "event_callback":
        return "events_api"
    return "interactive"


class SocketModeDriver(SlackDriver):
    """Sends SlackDriver's requests as Socket Mode envelopes instead of signed HTTP requests.

    A response has status 200 once the bot acknowledged the envelope, and its text is
    the acknowledgement's payload as JSON ("" for none), which tests read like an HTTP
    body. An envelope that is not acknowledged in time raises AckTimeout.
    """

    def __init__(self, *, socket_mode: SocketModeStandin, slack: SlackStandin, team_id: str = "T0TEAM") -> None:
        # Nothing is sent over HTTP or signed, so there is no URL and no signing secret.
        super().__init__(bot_url="", signing_secret="", slack=slack, team_id=team_id)
        self.socket_mode = socket_mode

    async def send(
        self,
        body: str,
        *,
        content_type: str,
        payload: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[SendOptions],
    ) -> DriverResponse:
        """Deliver `payload` in an envelope, with Slack's HTTP retry headers as its retry fields."""
        if options:
            raise TypeError(f"signing options {sorted(options)} do not apply to Socket Mode, which is not signed")
        if payload is None:
            raise ValueError("missing payload: Socket Mode delivers parsed payloads, so pass the one the body was built from")
        retry_headers = dict(headers or {})
        retry_number = retry_headers.get("X-Slack-Retry-Num")
        ack = await self.socket_mode.deliver(
            envelope_type_of(payload),
            payload,
            retry_attempt=int(retry_number) if retry_number is not None else None,
            retry_reason=retry_headers.get("X-Slack-Retry-Reason"),
        )
        return DriverResponse(status=200, text=ack.text, headers={}, elapsed=ack.elapsed or 0.0, payload=payload)
