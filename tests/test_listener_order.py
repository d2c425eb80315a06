"""The bolt listeners: each request matches exactly one, and the busiest ones are tried first."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.policy import builtin_policy
from handlers import add_form, diagnose_views, messages, reminder_views, status_views
from handlers.listeners import register

FORM = {"content-type": ["application/x-www-form-urlencoded"]}
JSON = {"content-type": ["application/json"]}
STEP_ACTIONS = [f"{messages.ACTION_PREFIX}{name}" for name in ("approve", "deny", "done", "restore", "regenerate")]
FORM_ACTIONS = [f"{messages.ACTION_PREFIX}{name}" for name in ("enter", "review", add_form.DEFINE_ACTION)]
OTHER_ACTIONS = [
    messages.RETRY_ACTION_ID, messages.ROLLBACK_ACTION_ID, messages.LOGS_ACTION_ID, messages.RESTORE_ACTION_ID,
    *diagnose_views.FIX_ACTION_IDS.values(), reminder_views.ROTATE_ACTION_ID, reminder_views.SNOOZE_ACTION_ID,
]
VIEW_CALLBACKS = [messages.VALUE_MODAL_CALLBACK, add_form.ADD_MODAL_CALLBACK, status_views.SNOOZE_CALLBACK]


def _command() -> AsyncBoltRequest:
    body = urlencode({"command": "/secret", "text": "status", "user_id": "U1", "team_id": "T1", "channel_id": "C1"})
    return AsyncBoltRequest(body=body, headers=FORM)


def _click(action_id: str) -> AsyncBoltRequest:
    payload = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T1"},
               "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": "v"}]}
    return AsyncBoltRequest(body=urlencode({"payload": json.dumps(payload)}), headers=FORM)


def _submission(callback_id: str) -> AsyncBoltRequest:
    payload = {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T1"},
               "view": {"callback_id": callback_id, "type": "modal"}}
    return AsyncBoltRequest(body=urlencode({"payload": json.dumps(payload)}), headers=FORM)


def _home_opened() -> AsyncBoltRequest:
    envelope = {"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
                "event": {"type": "app_home_opened", "user": "U1", "tab": "home"}}
    return AsyncBoltRequest(body=json.dumps(envelope), headers=JSON)


REQUESTS = {
    "command": _command,
    **{f"click {action_id}": (lambda action_id=action_id: _click(action_id))
       for action_id in STEP_ACTIONS + FORM_ACTIONS + OTHER_ACTIONS},
    **{f"submit {callback_id}": (lambda callback_id=callback_id: _submission(callback_id))
       for callback_id in VIEW_CALLBACKS},
    "app_home_opened": _home_opened,
}


@pytest.fixture
def app() -> AsyncApp:
    app = AsyncApp(token="xoxb-order-test", signing_secret="order-test")
    register(app, engine=cast(Any, None), policy=builtin_policy(), observer=cast(Any, None))
    return app


async def _matching(app: AsyncApp, request: AsyncBoltRequest) -> list[int]:
    """Return the positions of the listeners that match `request`."""
    return [position for position, listener in enumerate(app._async_listeners)
            if await listener.async_matches(req=request, resp=BoltResponse(status=200))]


@pytest.mark.parametrize("kind", REQUESTS)
async def test_request_matches_one_listener(app: AsyncApp, kind: str) -> None:
    assert len(await _matching(app, REQUESTS[kind]())) == 1


async def test_every_listener_is_covered(app: AsyncApp) -> None:
    covered = set()
    for make in REQUESTS.values():
        covered.update(await _matching(app, make()))

    assert covered == set(range(len(app._async_listeners)))


async def test_command_is_tried_first(app: AsyncApp) -> None:
    assert await _matching(app, _command()) == [0]


async def test_run_buttons_come_next(app: AsyncApp) -> None:
    positions = {action_id: await _matching(app, _click(action_id)) for action_id in STEP_ACTIONS}

    for action_id, matched in positions.items():
        assert matched == [1], action_id
