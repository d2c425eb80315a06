"""Small readers of Slack interaction payloads shared by the listener modules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def user_id_of(body: dict[str, Any]) -> str | None:
    """Return the clicking or submitting user's ID from an interaction payload."""
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) else None


@dataclass(frozen=True)
class ModalSubmission:
    """The run step a submitted modal belongs to, from its private_metadata, and its input state."""

    run_id: str
    position: int
    metadata: dict[str, Any]
    state_values: dict[str, Any]


def modal_submission(view: dict[str, Any]) -> ModalSubmission | None:
    """Read a submitted run modal, or return None when its private_metadata is not the bot's.

    The bot writes `{"run_id": ..., "position": ...}` into every modal it opens for a run
    step. An input that was left empty is missing from Slack's state, so `state_values`
    may lack some blocks.
    """
    try:
        metadata = json.loads(str(view.get("private_metadata", "")))
        run_id, position = str(metadata["run_id"]), int(metadata["position"])
    except (ValueError, KeyError, TypeError):
        return None
    state = view.get("state")
    state_values = state.get("values") if isinstance(state, dict) else None
    return ModalSubmission(run_id=run_id, position=position, metadata=metadata,
                           state_values=state_values if isinstance(state_values, dict) else {})
