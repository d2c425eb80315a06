"""State that the Slack stand-in keeps: channels, users, messages, ephemerals and views.

The types mirror the objects Slack returns, so tests read `message.blocks` or
`view.private_metadata` just as the bot reads them from API responses.
"""

from __future__ import annotations

import copy
import itertools
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class SlackError(Exception):
    """A Slack error code that a method returns as {"ok": false, "error": code}."""

    def __init__(self, error: str, *, messages: list[str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []
        self.extra = extra

    def to_response(self) -> dict[str, Any]:
        response: dict[str, Any] = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            response["response_metadata"] = {"messages": list(self.messages)}
        return response


@dataclass
class Channel:
    """A conversation; `bot_is_member` decides whether the bot may post without joining."""

    id: str
    name: str
    is_private: bool = False
    is_im: bool = False
    bot_is_member: bool = True
    members: set[str] = field(default_factory=set)


@dataclass
class User:
    """A workspace member as users.info returns it."""

    id: str
    name: str
    real_name: str
    team_id: str
    is_bot: bool = False
    deleted: bool = False
    is_admin: bool = False
    tz: str = "Europe/Amsterdam"
    email: str | None = None

    def to_api(self) -> dict[str, Any]:
        profile: dict[str, Any] = {"real_name": self.real_name, "display_name": self.name}
        if self.email is not None:
            profile["email"] = self.email
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "is_admin": self.is_admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "tz": self.tz,
            "tz_offset": 3600,
            "profile": profile,
        }


@dataclass
class Message:
    """A channel message or thread reply with its current content after any updates."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    user: str
    bot_id: str | None = None
    app_id: str | None = None
    thread_ts: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    edited_ts: str | None = None
    deleted: bool = False

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_api(self, team_id: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "text": self.text,
            "user": self.user,
            "team": team_id,
        }
        if self.bot_id is not None:
            message["bot_id"] = self.bot_id
            message["app_id"] = self.app_id
        if self.blocks:
            message["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts is not None:
            message["thread_ts"] = self.thread_ts
        if self.reply_broadcast:
            message["subtype"] = "thread_broadcast"
        if self.metadata is not None:
            message["metadata"] = copy.deepcopy(self.metadata)
        if self.edited_ts is not None:
            message["edited"] = {"user": self.user, "ts": self.edited_ts}
        return message


@dataclass
class Ephemeral:
    """A message visible only to `user`; `source` is the method or URL that posted it."""

    channel: str
    user: str
    message_ts: str
    text: str
    blocks: list[dict[str, Any]]
    source: str
    thread_ts: str | None = None
    deleted: bool = False


@dataclass
class View:
    """A modal opened with views.open or a Home tab published with views.publish."""

    id: str
    user: str
    type: str
    content: dict[str, Any]
    hash: str
    root_view_id: str
    previous_view_id: str | None = None
    is_open: bool = True
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self.content.get("blocks", [])

    @property
    def private_metadata(self) -> str:
        return self.content.get("private_metadata", "")

    @property
    def callback_id(self) -> str:
        return self.content.get("callback_id", "")

    @property
    def external_id(self) -> str:
        return self.content.get("external_id", "")

    def to_api(
        self, *, team_id: str, app_id: str, bot_id: str, state_values: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        view = copy.deepcopy(self.content)
        view.update(
            {
                "id": self.id,
                "team_id": team_id,
                "type": self.type,
                "blocks": copy.deepcopy(self.blocks),
                "private_metadata": self.private_metadata,
                "callback_id": self.callback_id,
                "external_id": self.external_id,
                "state": {"values": copy.deepcopy(state_values or {})},
                "hash": self.hash,
                "clear_on_close": bool(self.content.get("clear_on_close", False)),
                "notify_on_close": bool(self.content.get("notify_on_close", False)),
                "root_view_id": self.root_view_id,
                "previous_view_id": self.previous_view_id,
                "app_id": app_id,
                "app_installed_team_id": team_id,
                "bot_id": bot_id,
            }
        )
        return view


@dataclass
class TriggerId:
    """A trigger_id minted for a payload; Slack accepts each once, within a few seconds."""

    value: str
    issued_at: float
    user: str | None = None
    used: bool = False


@dataclass
class ResponseUrl:
    """A response_url minted for a command or interaction, with its use count.

    `original_ts` names the message the interaction came from, so that
    `replace_original` and `delete_original` have something to act on. Slash commands
    have none.
    """

    id: str
    channel: str
    user: str
    issued_at: float
    original_ts: str | None = None
    uses: int = 0


class Workspace:
    """The mutable state behind the stand-in's methods, keyed the way Slack keys it."""

    def __init__(
        self,
        *,
        team_id: str,
        team_domain: str,
        bot_user_id: str,
        bot_id: str,
        app_id: str,
        trigger_ttl: float,
        response_url_ttl: float,
        response_url_max_uses: int,
    ) -> None:
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.trigger_ttl = trigger_ttl
        self.response_url_ttl = response_url_ttl
        self.response_url_max_uses = response_url_max_uses

        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.usergroups: dict[str, list[str]] = {}
        # Per channel, messages in the order they were posted (Python dicts keep insertion order).
        self.messages: dict[str, dict[str, Message]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, View] = {}
        self.home_views: dict[str, View] = {}
        self.trigger_ids: dict[str, TriggerId] = {}
        self.response_urls: dict[str, ResponseUrl] = {}

        self._last_ts_micros = 0
        self._view_numbers = itertools.count(1)
        self._trigger_numbers = itertools.count(1)

    def mint_ts(self) -> str:
        """Return a new message ts, "<seconds>.<6 digits>", later than every earlier one."""
        now_micros = int(time.time() * 1_000_000)
        self._last_ts_micros = max(now_micros, self._last_ts_micros + 1)
        seconds, micros = divmod(self._last_ts_micros, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def mint_view_id(self) -> str:
        return f"V{next(self._view_numbers):010d}"

    def mint_trigger_id(self, user: str | None = None) -> str:
        value = f"{int(time.time())}.{next(self._trigger_numbers)}.{secrets.token_hex(16)}"
        self.trigger_ids[value] = TriggerId(value=value, issued_at=time.monotonic(), user=user)
        return value

    def mint_response_url_id(self, *, channel: str, user: str, original_ts: str | None) -> str:
        url_id = secrets.token_urlsafe(16)
        self.response_urls[url_id] = ResponseUrl(
            id=url_id, channel=channel, user=user, issued_at=time.monotonic(), original_ts=original_ts
        )
        return url_id

    @staticmethod
    def mint_hash() -> str:
        return f"{int(time.time())}.{secrets.token_hex(4)}"

    def resolve_channel(self, channel_id: Any) -> Channel:
        """Find a channel by ID. A user ID names the bot's direct message with that user."""
        if not isinstance(channel_id, str) or not channel_id:
            raise SlackError("channel_not_found")
        if channel_id in self.channels:
            return self.channels[channel_id]
        if channel_id in self.users:
            return self.open_direct_message(channel_id)
        raise SlackError("channel_not_found")

    def open_direct_message(self, user_id: str) -> Channel:
        dm_id = "D" + user_id[1:]
        if dm_id not in self.channels:
            self.channels[dm_id] = Channel(id=dm_id, name=dm_id, is_private=True, is_im=True, members={user_id})
        return self.channels[dm_id]

    def resolve_postable_channel(self, channel_id: Any) -> Channel:
        """Find a channel the bot may post in, raising Slack's error when it may not."""
        channel = self.resolve_channel(channel_id)
        # chat:write.public lets a bot post in a public channel it has not joined.
        if not channel.bot_is_member and channel.is_private:
            raise SlackError("not_in_channel")
        return channel

    def store_message(self, message: Message) -> Message:
        self.messages.setdefault(message.channel, {})[message.ts] = message
        return message

    def find_message(self, channel_id: str, ts: Any) -> Message | None:
        if not isinstance(ts, str):
            return None
        message = self.messages.get(channel_id, {}).get(ts)
        if message is None or message.deleted:
            return None
        return message

    def find_ephemeral(self, message_ts: str) -> Ephemeral | None:
        for ephemeral in self.ephemerals:
            if ephemeral.message_ts == message_ts and not ephemeral.deleted:
                return ephemeral
        return None
