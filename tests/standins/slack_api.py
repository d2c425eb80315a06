"""A local stand-in for the Slack Web API: a real aiohttp server on 127.0.0.1.

    async with SlackStandin(channels=["C0123OPS"], users=["U0AAA", "U0BBB"]) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.base_url)
        await client.chat_postMessage(channel="C0123OPS", text="hello")
        assert slack.messages("C0123OPS")[0].text == "hello"

It serves the methods the bot uses (see slack_methods.METHODS) under /api/<method>,
accepts JSON bodies, form bodies and query strings alike, keeps state, checks Block
Kit limits, records every call in `calls`, and returns Slack's error codes with HTTP
200 and `ok: false`. Faults (errors, 429 rate limits, a revoked token) can be queued
per method. It also serves the response_urls it mints, under /response/<id>.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .slack_methods import METHODS
from .slack_responses import apply_response_action, use_response_url
from .slack_state import Channel, Ephemeral, Message, SlackError, User, View, Workspace

logger = logging.getLogger(__name__)

DEFAULT_SCOPES = ("channels:join", "chat:write", "chat:write.public", "commands", "usergroups:read", "users:read")
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class RecordedCall:
    """One request to the stand-in: a Web API method call or a post to a response_url."""

    method: str
    args: dict[str, Any]
    headers: Mapping[str, str]
    status: int
    response: dict[str, Any]
    at: float
    path: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return self.response.get("error")


@dataclass
class _Fault:
    remaining: int
    error: str
    status: int = 200
    retry_after: int | None = None


@dataclass
class _ServerHandle:
    runner: web.AppRunner
    port: int


class SlackStandin:
    """A Slack workspace with one bot, served over HTTP on 127.0.0.1."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        team_id: str = "T0TEAM",
        team_domain: str = "example",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0SECRETBOT",
        channels: Iterable[str] = ("C0123OPS",),
        users: Iterable[str] = (),
        scopes: Iterable[str] = DEFAULT_SCOPES,
        trigger_ttl: float = 3.0,
        response_url_ttl: float = 30 * 60,
        response_url_max_uses: int = 5,
        port: int = 0,
    ) -> None:
        """Create the workspace; every user in `users` is a member of every channel in `channels`.

        The TTLs are in seconds. Slack's values are 3 s for a trigger_id and 30 minutes
        (at most 5 uses) for a response_url, and tests of expiry pass shorter ones.
        `port` 0 picks a free port.
        """
        self.bot_token = bot_token
        self.port = port
        self.scopes = list(scopes)
        self.workspace = Workspace(
            team_id=team_id,
            team_domain=team_domain,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            app_id=app_id,
            trigger_ttl=trigger_ttl,
            response_url_ttl=response_url_ttl,
            response_url_max_uses=response_url_max_uses,
        )
        self.calls: list[RecordedCall] = []
        # Problems with the bot's responses to view submissions, which Slack would show as an error.
        self.view_response_problems: list[str] = []

        self._faults: dict[str, list[_Fault]] = {}
        # Seconds to hold the next calls of a method before answering, as a slow Slack would.
        self._slowdowns: dict[str, list[float]] = {}
        self._revoked_error: str | None = None
        self._server: _ServerHandle | None = None
        # (app-level token, URL factory) once enable_socket_mode was called.
        self._socket_mode: tuple[str, Callable[[], str]] | None = None

        for user_id in users:
            self.add_user(user_id)
        for channel_id in channels:
            self.add_channel(channel_id)

    # Lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on `port` (a free one when 0) and start serving requests."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_method)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        port = runner.addresses[0][1]
        self._server = _ServerHandle(runner=runner, port=port)
        logger.info("Slack stand-in started url=%s", self.base_url)

    async def stop(self) -> None:
        if self._server is None:
            return
        await self._server.runner.cleanup()
        logger.info("Slack stand-in stopped url=%s calls=%d", self.base_url, len(self.calls))
        self._server = None

    async def __aenter__(self) -> SlackStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def root_url(self) -> str:
        if self._server is None:
            raise RuntimeError("The Slack stand-in is not running: await start() first.")
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def base_url(self) -> str:
        """The Web API base URL to pass to AsyncWebClient(base_url=...)."""
        return f"{self.root_url}/api/"

    # Workspace set-up

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
        is_admin: bool = False,
        email: str | None = None,
    ) -> User:
        """Add a user who also joins every public channel that exists so far."""
        user = User(
            id=user_id,
            name=name or user_id.lower(),
            real_name=real_name or f"User {user_id}",
            team_id=self.workspace.team_id,
            is_bot=is_bot,
            deleted=deleted,
            is_admin=is_admin,
            email=email,
        )
        self.workspace.users[user_id] = user
        for channel in self.workspace.channels.values():
            if not channel.is_private:
                channel.members.add(user_id)
        return user

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        is_private: bool = False,
        bot_is_member: bool = True,
        members: Iterable[str] | None = None,
    ) -> Channel:
        """Add a channel whose members default to every known user."""
        member_ids = set(self.workspace.users) if members is None else set(members)
        if bot_is_member:
            member_ids.add(self.workspace.bot_user_id)
        channel = Channel(
            id=channel_id,
            name=name or channel_id.lower(),
            is_private=is_private,
            bot_is_member=bot_is_member,
            members=member_ids,
        )
        self.workspace.channels[channel_id] = channel
        return channel

    def add_usergroup(self, usergroup_id: str, users: Iterable[str]) -> None:
        self.workspace.usergroups[usergroup_id] = list(users)

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> Message:
        """Store a message written by someone other than the bot, such as a person in the channel."""
        message = Message(
            channel=self.workspace.resolve_channel(channel).id,
            ts=self.workspace.mint_ts(),
            text=text,
            blocks=list(blocks or []),
            user=user,
            thread_ts=thread_ts,
        )
        return self.workspace.store_message(message)

    # Fault injection

    def fail_next(self, method: str, *, error: str, times: int = 1, status: int = 200) -> None:
        """Fail the next `times` calls of `method` with `error` instead of running it."""
        self._faults.setdefault(method, []).append(_Fault(remaining=times, error=error, status=status))

    def rate_limit_next(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """Reject the next `times` calls of `method` with HTTP 429 and `Retry-After: retry_after`."""
        # slack_sdk's retry handler parses Retry-After with int(), as Slack sends whole seconds.
        fault = _Fault(remaining=times, error="ratelimited", status=429, retry_after=int(retry_after))
        self._faults.setdefault(method, []).append(fault)

    def slow_next(self, method: str, *, seconds: float, times: int = 1) -> None:
        """Hold each of the next `times` calls of `method` for `seconds` before answering it."""
        self._slowdowns.setdefault(method, []).extend([seconds] * times)

    def set_token_revoked(self, revoked: bool = True, *, error: str = "invalid_auth") -> None:
        """Fail every call with `error` while `revoked` is true, as after an uninstall."""
        self._revoked_error = error if revoked else None

    # Socket Mode

    def enable_socket_mode(self, *, app_token: str, issue_url: Callable[[], str]) -> None:
        """Serve apps.connections.open for `app_token`, with a WebSocket URL from `issue_url`.

        apps.connections.open takes the app-level token (xapp-), not the bot token, so it
        is handled before the bot token check that every other method gets.
        """
        self._socket_mode = (app_token, issue_url)

    def _open_connection(self, headers: Mapping[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Return the response to apps.connections.open: a new URL for the app-level token, or an error code.

        NOTE: not_allowed_token_type for a token of another kind is the code the Web API
        uses for a wrong token type in general; this method's own error list was not checked.
        """
        if self._socket_mode is None:
            return 200, {"ok": False, "error": "unknown_method", "req_method": "apps.connections.open"}, {}
        app_token, issue_url = self._socket_mode
        authorization = headers.get("Authorization", "")
        token = authorization[len("Bearer ") :].strip() if authorization.startswith("Bearer ") else ""
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if not token.startswith("xapp-"):
            return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
        if token != app_token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        fault = self._take_fault("apps.connections.open")
        if fault is not None:
            fault_headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return fault.status, {"ok": False, "error": fault.error}, fault_headers
        return 200, {"ok": True, "url": issue_url()}, {}

    # IDs that Slack puts into payloads

    def new_trigger_id(self, user: str | None = None) -> str:
        """Mint a trigger_id that views.open accepts once, within `trigger_ttl` seconds."""
        return self.workspace.mint_trigger_id(user)

    def new_response_url(self, *, channel: str, user: str, original_ts: str | None = None) -> str:
        """Mint a response_url for an interaction by `user`; `original_ts` names the message acted on."""
        url_id = self.workspace.mint_response_url_id(channel=channel, user=user, original_ts=original_ts)
        return f"{self.root_url}/response/{url_id}"

    # Reading state

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.method == method]

    def messages(self, channel: str) -> list[Message]:
        """Messages shown in the channel itself: top-level ones and replies also sent to the channel."""
        stored = self.workspace.messages.get(channel, {}).values()
        return [
            message
            for message in stored
            if not message.deleted and (not message.is_reply or message.reply_broadcast)
        ]

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        """Replies in the thread under `thread_ts`, oldest first, without the parent."""
        stored = self.workspace.messages.get(channel, {}).values()
        return [
            message
            for message in stored
            if not message.deleted and message.is_reply and message.thread_ts == thread_ts
        ]

    def message(self, channel: str, ts: str) -> Message | None:
        return self.workspace.find_message(channel, ts)

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        return [
            ephemeral
            for ephemeral in self.workspace.ephemerals
            if not ephemeral.deleted and (user is None or ephemeral.user == user)
        ]

    def views(self, user: str | None = None) -> list[View]:
        """Modals that are still open, in the order they were opened."""
        return [view for view in self.workspace.views.values() if view.is_open and (user is None or view.user == user)]

    def view(self, view_id: str) -> View | None:
        return self.workspace.views.get(view_id) or next(
            (view for view in self.workspace.home_views.values() if view.id == view_id), None
        )

    def home_view(self, user: str) -> View | None:
        return self.workspace.home_views.get(user)

    def channel_name(self, channel_id: str) -> str:
        channel = self.workspace.channels.get(channel_id)
        return channel.name if channel is not None else channel_id

    def user_name(self, user_id: str) -> str:
        user = self.workspace.users.get(user_id)
        return user.name if user is not None else user_id

    async def wait_for(
        self,
        predicate: Callable[..., Any],
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        description: str | None = None,
    ) -> Any:
        """Poll `predicate` until it returns something truthy, and return that value.

        The predicate takes the stand-in as its argument, or no argument, and may be
        async. Raises TimeoutError after `timeout` seconds, naming the condition and the
        last calls the stand-in received.
        """
        takes_stand_in = bool(inspect.signature(predicate).parameters)
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self) if takes_stand_in else predicate()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(interval)

        condition = description or getattr(predicate, "__qualname__", repr(predicate))
        recent = ", ".join(f"{call.method}:{call.error or 'ok'}" for call in self.calls[-10:]) or "none"
        raise TimeoutError(f"Condition {condition} still false after {timeout} s. Last Slack calls: {recent}.")

    # Answers to view submissions

    def apply_view_response(self, view_id: str, *, status: int, body: str) -> None:
        """Change the modal as Slack does after the bot acknowledges its view_submission.

        An empty 200 closes the modal. See slack_responses.apply_response_action for the
        JSON forms. A response that Slack would reject is added to
        `view_response_problems`, because Slack shows it to the user only as an error.
        """
        view = self.workspace.views.get(view_id)
        if view is None or status != 200:
            return
        if not body.strip():
            view.is_open = False
            return

        try:
            apply_response_action(self.workspace, view, json.loads(body))
        except json.JSONDecodeError:
            problem = f"view {view_id}: the acknowledgement is not JSON"
        except SlackError as error:
            problem = f"view {view_id}: the acknowledgement was rejected with {error.error} {error.messages}"
        else:
            return
        logger.warning("Slack stand-in rejected a view acknowledgement: %s", problem)
        self.view_response_problems.append(problem)

    # HTTP handlers

    async def _handle_method(self, request: web.Request) -> web.Response:
        arrived_at = time.time()
        method = request.match_info["method"]
        extra_headers: dict[str, str] = {}
        slowdowns = self._slowdowns.get(method)
        if slowdowns:
            await asyncio.sleep(slowdowns.pop(0))
        try:
            args = await _read_arguments(request)
        except SlackError as error:
            args = {}
            status, response = 200, error.to_response()
        else:
            status, response, extra_headers = self._dispatch(method, args, request.headers)

        self.calls.append(
            RecordedCall(
                method=method,
                args=args,
                headers=CIMultiDict(request.headers),
                status=status,
                response=response,
                at=arrived_at,
                path=request.path,
            )
        )
        logger.debug("Slack call method=%s status=%d error=%s", method, status, response.get("error"))
        headers = {"x-oauth-scopes": ",".join(self.scopes), **extra_headers}
        return web.json_response(response, status=status, headers=headers)

    def _dispatch(
        self, method: str, args: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "apps.connections.open":
            return self._open_connection(headers)
        authorization = headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[len("Bearer ") :].strip():
            return 200, {"ok": False, "error": "not_authed"}, {}
        if authorization[len("Bearer ") :].strip() != self.bot_token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if self._revoked_error is not None:
            return 200, {"ok": False, "error": self._revoked_error}, {}

        entry = METHODS.get(method)
        if entry is None:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}

        fault = self._take_fault(method)
        if fault is not None:
            fault_headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return fault.status, {"ok": False, "error": fault.error}, fault_headers

        handler, scope = entry
        if scope is not None and scope not in self.scopes:
            response = {"ok": False, "error": "missing_scope", "needed": scope, "provided": ",".join(self.scopes)}
            return 200, response, {}

        try:
            result = handler(self.workspace, args)
        except SlackError as error:
            return 200, error.to_response(), {}
        return 200, {"ok": True, **result}, {}

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        arrived_at = time.time()
        url_id = request.match_info["url_id"]
        body: Any = {}
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError:
            status, response = 400, {"ok": False, "error": "invalid_payload"}
        else:
            status, response = use_response_url(self.workspace, url_id, body)

        self.calls.append(
            RecordedCall(
                method="response_url",
                args=body if isinstance(body, dict) else {"body": body},
                headers=CIMultiDict(request.headers),
                status=status,
                response=response,
                at=arrived_at,
                path=request.path,
            )
        )
        logger.debug("Slack response_url post status=%d error=%s", status, response.get("error"))
        return web.json_response(response, status=status)


async def _read_arguments(request: web.Request) -> dict[str, Any]:
    """Merge the query string with a JSON or form body, as Slack accepts either."""
    args: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return args

    if request.content_type == "application/json":
        try:
            parsed = json.loads(await request.text())
        except json.JSONDecodeError:
            raise SlackError("invalid_json") from None
        if not isinstance(parsed, dict):
            raise SlackError("json_not_object")
        args.update(parsed)
    elif request.content_type in FORM_CONTENT_TYPES:
        form = await request.post()
        args.update({key: value for key, value in form.items() if isinstance(value, str)})
    return args
