"""The reply to a person whose form did not open says why, so they know whether pressing again helps."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from handlers.form_opening import form_failure_text, slack_error_code


def api_error(code: str) -> SlackApiError:
    response = AsyncSlackResponse(client=None, http_verb="POST", api_url="https://slack.invalid/api/views.open",
                                  req_args={}, data={"ok": False, "error": code}, headers={}, status_code=200)
    return SlackApiError(f"The request to the Slack API failed. {code}", response)


@pytest.mark.parametrize("code", ["expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id"])
def test_trigger_errors_say_in_time(code: str) -> None:
    assert form_failure_text("value form", api_error(code)) == (
        "The value form could not be opened in time; press the button again.")


def test_rate_limit_says_wait() -> None:
    text = form_failure_text("snooze form", api_error("ratelimited"))
    assert "in a minute" in text
    assert "in time" not in text


@pytest.mark.parametrize("code", ["internal_error", "view_too_large", "invalid_arguments", "fatal_error"])
def test_other_slack_errors_are_named(code: str) -> None:
    text = form_failure_text("form", api_error(code))
    assert f"(`{code}`)" in text
    assert "in time" not in text
    assert slack_error_code(api_error(code)) == code


def test_unreachable_slack_is_named() -> None:
    error = aiohttp.ClientConnectionError("refused")
    text = form_failure_text("form", error)
    assert text.startswith("Slack could not be reached to open the form (ClientConnectionError)")
    assert slack_error_code(error) is None


def test_slow_slack_is_named() -> None:
    text = form_failure_text("form", asyncio.TimeoutError())
    assert text.startswith("Slack did not answer within 5 s, so the form did not open")
    assert slack_error_code(asyncio.TimeoutError()) is None


@pytest.mark.parametrize("code", ["not_authed", "invalid_auth", "token_revoked"])
def test_token_errors_point_to_the_token(code: str) -> None:
    text = form_failure_text("form", api_error(code))
    assert f"(`{code}`)" in text
    assert "check its Slack bot token" in text
    assert "press the button again" not in text
