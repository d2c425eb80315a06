"""Messages the bot sends back outside the Web API: response_url posts and view acknowledgements.

Slack accepts a response_url at most 5 times within 30 minutes of the command or
interaction that carried it. The bot acknowledges a view_submission in the HTTP
response itself, with an empty body or a `response_action`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .slack_blocks import fill_generated_ids
from .slack_methods import MAX_POSTED_TEXT_LENGTH, flag, has_content, read_blocks, read_text, read_view
from .slack_state import Ephemeral, Message, ResponseUrl, SlackError, View, Workspace

logger = logging.getLogger(__name__)


def use_response_url(ws: Workspace, url_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    """Apply a post to a response_url and return the HTTP status and JSON body to send.

    Only a post that succeeds counts as a use.

    NOTE: Slack documents the limits but not its response when one is exceeded. The
    404 status and the error codes here are assumptions.
    """
    record = ws.response_urls.get(url_id)
    if record is None:
        return 404, {"ok": False, "error": "invalid_url"}
    if time.monotonic() - record.issued_at > ws.response_url_ttl:
        return 404, {"ok": False, "error": "expired_url"}
    if record.uses >= ws.response_url_max_uses:
        return 404, {"ok": False, "error": "used_url"}
    if not isinstance(body, dict):
        return 400, {"ok": False, "error": "invalid_payload"}

    try:
        apply_response_url(ws, record, body)
    except SlackError as error:
        return 400, error.to_response()
    record.uses += 1
    return 200, {"ok": True}


def apply_response_url(ws: Workspace, record: ResponseUrl, body: dict[str, Any]) -> None:
    """Apply a message sent to a response_url, as Slack shows it in the client.

    `delete_original` and `replace_original` act on the message the interaction came
    from. A slash command has none, so its replacement is posted as a new message.
    Otherwise `response_type: in_channel` posts a channel message, and anything else
    posts an ephemeral for the user who acted.
    """
    if flag(body.get("delete_original")):
        original = _find_original(ws, record)
        if original is None:
            raise SlackError("message_not_found")
        original.deleted = True
        return

    text = read_text(body)
    blocks = read_blocks(body)
    if not has_content(text, blocks, body):
        raise SlackError("no_text")

    if flag(body.get("replace_original")) and record.original_ts is not None:
        original = _find_original(ws, record)
        if original is None:
            raise SlackError("message_not_found")
        original.text = text
        original.blocks = fill_generated_ids(blocks or [])
        if isinstance(original, Message):
            original.edited_ts = ws.mint_ts()
        return

    thread_ts = body.get("thread_ts") or None
    if body.get("response_type") == "in_channel":
        ws.store_message(
            Message(
                channel=record.channel,
                ts=ws.mint_ts(),
                text=text[:MAX_POSTED_TEXT_LENGTH],
                blocks=fill_generated_ids(blocks or []),
                user=ws.bot_user_id,
                bot_id=ws.bot_id,
                app_id=ws.app_id,
                thread_ts=thread_ts,
            )
        )
        return
    ws.ephemerals.append(
        Ephemeral(
            channel=record.channel,
            user=record.user,
            message_ts=ws.mint_ts(),
            text=text,
            blocks=fill_generated_ids(blocks or []),
            source="response_url",
            thread_ts=thread_ts,
        )
    )


def _find_original(ws: Workspace, record: ResponseUrl) -> Message | Ephemeral | None:
    if record.original_ts is None:
        return None
    return ws.find_message(record.channel, record.original_ts) or ws.find_ephemeral(record.original_ts)


def apply_response_action(ws: Workspace, view: View, acknowledgement: Any) -> None:
    """Change the modal as Slack does for the bot's acknowledgement of its view_submission.

    A `response_action` of errors, update, push or clear shows the errors, replaces the
    modal, stacks a new one or closes the whole stack. Anything else closes the modal.
    Raises SlackError for an acknowledgement that Slack would reject.
    """
    action = acknowledgement.get("response_action") if isinstance(acknowledgement, dict) else None
    if action == "errors":
        if not isinstance(acknowledgement.get("errors"), dict):
            raise SlackError("invalid_arguments", messages=["[ERROR] errors must be an object [json-pointer:/errors]"])
        view.errors = dict(acknowledgement["errors"])
    elif action == "update":
        view.content = read_view(ws, acknowledgement, expected_types=frozenset({"modal"}), replacing=view)
        view.hash = ws.mint_hash()
        view.errors = {}
    elif action == "push":
        content = read_view(ws, acknowledgement, expected_types=frozenset({"modal"}))
        pushed = View(
            id=ws.mint_view_id(),
            user=view.user,
            type="modal",
            content=content,
            hash=ws.mint_hash(),
            root_view_id=view.root_view_id,
            previous_view_id=view.id,
        )
        ws.views[pushed.id] = pushed
    elif action == "clear":
        for other in ws.views.values():
            if other.root_view_id == view.root_view_id:
                other.is_open = False
    else:
        view.is_open = False
