"""Parsing `/secret status`, `history`, `rotated` and `sync`, and reading the Snooze form."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from bot.errors import CommandError
from bot.policy import (
    BUILTIN_SECRETS,
    FlySettings,
    Policy,
    ReminderSettings,
    SlackSettings,
)
from handlers.command_text import (
    HISTORY_USAGE,
    ROTATED_USAGE,
    STATUS_USAGE,
    HistoryCommand,
    RecordDateCommand,
    RotateCommand,
    StatusCommand,
    SyncCommand,
    help_text,
    latest_rotation_date,
    parse_command,
    rotate_target,
)
from handlers.status_views import (
    SNOOZE_DAYS_BLOCK,
    SNOOZE_REASON_BLOCK,
    read_snooze_form,
)

APPS = ("hotel-voice-bot", "hotel-worker")
POLICY = Policy(slack=SlackSettings(), fly=FlySettings(apps=APPS), secrets=dict(BUILTIN_SECRETS))
TODAY = date(2025, 3, 10)


def parse(text: str) -> object:
    return parse_command(text, POLICY, today=TODAY)


def error_for(text: str) -> str:
    with pytest.raises(CommandError) as info:
        parse_command(text, POLICY, today=TODAY)
    return str(info.value)


# --- /secret rotated ---------------------------------------------------------------------


def test_rotated_parses_name_date_and_default_app() -> None:
    assert parse("rotated JWT_SECRET 2025-01-31") == RecordDateCommand(
        name="JWT_SECRET", app="hotel-voice-bot", rotated_on=date(2025, 1, 31))


@pytest.mark.parametrize("text", ["rotated JWT_SECRET 2025-01-31 --app hotel-worker",
                                  "rotated --app=hotel-worker JWT_SECRET 2025-01-31"])
def test_rotated_app_flag_anywhere(text: str) -> None:
    command = parse(text)
    assert isinstance(command, RecordDateCommand)
    assert command.app == "hotel-worker"


def test_rotated_today_accepted() -> None:
    command = parse("rotated JWT_SECRET 2025-03-10")
    assert isinstance(command, RecordDateCommand)
    assert command.rotated_on == TODAY


def test_rotated_accepts_name_missing_from_policy() -> None:
    # Secrets on Fly that secretbot.toml does not list are in the inventory too.
    command = parse("rotated SENTRY_DSN 2025-01-31")
    assert isinstance(command, RecordDateCommand)
    assert command.name == "SENTRY_DSN"


def test_rotated_future_date_rejected() -> None:
    message = error_for("rotated JWT_SECRET 2025-03-11")
    assert "in the future" in message
    assert ROTATED_USAGE in message


@pytest.mark.parametrize("when", ["2025-02-30", "2025-13-01", "2025-00-10"])
def test_rotated_impossible_date_rejected(when: str) -> None:
    message = error_for(f"rotated JWT_SECRET {when}")
    assert "not a valid calendar date" in message
    assert ROTATED_USAGE in message


@pytest.mark.parametrize("when", ["yesterday", "31/01/2025", "2025-1-31", "20250131", "2025-01-31T10:00"])
def test_rotated_other_date_forms_rejected(when: str) -> None:
    message = error_for(f"rotated JWT_SECRET {when}")
    assert "write it as YYYY-MM-DD" in message
    assert ROTATED_USAGE in message


def test_rotated_missing_date_rejected() -> None:
    message = error_for("rotated JWT_SECRET")
    assert "Name the secret and the date" in message
    assert ROTATED_USAGE in message


def test_rotated_extra_token_rejected() -> None:
    message = error_for("rotated JWT_SECRET 2025-01-31 because")
    assert "Unexpected `because`" in message


def test_rotated_date_before_name_explained() -> None:
    assert "Put the secret name before the date" in error_for("rotated 2025-01-31 JWT_SECRET")


def test_rotated_invalid_name_rejected() -> None:
    message = error_for("rotated JWT-SECRET 2025-01-31")
    assert "not a valid secret name" in message


def test_rotated_unknown_app_rejected() -> None:
    message = error_for("rotated JWT_SECRET 2025-01-31 --app hotel-wrker")
    assert "Did you mean `hotel-worker`?" in message
    assert ROTATED_USAGE in message


def test_rotated_unknown_option_rejected() -> None:
    assert "Unknown option `--force`" in error_for("rotated JWT_SECRET 2025-01-31 --force")


def test_rotated_value_not_echoed() -> None:
    message = error_for("rotated JWT_SECRET=hunter2-value 2025-01-31")
    assert "hunter2-value" not in message


def test_latest_date_follows_zone_ahead_of_utc() -> None:
    policy = Policy(slack=SlackSettings(), fly=FlySettings(apps=APPS), secrets=dict(BUILTIN_SECRETS),
                    reminders=ReminderSettings(timezone="Pacific/Auckland"))
    # 20:00 UTC on 10 March is already 11 March in Auckland.
    now = datetime.fromisoformat("2025-03-10T20:00:00+00:00")
    assert latest_rotation_date(policy, now) == date(2025, 3, 11)


def test_latest_date_never_before_utc_today() -> None:
    policy = Policy(slack=SlackSettings(), fly=FlySettings(apps=APPS), secrets=dict(BUILTIN_SECRETS),
                    reminders=ReminderSettings(timezone="America/Los_Angeles"))
    now = datetime.fromisoformat("2025-03-10T02:00:00+00:00")
    assert latest_rotation_date(policy, now) == date(2025, 3, 10)


# --- /secret status and /secret sync -----------------------------------------------------


def test_status_without_app_means_every_app() -> None:
    assert parse("status") == StatusCommand(app=None)


def test_status_with_app() -> None:
    assert parse("status --app hotel-worker") == StatusCommand(app="hotel-worker")


def test_status_unknown_app_rejected() -> None:
    message = error_for("status --app nope")
    assert "Unknown app `nope`" in message
    assert STATUS_USAGE in message


def test_status_extra_token_rejected() -> None:
    assert "Unexpected `JWT_SECRET`" in error_for("status JWT_SECRET")


def test_sync_parses_like_status() -> None:
    assert parse("sync") == SyncCommand(app=None)
    assert parse("SYNC --app=hotel-worker") == SyncCommand(app="hotel-worker")


# --- /secret history ----------------------------------------------------------------------


def test_history_parses_name_and_default_app() -> None:
    assert parse("history JWT_SECRET") == HistoryCommand(name="JWT_SECRET", app="hotel-voice-bot")


def test_history_with_app() -> None:
    assert parse("history JWT_SECRET --app hotel-worker") == HistoryCommand(name="JWT_SECRET", app="hotel-worker")


def test_history_without_name_rejected() -> None:
    message = error_for("history")
    assert "Name the secret" in message
    assert HISTORY_USAGE in message


def test_history_two_names_rejected() -> None:
    assert "name one secret" in error_for("history JWT_SECRET ENCRYPTION_KEY")


def test_history_key_as_name_masked() -> None:
    key = "xoxb-1234567890-abcdefghijklmnop"
    assert key not in error_for(f"history {key}")


# --- help and verb suggestions ------------------------------------------------------------


def test_help_lists_new_commands() -> None:
    text = help_text()
    for usage in (STATUS_USAGE, HISTORY_USAGE, ROTATED_USAGE, "/secret sync"):
        assert usage in text


def test_misspelt_status_suggested() -> None:
    assert "Did you mean `status`?" in error_for("stauts")


def test_rotate_still_parsed_as_runbook() -> None:
    assert isinstance(parse("rotate JWT_SECRET"), RotateCommand)


# --- buttons: rotate target ---------------------------------------------------------------


def test_rotate_target_adds_paired_secret() -> None:
    command = rotate_target("hotel-voice-bot", "B2_APPLICATION_KEY", POLICY)
    assert command.names == ("B2_APPLICATION_KEY", "B2_APPLICATION_KEY_ID")


def test_rotate_target_unconfigured_app_rejected() -> None:
    with pytest.raises(CommandError, match="Unknown app"):
        rotate_target("other-app", "JWT_SECRET", POLICY)


def test_rotate_target_secret_missing_from_policy_rejected() -> None:
    with pytest.raises(CommandError, match="not in secretbot.toml"):
        rotate_target("hotel-voice-bot", "SENTRY_DSN", POLICY)


# --- the Snooze form ----------------------------------------------------------------------


def form(days: str | None, reason: str | None) -> dict[str, object]:
    return {
        SNOOZE_DAYS_BLOCK: {"days": {"type": "number_input", "value": days}},
        SNOOZE_REASON_BLOCK: {"reason": {"type": "plain_text_input", "value": reason}},
    }


def test_snooze_form_accepts_days_and_reason() -> None:
    assert read_snooze_form(form("7", " waiting on vendor "), max_days=14, reason_required=False) == (
        7, "waiting on vendor")


def test_snooze_form_reason_optional_by_default() -> None:
    assert read_snooze_form(form("3", None), max_days=14, reason_required=False) == (3, None)


@pytest.mark.parametrize("days", ["15", "0", "-1", "2.5", "", None, "seven", "١٢"])
def test_snooze_form_days_outside_range_rejected(days: str | None) -> None:
    errors = read_snooze_form(form(days, "why"), max_days=14, reason_required=False)
    assert isinstance(errors, dict)
    assert "14" in errors[SNOOZE_DAYS_BLOCK]


def test_snooze_form_cap_accepted() -> None:
    assert read_snooze_form(form("14", None), max_days=14, reason_required=False) == (14, None)


def test_snooze_form_required_reason_missing_rejected() -> None:
    errors = read_snooze_form(form("3", "   "), max_days=14, reason_required=True)
    assert isinstance(errors, dict)
    assert "required" in errors[SNOOZE_REASON_BLOCK]


def test_snooze_form_key_in_reason_rejected() -> None:
    errors = read_snooze_form(form("3", "new key is sk-proj-" + "a" * 40), max_days=14, reason_required=False)
    assert isinstance(errors, dict)
    assert "key or token" in errors[SNOOZE_REASON_BLOCK]


def test_snooze_reason_control_characters_dropped() -> None:
    reason = "vendor \u202edelay\u202c\x1b[31m red\nnext line"
    days, cleaned = read_snooze_form(form("3", reason), max_days=14, reason_required=False)  # type: ignore[misc]
    assert days == 3
    assert cleaned == "vendor delay[31m red\nnext line"


def test_snooze_reason_only_controls_counts_as_missing() -> None:
    errors = read_snooze_form(form("3", "\u200b\u202e"), max_days=14, reason_required=True)
    assert isinstance(errors, dict)
    assert "required" in errors[SNOOZE_REASON_BLOCK]


@pytest.mark.parametrize("when", ["0001-01-01", "1999-12-31"])
def test_rotated_implausible_year_rejected(when: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(f"rotated JWT_SECRET {when}", POLICY)
    assert "not a plausible rotation date" in str(info.value)
