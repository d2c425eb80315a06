"""The bolt AsyncApp and its Web API client, configured for a single workspace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError

logger = logging.getLogger(__name__)

# Slack returns 429 with Retry-After, so the client waits and retries instead of dropping a message.
RATE_LIMIT_RETRIES = 5


def create_client(*, token: str, base_url: str) -> AsyncWebClient:
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SingleWorkspaceAuthorizer:
    """Calls auth.test once and caches the result, so later requests do not wait on it."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._result: AuthorizeResult | None = None

    async def check(self) -> None:
        """Call auth.test at start-up; a rejected token stops the bot with a clear message."""
        try:
            await self._load()
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error in ("invalid_auth", "not_authed", "token_revoked", "account_inactive"):
                raise ConfigError(
                    f"Slack rejected SLACK_BOT_TOKEN ({error}); copy the bot token again from the Slack app's "
                    "OAuth & Permissions page"
                ) from exc
            logger.warning("auth.test failed at start-up (%s); will retry on the first request", error)
        except OSError as exc:
            logger.warning("Slack API unreachable at start-up (%s); will retry on the first request", exc)

    async def _load(self) -> AuthorizeResult:
        if self._result is None:
            response = await self.client.auth_test()
            self._result = AuthorizeResult(
                enterprise_id=response.get("enterprise_id"),
                team_id=response.get("team_id"),
                bot_token=self.client.token,
                bot_id=response.get("bot_id"),
                bot_user_id=response.get("user_id"),
            )
            logger.info("Slack token accepted team=%s bot_user=%s", response.get("team_id"), response.get("user_id"))
        return self._result

    def as_function(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """Return a plain function for bolt's `authorize=`.

        bolt passes arguments by the parameter names it reads from the signature, and it
        reads `self` from a bound method too, so a closure is used.
        """

        async def authorize(enterprise_id: str | None = None, team_id: str | None = None) -> AuthorizeResult:
            return await self._load()

        return authorize


def create_app(*, client: AsyncWebClient, authorizer: SingleWorkspaceAuthorizer) -> AsyncApp:
    return AsyncApp(
        client=client,
        authorize=authorizer.as_function(),
        # handlers.http checks signatures itself so that no request body is ever logged.
        request_verification_enabled=False,
        process_before_response=False,
        name="secretbot",
        logger=logging.getLogger("slack_bolt"),
    )


class SlackDirectory:
    """Reads user group members with `usergroups.users.list` (scope usergroups:read)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def group_members(self, group_id: str) -> frozenset[str]:
        response = await self.client.usergroups_users_list(usergroup=group_id)
        users = response.get("users")
        if not isinstance(users, list) or not all(isinstance(user, str) for user in users):
            raise ValueError(f"usergroups.users.list for {group_id} returned no list of user IDs")
        return frozenset(users)
