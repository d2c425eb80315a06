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
