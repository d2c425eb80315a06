"""The `/slack/events` guard: forged and malformed requests get 4xx, never a 500.

The endpoint runs on 127.0.0.1 with a real bolt AsyncApp whose listeners match on the
same names as production (the `/secret` command, the step and enter-value buttons, the
value modal, `app_home_opened`) and only acknowledge. The server has its own event loop
in a thread, so the tests, hypothesis included, send requests with a blocking HTTP client.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck

from handlers.http import SlackEndpoint
from handlers.listeners import FORM_ACTION_PATTERN, STEP_ACTION_PATTERN
from handlers.messages import VALUE_MODAL_CALLBACK

SIGNING_SECRET = "5c1e0d9a7b3f4e2a8c6d1b0f9e7a3c5d"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# bolt returns 404 when a listener has not acknowledged within 3 s; any request that
# takes this long has crashed a listener before its ack().
ACK_DEADLINE_SECONDS = 2.5
# A value that must never appear in a log line, whatever the request looks like.
MARKER = "c2VjcmV0LW1hcmtlci12YWx1ZS1kby1ub3QtbG9n"


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    elapsed: float


class GuardServer:
    """The endpoint and a bolt app, served on 127.0.0.1 from an event loop in a thread."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="guard-server", daemon=True)

    def __enter__(self) -> GuardServer:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise TimeoutError("the guard test server did not start within 10 s")
        return self

    def __exit__(self, *_exc: object) -> None:
        stopped = self._stopped
        if stopped is not None:
            self._loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        endpoint = SlackEndpoint(_bolt_app(), SIGNING_SECRET)
        web_app = web.Application()
        web_app.router.add_post("/slack/events", endpoint.handle)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host="127.0.0.1", port=0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def post(self, body: str, *, content_type: str = FORM, timestamp: str | None = None,
             signature: str | None = None) -> Reply:
        """POST `body`, signed with the signing secret unless `timestamp` or `signature` replace it."""
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        # Header values go out as UTF-8 bytes, so a test can send digits and letters beyond ASCII.
        headers = {
            "Content-Type": content_type.encode(),
            "X-Slack-Request-Timestamp": stamp.encode(),
            "X-Slack-Signature": (signature if signature is not None else sign(body, stamp)).encode(),
        }
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        started = time.monotonic()
        try:
            connection.request("POST", "/slack/events", body=body.encode(), headers=headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            connection.close()
        return Reply(status=response.status, text=text, elapsed=time.monotonic() - started)


async def _authorize(enterprise_id: str | None = None, team_id: str | None = None) -> AuthorizeResult:
    return AuthorizeResult(enterprise_id=None, team_id="T0TEAM", bot_token="xoxb-guard-test",
                           bot_id="B0BOT", bot_user_id="U0BOT")


def _bolt_app() -> AsyncApp:
    app = AsyncApp(authorize=_authorize, request_verification_enabled=False, process_before_response=False,
                   name="guard-test", logger=logging.getLogger("slack_bolt"))

    @app.command("/secret")
    async def secret_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(response_type="ephemeral", text="command received")

    @app.action(STEP_ACTION_PATTERN)
    async def step_button(ack: AsyncAck, action: dict[str, Any]) -> None:
        await ack()

    @app.action(FORM_ACTION_PATTERN)
    async def enter_button(ack: AsyncAck, action: dict[str, Any]) -> None:
        await ack()

    @app.view(VALUE_MODAL_CALLBACK)
    async def values_submitted(ack: AsyncAck, view: dict[str, Any]) -> None:
        await ack()

    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any]) -> None:
        return None

    return app


def sign(body: str, timestamp: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


def payload_form(payload: Any) -> str:
    return urlencode({"payload": json.dumps(payload)})


def payload_text_form(text: str) -> str:
    return urlencode({"payload": text})


def command_form(**fields: str) -> str:
    return urlencode(fields)


def block_actions(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0AAA", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM", "domain": "hotel"},
        "channel": {"id": "C0123OPS", "name": "ops"},
        "actions": [{"action_id": "step_approve", "block_id": "b1", "value": "0123456789ab:1", "type": "button"}],
    }
    payload.update(fields)
    return payload


def modal_submission(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "view_submission",
        "user": {"id": "U0AAA", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM", "domain": "hotel"},
        "view": {"id": "V0MODAL", "type": "modal", "callback_id": VALUE_MODAL_CALLBACK, "team_id": "T0TEAM",
                 "private_metadata": "{}", "state": {"values": {}}},
        "response_urls": [],
        "enterprise": None,
        "is_enterprise_install": False,
    }
    payload.update(fields)
    return payload


GOOD_COMMAND = {"command": "/secret", "text": "help", "user_id": "U0AAA", "channel_id": "C0123OPS",
                "team_id": "T0TEAM"}


@pytest.fixture(scope="module")
def server() -> Iterator[GuardServer]:
    with GuardServer() as running:
        yield running


# --- requests that must pass through to bolt --------------------------------------------------


def test_valid_command_reaches_listener(server: GuardServer) -> None:
    reply = server.post(command_form(**GOOD_COMMAND))
    assert reply.status == 200
    assert "command received" in reply.text


def test_valid_button_reaches_listener(server: GuardServer) -> None:
    assert server.post(payload_form(block_actions())).status == 200


def test_value_modal_reaches_listener(server: GuardServer) -> None:
    assert server.post(payload_form(modal_submission())).status == 200


def test_home_event_reaches_listener(server: GuardServer) -> None:
    body = json.dumps({"type": "event_callback", "team_id": "T0TEAM",
                       "event": {"type": "app_home_opened", "user": "U0AAA", "tab": "home"}})
    assert server.post(body, content_type=JSON).status == 200


def test_url_verification_answered(server: GuardServer) -> None:
    reply = server.post(json.dumps({"type": "url_verification", "challenge": "abc123"}), content_type=JSON)
    assert reply.status == 200
    assert json.loads(reply.text) == {"challenge": "abc123"}


def test_ssl_check_answered(server: GuardServer) -> None:
    assert server.post(urlencode({"ssl_check": "1", "token": "legacy"})).status == 200


def test_command_with_payload_word_reaches_listener(server: GuardServer) -> None:
    reply = server.post(command_form(**{**GOOD_COMMAND, "text": "rotate WEBHOOK_PAYLOAD_KEY"}))
    assert reply.status == 200
    assert "command received" in reply.text


# --- the timestamp header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    ["9" * 400, "1" * 5000, "1" * 13, "\u00b2", "\u0661\u0662\u0663", "-1", "1e9", " 1700000000"],
    ids=["400-nines", "5000-digits", "13-digits", "superscript-two", "arabic-indic", "negative", "exponent",
         "leading-space"],
)
def test_odd_timestamp_is_401(server: GuardServer, timestamp: str, caplog: pytest.LogCaptureFixture) -> None:
    body = command_form(**{**GOOD_COMMAND, "text": f"rotate JWT_SECRET {MARKER}"})
    with caplog.at_level(logging.INFO):
        reply = server.post(body, timestamp=timestamp, signature=sign(body, timestamp))
    assert reply.status == 401
    rejections = [record for record in caplog.records if record.name == "handlers.http"]
    assert len(rejections) == 1
    assert "rejected request" in rejections[0].getMessage()
    assert MARKER not in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("signature", ["v0=\u00e9", "v0=" + "\u00ff" * 64, "", "v0="])
def test_odd_signature_is_401(server: GuardServer, signature: str) -> None:
    assert server.post(command_form(**GOOD_COMMAND), signature=signature).status == 401


# --- signed but malformed bodies --------------------------------------------------------------

MALFORMED = {
    "payload-not-json": (payload_text_form("not json"), FORM),
    "payload-truncated-json": (payload_text_form('{"type": "block_actions"'), FORM),
    "payload-list": (payload_form([block_actions()]), FORM),
    "payload-string": (payload_form("block_actions"), FORM),
    "payload-null": (payload_form(None), FORM),
    "payload-number": (payload_form(7), FORM),
    "payload-deeply-nested": (payload_text_form("[" * 100_000 + "]" * 100_000), FORM),
    "payload-huge-integer": (payload_text_form('{"type": ' + "9" * 5000 + "}"), FORM),
    "json-unparsable": ("{not json", JSON),
    "json-list": ("[1, 2]", JSON),
    "json-string-as-json-type": ('"event_callback"', JSON),
    "json-null": ("null", JSON),
    "json-event-null": (json.dumps({"type": "event_callback", "event": None}), JSON),
    "json-event-string": (json.dumps({"type": "event_callback", "event": "app_home_opened"}), JSON),
    "json-team-number": (json.dumps({"type": "event_callback", "team": 5,
                                     "event": {"type": "app_home_opened"}}), JSON),
    "json-authorizations-string": (json.dumps({"type": "event_callback", "authorizations": "x",
                                               "event": {"type": "app_home_opened"}}), JSON),
    "json-event-user-number": (json.dumps({"type": "event_callback",
                                           "event": {"type": "app_home_opened", "user": 5}}), JSON),
    "json-block-actions-without-actions": (json.dumps(block_actions(actions=[])), JSON),
    "view-submission-view-without-type": (payload_form(block_actions(type="view_submission",
                                                                     view={"callback_id": "x"})), FORM),
    "two-response-urls": (payload_form(block_actions(response_urls=[{}, {}])), FORM),
    "actions-not-list": (payload_form(block_actions(actions=5)), FORM),
    "actions-object": (payload_form(block_actions(actions={"action_id": "step_approve"})), FORM),
    "actions-empty": (payload_form(block_actions(actions=[])), FORM),
    "actions-missing": (payload_form({k: v for k, v in block_actions().items() if k != "actions"}), FORM),
    "actions-hold-number": (payload_form(block_actions(actions=[5])), FORM),
    "actions-hold-null": (payload_form(block_actions(actions=[None])), FORM),
    "action-id-number": (payload_form(block_actions(actions=[{"action_id": 5}])), FORM),
    "action-id-list": (payload_form(block_actions(actions=[{"action_id": ["step_approve"]}])), FORM),
    "action-id-missing": (payload_form(block_actions(actions=[{"value": "x"}])), FORM),
    "user-string": (payload_form(block_actions(user="U0AAA")), FORM),
    "user-missing": (payload_form({k: v for k, v in block_actions().items() if k != "user"}), FORM),
    "user-id-number": (payload_form(block_actions(user={"id": 5})), FORM),
    "user-id-empty": (payload_form(block_actions(user={"id": ""})), FORM),
    "type-missing": (payload_form({k: v for k, v in block_actions().items() if k != "type"}), FORM),
    "type-number": (payload_form(block_actions(type=1)), FORM),
    "team-number": (payload_form(block_actions(team=5)), FORM),
    "channel-list": (payload_form(block_actions(channel=["C0123OPS"])), FORM),
    "view-string": (payload_form(block_actions(view="modal")), FORM),
    "response-url-number": (payload_form(block_actions(response_url=5)), FORM),
    "command-without-user-id": (command_form(command="/secret", text="help", channel_id="C0123OPS"), FORM),
    "command-with-empty-user-id": (command_form(**{**GOOD_COMMAND, "user_id": ""}), FORM),
    "command-without-command": (command_form(text="help", user_id="U0AAA", channel_id="C0123OPS"), FORM),
    "command-without-channel": (command_form(command="/secret", text="help", user_id="U0AAA"), FORM),
    "command-with-event-field": (command_form(**GOOD_COMMAND, event="x"), FORM),
    "command-with-authorizations-field": (command_form(**GOOD_COMMAND, authorizations="x"), FORM),
    "form-with-payload-word-only": (command_form(text="payload"), FORM),
    "empty-body": ("", FORM),
}


@pytest.mark.parametrize("body, content_type", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_400(server: GuardServer, body: str, content_type: str) -> None:
    reply = server.post(body, content_type=content_type)
    assert reply.status == 400
    assert json.loads(reply.text) == {"error": "invalid request"}


def test_malformed_request_logs_one_line_without_values(server: GuardServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    body = payload_form(block_actions(user=MARKER, text=MARKER))
    with caplog.at_level(logging.DEBUG):
        reply = server.post(body)
    assert reply.status == 400
    lines = [record.getMessage() for record in caplog.records if record.name == "handlers.http"]
    assert len(lines) == 1
    assert "user" in lines[0]
    assert MARKER not in caplog.text


def test_malformed_command_log_names_field(server: GuardServer, caplog: pytest.LogCaptureFixture) -> None:
    body = command_form(command="/secret", text=f"rotate JWT_SECRET {MARKER}", channel_id="C0123OPS")
    with caplog.at_level(logging.DEBUG):
        reply = server.post(body)
    assert reply.status == 400
    lines = [record.getMessage() for record in caplog.records if record.name == "handlers.http"]
    assert len(lines) == 1
    assert "user_id" in lines[0]
    assert MARKER not in caplog.text


# --- property: no payload shape makes the endpoint fail -----------------------------------------

# Field names bolt reads while building its context, matching listeners and logging an
# unhandled request (slack_bolt 1.30 request/internals.py, request/payload_utils.py,
# logger/messages.py), plus the ones Slack sends that nothing reads.
FIELD_NAMES = [
    "type", "user", "actions", "action_id", "block_id", "callback_id", "team", "channel", "enterprise", "view",
    "event", "message", "previous_message", "item", "assistant_thread", "container", "authorizations",
    "response_url", "response_urls", "workflow_step", "function", "function_data", "function_execution_id",
    "bot_access_token", "is_ext_shared_channel", "is_enterprise_install", "team_id", "user_id", "channel_id",
    "enterprise_id", "user_team", "id", "value", "challenge", "ssl_check", "token", "command", "text",
    "subtype", "channel_type", "thread_ts", "bot_id", "app_installed_team_id", "submission",
]
TYPE_NAMES = [
    "block_actions", "interactive_message", "view_submission", "view_closed", "block_suggestion",
    "dialog_suggestion", "dialog_submission", "dialog_cancellation", "shortcut", "message_action",
    "workflow_step_edit", "workflow_step", "event_callback", "url_verification", "app_home_opened", "message",
    "function_executed", "workflow_step_execute", "assistant_thread_started", "modal", "home", "button",
]
ACTION_IDS = ["step_approve", "step_deny", "step_done", "step_enter", "step_other", "approve"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(TYPE_NAMES),
    st.sampled_from(ACTION_IDS),
    st.sampled_from(["1", "U0AAA", "U0BOT", "B0BOT", "T0TEAM", "E0ORG", "C0123OPS", "/secret", "http://127.0.0.1:9/",
                     VALUE_MODAL_CALLBACK]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=4)), children, max_size=5),
    ),
    max_leaves=24,
)
random_documents = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8)
# Documents that start from a well-formed click or event, so that examples reach the
# checks behind the first few required fields.
plausible_documents = st.builds(
    lambda base, extra: {**base, **extra},
    st.sampled_from([block_actions(), modal_submission(),
                     {"type": "event_callback", "event": {"type": "app_home_opened"}}]),
    random_documents,
)
typed_documents = st.builds(
    lambda kind, extra: {**extra, "type": kind, "user": {"id": "U0AAA"}},
    st.sampled_from(TYPE_NAMES),
    random_documents,
)
documents = st.one_of(random_documents, plausible_documents, typed_documents)
form_fields = st.dictionaries(
    st.sampled_from(FIELD_NAMES),
    st.one_of(st.text(max_size=8), st.sampled_from(TYPE_NAMES), st.sampled_from(["/secret", "U0AAA", "1", "payload"])),
    max_size=8,
)

PROPERTY_SETTINGS = settings(max_examples=500, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_handled(reply: Reply) -> None:
    assert reply.status < 500, reply.text
    assert reply.elapsed < ACK_DEADLINE_SECONDS


@PROPERTY_SETTINGS
@given(document=documents)
def test_any_payload_is_not_5xx(server: GuardServer, document: dict[str, Any]) -> None:
    assert_handled(server.post(payload_form(document)))


@PROPERTY_SETTINGS
@given(document=documents)
def test_any_json_body_is_not_5xx(server: GuardServer, document: dict[str, Any]) -> None:
    assert_handled(server.post(json.dumps(document), content_type=JSON))


@PROPERTY_SETTINGS
@given(fields=form_fields)
def test_any_form_body_is_not_5xx(server: GuardServer, fields: dict[str, str]) -> None:
    assert_handled(server.post(urlencode(fields)))
