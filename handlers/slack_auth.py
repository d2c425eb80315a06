"""Slack's auth.test for `secretbot check`: whether Slack accepts the bot token, and whose it is."""

from __future__ import annotations

import logging
import math

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.preflight import SlackAuth

logger = logging.getLogger(__name__)


async def call_auth_test(*, token: str, base_url: str, timeout: float, app_token: str | None = None) -> SlackAuth:
    """Call auth.test once and return the workspace and bot user, or the error code.

    With `app_token`, also call apps.connections.open once, which checks the Socket Mode
    token without connecting: the URL it returns is never opened. A timeout is raised as
    TimeoutError for the caller to report. There are no retries: a pre-flight reports the
    first response, and its time limit covers one request.
    """
    client = AsyncWebClient(token=token, base_url=base_url, timeout=math.ceil(timeout), retry_handlers=[])
    try:
        response = await client.auth_test()
    except TimeoutError:
        # aiohttp's timeouts are also ClientErrors; the caller reports them as a timeout.
        raise
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        status = exc.response.status_code if exc.response is not None else None
        logger.info("auth.test rejected error=%s status=%s", error, status)
        return SlackAuth(error=str(error) if error else f"HTTP status {status} without a Slack error code")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # aiohttp's message names the host and the cause (refused, DNS, TLS); it never contains the token.
        reason = " ".join(str(exc).split()) or "no message"
        logger.info("auth.test request failed error=%s", type(exc).__name__)
        return SlackAuth(error=f"request failed, {type(exc).__name__}: {reason}")
    app_token_error = None
    if app_token:
        app_token_error = await _open_connection_error(app_token, base_url=base_url, timeout=timeout)
    return SlackAuth(
        team=response.get("team"),
        team_id=response.get("team_id"),
        user=response.get("user"),
        user_id=response.get("user_id"),
        app_token_error=app_token_error,
    )


async def _open_connection_error(app_token: str, *, base_url: str, timeout: float) -> str | None:
    """Return Slack's error for apps.connections.open with `app_token`, or None when Slack accepts it."""
    client = AsyncWebClient(base_url=base_url, timeout=math.ceil(timeout), retry_handlers=[])
    try:
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        logger.info("apps.connections.open rejected error=%s", error)
        return str(error or "rejected without a Slack error code")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        logger.info("apps.connections.open request failed error=%s", type(exc).__name__)
        return f"request failed, {type(exc).__name__}"
    return None
