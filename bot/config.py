"""Read `secretbot.toml` into a `Policy`, rejecting anything it does not understand.

Every error names the file, the dotted key and the reason, because an operator fixing a
deploy at 3 a.m. should not have to guess which line is wrong.
"""

from __future__ import annotations

import logging
import re
import datetime as dt
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import ConfigError
from bot.policy import (
    APP_NAME_PATTERN,
    BUILTIN_SECRETS,
    BackupS3Settings,
    BackupSettings,
    SECRET_NAME_PATTERN,
    FlySettings,
    InventorySettings,
    Policy,
    Priority,
    ReminderSettings,
    SecretPolicy,
    SlackSettings,
    Source,
    ValueFormat,
    builtin_policy,
)
from bot.value_checks import value_pattern_problem

logger = logging.getLogger(__name__)

SLACK_CHANNEL_PATTERN = re.compile(r"^[CGD][A-Z0-9]{2,}\Z")
SLACK_USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,}\Z")
# A user ID, or a user group ID (S…) whose members bot.people reads from Slack.
SLACK_PERSON_PATTERN = re.compile(r"^[UWS][A-Z0-9]{2,}\Z")
PERSON_WHAT = "Slack user ID (U…) or user group ID (S…)"

# Bounds that catch unit mistakes (milliseconds typed as seconds) without second-guessing
# a team's real needs.
MAX_TIMEOUT_SECONDS = 24 * 3600
MIN_GENERATED_BYTES = 16
MAX_GENERATED_LENGTH = 4096

_TOP_LEVEL_KEYS = {"slack", "fly", "secrets", "backups", "reminders", "inventory"}
_REMINDER_KEYS = {"channel", "time", "timezone", "window_days", "all_clear", "max_snooze_days",
                  "snooze_reason_required"}
_INVENTORY_KEYS = {"sync_interval", "sync_concurrency", "default_priority"}
# Accepted reminder times: 24-hour HH:MM, or HH:MM:SS.
_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?\Z")
MAX_SNOOZE_DAYS = 365
MAX_SYNC_CONCURRENCY = 64
_SLACK_KEYS = {
    "channel", "approvers", "operators", "security_channel", "compromised_requires_approval", "approval_timeout",
    "two_approvers_for_high", "allow_self_approval",
}
_FLY_KEYS = {"apps", "command_timeout", "deploy_timeout", "verify_timeout", "verify_interval", "health_urls"}
_SECRET_KEYS = {
    "priority", "source", "format", "length", "external", "instructions", "value_pattern", "allow_whitespace",
    "revoke_instructions", "paired_with", "auto_rotate",
}
_BACKUPS_KEYS = {"s3"}
_BACKUPS_S3_KEYS = {"endpoint_url", "bucket", "prefix", "region"}
# Names an operator might reach for when putting the bucket's key pair in the file.
_S3_CREDENTIAL_KEYS = {
    "access_key_id", "secret_access_key", "aws_access_key_id", "aws_secret_access_key", "key_id", "application_key",
}
# S3's naming rule for buckets: 3 to 63 lowercase letters, digits, dots and dashes.
S3_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
S3_REGION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")


class _Reader:
    """Validate values from one parsed file, prefixing errors with the file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}': {reason}")

    def table(self, data: dict[str, Any], key: str, name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        return value

    def reject_unknown(self, data: dict[str, Any], prefix: str, known: set[str]) -> None:
        for name in data:
            if name not in known:
                key = f"{prefix}.{name}" if prefix else name
                raise self.fail(key, f"unknown key; expected one of {', '.join(sorted(known))}")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def string_list(self, value: Any, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of {what}, got {type(value).__name__}")
        items: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not pattern.match(item):
                raise self.fail(f"{key}[{index}]", f"{item!r} is not a valid {what}")
            if item in items:
                raise self.fail(f"{key}[{index}]", f"{item!r} is listed twice")
            items.append(item)
        return tuple(items)

    def seconds(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number of seconds, got {value!r}")
        if not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise self.fail(key, f"{value} is out of range; expected more than 0 and at most {MAX_TIMEOUT_SECONDS}")
        return float(value)

    def whole_number(self, value: Any, key: str, *, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"{value} is out of range; expected {minimum} to {maximum}")
        return value

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, value: Any, key: str, enum: type[Any]) -> Any:
        allowed = [member.value for member in enum]
        if value not in allowed:
            raise self.fail(key, f"invalid value {value!r}; expected one of {', '.join(allowed)}")
        return enum(value)


def load_policy(path: Path, *, required: bool = False) -> Policy:
    """Read the configuration file at `path`, or return the built-in policy if it is absent.

    With `required` (the path came from SECRETBOT_CONFIG) a missing file is an error,
    because silently running on the built-in policy would hide a typo in the path.
    """
    if required and not path.exists():
        raise ConfigError(f"{path}: file not found; SECRETBOT_CONFIG names it, so create it or fix the path")
    if not path.exists():
        logger.info("config file %s not found; using the built-in policy", path)
        return builtin_policy()

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc}") from exc

    reader = _Reader(path)
    reader.reject_unknown(raw, "", _TOP_LEVEL_KEYS)
    slack = _read_slack(reader, reader.table(raw, "slack", "slack"))
    fly = _read_fly(reader, reader.table(raw, "fly", "fly"))
    secrets = dict(BUILTIN_SECRETS)
    secrets.update(_read_secrets(reader, reader.table(raw, "secrets", "secrets")))
    for secret in secrets.values():
        if secret.paired_with is not None and secret.paired_with not in secrets:
            raise reader.fail(f"secrets.{secret.name}.paired_with", f"{secret.paired_with!r} is not a known secret")
        partner = secrets.get(secret.paired_with) if secret.paired_with else None
        if secret.auto_rotate and partner is not None and partner.source is not Source.GENERATED:
            # The pair rotates in one run, which would wait for a person to enter the partner's value.
            raise reader.fail(f"secrets.{secret.name}.auto_rotate",
                              f"{secret.name} is paired with {partner.name}, whose value a provider issues, so the "
                              "bot cannot rotate the pair by itself; remove auto_rotate")
    backups = _read_backups(reader, reader.table(raw, "backups", "backups"))
    reminders = _read_reminders(reader, reader.table(raw, "reminders", "reminders"))
    inventory = _read_inventory(reader, reader.table(raw, "inventory", "inventory"))
    return Policy(slack=slack, fly=fly, secrets=secrets, source_path=str(path), backups=backups,
                  reminders=reminders, inventory=inventory)


def _read_slack(reader: _Reader, data: dict[str, Any]) -> SlackSettings:
    reader.reject_unknown(data, "slack", _SLACK_KEYS)
    channel = None
    if "channel" in data:
        channel = reader.string(data["channel"], "slack.channel")
        if not SLACK_CHANNEL_PATTERN.match(channel):
            raise reader.fail(
                "slack.channel",
                f"{channel!r} is not a channel ID; use the ID (like C0123ABCD) from the channel's details, not its name",
            )
    approvers: tuple[str, ...] = ()
    if "approvers" in data:
        approvers = reader.string_list(data["approvers"], "slack.approvers", SLACK_PERSON_PATTERN, PERSON_WHAT)
    operators: tuple[str, ...] = ()
    if "operators" in data:
        operators = reader.string_list(data["operators"], "slack.operators", SLACK_PERSON_PATTERN, PERSON_WHAT)
    security_channel = None
    if "security_channel" in data:
        security_channel = reader.string(data["security_channel"], "slack.security_channel")
        if not SLACK_CHANNEL_PATTERN.match(security_channel):
            raise reader.fail("slack.security_channel", f"{security_channel!r} is not a channel ID like C0123ABCD")
    requires_approval = data.get("compromised_requires_approval", False)
    if not isinstance(requires_approval, bool):
        raise reader.fail("slack.compromised_requires_approval", f"expected true or false, got {requires_approval!r}")
    approval_timeout = SlackSettings().approval_timeout
    if "approval_timeout" in data:
        approval_timeout = reader.seconds(data["approval_timeout"], "slack.approval_timeout")
    return SlackSettings(
        channel=channel,
        approvers=approvers,
        operators=operators,
        security_channel=security_channel,
        compromised_requires_approval=requires_approval,
        approval_timeout=approval_timeout,
        two_approvers_for_high=reader.flag(data.get("two_approvers_for_high", False), "slack.two_approvers_for_high"),
        allow_self_approval=reader.flag(data.get("allow_self_approval", False), "slack.allow_self_approval"),
    )


def _read_fly(reader: _Reader, data: dict[str, Any]) -> FlySettings:
    reader.reject_unknown(data, "fly", _FLY_KEYS)
    defaults = FlySettings()
    apps: tuple[str, ...] = ()
    if "apps" in data:
        apps = reader.string_list(data["apps"], "fly.apps", APP_NAME_PATTERN, "Fly app name")

    timeouts = {}
    for name in ("command_timeout", "deploy_timeout", "verify_timeout", "verify_interval"):
        if name in data:
            timeouts[name] = reader.seconds(data[name], f"fly.{name}")

    health_urls: dict[str, str] = {}
    for app, url in reader.table(data, "fly.health_urls", "health_urls").items():
        key = f"fly.health_urls.{app}"
        if app not in apps:
            raise reader.fail(key, f"app {app!r} is not in fly.apps")
        parsed = urlparse(reader.string(url, key))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise reader.fail(key, f"{url!r} is not an http or https URL")
        health_urls[app] = url

    return FlySettings(
        apps=apps,
        command_timeout=timeouts.get("command_timeout", defaults.command_timeout),
        deploy_timeout=timeouts.get("deploy_timeout", defaults.deploy_timeout),
        verify_timeout=timeouts.get("verify_timeout", defaults.verify_timeout),
        verify_interval=timeouts.get("verify_interval", defaults.verify_interval),
        health_urls=health_urls,
    )


def _read_secrets(reader: _Reader, data: dict[str, Any]) -> dict[str, SecretPolicy]:
    secrets: dict[str, SecretPolicy] = {}
    for name, entry in data.items():
        prefix = f"secrets.{name}"
        if not SECRET_NAME_PATTERN.match(name):
            raise reader.fail(prefix, f"{name!r} is not a valid secret name; use letters, digits and underscores")
        if not isinstance(entry, dict):
            raise reader.fail(prefix, f"expected a table, got {type(entry).__name__}")
        reader.reject_unknown(entry, prefix, _SECRET_KEYS)
        secrets[name] = _read_secret(reader, name, entry, BUILTIN_SECRETS.get(name))
    return secrets


def _read_secret(reader: _Reader, name: str, entry: dict[str, Any], builtin: SecretPolicy | None) -> SecretPolicy:
    prefix = f"secrets.{name}"
    if builtin is None:
        for required in ("priority", "source"):
            if required not in entry:
                raise reader.fail(f"{prefix}.{required}", "missing; required for a secret that is not built in")

    priority = reader.choice(entry["priority"], f"{prefix}.priority", Priority) if "priority" in entry else None
    source = reader.choice(entry["source"], f"{prefix}.source", Source) if "source" in entry else None
    priority = priority or (builtin.priority if builtin else Priority.MEDIUM)
    source = source or (builtin.source if builtin else Source.PROVIDER)

    if source is Source.PROVIDER:
        for generated_only in ("format", "length"):
            if generated_only in entry:
                raise reader.fail(f"{prefix}.{generated_only}", 'only applies to source = "generated"')

    keep_builtin = builtin is not None and builtin.source is source
    value_format = builtin.value_format if keep_builtin and builtin else ValueFormat.BASE64URL
    if "format" in entry:
        value_format = reader.choice(entry["format"], f"{prefix}.format", ValueFormat)
    length = builtin.length if keep_builtin and builtin else SecretPolicy.length
    if "length" in entry:
        length = _read_length(reader, entry["length"], f"{prefix}.length", value_format)

    external = builtin.external if builtin else None
    instructions = builtin.instructions if builtin else None
    if "external" in entry:
        external = reader.string(entry["external"], f"{prefix}.external")
    if "instructions" in entry:
        instructions = reader.string(entry["instructions"], f"{prefix}.instructions")

    value_pattern = builtin.value_pattern if builtin else None
    if "value_pattern" in entry:
        if source is not Source.PROVIDER:
            raise reader.fail(f"{prefix}.value_pattern", 'only applies to source = "provider"')
        value_pattern = reader.string(entry["value_pattern"], f"{prefix}.value_pattern")
        pattern_problem = value_pattern_problem(value_pattern)
        if pattern_problem is not None:
            raise reader.fail(f"{prefix}.value_pattern", pattern_problem)
    revoke_instructions = builtin.revoke_instructions if builtin else None
    if "revoke_instructions" in entry:
        revoke_instructions = reader.string(entry["revoke_instructions"], f"{prefix}.revoke_instructions")
    paired_with = builtin.paired_with if builtin else None
    if "paired_with" in entry:
        paired_with = reader.string(entry["paired_with"], f"{prefix}.paired_with")
        if paired_with == name:
            raise reader.fail(f"{prefix}.paired_with", "a secret cannot be paired with itself")
    auto_rotate = False
    if "auto_rotate" in entry:
        auto_rotate = reader.flag(entry["auto_rotate"], f"{prefix}.auto_rotate")
        if auto_rotate and source is not Source.GENERATED:
            raise reader.fail(f"{prefix}.auto_rotate", 'only applies to source = "generated": a provider issues '
                                                       "this value, so a person must enter it during the rotation")
    allow_whitespace = builtin.allow_whitespace if builtin else False
    if "allow_whitespace" in entry:
        if not isinstance(entry["allow_whitespace"], bool):
            raise reader.fail(f"{prefix}.allow_whitespace", f"expected true or false, got {entry['allow_whitespace']!r}")
        allow_whitespace = entry["allow_whitespace"]

    return SecretPolicy(
        name=name,
        priority=priority,
        source=source,
        value_format=value_format,
        length=length,
        external=external,
        instructions=instructions,
        value_pattern=value_pattern,
        allow_whitespace=allow_whitespace,
        revoke_instructions=revoke_instructions,
        paired_with=paired_with,
        auto_rotate=auto_rotate,
    )


def _read_length(reader: _Reader, value: Any, key: str, value_format: ValueFormat) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise reader.fail(key, f"expected a whole number, got {value!r}")
    # An alphanumeric character carries about 5.95 bits, so 22 characters give 128 bits,
    # the same floor as 16 random bytes for the byte-based formats.
    minimum = 22 if value_format is ValueFormat.ALPHANUMERIC else MIN_GENERATED_BYTES
    if not minimum <= value <= MAX_GENERATED_LENGTH:
        raise reader.fail(key, f"{value} is out of range; expected {minimum} to {MAX_GENERATED_LENGTH}")
    return value


def _read_backups(reader: _Reader, data: dict[str, Any]) -> BackupSettings:
    reader.reject_unknown(data, "backups", _BACKUPS_KEYS)
    if "s3" not in data:
        return BackupSettings()
    return BackupSettings(s3=_read_backups_s3(reader, reader.table(data, "backups.s3", "s3")))


def _read_backups_s3(reader: _Reader, data: dict[str, Any]) -> BackupS3Settings:
    for name in data:
        if name.lower() in _S3_CREDENTIAL_KEYS:
            raise reader.fail(
                f"backups.s3.{name}",
                "credentials do not belong in this file; remove the key and set SECRETBOT_S3_ACCESS_KEY_ID "
                "and SECRETBOT_S3_SECRET_ACCESS_KEY in the bot's environment",
            )
    reader.reject_unknown(data, "backups.s3", _BACKUPS_S3_KEYS)
    for required in ("endpoint_url", "bucket"):
        if required not in data:
            raise reader.fail(f"backups.s3.{required}", "missing; required when [backups.s3] is present")
    defaults = BackupS3Settings(endpoint_url="", bucket="")

    endpoint_url = reader.string(data["endpoint_url"], "backups.s3.endpoint_url")
    parsed = urlparse(endpoint_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise reader.fail(
            "backups.s3.endpoint_url",
            f"{endpoint_url!r} is not an http or https URL; for Backblaze B2 use https://s3.<region>.backblazeb2.com",
        )

    bucket = reader.string(data["bucket"], "backups.s3.bucket")
    if not S3_BUCKET_PATTERN.match(bucket):
        raise reader.fail(
            "backups.s3.bucket",
            f"{bucket!r} is not a valid bucket name; use 3 to 63 lowercase letters, digits, dots and dashes",
        )

    prefix = defaults.prefix
    if "prefix" in data:
        prefix = data["prefix"]
        if not isinstance(prefix, str):
            raise reader.fail("backups.s3.prefix", f"expected a string, got {prefix!r}")
        # An empty prefix is allowed and stores objects at the top of the bucket.
        if prefix.startswith("/") or (prefix and not prefix.endswith("/")):
            raise reader.fail(
                "backups.s3.prefix", f"{prefix!r} must not start with '/' and must end with '/', like \"secretbot/\""
            )

    region = defaults.region
    if "region" in data:
        region = reader.string(data["region"], "backups.s3.region")
        if not S3_REGION_PATTERN.match(region):
            raise reader.fail("backups.s3.region", f"{region!r} is not a region name like us-east-1 or us-west-004")

    return BackupS3Settings(endpoint_url=endpoint_url, bucket=bucket, prefix=prefix, region=region)


def _read_reminders(reader: _Reader, data: dict[str, Any]) -> ReminderSettings:
    reader.reject_unknown(data, "reminders", _REMINDER_KEYS)
    defaults = ReminderSettings()
    channel = None
    if "channel" in data:
        channel = reader.string(data["channel"], "reminders.channel")
        if not SLACK_CHANNEL_PATTERN.match(channel):
            raise reader.fail("reminders.channel", f"{channel!r} is not a channel ID like C0123ABCD")

    time_of_day = defaults.time
    if isinstance(data.get("time"), dt.time):
        # An unquoted TOML local time (time = 09:00) reads as a time already.
        time_of_day = data["time"].replace(microsecond=0)
    elif "time" in data:
        text = reader.string(data["time"], "reminders.time")
        match = _TIME_OF_DAY.match(text)
        if match is None:
            raise reader.fail("reminders.time", f"{text!r} is not a 24-hour time; write it like \"09:00\"")
        time_of_day = dt.time(int(match[1]), int(match[2]), int(match[3] or 0))

    timezone = defaults.timezone
    if "timezone" in data:
        timezone = reader.string(data["timezone"], "reminders.timezone")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise reader.fail("reminders.timezone",
                              f"{timezone!r} is not a known time zone; use an IANA name like \"Europe/Berlin\"") from exc

    return ReminderSettings(
        channel=channel,
        time=time_of_day,
        timezone=timezone,
        window_days=reader.whole_number(data.get("window_days", defaults.window_days), "reminders.window_days",
                                        minimum=0, maximum=MAX_SNOOZE_DAYS),
        all_clear=reader.flag(data.get("all_clear", defaults.all_clear), "reminders.all_clear"),
        max_snooze_days=reader.whole_number(data.get("max_snooze_days", defaults.max_snooze_days),
                                            "reminders.max_snooze_days", minimum=1, maximum=MAX_SNOOZE_DAYS),
        snooze_reason_required=reader.flag(data.get("snooze_reason_required", defaults.snooze_reason_required),
                                           "reminders.snooze_reason_required"),
    )


def _read_inventory(reader: _Reader, data: dict[str, Any]) -> InventorySettings:
    reader.reject_unknown(data, "inventory", _INVENTORY_KEYS)
    defaults = InventorySettings()
    interval = defaults.sync_interval
    if "sync_interval" in data:
        # 0 is allowed and turns the periodic sync off.
        value = data["sync_interval"]
        zero = not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0
        interval = 0.0 if zero else reader.seconds(value, "inventory.sync_interval")
    priority = defaults.default_priority
    if "default_priority" in data:
        priority = reader.choice(data["default_priority"], "inventory.default_priority", Priority)
    return InventorySettings(
        sync_interval=interval,
        sync_concurrency=reader.whole_number(data.get("sync_concurrency", defaults.sync_concurrency),
                                             "inventory.sync_concurrency", minimum=1, maximum=MAX_SYNC_CONCURRENCY),
        default_priority=priority,
    )


# The Slack IDs that secretbot.example.toml shows, some of them in commented-out lines. A
# copied file that still contains one loads without error, but names no real channel or person.
EXAMPLE_CHANNEL_IDS = frozenset({"C0123OPS", "C0456SEC"})
EXAMPLE_PERSON_IDS = frozenset({"U0AAA", "U0BBB", "S0PLATFORM"})
_FIND_CHANNEL_ID = "the ID from the channel's details in Slack, at the bottom of the About tab"
_FIND_PERSON_ID = "IDs from your workspace: on each profile, More (⋯), then \"Copy member ID\""


def example_placeholders(policy: Policy) -> list[str]:
    """Return one warning for each key that still contains a placeholder ID of secretbot.example.toml."""
    channels = {
        "slack.channel": policy.slack.channel,
        "slack.security_channel": policy.slack.security_channel,
        "reminders.channel": policy.reminders.channel,
    }
    people = {"slack.approvers": policy.slack.approvers, "slack.operators": policy.slack.operators}
    warnings = [
        f"{key} is {value}, the placeholder from secretbot.example.toml; set it to {_FIND_CHANNEL_ID}"
        for key, value in channels.items() if value in EXAMPLE_CHANNEL_IDS
    ]
    for key, ids in people.items():
        placeholders = [person for person in ids if person in EXAMPLE_PERSON_IDS]
        if placeholders:
            warnings.append(f"{key} contains {', '.join(placeholders)}, the placeholders from "
                            f"secretbot.example.toml; replace them with {_FIND_PERSON_ID}")
    return warnings
