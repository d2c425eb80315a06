"""Parsing the text of `/secret` as Slack delivers it."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import CommandError
from bot.policy import BUILTIN_SECRETS, FlySettings, Policy, Priority, SecretPolicy, SlackSettings, Source
from bot.redact import MASK, Redactor
from handlers.command_text import (
    MAX_REASON_LENGTH,
    MAX_SECRETS_PER_RUN,
    ROTATE_USAGE,
    USAGES,
    CancelCommand,
    HelpCommand,
    RotateCommand,
    help_text,
    parse_command,
)

APPS = ("hotel-voice-bot", "hotel-worker")
# Slack advises message text under 4,000 characters, and chat.update and
# chat.postEphemeral can reject longer text with msg_too_long.
SLACK_TEXT_LIMIT = 4000

POLICY = Policy(slack=SlackSettings(), fly=FlySettings(apps=APPS), secrets=dict(BUILTIN_SECRETS))


def rotate(text: str, policy: Policy = POLICY) -> RotateCommand:
    command = parse_command(text, policy)
    assert isinstance(command, RotateCommand)
    return command


def error_for(text: str, policy: Policy = POLICY) -> str:
    with pytest.raises(CommandError) as info:
        parse_command(text, policy)
    return str(info.value)


# --- help and unknown commands -------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "help", "HELP", "Help me", "--help", "-h"])
def test_help_forms(text: str) -> None:
    assert parse_command(text, POLICY) == HelpCommand()


def test_unknown_verb_suggests_rotate() -> None:
    message = error_for("rotat JWT_SECRET")
    assert "Did you mean `rotate`?" in message
    assert ROTATE_USAGE in message


def test_verb_case_insensitive() -> None:
    assert rotate("ROTATE JWT_SECRET").names == ("JWT_SECRET",)


# --- names, app and reason -----------------------------------------------------------------


def test_single_secret_uses_first_app() -> None:
    command = rotate("rotate JWT_SECRET")
    assert command.names == ("JWT_SECRET",)
    assert command.app == "hotel-voice-bot"
    assert command.reason is None


@pytest.mark.parametrize(
    "text",
    [
        "rotate JWT_SECRET --app hotel-worker",
        "rotate JWT_SECRET --app=hotel-worker",
        "rotate --app hotel-worker JWT_SECRET",
        "rotate --app=hotel-worker JWT_SECRET",
    ],
)
def test_app_flag_forms(text: str) -> None:
    assert rotate(text).app == "hotel-worker"


def test_app_flag_after_reason() -> None:
    command = rotate("rotate JWT_SECRET leaked in logs --app hotel-worker")
    assert command.app == "hotel-worker"
    assert command.reason == "leaked in logs"


def test_several_names_deduplicated_in_order() -> None:
    command = rotate("rotate B2_APPLICATION_KEY B2_APPLICATION_KEY_ID B2_APPLICATION_KEY")
    assert command.names == ("B2_APPLICATION_KEY", "B2_APPLICATION_KEY_ID")


def test_reason_kept() -> None:
    command = rotate("rotate JWT_SECRET ENCRYPTION_KEY leaked in a CI log, see incident doc")
    assert command.names == ("JWT_SECRET", "ENCRYPTION_KEY")
    assert command.reason == "leaked in a CI log, see incident doc"


def test_secret_name_inside_reason_stays_in_reason() -> None:
    command = rotate("rotate JWT_SECRET because ENCRYPTION_KEY was shared too")
    assert command.names == ("JWT_SECRET",)
    assert command.reason == "because ENCRYPTION_KEY was shared too"


def test_reason_at_limit_accepted() -> None:
    reason = "x" * MAX_REASON_LENGTH
    assert rotate(f"rotate JWT_SECRET {reason}").reason == reason


def test_reason_over_limit_rejected() -> None:
    message = error_for(f"rotate JWT_SECRET {'x' * (MAX_REASON_LENGTH + 1)}")
    assert str(MAX_REASON_LENGTH) in message
    assert ROTATE_USAGE in message


def test_too_many_secrets_rejected() -> None:
    extra = {
        f"EXTRA_{index}": SecretPolicy(name=f"EXTRA_{index}", priority=Priority.LOW, source=Source.GENERATED)
        for index in range(MAX_SECRETS_PER_RUN + 1)
    }
    policy = Policy(slack=SlackSettings(), fly=FlySettings(apps=APPS), secrets=extra)
    message = error_for("rotate " + " ".join(extra), policy)
    assert f"At most {MAX_SECRETS_PER_RUN}" in message
    assert ROTATE_USAGE in message


def test_max_secrets_accepted() -> None:
    extra = {
        f"EXTRA_{index}": SecretPolicy(name=f"EXTRA_{index}", priority=Priority.LOW, source=Source.GENERATED)
        for index in range(MAX_SECRETS_PER_RUN)
    }
    policy = Policy(slack=SlackSettings(), fly=FlySettings(apps=APPS), secrets=extra)
    assert len(rotate("rotate " + " ".join(extra), policy).names) == MAX_SECRETS_PER_RUN


# --- mistakes -------------------------------------------------------------------------------


def test_unknown_app_suggests_close_one() -> None:
    message = error_for("rotate JWT_SECRET --app hotel-workr")
    assert "Unknown app `hotel-workr`" in message
    assert "Did you mean `hotel-worker`?" in message
    assert "`hotel-voice-bot`, `hotel-worker`" in message


def test_invalid_app_name_rejected() -> None:
    message = error_for("rotate JWT_SECRET --app Hotel_Worker")
    assert "not a valid Fly app name" in message


def test_app_flag_twice_rejected() -> None:
    message = error_for("rotate JWT_SECRET --app hotel-worker --app=hotel-voice-bot")
    assert "given twice" in message


def test_app_flag_without_value_rejected() -> None:
    message = error_for("rotate JWT_SECRET --app")
    assert "needs an app name" in message


def test_empty_app_value_rejected() -> None:
    message = error_for("rotate JWT_SECRET --app=")
    assert "not a valid Fly app name" in message


def test_no_configured_app_names_setting() -> None:
    policy = Policy(slack=SlackSettings(), fly=FlySettings(), secrets=dict(BUILTIN_SECRETS))
    assert "fly.apps" in error_for("rotate JWT_SECRET", policy)


def test_unknown_secret_suggests_close_one() -> None:
    message = error_for("rotate JWT_SECRT")
    assert "Unknown secret `JWT_SECRT`" in message
    assert "Did you mean `JWT_SECRET`?" in message


def test_lowercase_name_suggests_exact_case() -> None:
    message = error_for("rotate jwt_secret")
    assert "Did you mean `JWT_SECRET`?" in message
    assert "case-sensitive" in message


def test_lowercase_second_name_rejected() -> None:
    message = error_for("rotate JWT_SECRET encryption_key")
    assert "Did you mean `ENCRYPTION_KEY`?" in message


def test_unknown_upper_name_after_known_rejected() -> None:
    message = error_for("rotate JWT_SECRET STRIPE_KEY")
    assert "Unknown secret `STRIPE_KEY`" in message


def test_reason_without_name_rejected() -> None:
    message = error_for("rotate leaked")
    assert "Unknown secret `leaked`" in message


@pytest.mark.parametrize("flag", ["--force", "-f", "--App", "--apps=hotel-worker"])
def test_unknown_flag_rejected(flag: str) -> None:
    message = error_for(f"rotate JWT_SECRET {flag}")
    assert "Unknown option" in message
    assert "--app APP" in message


@pytest.mark.parametrize("text", ["rotate", "rotate --app hotel-worker"])
def test_missing_name_rejected(text: str) -> None:
    assert "Name at least one secret" in error_for(text)


ERROR_INPUTS = [
    "rotat JWT_SECRET",
    "rotate",
    "rotate JWT_SECRT",
    "rotate jwt_secret",
    "rotate my-key",
    "rotate JWT_SECRET --force",
    "rotate JWT_SECRET --app",
    "rotate JWT_SECRET --app nope",
    "rotate JWT_SECRET --app Bad_Name",
    "rotate JWT_SECRET --app a --app b",
    f"rotate JWT_SECRET {'x' * (MAX_REASON_LENGTH + 1)}",
]


@pytest.mark.parametrize("text", ERROR_INPUTS)
def test_error_contains_usage(text: str) -> None:
    assert ROTATE_USAGE in error_for(text)


# --- "--" ends the names ---------------------------------------------------------------------


def test_separator_starts_reason_in_capitals() -> None:
    command = rotate("rotate JWT_SECRET -- URGENT leak")
    assert command.names == ("JWT_SECRET",)
    assert command.reason == "URGENT leak"


def test_secret_name_after_separator_is_reason() -> None:
    command = rotate("rotate JWT_SECRET -- ENCRYPTION_KEY was in the same log")
    assert command.names == ("JWT_SECRET",)
    assert command.reason == "ENCRYPTION_KEY was in the same log"


def test_separator_without_reason() -> None:
    assert rotate("rotate JWT_SECRET --").reason is None


def test_second_separator_stays_in_reason() -> None:
    assert rotate("rotate JWT_SECRET -- leaked -- twice").reason == "leaked -- twice"


def test_app_flag_after_separator_applies() -> None:
    command = rotate("rotate JWT_SECRET -- URGENT leak --app hotel-worker")
    assert command.app == "hotel-worker"
    assert command.reason == "URGENT leak"


def test_separator_before_names_rejected() -> None:
    assert "Name at least one secret" in error_for("rotate -- JWT_SECRET")


def test_smart_dash_separator() -> None:
    assert rotate("rotate JWT_SECRET \u2014 URGENT leak").reason == "URGENT leak"


def test_capitalized_reason_error_suggests_separator() -> None:
    message = error_for("rotate JWT_SECRET URGENT leak")
    assert "Unknown secret `URGENT`" in message
    assert "put `--` before it" in message


def test_help_mentions_separator() -> None:
    assert "`--`" in help_text()
    assert "[--]" in ROTATE_USAGE


# --- values typed into the command ---------------------------------------------------------

PASTED_VALUE = "hunter2-Pasted-Value-0042"


@pytest.mark.parametrize(
    "text",
    [
        f"rotate JWT_SECRET={PASTED_VALUE}",
        f"rotate JWT_SECRET JWT_SECRET={PASTED_VALUE}",
        f"rotate JWT_SECRET leaked JWT_SECRET={PASTED_VALUE}",
        f"rotate JWT_SECRET -- was {PASTED_VALUE}=x",
        f"rotate JWT_SECRET ={PASTED_VALUE}",
        f"JWT_SECRET={PASTED_VALUE}",
        f"rotate JWT_SECRET --app hotel-worker={PASTED_VALUE}",
        f"rotate JWT_SECRET --app=hotel-worker={PASTED_VALUE}",
    ],
)
def test_value_in_command_not_echoed(text: str) -> None:
    message = error_for(text)
    assert "Values are never typed in Slack" in message
    assert "the bot makes or asks for the new value" in message
    assert PASTED_VALUE not in message
    assert PASTED_VALUE[:8] not in message


def test_value_error_names_known_secret() -> None:
    assert "`/secret rotate JWT_SECRET`" in error_for(f"rotate JWT_SECRET={PASTED_VALUE}")


def test_value_error_hides_unknown_name() -> None:
    message = error_for(f"rotate {PASTED_VALUE}=x")
    assert "`/secret rotate NAME`" in message
    assert PASTED_VALUE not in message


def test_unknown_option_quoted_without_value() -> None:
    message = error_for(f"rotate JWT_SECRET --force={PASTED_VALUE}")
    assert "Unknown option `--force`" in message
    assert PASTED_VALUE not in message


# Key-shaped strings of the kinds bot.redact masks: a Slack token, a long base64 run, a
# long hex run and a Fly macaroon.
KEYS = [
    "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
    "q8Zr3T1vXk9PmW2bN7cY4hL6sJ0dF5gA",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "fm2_lJPECAAAAAAAAQ1GxBD6y0JcTGpT3E5sYk1VvQ",
]


@pytest.mark.parametrize("key", KEYS)
def test_key_as_secret_name_masked(key: str) -> None:
    message = error_for(f"rotate {key}")
    assert key not in message
    assert key[:12] not in message
    assert MASK in message


@pytest.mark.parametrize("key", KEYS)
def test_key_as_app_masked(key: str) -> None:
    message = error_for(f"rotate JWT_SECRET --app {key}")
    assert key not in message
    assert key[:12] not in message


@pytest.mark.parametrize("key", KEYS)
def test_key_as_verb_masked(key: str) -> None:
    message = error_for(key)
    assert key not in message
    assert key[:12] not in message


@pytest.mark.parametrize("key", KEYS)
def test_key_in_reason_rejected(key: str) -> None:
    message = error_for(f"rotate JWT_SECRET leaked {key} in CI")
    assert "The reason looks like it contains a key or token" in message
    assert key not in message
    assert key[:12] not in message


@pytest.mark.parametrize("key", KEYS)
def test_key_after_separator_rejected(key: str) -> None:
    assert "looks like it contains a key" in error_for(f"rotate JWT_SECRET -- {key}")


def test_pem_in_reason_rejected() -> None:
    # normalize() folds the five dashes of the PEM markers, so the base64 lines are what is caught.
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
    message = error_for(f"rotate JWT_SECRET -- -----BEGIN PRIVATE KEY----- {body} -----END PRIVATE KEY-----")
    assert "looks like it contains a key" in message
    assert body[:12] not in message


@pytest.mark.parametrize(
    "reason",
    [
        "leaked in a CI log, see https://ci.example.com/jobs/2024-05-01/build-logs-for-the-release",
        "HOTEL_VOICE_BOT_WEBHOOK_CONFIGURATION_DOCS say so",
        "quarterly rotation per the security-review-checklist-for-hotel-apps",
    ],
)
def test_plain_reason_accepted(reason: str) -> None:
    assert rotate(f"rotate JWT_SECRET -- {reason}").reason == reason


# --- text as Slack delivers it --------------------------------------------------------------


def test_html_entities_undone_in_reason() -> None:
    command = rotate("rotate JWT_SECRET R&amp;D saw &lt;token&gt; in logs")
    assert command.reason == "R&D saw <token> in logs"


def test_fullwidth_name_folded() -> None:
    assert rotate("rotate ＪＷＴ＿ＳＥＣＲＥＴ").names == ("JWT_SECRET",)


def test_no_break_spaces_separate_tokens() -> None:
    command = rotate("rotate\u00a0JWT_SECRET\u202f--app\u00a0hotel-worker")
    assert command.names == ("JWT_SECRET",)
    assert command.app == "hotel-worker"


def test_directional_marks_removed() -> None:
    command = rotate("rotate \u200fJWT_SECRET\u200e --app \u202bhotel-worker\u202c")
    assert command.names == ("JWT_SECRET",)
    assert command.app == "hotel-worker"


def test_zero_width_space_inside_name_removed() -> None:
    assert rotate("rotate JWT\u200b_SECRET").names == ("JWT_SECRET",)


@pytest.mark.parametrize("dash", ["\u2014", "\u2013", "\u2212"])
def test_smart_dash_app_flag(dash: str) -> None:
    # Text substitution ("smart dashes") on macOS and iOS can turn a typed `--` into a dash.
    assert rotate(f"rotate JWT_SECRET {dash}app hotel-worker").app == "hotel-worker"


def test_smart_dash_app_flag_with_equals() -> None:
    assert rotate("rotate JWT_SECRET \u2014app=hotel-worker").app == "hotel-worker"


def test_double_smart_dash_app_flag() -> None:
    assert rotate("rotate JWT_SECRET \u2014\u2014app hotel-worker").app == "hotel-worker"


# --- hostile and oversized input -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "rotate &lt;!channel&gt;",
        "rotate <!channel>",
        "rotate JWT_SECRET --app &lt;!here&gt;",
        "rotate JWT_SECRET --app=<!everyone>",
        "&lt;!channel&gt; JWT_SECRET",
        "rotate JWT_SECRET --&lt;@U0AAA&gt;",
        "rotate &lt;https://evil.example|click&gt;",
    ],
)
def test_echoed_input_cannot_mention(text: str) -> None:
    message = error_for(text)
    assert "<" not in message
    assert ">" not in message


def test_backtick_cannot_close_code_span() -> None:
    message = error_for("rotate JWT_SECRET --app `x`*bold*")
    assert "`x`" not in message


def test_long_reason_rejected_quickly() -> None:
    started = time.monotonic()
    message = error_for("rotate JWT_SECRET " + "word " * 100_000)
    assert "keep it under" in message
    assert time.monotonic() - started < 5


def test_many_repeated_names_collapse() -> None:
    assert rotate("rotate " + "JWT_SECRET " * 10_000).names == ("JWT_SECRET",)


@pytest.mark.parametrize(
    "text",
    [
        "rotate " + "A" * 10_000,
        "rotate " + "a" * 10_000,
        "rotate " + "<" * 10_000,
        "rotate JWT_SECRET --app " + "a" * 10_000,
        "rotate JWT_SECRET --" + "x" * 10_000,
        "x" * 10_000,
    ],
)
def test_long_token_error_fits_slack(text: str) -> None:
    assert len(error_for(text)) <= SLACK_TEXT_LIMIT


# --- property: any text gives a known command or a CommandError ------------------------------


VOCABULARY = [
    "rotate",
    "--",
    "=",
    "JWT_SECRET=",
    KEYS[0],
    KEYS[1],
    "ROTATE",
    "help",
    "--app",
    "--app=",
    "--app=hotel-worker",
    "\u2014app",
    "-x",
    "&amp;",
    "&lt;!channel&gt;",
    "<@U0AAA>",
    "`",
    "\u00a0",
    "\u200f",
    "jwt_secret",
    "hotel-wrker",
    *APPS,
    *BUILTIN_SECRETS,
]

command_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=12)), max_size=12).map(" ".join),
    st.lists(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=12)), max_size=12).map(
        lambda tokens: "rotate " + " ".join(tokens)
    ),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_texts)
def test_any_text_parses_or_raises_command_error(text: str) -> None:
    try:
        command = parse_command(text, POLICY)
    except CommandError as error:
        message = str(error)
        # Each error ends with the usage of the verb it is about, or the whole help.
        assert any(usage in message for usage, _ in USAGES)
        assert "<" not in message
        return

    if isinstance(command, RotateCommand):
        assert command.names
        assert set(command.names) <= set(POLICY.secrets)
        assert len(set(command.names)) == len(command.names)
        assert command.app in APPS
        assert command.reason is None or 0 < len(command.reason) <= MAX_REASON_LENGTH
        assert command.reason is None or "=" not in command.reason
        assert command.reason is None or Redactor().redact(command.reason) == command.reason


@pytest.mark.parametrize(
    "text",
    [
        "rotate JWT_SECRET -- sk-proj-abcdefghijklmnopqrstuvwx",
        "compromised OPENAI_API_KEY -- key was sk-abcdefghij1234567890abcd",
        "compromised JWT_SECRET -- eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
    ],
)
def test_reason_with_provider_key_rejected(text: str) -> None:
    with pytest.raises(CommandError, match="looks like it contains a key"):
        parse_command(text, POLICY)


# --- cancel ----------------------------------------------------------------------------------

CANCEL_USAGE_LINE = "Usage: `/secret cancel RUN_ID [reason]`"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cancel ' OR 1=1 --", "`'` is not a run ID"),
        ("cancel", "Name the run to cancel"),
        ("cancel 12345", "`12345` is not a run ID"),
        ("cancel rotate JWT_SECRET", "`rotate` is not a run ID"),
        (f"cancel JWT_SECRET={PASTED_VALUE}", "The word after `cancel` is not a run ID"),
        (f"cancel 0123456789ab JWT_SECRET={PASTED_VALUE}", "leave `NAME=value` out of the reason"),
        (f"cancel 0123456789ab {'x' * (MAX_REASON_LENGTH + 1)}", "keep it under"),
    ],
)
def test_malformed_cancel_shows_cancel_usage(text: str, problem: str) -> None:
    message = error_for(text)
    assert problem in message
    assert CANCEL_USAGE_LINE in message
    assert ROTATE_USAGE not in message
    assert PASTED_VALUE[:8] not in message


def test_cancel_keeps_run_id_and_reason() -> None:
    command = parse_command("cancel 0123456789AB started by mistake", POLICY)
    assert command == CancelCommand(run_id="0123456789ab", reason="started by mistake")
