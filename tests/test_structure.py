"""Invariants across modules: every button has a listener, every runbook is well formed."""

from __future__ import annotations

import ast
from pathlib import Path

from handlers.listeners import FORM_ACTION_PATTERN, STEP_ACTION_PATTERN
from handlers.messages import ACTION_PREFIX
from bot.runbook.steps import StepKind
from runbooks import RUNBOOKS

REPO = Path(__file__).resolve().parent.parent


def test_every_step_action_has_listener() -> None:
    for runbook in RUNBOOKS.values():
        for step in runbook.steps:
            for action in step.actions:
                action_id = ACTION_PREFIX + action.name
                handled = bool(STEP_ACTION_PATTERN.match(action_id) or FORM_ACTION_PATTERN.match(action_id))
                assert handled, (runbook.name, step.kind, action.name)


def test_step_kinds_are_unique_per_runbook() -> None:
    for runbook in RUNBOOKS.values():
        kinds = [step.kind for step in runbook.steps]
        assert len(kinds) == len(set(kinds)), runbook.name


def test_steps_that_wait_take_decisions() -> None:
    for runbook in RUNBOOKS.values():
        for step in runbook.steps:
            overrides_decide = type(step).decide is not StepKind.decide
            assert bool(step.actions) == overrides_decide, step.kind


def test_core_does_not_import_slack() -> None:
    for folder in ("bot", "runbooks"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "server.py":
                continue  # the composition root wires the Slack front end to the engine
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    assert not name.startswith(("slack_bolt", "slack_sdk", "handlers")), f"{path}: imports {name}"


def _rendered_inventory_buttons() -> set[str]:
    """Every action_id on a reminder and on the Home tab, rendered from overdue secrets."""
    from datetime import UTC, date, datetime

    from bot.policy import builtin_policy
    from bot.reminders.report import build_reminder
    from handlers.reminder_views import reminder_messages
    from handlers.status_views import home_view
    from tests.inventory_flow import overdue_status

    policy = builtin_policy()
    statuses = [overdue_status("hotel-voice-bot", name) for name in ("JWT_SECRET", "ENCRYPTION_KEY")]
    reminder = build_reminder(statuses, local_date=date.today(), window_days=7, all_clear=False)
    blocks = [block for message in reminder_messages(reminder) for block in message.blocks]
    blocks += home_view(statuses, [], permalinks={}, rotate_action_id=_home_action_id(),
                        can_rotate=lambda status: status.name in policy.secrets,
                        now=datetime.now(UTC))["blocks"]
    action_ids = set()
    for block in blocks:
        elements = block.get("elements", []) if block.get("type") == "actions" else [block.get("accessory") or {}]
        action_ids |= {element["action_id"] for element in elements if element.get("type") == "button"}
    return action_ids


def _home_action_id() -> str:
    from handlers.inventory_listeners import HOME_ROTATE_ACTION_ID

    return HOME_ROTATE_ACTION_ID


async def test_every_inventory_button_has_listener() -> None:
    import json
    from typing import Any, cast
    from urllib.parse import urlencode

    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_bolt.response import BoltResponse

    from bot.policy import builtin_policy
    from handlers.listeners import register
    from handlers.status_views import SNOOZE_CALLBACK

    app = AsyncApp(token="xoxb-structure-test", signing_secret="structure-test")
    register(app, engine=cast(Any, None), policy=builtin_policy(), observer=cast(Any, None))

    async def handled(payload: dict[str, Any]) -> bool:
        request = AsyncBoltRequest(body=urlencode({"payload": json.dumps(payload)}),
                                   headers={"content-type": ["application/x-www-form-urlencoded"]})
        return any([await listener.async_matches(req=request, resp=BoltResponse(status=200))
                    for listener in app._async_listeners])

    action_ids = _rendered_inventory_buttons()
    assert action_ids
    for action_id in action_ids:
        click = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T1"},
                 "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": "a:B"}]}
        assert await handled(click), action_id
    submission = {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T1"},
                  "view": {"callback_id": SNOOZE_CALLBACK, "type": "modal"}}
    assert await handled(submission)
    assert not await handled({**click, "actions": [{"type": "button", "action_id": "no_such_action"}]})
