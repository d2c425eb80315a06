"""What to tell a person whose button should have opened a form, when views.open failed.

A form can only be opened with the click's trigger_id, which Slack accepts once and
within 3 seconds. So the fix for most failures is the same (press the button again, for
a fresh trigger_id), but the reason differs, and a person who is told "in time" while
Slack keeps answering `internal_error` presses the button forever.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.slack_app import form_client

# views.open's answers for a trigger_id that is too old, already used, or not one Slack issued.
TRIGGER_ERRORS = frozenset({"expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id"})
# Answers that mean Slack does not accept the bot token, which pressing again cannot change.
TOKEN_ERRORS = frozenset({"not_authed", "invalid_auth", "token_revoked", "token_expired", "account_inactive"})
# Seconds to wait for views.open. The trigger_id is dead 3 s after the click, so a longer
# wait only holds the person (and a shutdown) before the same failure.
OPEN_TIMEOUT_SECONDS = 5


async def open_form(client: AsyncWebClient, *, trigger_id: str, view: dict[str, Any]) -> None:
    """Open `view` for the click of `trigger_id`, without the rate-limit retries of other calls."""
    await form_client(client, timeout=OPEN_TIMEOUT_SECONDS).views_open(trigger_id=trigger_id, view=view)


def slack_error_code(error: BaseException) -> str | None:
    """The `error` field of a Web API error response, or None for a failure without a response."""
    if isinstance(error, SlackApiError) and error.response is not None:
        code = error.response.get("error")
        return code if isinstance(code, str) else None
    return None


def form_failure_text(form: str, error: BaseException) -> str:
    """The reply to a person whose `form` (e.g. "value form") could not be opened because of `error`."""
    code = slack_error_code(error)
    if code in TRIGGER_ERRORS:
        return f"The {form} could not be opened in time; press the button again."
    if code in TOKEN_ERRORS:
        return (f"Slack rejected secretbot's token (`{code}`), so the {form} did not open; ask whoever runs "
                "secretbot to check its Slack bot token.")
    if code == "ratelimited":
        return f"Slack is limiting secretbot's calls, so the {form} did not open; press the button again in a minute."
    if code is not None:
        return (f"Slack refused to open the {form} (`{code}`); press the button again, and if it keeps "
                "failing, ask whoever runs secretbot to check its log.")
    if isinstance(error, TimeoutError):
        return (f"Slack did not answer within {OPEN_TIMEOUT_SECONDS} s, so the {form} did not open; press the "
                "button again, and if it keeps failing, ask whoever runs secretbot to check its log.")
    return (f"Slack could not be reached to open the {form} ({type(error).__name__}); "
            "press the button again, and if it keeps failing, ask whoever runs secretbot to check its log.")
