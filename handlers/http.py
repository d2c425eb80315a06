"""The `/slack/events` endpoint: signature check, body shape check, then bolt's dispatcher.

The signature is checked here rather than by bolt, because bolt's check logs the whole
request body when a signature is bad, and a body may carry a secret value.

A correctly signed body still reaches bolt only if it has the shape bolt and the
listeners read. bolt indexes into the body without checking types. A `payload` that is
not a JSON object, or an `actions` field that is not a list, would raise inside bolt and
return 500, or 404 after bolt's 3-second wait for an ack. Such a body gets 400 here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import build_normalized_headers, extract_content_type
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.exc import SQLAlchemyError

from bot.storage.seen import SeenRequests
from handlers.turns import after_ack_turns

logger = logging.getLogger(__name__)

# Slack rejects nothing larger itself, but no slash command or interaction comes close;
# the cap keeps a forged request from making the bot buffer megabytes.
MAX_BODY_BYTES = 1024 * 1024
MAX_CLOCK_SKEW_SECONDS = 300
# Unix time has 10 digits until the year 2286, so a longer header is never within the skew.
# Converting thousands of digits to an int is slow, and past 4300 digits it raises.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Slack signatures are "v0=" and 64 hex digits, and hmac.compare_digest raises on non-ASCII text.
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")

# Headers bolt uses between its own processes to run a lazy listener directly; a request
# from outside must never carry them.
_INTERNAL_HEADERS = ("x-slack-bolt-lazy-only", "x-slack-bolt-lazy-function-name")


class SlackEndpoint:
    def __init__(self, app: AsyncApp, signing_secret: str, *, seen: SeenRequests | None = None) -> None:
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)
        # Without a ledger (unit tests of the body checks) replays and event retries are not detected.
        self.seen = seen
        self.stopping = False
        # Requests inside `handle`, and the event set when the last of them ends (at shutdown).
        self._in_progress = 0
        self._idle: asyncio.Event | None = None

    def stop_accepting(self) -> None:
        """Answer every later request with 503, from the moment shutdown begins.

        Closing the listening socket is not enough: a client that keeps its connection
        open, as a proxy may, can still send requests on it until the runner is cleaned
        up, and a click accepted then could start work after shutdown stopped waiting.
        With 503, Slack delivers an event again later and shows the user an error for a
        command or a click, which they can repeat once the new process is up.
        """
        self.stopping = True

    async def finish_requests(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the requests that `handle` began before shutdown to be answered.

        Such a request may still be reading its body or waiting for the replay ledger. It
        was sent before the signal, so it is handled as usual, and it must have acknowledged
        (and so registered its work) before shutdown waits for the listeners' work.
        """
        if self._in_progress == 0:
            return
        logger.info("waiting for %d request(s) in progress", self._in_progress)
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout))
        except TimeoutError:
            logger.warning("%d request(s) still in progress after %.1f s at shutdown", self._in_progress, timeout)

    async def handle(self, request: web.Request) -> web.Response:
        if self.stopping:
            logger.info("refused a request that arrived during shutdown path=%s", request.path)
            return web.json_response({"error": "secretbot is shutting down; try again in a few seconds"},
                                     status=503, headers={"Connection": "close", "Retry-After": "5"})
        self._in_progress += 1
        try:
            # Work that listeners do after their acks waits while requests are being acknowledged.
            with after_ack_turns.acknowledging():
                return await self._handle(request)
        finally:
            self._in_progress -= 1
            if self._in_progress == 0 and self._idle is not None:
                self._idle.set()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.json_response({"error": "request too large"}, status=413)
        raw = bytearray()
        # StreamReader.read(n) may return less than n before the body ends, so read to EOF.
        while chunk := await request.content.read(64 * 1024):
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return web.json_response({"error": "request too large"}, status=413)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "invalid request"}, status=400)

        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        problem = self._signature_problem(body, timestamp, signature)
        if problem is not None:
            # Only metadata: a rejected body is never logged.
            logger.warning("rejected request: %s remote=%s bytes=%d", problem, request.remote, len(raw))
            return web.json_response({"error": "invalid request"}, status=401)

        headers: dict[str, str | Sequence[str]] = {
            name: value for name, value in request.headers.items() if name.lower() not in _INTERNAL_HEADERS
        }
        # bolt's own helpers pick the Content-Type, so the check reads the body as bolt will.
        content_type = extract_content_type(build_normalized_headers(headers))
        try:
            check_body(body, content_type)
        except MalformedRequest as exc:
            # The message names a field, never a value.
            logger.warning("rejected malformed request: %s remote=%s bytes=%d", exc, request.remote, len(raw))
            return web.json_response({"error": "invalid request"}, status=400)

        duplicate = await self._duplicate(body, content_type, signature, request)
        if duplicate is not None:
            return duplicate

        bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=headers)
        _repair_form_body(bolt_request)
        bolt_response = await self.app.async_dispatch(bolt_request)
        response = web.Response(status=bolt_response.status, body=bolt_response.body)
        for name, values in bolt_response.headers.items():
            if name.lower() == "content-length":
                continue
            for value in values:
                response.headers.add(name, value)
        return response

    async def _duplicate(self, body: str, content_type: str | None, signature: str,
                         request: web.Request) -> web.Response | None:
        """Return the response for a replayed request or a retried event, or None for a new one.

        A replay (the same signature again) is rejected. A retried event is acknowledged
        with 200 and not handled again, because Slack keeps retrying anything else.
        """
        if self.seen is None:
            return None
        event_id = _event_id(body, content_type)
        keys = [f"signature:{signature}"] if event_id is None else [f"signature:{signature}", f"event:{event_id}"]
        try:
            # One write for both keys. A replay's event key was recorded with its first delivery,
            # so recording it again changes nothing.
            new_signature, *new_event = await self.seen.first_times(keys)
            if not new_signature:
                logger.warning("rejected replayed request remote=%s", request.remote)
                return web.json_response({"error": "invalid request"}, status=401)
            if new_event and not new_event[0]:
                logger.info("ignored a repeated event delivery event_id=%s retry=%s", event_id,
                            request.headers.get("X-Slack-Retry-Num", "-"))
                return web.Response(status=200)
        except SQLAlchemyError as exc:
            # Without the ledger a replay cannot be recognised, so nothing is handled.
            # The driver's own message ("database is locked"); SQLAlchemy's text would add the keys.
            logger.error("cannot record the request as seen (%s: %s) ledger=%s; returning 503", type(exc).__name__,
                         getattr(exc, "orig", None) or "no driver message",
                         self.seen.ledger_file() or "the database's seen_requests table")
            return web.json_response({"error": "temporarily unavailable"}, status=503)
        return None

    def _signature_problem(self, body: str, timestamp: str, signature: str) -> str | None:
        if not timestamp or not signature:
            return "missing signature headers"
        if not _TIMESTAMP.fullmatch(timestamp):
            return "timestamp is not a number of at most 12 ASCII digits"
        if not _SIGNATURE.fullmatch(signature):
            return "malformed signature"
        skew = abs(time.time() - int(timestamp))
        if skew > MAX_CLOCK_SKEW_SECONDS:
            return f"stale timestamp ({int(skew)} s off)"
        if not self.verifier.is_valid(body, timestamp, signature):
            return "bad signature"
        return None


# Slack's event IDs are short ("Ev" and about ten characters); a longer one is hashed so the key fits its column.
_MAX_EVENT_ID_LENGTH = 64


def _event_id(body: str, content_type: str | None) -> str | None:
    """Return the `event_id` of an Events API delivery, or None for any other request."""
    if content_type != "application/json":
        return None
    try:
        envelope = json.loads(body)
    except ValueError:
        return None
    return event_id_of(envelope) if isinstance(envelope, dict) else None


def event_id_of(envelope: dict[str, Any]) -> str | None:
    """Return the `event_id` of an Events API envelope as the seen-requests key uses it, or None."""
    event_id = envelope.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        return None
    if len(event_id) > _MAX_EVENT_ID_LENGTH:
        return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    return event_id


class MalformedRequest(Exception):
    """A signed body without the fields bolt and the listeners read; the message names the field."""


# Nested objects that bolt's context extraction walks with the same field reads as the
# top level (slack_bolt 1.30, request/internals.py: extract_user_id, extract_team_id, ...).
_WALKED_OBJECTS = ("event", "message", "previous_message", "item", "assistant_thread", "view")
# bolt's extract functions recurse into these without a limit. Slack's own bodies nest
# event > message (message_changed); 6 is a margin chosen here, not a Slack limit.
_MAX_NESTING = 6
# bolt reads each of these as an id string or as an object holding "id", and raises on other types.
_ID_OR_OBJECT_FIELDS = ("user", "channel", "team", "enterprise")
# bolt indexes into these (`"type" in body["event"]`, `body["view"]["callback_id"]`) or calls
# `.get` on them without a type check.
_OBJECT_FIELDS = ("event", "view", "function", "workflow_step")
# bolt takes `[0]` of these and calls `.get` on it, or bolt's listeners get them as objects.
_OBJECT_LIST_FIELDS = ("authorizations", "response_urls", "actions")
# bolt matches these against strings and patterns, concatenates them or passes them to the Web API client.
_STRING_FIELDS = (
    "type", "action_id", "callback_id", "response_url", "team_id", "user_id", "channel_id", "enterprise_id",
    "function_execution_id", "bot_access_token",
)
_SLASH_COMMAND_FIELDS = ("command", "user_id", "channel_id")


def check_body(raw_body: str, content_type: str | None) -> None:
    """Raise MalformedRequest unless the body has the shape bolt and the listeners read.

    The body is split into JSON, interactivity payload or form fields by the same tests
    as bolt's `parse_body` (slack_bolt 1.30, request/internals.py), so the check reads the
    fields that bolt will dispatch on. A form body that mentions "payload" without a `payload`
    field is a slash command here, as `_repair_form_body` makes it for bolt.
    """
    if not raw_body:
        raise MalformedRequest("empty body")
    if content_type == "application/json" or raw_body.startswith("{"):
        _check_document(_load_object(raw_body, "JSON body"), "JSON body")
        return

    form = dict(parse_qsl(raw_body, keep_blank_values=True))
    if "payload" in raw_body and "payload" in form:
        _check_interaction(_load_object(form["payload"], "payload field"))
    elif form.get("ssl_check") == "1":
        # Slack sends this to check the request URL's certificate, and bolt returns an empty 200.
        _check_fields_bolt_reads(form, "ssl_check form")
    else:
        for name in _SLASH_COMMAND_FIELDS:
            if not form.get(name):
                raise MalformedRequest(f"form body has no {name}, which a slash command needs")
        _check_fields_bolt_reads(form, "slash command")


def check_socket_payload(envelope_type: str, payload: dict[str, Any]) -> None:
    """Raise MalformedRequest unless the payload of a Socket Mode envelope has the shape bolt and the listeners read.

    Socket Mode delivers the same documents as HTTP, already parsed: a slash command's
    form fields as an object (`slash_commands`), an interactivity payload (`interactive`)
    or an Events API body (`events_api`).
    """
    if envelope_type == "slash_commands":
        for name in _SLASH_COMMAND_FIELDS:
            value = payload.get(name)
            if not isinstance(value, str) or not value:
                raise MalformedRequest(f"slash command payload has no string {name}")
        if not isinstance(payload.get("text", ""), str):
            raise MalformedRequest("slash command payload text is not a string")
        _check_fields_bolt_reads(payload, "slash command")
    elif envelope_type == "interactive":
        _check_interaction(payload)
    elif envelope_type == "events_api":
        _check_document(payload, "events_api payload")
    else:
        raise MalformedRequest(f"envelope type {envelope_type!r} is not one the bot handles")


def _load_object(text: str, where: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers longer than Python's 4300-digit limit.
        raise MalformedRequest(f"{where} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise MalformedRequest(f"{where} is JSON {type(document).__name__}, not an object")
    return document


def _check_interaction(payload: dict[str, Any]) -> None:
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise MalformedRequest("payload user is not an object with a non-empty string id")
    _check_document(payload, "payload")


def _check_document(payload: dict[str, Any], where: str) -> None:
    """Check a JSON body or payload, because bolt matches listeners on `type` whichever way it arrived."""
    _require_string(payload, "type", where)
    kind = payload["type"]
    if kind in ("block_actions", "interactive_message"):
        # bolt reads actions[0] of both kinds to match a listener.
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions:
            raise MalformedRequest(f"{where} of type {kind} has no actions list")
        for index, action in enumerate(actions):
            if not isinstance(action, dict):
                raise MalformedRequest(f"{where} actions[{index}] is not an object")
            if kind == "block_actions" and not isinstance(action.get("action_id"), str):
                raise MalformedRequest(f"{where} actions[{index}].action_id is not a string")

    view = payload.get("view")
    is_step_save = kind == "view_submission" and isinstance(view, dict) and view.get("type") == "workflow_step"
    if (kind == "workflow_step_edit" or is_step_save) and not isinstance(payload.get("workflow_step"), dict):
        # bolt hands body["workflow_step"] to every listener of a workflow step payload.
        raise MalformedRequest(f"{where} of type {kind} has no workflow_step object")
    _check_fields_bolt_reads(payload, where)


def _check_fields_bolt_reads(document: dict[str, Any], where: str) -> None:
    """Check the types of the fields bolt reads while building its context and matching listeners."""
    pending = [(document, where, 0)]
    while pending:
        current, path, depth = pending.pop()
        if depth > _MAX_NESTING:
            raise MalformedRequest(f"{path} is nested more than {_MAX_NESTING} objects deep")
        for name in _ID_OR_OBJECT_FIELDS:
            if not isinstance(current.get(name), (str, dict, type(None))):
                raise MalformedRequest(f"{path}.{name} is neither a string nor an object")
        for name in _OBJECT_FIELDS:
            if name in current and not isinstance(current[name], dict):
                raise MalformedRequest(f"{path}.{name} is not an object")
        view = current.get("view")
        if isinstance(view, dict) and not isinstance(view.get("type"), str):
            # bolt reads body["view"]["type"] of every view_submission that has a callback_id.
            raise MalformedRequest(f"{path}.view has no string type")
        for name in _OBJECT_LIST_FIELDS:
            value = current.get(name)
            # bolt checks only authorizations for null before taking [0].
            if name == "authorizations" and value is None:
                continue
            if name in current and not (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
                raise MalformedRequest(f"{path}.{name} is not a list of objects")
        if len(current.get("response_urls") or ()) > 1:
            # bolt 1.30 logs a debug line through a context logger that does not exist yet, and raises KeyError.
            raise MalformedRequest(f"{path}.response_urls has more than one entry")
        for name in _STRING_FIELDS:
            if not isinstance(current.get(name), (str, type(None))):
                raise MalformedRequest(f"{path}.{name} is not a string")

        for name in _WALKED_OBJECTS:
            nested = current.get(name)
            if isinstance(nested, dict):
                pending.append((nested, f"{path}.{name}", depth + 1))
        for index, item in enumerate(current.get("authorizations") or ()):
            pending.append((item, f"{path}.authorizations[{index}]", depth + 1))


def _require_string(document: dict[str, Any], name: str, where: str) -> None:
    if not isinstance(document.get(name), str):
        raise MalformedRequest(f"{where} has no string {name}")


def _repair_form_body(request: AsyncBoltRequest) -> None:
    """Parse slash command bodies that bolt mistakes for interactivity payloads.

    bolt treats any form body containing the substring "payload" as an interactivity
    request, so `/secret rotate WEBHOOK_PAYLOAD_KEY` would parse as empty and get a 404.
    """
    if request.body or not request.raw_body or request.raw_body.startswith("{"):
        return
    fields = dict(parse_qsl(request.raw_body, keep_blank_values=True))
    if "payload" in fields or "command" not in fields:
        return
    request.body = fields
    request.context = build_async_context(AsyncBoltContext({}), fields)
