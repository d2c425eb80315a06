"""The bolt AsyncApp and its Web API client, configured for a single workspace."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError

logger = logging.getLogger(__name__)

# Slack returns 429 with Retry-After, so the client waits and retries instead of dropping a message.
RATE_LIMIT_RETRIES = 5


# Slack's error codes and method names; anything else becomes "other" in a metric label.
_LABEL_WORD = re.compile(r"[A-Za-z0-9_.]{1,64}")


class ApiErrorRecorder(AsyncRetryHandler):
    """A retry handler that passes each failed Web API response to `record(method, error)` and never retries.

    bolt builds a new AsyncWebClient for every request it handles but copies the retry
    handlers into it, so a handler is the one place that sees the responses of every
    client. slack_sdk asks the handlers in order until one retries, so this one goes first.
    A 429 is recorded as `ratelimited`, Slack's error code for it, on every attempt.
    """

    def __init__(self, record: Callable[[str, str], None]) -> None:
        super().__init__(max_retry_count=0)
        self.record = record

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or error is not None:
            return False
        code = _response_error(response)
        if code is None:
            return False
        method = request.url.split("?", 1)[0].rsplit("/", 1)[-1]
        method = method if _LABEL_WORD.fullmatch(method) else "other"
        if response.status_code == 429:
            retry_after = response.headers.get("Retry-After") or response.headers.get("retry-after") or ["?"]
            logger.warning("Slack API rate limited method=%s retry_after=%s attempt=%d",
                           method, retry_after[0], state.current_attempt + 1)
        else:
            # Callers log the failures they handle, with the run or channel concerned.
            logger.debug("Slack API call failed method=%s error=%s status=%d", method, code, response.status_code)
        self.record(method, code)
        return False


def _response_error(response: HttpResponse) -> str | None:
    """Return Slack's error code of a failed response, or None for a successful one."""
    if response.status_code == 429:
        return "ratelimited"
    body = response.body
    if isinstance(body, dict) and body.get("ok") is False:
        error = body.get("error")
        return error if isinstance(error, str) and _LABEL_WORD.fullmatch(error) else "other"
    if response.status_code >= 400:
        return f"http_{response.status_code}"
    return None


def create_client(*, token: str, base_url: str,
                  on_api_error: Callable[[str, str], None] | None = None) -> AsyncWebClient:
    """Return the Web API client; `on_api_error(method, error)` is called for each failed response."""
    recorders: list[AsyncRetryHandler] = [ApiErrorRecorder(on_api_error)] if on_api_error is not None else []
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        retry_handlers=[
            *recorders,
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def form_client(client: AsyncWebClient, *, timeout: int) -> AsyncWebClient:
    """Return a copy of `client` for views.open: failures are recorded, and retried once only if quick.

    A click's trigger_id expires 3 seconds after the click. A rate-limit retry waits for
    Retry-After (whole seconds), so past a second or two it ends with `expired_trigger_id`
    after keeping the person, and a shutdown, waiting; without it the person is told at
    once that Slack is limiting the bot. A connection error or a 5xx is retried once,
    after slack_sdk's short backoff, which can still be in time.
    """
    recorders = [handler for handler in client.retry_handlers if isinstance(handler, ApiErrorRecorder)]
    return AsyncWebClient(
        token=client.token,
        base_url=client.base_url,
        timeout=timeout,
        session=client.session,
        headers=client.headers,
        retry_handlers=[
            *recorders,
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncServerErrorRetryHandler(max_retry_count=1),
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
    """Build the bolt app; each request's client gets the token from `authorizer`.

    bolt copies the base URL, timeout and retry handlers of the client it is given into a
    new client for every request, and sets that client's token from the authorize result.
    It is given a copy without the token, because with both a token and `authorize`
    bolt (1.30) logs at every start that the token will be ignored. bolt also reads the
    SLACK_BOT_TOKEN variable, which `serve` removes from the environment before this runs
    (`bot.settings.remove_secrets_from_environment`).
    """
    template = AsyncWebClient(
        token=None,
        base_url=client.base_url,
        timeout=client.timeout,
        ssl=client.ssl,
        proxy=client.proxy,
        session=client.session,
        trust_env_in_session=client.trust_env_in_session,
        headers=dict(client.headers),
        logger=client.logger,
        retry_handlers=client.retry_handlers,
    )
    return AsyncApp(
        client=template,
        authorize=authorizer.as_function(),
        # handlers.http checks signatures itself so that no request body is ever logged.
        request_verification_enabled=False,
        # bolt sends the response when the listener returns, and every listener returns at
        # its ack() (handlers/detach.py). With False, bolt checks for the ack every 10 ms.
        process_before_response=True,
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
