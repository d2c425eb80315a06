"""Reading secretbot.toml into a Policy, and process settings from the environment."""

from __future__ import annotations

import asyncio
import datetime
import socket
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.config import MAX_GENERATED_LENGTH, MAX_TIMEOUT_SECONDS, load_policy
from bot.errors import ConfigError
from bot.policy import BUILTIN_SECRETS, FlySettings, Priority, Source, ValueFormat
from bot.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_SLACK_API_URL,
    Settings,
    load_settings,
    normalize_database_url,
)
from bot.storage.db import create_engine

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432


def write_config(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "secretbot.toml"
    path.write_text(content, encoding="utf-8")
    return path


def config_error(tmp_path: Path, content: str) -> str:
    path = write_config(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    return str(info.value)


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=2):
            return True
    except OSError:
        return False


# --- built-in policy -------------------------------------------------------------------


def test_absent_file_gives_builtin_policy(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "missing.toml")
    assert set(policy.secrets) == set(BUILTIN_SECRETS)
    assert len(policy.secrets) == 10
    assert policy.source_path is None
    assert policy.fly.apps == ()
    assert policy.slack.channel is None
    assert policy.slack.approvers == ()


@pytest.mark.parametrize(
    ("name", "priority"),
    [
        ("JWT_SECRET", Priority.HIGH),
        ("ENCRYPTION_KEY", Priority.HIGH),
        ("SUPABASE_SERVICE_ROLE_KEY", Priority.HIGH),
        ("OPENAI_API_KEY", Priority.MEDIUM),
        ("B2_APPLICATION_KEY", Priority.MEDIUM),
        ("WAHA_API_KEY", Priority.MEDIUM),
        ("HOTEL_MANAGEMENT_API_KEY", Priority.MEDIUM),
        ("WAHA_TOKEN", Priority.LOW),
        ("WAHA_WEBHOOK_TOKEN", Priority.LOW),
        ("B2_APPLICATION_KEY_ID", Priority.LOW),
    ],
)
def test_builtin_priority(tmp_path: Path, name: str, priority: Priority) -> None:
    assert load_policy(tmp_path / "missing.toml").secrets[name].priority is priority


@pytest.mark.parametrize("name", list(BUILTIN_SECRETS))
def test_builtin_source(tmp_path: Path, name: str) -> None:
    generated = {"JWT_SECRET", "ENCRYPTION_KEY", "WAHA_WEBHOOK_TOKEN"}
    expected = Source.GENERATED if name in generated else Source.PROVIDER
    assert load_policy(tmp_path / "missing.toml").secrets[name].source is expected


@pytest.mark.parametrize("name", [name for name, entry in BUILTIN_SECRETS.items() if entry.source is Source.PROVIDER])
def test_builtin_provider_secret_names_its_system(tmp_path: Path, name: str) -> None:
    secret = load_policy(tmp_path / "missing.toml").secrets[name]
    assert secret.external
    assert secret.instructions


def test_builtin_policy_not_shared_between_loads(tmp_path: Path) -> None:
    first = load_policy(tmp_path / "missing.toml")
    first.secrets.pop("JWT_SECRET")
    assert "JWT_SECRET" in load_policy(tmp_path / "missing.toml").secrets


def test_empty_file_gives_builtin_secrets(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    policy = load_policy(path)
    assert policy.secrets == BUILTIN_SECRETS
    assert policy.fly == FlySettings()
    assert policy.source_path == str(path)


def test_example_file_loads() -> None:
    example = Path(__file__).resolve().parent.parent / "secretbot.example.toml"
    policy = load_policy(example)
    assert policy.fly.apps
    assert policy.slack.channel


# --- a complete valid file ---------------------------------------------------------------


FULL_CONFIG = """
[slack]
channel = "C0123OPS"
approvers = ["U0AAA", "W0BBB"]

[fly]
apps = ["hotel-bot", "worker-2"]
command_timeout = 30
deploy_timeout = 600.5
verify_timeout = 120
verify_interval = 2

[fly.health_urls]
hotel-bot = "https://hotel-bot.fly.dev/health"
worker-2 = "http://worker-2.internal:8080/"

[secrets.STRIPE_KEY]
priority = "medium"
source = "provider"
external = "Stripe"
instructions = "Roll the key in the Stripe dashboard."

[secrets.SESSION_SECRET]
priority = "high"
source = "generated"
format = "alphanumeric"
length = 40
"""


def test_full_file_slack_settings(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, FULL_CONFIG))
    assert policy.slack.channel == "C0123OPS"
    assert policy.slack.approvers == ("U0AAA", "W0BBB")


def test_full_file_fly_settings(tmp_path: Path) -> None:
    fly = load_policy(write_config(tmp_path, FULL_CONFIG)).fly
    assert fly.apps == ("hotel-bot", "worker-2")
    assert fly.default_app == "hotel-bot"
    assert fly.command_timeout == 30.0
    assert fly.deploy_timeout == 600.5
    assert fly.verify_timeout == 120.0
    assert fly.verify_interval == 2.0
    assert fly.health_urls == {
        "hotel-bot": "https://hotel-bot.fly.dev/health",
        "worker-2": "http://worker-2.internal:8080/",
    }


def test_full_file_new_secrets(tmp_path: Path) -> None:
    secrets = load_policy(write_config(tmp_path, FULL_CONFIG)).secrets
    stripe = secrets["STRIPE_KEY"]
    session = secrets["SESSION_SECRET"]
    assert stripe.priority is Priority.MEDIUM
    assert stripe.source is Source.PROVIDER
    assert stripe.external == "Stripe"
    assert stripe.instructions == "Roll the key in the Stripe dashboard."
    assert session.source is Source.GENERATED
    assert session.value_format is ValueFormat.ALPHANUMERIC
    assert session.length == 40
    assert len(secrets) == 12


def test_unset_timeouts_keep_defaults(tmp_path: Path) -> None:
    fly = load_policy(write_config(tmp_path, '[fly]\napps = ["web"]\ndeploy_timeout = 60\n')).fly
    defaults = FlySettings()
    assert fly.deploy_timeout == 60.0
    assert fly.command_timeout == defaults.command_timeout
    assert fly.verify_timeout == defaults.verify_timeout
    assert fly.verify_interval == defaults.verify_interval


def test_max_timeout_accepted(tmp_path: Path) -> None:
    fly = load_policy(write_config(tmp_path, f"[fly]\ndeploy_timeout = {MAX_TIMEOUT_SECONDS}\n")).fly
    assert fly.deploy_timeout == float(MAX_TIMEOUT_SECONDS)


# --- overriding built-in secrets -----------------------------------------------------------


def test_override_priority_keeps_format_and_length(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, '[secrets.JWT_SECRET]\npriority = "low"\n'))
    jwt = policy.secrets["JWT_SECRET"]
    assert jwt.priority is Priority.LOW
    assert jwt.source is Source.GENERATED
    assert jwt.value_format is ValueFormat.BASE64URL
    assert jwt.length == 64


def test_override_length_keeps_hex_format(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, "[secrets.ENCRYPTION_KEY]\nlength = 48\n"))
    key = policy.secrets["ENCRYPTION_KEY"]
    assert key.length == 48
    assert key.value_format is ValueFormat.HEX
    assert key.priority is Priority.HIGH


def test_override_instructions_keeps_external(tmp_path: Path) -> None:
    content = '[secrets.OPENAI_API_KEY]\ninstructions = "Ask Dana for a new key."\n'
    openai = load_policy(write_config(tmp_path, content)).secrets["OPENAI_API_KEY"]
    assert openai.instructions == "Ask Dana for a new key."
    assert openai.external == "OpenAI"
    assert openai.priority is Priority.MEDIUM
    assert openai.source is Source.PROVIDER


def test_override_one_secret_keeps_others(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, '[secrets.JWT_SECRET]\npriority = "low"\n'))
    for name, builtin in BUILTIN_SECRETS.items():
        if name != "JWT_SECRET":
            assert policy.secrets[name] == builtin


def test_provider_secret_switched_to_generated(tmp_path: Path) -> None:
    content = '[secrets.WAHA_TOKEN]\nsource = "generated"\nformat = "hex"\nlength = 24\n'
    token = load_policy(write_config(tmp_path, content)).secrets["WAHA_TOKEN"]
    assert token.source is Source.GENERATED
    assert token.value_format is ValueFormat.HEX
    assert token.length == 24
    assert token.priority is Priority.LOW


def test_generated_secret_switched_to_provider(tmp_path: Path) -> None:
    content = '[secrets.JWT_SECRET]\nsource = "provider"\nexternal = "Auth0"\n'
    jwt = load_policy(write_config(tmp_path, content)).secrets["JWT_SECRET"]
    assert jwt.source is Source.PROVIDER
    assert jwt.external == "Auth0"
    assert jwt.priority is Priority.HIGH


def test_new_generated_secret_defaults(tmp_path: Path) -> None:
    content = '[secrets.API_PEPPER]\npriority = "low"\nsource = "generated"\n'
    pepper = load_policy(write_config(tmp_path, content)).secrets["API_PEPPER"]
    assert pepper.value_format is ValueFormat.BASE64URL
    assert pepper.length == 48
    assert pepper.external is None
    assert pepper.instructions is None


@pytest.mark.parametrize(("value_format", "length"), [("hex", 16), ("base64", 16), ("base64url", 16), ("alphanumeric", 22)])
def test_min_length_accepted(tmp_path: Path, value_format: str, length: int) -> None:
    content = f'[secrets.X_KEY]\npriority = "low"\nsource = "generated"\nformat = "{value_format}"\nlength = {length}\n'
    assert load_policy(write_config(tmp_path, content)).secrets["X_KEY"].length == length


def test_max_length_accepted(tmp_path: Path) -> None:
    content = f'[secrets.X_KEY]\npriority = "low"\nsource = "generated"\nlength = {MAX_GENERATED_LENGTH}\n'
    assert load_policy(write_config(tmp_path, content)).secrets["X_KEY"].length == MAX_GENERATED_LENGTH


# --- invalid files: every message names the file, the dotted key and the reason ------------


INVALID_CASES = [
    # Unknown keys at every level.
    ("[slak]\nchannel = 'C0123'\n", "slak", "unknown key"),
    ("[slack]\nchanel = 'C0123'\n", "slack.chanel", "unknown key"),
    ("[fly]\napp = ['web']\n", "fly.app", "unknown key"),
    ("[secrets.JWT_SECRET]\nlenght = 64\n", "secrets.JWT_SECRET.lenght", "unknown key"),
    # Tables of the wrong type.
    ("slack = 'C0123'\n", "slack", "expected a table"),
    ("fly = ['web']\n", "fly", "expected a table"),
    ("secrets = 3\n", "secrets", "expected a table"),
    ("[fly]\napps = ['web']\nhealth_urls = 'https://web.fly.dev'\n", "fly.health_urls", "expected a table"),
    ("[secrets]\nJWT_SECRET = 'high'\n", "secrets.JWT_SECRET", "expected a table"),
    # Slack channel.
    ("[slack]\nchannel = 123\n", "slack.channel", "non-empty string"),
    ("[slack]\nchannel = ''\n", "slack.channel", "non-empty string"),
    ("[slack]\nchannel = '#ops'\n", "slack.channel", "not a channel ID"),
    ("[slack]\nchannel = 'ops'\n", "slack.channel", "not a channel ID"),
    ("[slack]\nchannel = 'c0123abc'\n", "slack.channel", "not a channel ID"),
    ("[slack]\nchannel = 'U0123ABC'\n", "slack.channel", "not a channel ID"),
    # Slack approvers.
    ("[slack]\napprovers = 'U0AAA'\n", "slack.approvers", "expected a list"),
    ("[slack]\napprovers = ['U0AAA', 7]\n", "slack.approvers[1]", "not a valid Slack user ID"),
    ("[slack]\napprovers = ['@alice']\n", "slack.approvers[0]", "not a valid Slack user ID"),
    ("[slack]\napprovers = ['C0AAA']\n", "slack.approvers[0]", "not a valid Slack user ID"),
    ("[slack]\napprovers = ['U0AAA', 'U0BBB', 'U0AAA']\n", "slack.approvers[2]", "listed twice"),
    # Fly apps.
    ("[fly]\napps = 'web'\n", "fly.apps", "expected a list"),
    ("[fly]\napps = ['Web_App']\n", "fly.apps[0]", "not a valid Fly app name"),
    ("[fly]\napps = ['-web']\n", "fly.apps[0]", "not a valid Fly app name"),
    ("[fly]\napps = ['']\n", "fly.apps[0]", "not a valid Fly app name"),
    (f"[fly]\napps = ['{'a' * 64}']\n", "fly.apps[0]", "not a valid Fly app name"),
    ("[fly]\napps = ['web', 'web']\n", "fly.apps[1]", "listed twice"),
    # Timeouts.
    ("[fly]\ncommand_timeout = 0\n", "fly.command_timeout", "out of range"),
    ("[fly]\ndeploy_timeout = -5\n", "fly.deploy_timeout", "out of range"),
    (f"[fly]\nverify_timeout = {MAX_TIMEOUT_SECONDS + 1}\n", "fly.verify_timeout", "out of range"),
    ("[fly]\nverify_interval = 5000000\n", "fly.verify_interval", "out of range"),
    ("[fly]\nverify_interval = inf\n", "fly.verify_interval", "out of range"),
    ("[fly]\nverify_interval = nan\n", "fly.verify_interval", "out of range"),
    ("[fly]\ncommand_timeout = '60'\n", "fly.command_timeout", "expected a number of seconds"),
    ("[fly]\ncommand_timeout = true\n", "fly.command_timeout", "expected a number of seconds"),
    # Health URLs.
    ("[fly]\napps = ['web']\n[fly.health_urls]\napi = 'https://api.fly.dev/'\n", "fly.health_urls.api", "not in fly.apps"),
    ("[fly.health_urls]\nweb = 'https://web.fly.dev/'\n", "fly.health_urls.web", "not in fly.apps"),
    ("[fly]\napps = ['web']\n[fly.health_urls]\nweb = 'ftp://web.fly.dev/'\n", "fly.health_urls.web", "not an http or https URL"),
    ("[fly]\napps = ['web']\n[fly.health_urls]\nweb = 'web.fly.dev/health'\n", "fly.health_urls.web", "not an http or https URL"),
    ("[fly]\napps = ['web']\n[fly.health_urls]\nweb = 'https://'\n", "fly.health_urls.web", "not an http or https URL"),
    ("[fly]\napps = ['web']\n[fly.health_urls]\nweb = 80\n", "fly.health_urls.web", "non-empty string"),
    # Secret names and entries.
    ("[secrets.1PASSWORD]\npriority = 'low'\nsource = 'provider'\n", "secrets.1PASSWORD", "not a valid secret name"),
    ("[secrets.MY-KEY]\npriority = 'low'\nsource = 'provider'\n", "secrets.MY-KEY", "not a valid secret name"),
    ("[secrets.NEW_KEY]\nsource = 'provider'\n", "secrets.NEW_KEY.priority", "missing"),
    ("[secrets.NEW_KEY]\npriority = 'low'\n", "secrets.NEW_KEY.source", "missing"),
    ("[secrets.JWT_SECRET]\npriority = 'urgent'\n", "secrets.JWT_SECRET.priority", "invalid value"),
    ("[secrets.JWT_SECRET]\npriority = 1\n", "secrets.JWT_SECRET.priority", "invalid value"),
    ("[secrets.JWT_SECRET]\nsource = 'vault'\n", "secrets.JWT_SECRET.source", "invalid value"),
    ("[secrets.JWT_SECRET]\nformat = 'base32'\n", "secrets.JWT_SECRET.format", "invalid value"),
    ("[secrets.JWT_SECRET]\nexternal = ''\n", "secrets.JWT_SECRET.external", "non-empty string"),
    ("[secrets.JWT_SECRET]\ninstructions = ['do it']\n", "secrets.JWT_SECRET.instructions", "non-empty string"),
    # format and length belong to generated secrets only.
    ("[secrets.OPENAI_API_KEY]\nformat = 'hex'\n", "secrets.OPENAI_API_KEY.format", "generated"),
    ("[secrets.OPENAI_API_KEY]\nlength = 32\n", "secrets.OPENAI_API_KEY.length", "generated"),
    ("[secrets.JWT_SECRET]\nsource = 'provider'\nlength = 32\n", "secrets.JWT_SECRET.length", "generated"),
    ("[secrets.NEW_KEY]\npriority = 'low'\nsource = 'provider'\nformat = 'hex'\n", "secrets.NEW_KEY.format", "generated"),
    # Length bounds and types.
    ("[secrets.JWT_SECRET]\nlength = 15\n", "secrets.JWT_SECRET.length", "out of range"),
    ("[secrets.JWT_SECRET]\nlength = 0\n", "secrets.JWT_SECRET.length", "out of range"),
    (f"[secrets.JWT_SECRET]\nlength = {MAX_GENERATED_LENGTH + 1}\n", "secrets.JWT_SECRET.length", "out of range"),
    ("[secrets.JWT_SECRET]\nformat = 'alphanumeric'\nlength = 21\n", "secrets.JWT_SECRET.length", "out of range"),
    ("[secrets.JWT_SECRET]\nlength = 64.0\n", "secrets.JWT_SECRET.length", "whole number"),
    ("[secrets.JWT_SECRET]\nlength = '64'\n", "secrets.JWT_SECRET.length", "whole number"),
    ("[secrets.JWT_SECRET]\nlength = true\n", "secrets.JWT_SECRET.length", "whole number"),
    ("[slack]\napproval_timeout = 0\n", "slack.approval_timeout", "out of range"),
    ("[slack]\napproval_timeout = '24h'\n", "slack.approval_timeout", "expected a number of seconds"),
    ("[slack]\ntwo_approvers_for_high = 'yes'\n", "slack.two_approvers_for_high", "true or false"),
    ("[slack]\nallow_self_approval = 1\n", "slack.allow_self_approval", "true or false"),
    # Reminders.
    ("[reminders]\nhour = 9\n", "reminders.hour", "unknown key"),
    ("[reminders]\ntime = '9am'\n", "reminders.time", "not a 24-hour time"),
    ("[reminders]\ntime = '24:00'\n", "reminders.time", "not a 24-hour time"),
    ("[reminders]\ntime = '09:60'\n", "reminders.time", "not a 24-hour time"),
    ("[reminders]\ntime = 900\n", "reminders.time", "non-empty string"),
    ("[reminders]\ntimezone = 'CEST'\n", "reminders.timezone", "not a known time zone"),
    ("[reminders]\ntimezone = 'Europe/Nowhere'\n", "reminders.timezone", "not a known time zone"),
    ("[reminders]\ntimezone = '../etc/passwd'\n", "reminders.timezone", "not a known time zone"),
    ("[reminders]\nchannel = '#ops'\n", "reminders.channel", "not a channel ID"),
    ("[reminders]\nwindow_days = -1\n", "reminders.window_days", "out of range"),
    ("[reminders]\nwindow_days = 7.5\n", "reminders.window_days", "whole number"),
    ("[reminders]\nmax_snooze_days = 0\n", "reminders.max_snooze_days", "out of range"),
    ("[reminders]\nmax_snooze_days = 366\n", "reminders.max_snooze_days", "out of range"),
    ("[reminders]\nall_clear = 'yes'\n", "reminders.all_clear", "true or false"),
    ("[reminders]\nsnooze_reason_required = 1\n", "reminders.snooze_reason_required", "true or false"),
    # Inventory.
    ("[inventory]\ninterval = 60\n", "inventory.interval", "unknown key"),
    ("[inventory]\nsync_interval = -60\n", "inventory.sync_interval", "out of range"),
    ("[inventory]\nsync_interval = false\n", "inventory.sync_interval", "expected a number of seconds"),
    ("[inventory]\nsync_concurrency = 0\n", "inventory.sync_concurrency", "out of range"),
    ("[inventory]\nsync_concurrency = 65\n", "inventory.sync_concurrency", "out of range"),
    ("[inventory]\ndefault_priority = 'urgent'\n", "inventory.default_priority", "invalid value"),
]


def test_approval_timeout_read(tmp_path: Path) -> None:
    assert load_policy(write_config(tmp_path, "")).slack.approval_timeout == 86400.0
    assert load_policy(write_config(tmp_path, "[slack]\napproval_timeout = 3600\n")).slack.approval_timeout == 3600.0


def test_approval_rules_read(tmp_path: Path) -> None:
    slack = load_policy(write_config(tmp_path, "[slack]\ntwo_approvers_for_high = true\nallow_self_approval = true\n")).slack
    assert slack.two_approvers_for_high is True
    assert slack.allow_self_approval is True


def test_approval_rules_default_off(tmp_path: Path) -> None:
    slack = load_policy(write_config(tmp_path, "")).slack
    assert slack.two_approvers_for_high is False
    assert slack.allow_self_approval is False


def test_reminder_settings_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[reminders]\nchannel = 'C0REMIND'\ntime = '08:30'\ntimezone = 'Europe/Berlin'\n"
                                  "window_days = 3\nall_clear = true\nmax_snooze_days = 30\n"
                                  "snooze_reason_required = true\n")
    reminders = load_policy(path).reminders
    assert reminders.channel == "C0REMIND"
    assert reminders.time == datetime.time(8, 30)
    assert reminders.timezone == "Europe/Berlin"
    assert reminders.window_days == 3
    assert reminders.all_clear is True
    assert reminders.max_snooze_days == 30
    assert reminders.snooze_reason_required is True


def test_reminder_time_with_seconds(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[reminders]\ntime = '23:59:30'\n")
    assert load_policy(path).reminders.time == datetime.time(23, 59, 30)


def test_reminder_time_as_toml_local_time(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[reminders]\ntime = 07:45:00\n")
    assert load_policy(path).reminders.time == datetime.time(7, 45)


def test_reminder_channel_defaults_to_runbook_channel(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, "[slack]\nchannel = 'C0123OPS'\n"))
    assert policy.reminders.channel is None
    assert policy.reminder_channel == "C0123OPS"


def test_inventory_settings_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[inventory]\nsync_interval = 600\nsync_concurrency = 4\n"
                                  "default_priority = 'high'\n")
    inventory = load_policy(path).inventory
    assert inventory.sync_interval == 600.0
    assert inventory.sync_concurrency == 4
    assert inventory.default_priority is Priority.HIGH


def test_sync_interval_zero_turns_periodic_sync_off(tmp_path: Path) -> None:
    assert load_policy(write_config(tmp_path, "[inventory]\nsync_interval = 0\n")).inventory.sync_interval == 0.0


def test_unlisted_secret_gets_default_priority(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, "[inventory]\ndefault_priority = 'low'\n"))
    assert policy.priority_of("DATABASE_URL") is Priority.LOW
    assert policy.priority_of("JWT_SECRET") is Priority.HIGH


@pytest.mark.parametrize(("content", "key", "reason"), INVALID_CASES)
def test_invalid_file_error_names_key(tmp_path: Path, content: str, key: str, reason: str) -> None:
    message = config_error(tmp_path, content)
    assert str(tmp_path / "secretbot.toml") in message
    assert f"'{key}'" in message
    assert reason in message


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('[slack]\nchannel = "C0123OPS\\n"\n', "slack.channel"),
        ('[slack]\napprovers = ["U0AAA\\n"]\n', "slack.approvers[0]"),
        ('[fly]\napps = ["web\\n"]\n', "fly.apps[0]"),
        ('[secrets."NEW_KEY\\n"]\npriority = "low"\nsource = "provider"\n', "secrets.NEW_KEY\n"),
    ],
)
def test_trailing_newline_in_id_rejected(tmp_path: Path, content: str, key: str) -> None:
    # A pattern ending in `$` used with re.match also accepts one trailing newline, which
    # would reach flyctl's -a argument or Slack's channel parameter unchanged.
    message = config_error(tmp_path, content)
    assert f"'{key}'" in message


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[slack\nchannel = 'C0123'\n")
    assert str(tmp_path / "secretbot.toml") in message
    assert "invalid TOML" in message


def test_duplicate_toml_key_rejected(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[fly]\ncommand_timeout = 30\ncommand_timeout = 60\n")
    assert "invalid TOML" in message


def test_directory_path_names_file(tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_invalid_utf8_names_file(tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.write_bytes(b"[slack]\nchannel = '\xff\xfe'\n")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_unknown_key_lists_known_keys(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[fly]\ntimeout = 30\n")
    assert "command_timeout" in message
    assert "deploy_timeout" in message


def test_bad_channel_message_suggests_id(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[slack]\nchannel = '#ops'\n")
    assert "C0123ABCD" in message


# --- settings from the environment -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db.internal:5432/app", "postgresql+asyncpg://u:p@db.internal:5432/app"),
        ("postgresql://u:p@db.internal/app", "postgresql+asyncpg://u:p@db.internal/app"),
        ("postgresql+asyncpg://u@h/app", "postgresql+asyncpg://u@h/app"),
        ("postgres://u@h/app?sslmode=disable", "postgresql+asyncpg://u@h/app?ssl=disable"),
        ("postgres://u@h/app?connect_timeout=5&sslmode=require", "postgresql+asyncpg://u@h/app?connect_timeout=5&ssl=require"),
        ("sqlite:///data/secretbot.db", "sqlite+aiosqlite:///data/secretbot.db"),
        ("sqlite:////abs/secretbot.db", "sqlite+aiosqlite:////abs/secretbot.db"),
        ("sqlite+aiosqlite:///secretbot.db", "sqlite+aiosqlite:///secretbot.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ],
)
def test_database_url_normalized(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@h/app",
        "postgresql+psycopg2://u@h/app",
        "sqlite+pysqlite:///x.db",
        "POSTGRES://u@h/app",
        "db.internal:5432/app",
        "",
    ],
)
def test_unsupported_database_url_rejected(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_database_url(url)
    assert "DATABASE_URL" in str(info.value)


def test_unsupported_database_url_hides_password() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_database_url("mysql://admin:hunter2-password@db/app")
    assert "hunter2-password" not in str(info.value)


def test_settings_defaults() -> None:
    settings = load_settings({})
    assert settings.slack_bot_token is None
    assert settings.slack_signing_secret is None
    assert settings.slack_api_url == DEFAULT_SLACK_API_URL
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.flyctl == "flyctl"
    assert settings.fly_api_token is None
    assert settings.config_path == Path("secretbot.toml")
    assert settings.backup_key is None
    assert settings.port == 8080
    assert settings.log_level == "INFO"


def test_settings_read_from_environment() -> None:
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
            "SLACK_SIGNING_SECRET": "signing",
            "SLACK_API_URL": "http://127.0.0.1:9999/api/",
            "DATABASE_URL": "postgres://u@h/app",
            "FLYCTL": "/usr/local/bin/flyctl",
            "FLY_API_TOKEN": "fly-token",
            "SECRETBOT_CONFIG": "/etc/secretbot.toml",
            "SECRETBOT_BACKUP_KEY": "a2V5",
            "PORT": "3000",
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.slack_bot_token == "xoxb-1-2-abc"
    assert settings.slack_signing_secret == "signing"
    assert settings.slack_api_url == "http://127.0.0.1:9999/api/"
    assert settings.database_url == "postgresql+asyncpg://u@h/app"
    assert settings.flyctl == "/usr/local/bin/flyctl"
    assert settings.fly_api_token == "fly-token"
    assert settings.config_path == Path("/etc/secretbot.toml")
    assert settings.backup_key == "a2V5"
    assert settings.port == 3000
    assert settings.log_level == "DEBUG"


def test_empty_variables_count_as_unset() -> None:
    settings = load_settings({"SLACK_BOT_TOKEN": "", "DATABASE_URL": "", "FLY_API_TOKEN": "", "SECRETBOT_CONFIG": ""})
    assert settings.slack_bot_token is None
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.fly_api_token is None
    assert settings.config_path == Path("secretbot.toml")


@pytest.mark.parametrize("port", ["http", "80.5", ""])
def test_non_numeric_port_rejected(port: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"PORT": port})
    assert "PORT" in str(info.value)


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_out_of_range_port_rejected(port: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"PORT": port})
    assert "PORT" in str(info.value)


def test_bad_database_url_in_environment_rejected() -> None:
    with pytest.raises(ConfigError):
        load_settings({"DATABASE_URL": "mysql://h/app"})


def test_require_slack_returns_pair() -> None:
    settings = Settings(slack_bot_token="xoxb-1-abc", slack_signing_secret="sig")
    assert settings.require_slack() == ("xoxb-1-abc", "sig")


def test_require_slack_names_both_missing() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(slack_bot_token=None).require_slack()
    assert "SLACK_BOT_TOKEN" in str(info.value)
    assert "SLACK_SIGNING_SECRET" in str(info.value)


def test_require_slack_names_missing_token() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(slack_bot_token=None, slack_signing_secret="sig").require_slack()
    assert "SLACK_BOT_TOKEN" in str(info.value)
    assert "SLACK_SIGNING_SECRET" not in str(info.value)


def test_require_slack_names_missing_signing_secret() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(slack_bot_token="xoxb-1-abc").require_slack()
    assert "SLACK_SIGNING_SECRET" in str(info.value)
    assert "SLACK_BOT_TOKEN" not in str(info.value)


def test_require_slack_rejects_user_token() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(slack_bot_token="xoxp-user-token-value", slack_signing_secret="sig").require_slack()
    assert "xoxb-" in str(info.value)
    assert "xoxp-user-token-value" not in str(info.value)


def test_settings_repr_hides_credentials() -> None:
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": "xoxb-bot-token-value",
            "SLACK_SIGNING_SECRET": "signing-secret-value",
            "FLY_API_TOKEN": "fly-token-value",
            "SECRETBOT_BACKUP_KEY": "backup-key-value",
        }
    )
    rendered = repr(settings)
    assert "xoxb-bot-token-value" not in rendered
    assert "signing-secret-value" not in rendered
    assert "fly-token-value" not in rendered
    assert "backup-key-value" not in rendered


@pytest.mark.skipif(not postgres_reachable(), reason=f"no PostgreSQL server on {POSTGRES_HOST}:{POSTGRES_PORT}")
async def test_fly_postgres_url_with_sslmode_connects() -> None:
    # `fly postgres attach` sets DATABASE_URL with ?sslmode=disable, a libpq parameter
    # that asyncpg's connect() does not take as a keyword argument.
    url = normalize_database_url(f"postgres://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test?sslmode=disable")
    engine = create_engine(url)
    try:
        async with asyncio.timeout(20), engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


def test_lowercase_names_index_carries_over_to_copies_with_added_secrets(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "absent.toml", required=False)
    assert "jwt_secret" in policy.lowercase_names
    copy = policy.with_added({"hotel-voice-bot": {}})
    # Built once per loaded file, not once per command.
    assert copy.lowercase_names is policy.lowercase_names
    assert copy.added == {"hotel-voice-bot": {}}


def test_lowercase_names_built_once_for_fresh_copies(tmp_path: Path) -> None:
    # The listener never reads the index of the loaded policy itself, only of its copies.
    policy = load_policy(tmp_path / "absent.toml", required=False)
    first = policy.with_added({})
    second = policy.with_added({"hotel-voice-bot": {}})
    assert first.lowercase_names is second.lowercase_names
    assert "jwt_secret" in second.lowercase_names
