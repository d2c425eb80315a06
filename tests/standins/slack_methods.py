"""Web API methods of the Slack stand-in, each a function from arguments to a response.

Each function takes the workspace state and the request's arguments (already merged
from the query string and the JSON or form body) and returns the fields of a
successful response without `ok`. Failures raise SlackError with Slack's error code.
Arguments that a method does not use, such as the `team_id` that bolt adds to every
call, are ignored as Slack ignores them.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from .slack_blocks import check_message_blocks, check_view, fill_generated_ids
from .slack_state import Ephemeral, Message, SlackError, View, Workspace

logger = logging.getLogger(__name__)

MethodHandler = Callable[[Workspace, dict[str, Any]], dict[str, Any]]

# Slack truncates longer chat.postMessage text instead of rejecting it.
MAX_POSTED_TEXT_LENGTH = 40_000
# chat.update rejects text over 4,000 characters with msg_too_long.
# NOTE: Slack's docs list msg_too_long for chat.postEphemeral without giving its limit;
# the stand-in applies the chat.update limit there too.
MAX_EDITED_TEXT_LENGTH = 4_000
MAX_VIEW_BYTES = 250_000


def flag(value: Any) -> bool:
    """Read a boolean argument sent as JSON true, a form "true" or a query-string "1"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)


def read_blocks(args: dict[str, Any], *, pointer: str = "/blocks") -> list[dict[str, Any]] | None:
    """Parse and check `blocks`, which form bodies carry as a JSON string; None when absent."""
    raw = args.get("blocks")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise SlackError("invalid_blocks_format") from None
    if not isinstance(raw, list):
        raise SlackError("invalid_blocks_format")

    problems = check_message_blocks(raw, pointer=pointer)
    if problems:
        raise SlackError("invalid_blocks", messages=problems)
    return raw


def read_text(args: dict[str, Any]) -> str:
    text = args.get("text")
    return "" if text is None else str(text)


def _read_metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    raw = args.get("metadata")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise SlackError("invalid_metadata_format") from None
    if not isinstance(raw, dict):
        raise SlackError("invalid_metadata_format")
    return raw


def has_content(text: str, blocks: list[dict[str, Any]] | None, args: dict[str, Any]) -> bool:
    return bool(text) or bool(blocks) or bool(args.get("attachments"))


def auth_test(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": f"https://{ws.team_domain}.slack.com/",
        "team": ws.team_domain,
        "user": "secretbot",
        "team_id": ws.team_id,
        "user_id": ws.bot_user_id,
        "bot_id": ws.bot_id,
        "is_enterprise_install": False,
    }


def chat_post_message(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = ws.resolve_postable_channel(args.get("channel"))
    text = read_text(args)
    blocks = read_blocks(args)
    if not has_content(text, blocks, args):
        raise SlackError("no_text")

    thread_ts = args.get("thread_ts") or None
    # NOTE: a thread_ts that names no message, or names a reply, is stored as given.
    # Slack's handling of those cases is undocumented, and replies() will not list them.
    message = Message(
        channel=channel.id,
        ts=ws.mint_ts(),
        text=text[:MAX_POSTED_TEXT_LENGTH],
        blocks=fill_generated_ids(blocks or []),
        user=ws.bot_user_id,
        bot_id=ws.bot_id,
        app_id=ws.app_id,
        thread_ts=str(thread_ts) if thread_ts is not None else None,
        reply_broadcast=thread_ts is not None and flag(args.get("reply_broadcast")),
        metadata=_read_metadata(args),
    )
    ws.store_message(message)
    return {"channel": channel.id, "ts": message.ts, "message": message.to_api(ws.team_id)}


def chat_update(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = ws.resolve_channel(args.get("channel"))
    ts = args.get("ts")
    message = ws.find_message(channel.id, ts)
    if message is None:
        # The message_ts of an ephemeral is not a message Slack can edit.
        if isinstance(ts, str) and ws.find_ephemeral(ts) is not None:
            raise SlackError("cant_update_message")
        raise SlackError("message_not_found")
    if message.user != ws.bot_user_id:
        raise SlackError("cant_update_message")

    text_given = args.get("text") is not None
    text = read_text(args)
    if len(text) > MAX_EDITED_TEXT_LENGTH:
        raise SlackError("msg_too_long")
    blocks = read_blocks(args)
    if not text_given and "blocks" not in args:
        raise SlackError("no_text")

    # Slack removes the blocks when text comes without blocks, and keeps whatever
    # field the call leaves out otherwise.
    if blocks is not None:
        message.blocks = fill_generated_ids(blocks)
    elif text_given:
        message.blocks = []
    if text_given:
        message.text = text
    metadata = _read_metadata(args)
    if metadata is not None:
        message.metadata = metadata
    message.edited_ts = ws.mint_ts()
    return {"channel": channel.id, "ts": message.ts, "text": message.text, "message": message.to_api(ws.team_id)}


def chat_post_ephemeral(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = ws.resolve_postable_channel(args.get("channel"))
    user = args.get("user")
    if user not in channel.members:
        raise SlackError("user_not_in_channel")
    text = read_text(args)
    if len(text) > MAX_EDITED_TEXT_LENGTH:
        raise SlackError("msg_too_long")
    blocks = read_blocks(args)
    if not has_content(text, blocks, args):
        raise SlackError("no_text")

    ephemeral = Ephemeral(
        channel=channel.id,
        user=str(user),
        message_ts=ws.mint_ts(),
        text=text,
        blocks=fill_generated_ids(blocks or []),
        source="chat.postEphemeral",
        thread_ts=args.get("thread_ts") or None,
    )
    ws.ephemerals.append(ephemeral)
    return {"message_ts": ephemeral.message_ts}


def chat_get_permalink(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = ws.resolve_channel(args.get("channel"))
    message = ws.find_message(channel.id, args.get("message_ts"))
    if message is None:
        raise SlackError("message_not_found")

    permalink = f"https://{ws.team_domain}.slack.com/archives/{channel.id}/p{message.ts.replace('.', '')}"
    if message.is_reply:
        permalink += f"?thread_ts={message.thread_ts}&cid={channel.id}"
    return {"channel": channel.id, "permalink": permalink}


def read_view(
    ws: Workspace, args: dict[str, Any], *, expected_types: frozenset[str], replacing: View | None = None
) -> dict[str, Any]:
    """Parse and check the `view` argument and return it with generated block and action ids.

    NOTE: Slack's views.* error tables list invalid_arguments, not invalid_blocks, for
    a view it cannot accept, so the stand-in returns invalid_arguments for every
    problem in a view. Which code Slack returns for a bad block inside a view is not
    verified. The response_metadata messages name the JSON pointer either way.
    """
    raw = args.get("view")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            message = "[ERROR] view is not valid JSON [json-pointer:/view]"
            raise SlackError("invalid_arguments", messages=[message]) from None
    if not isinstance(raw, dict):
        raise SlackError("invalid_arguments", messages=["[ERROR] missing required field: view [json-pointer:/view]"])
    if len(json.dumps(raw).encode()) > MAX_VIEW_BYTES:
        raise SlackError("view_too_large")

    problems = check_view(raw, expected_types=expected_types)
    if problems:
        raise SlackError("invalid_arguments", messages=problems)

    external_id = raw.get("external_id")
    if external_id:
        for other in [*ws.views.values(), *ws.home_views.values()]:
            if other.external_id == external_id and other is not replacing:
                raise SlackError("duplicate_external_id")

    content = copy.deepcopy(raw)
    content["blocks"] = fill_generated_ids(content.get("blocks", []))
    return content


def views_open(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    trigger_value = args.get("trigger_id") or args.get("interactivity_pointer")
    if not trigger_value:
        raise SlackError("invalid_arguments", messages=["[ERROR] missing required field: trigger_id"])
    trigger = ws.trigger_ids.get(str(trigger_value))
    if trigger is None:
        raise SlackError("invalid_trigger_id")
    if trigger.used:
        raise SlackError("exchanged_trigger_id")
    if time.monotonic() - trigger.issued_at > ws.trigger_ttl:
        raise SlackError("expired_trigger_id")

    content = read_view(ws, args, expected_types=frozenset({"modal"}))
    trigger.used = True
    view_id = ws.mint_view_id()
    view = View(
        id=view_id,
        user=trigger.user or "",
        type="modal",
        content=content,
        hash=ws.mint_hash(),
        root_view_id=view_id,
    )
    ws.views[view_id] = view
    return {"view": view.to_api(team_id=ws.team_id, app_id=ws.app_id, bot_id=ws.bot_id)}


def views_update(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    view = _find_view(ws, view_id=args.get("view_id"), external_id=args.get("external_id"))
    if view is None:
        raise SlackError("not_found")
    expected_hash = args.get("hash")
    if expected_hash and expected_hash != view.hash:
        raise SlackError("hash_conflict")

    view.content = read_view(ws, args, expected_types=frozenset({view.type}), replacing=view)
    view.hash = ws.mint_hash()
    view.errors = {}
    return {"view": view.to_api(team_id=ws.team_id, app_id=ws.app_id, bot_id=ws.bot_id)}


def _find_view(ws: Workspace, *, view_id: Any, external_id: Any) -> View | None:
    candidates = [view for view in [*ws.views.values(), *ws.home_views.values()] if view.is_open]
    for view in candidates:
        if view_id and view.id == view_id:
            return view
        if external_id and view.external_id == external_id:
            return view
    return None


def views_publish(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    user_id = args.get("user_id")
    if user_id not in ws.users:
        raise SlackError("user_not_found")
    existing = ws.home_views.get(user_id)
    expected_hash = args.get("hash")
    if expected_hash and existing is not None and expected_hash != existing.hash:
        raise SlackError("hash_conflict")

    content = read_view(ws, args, expected_types=frozenset({"home"}), replacing=existing)
    if existing is None:
        view_id = ws.mint_view_id()
        existing = View(
            id=view_id, user=user_id, type="home", content=content, hash=ws.mint_hash(), root_view_id=view_id
        )
        ws.home_views[user_id] = existing
    else:
        existing.content = content
        existing.hash = ws.mint_hash()
    return {"view": existing.to_api(team_id=ws.team_id, app_id=ws.app_id, bot_id=ws.bot_id)}


def users_info(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    user = ws.users.get(args.get("user"))  # type: ignore[arg-type]
    if user is None:
        raise SlackError("user_not_found")
    return {"user": user.to_api()}


def usergroups_users_list(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    members = ws.usergroups.get(args.get("usergroup"))  # type: ignore[arg-type]
    if members is None:
        raise SlackError("no_such_subteam")
    return {"users": list(members)}


def conversations_join(ws: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = ws.resolve_channel(args.get("channel"))
    if channel.is_im or channel.is_private:
        raise SlackError("method_not_supported_for_channel_type")

    response: dict[str, Any] = {
        "channel": {"id": channel.id, "name": channel.name, "is_channel": True, "is_private": False, "is_member": True}
    }
    if channel.bot_is_member:
        response["warning"] = "already_in_channel"
        response["response_metadata"] = {"warnings": ["already_in_channel"]}
    channel.bot_is_member = True
    channel.members.add(ws.bot_user_id)
    return response


# Method name -> (handler, bot scope it needs or None). Scopes are those Slack's method
# pages list for bot tokens.
METHODS: dict[str, tuple[MethodHandler, str | None]] = {
    "auth.test": (auth_test, None),
    "chat.postMessage": (chat_post_message, "chat:write"),
    "chat.update": (chat_update, "chat:write"),
    "chat.postEphemeral": (chat_post_ephemeral, "chat:write"),
    "chat.getPermalink": (chat_get_permalink, None),
    "views.open": (views_open, None),
    "views.update": (views_update, None),
    "views.publish": (views_publish, None),
    "users.info": (users_info, "users:read"),
    "usergroups.users.list": (usergroups_users_list, "usergroups:read"),
    "conversations.join": (conversations_join, "channels:join"),
}
