"""Small readers of Slack interaction payloads shared by the listener modules."""

from __future__ import annotations

from typing import Any


def user_id_of(body: dict[str, Any]) -> str | None:
    """Return the clicking or submitting user's ID from an interaction payload."""
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) else None
