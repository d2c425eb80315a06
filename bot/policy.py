"""Rotation policy: what each secret is, how its new value is made, and who approves.

The built-in policy is the team's written schedule. A `secretbot.toml` replaces any part
of it; `bot.config` reads that file into these types.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property

# Fly.io accepts letters, digits and underscores in secret names; a leading digit is
# rejected here too because the value ends up as an environment variable.
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

# Fly app names are lowercase letters, digits and dashes.
APP_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")


class Priority(str, Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def interval_days(self) -> int:
        return {"high": 30, "medium": 90, "low": 180}[self.value]


class Source(str, Enum):
    GENERATED = "generated"
    PROVIDER = "provider"


class ValueFormat(str, Enum):
    HEX = "hex"
    BASE64 = "base64"
    BASE64URL = "base64url"
    ALPHANUMERIC = "alphanumeric"


@dataclass(frozen=True)
class SecretPolicy:
    """Rotation settings of one secret."""

    name: str
    priority: Priority
    source: Source
    value_format: ValueFormat = ValueFormat.BASE64URL
    # Random bytes for hex and the base64 formats, characters for alphanumeric.
    length: int = 48
    # A system outside Fly that a person must update by hand during a rotation.
    external: str | None = None
    instructions: str | None = None
    # Provider values only: a regular expression the whole entered value must match, and
    # whether leading or trailing whitespace is accepted (usually a copy-and-paste slip).
    value_pattern: str | None = None
    allow_whitespace: bool = False
    # How to revoke the old value at its source when it leaks (provider secrets).
    revoke_instructions: str | None = None
    # A secret that changes together with this one (a key ID and its key), so a command
    # naming one runs both in one flyctl call and one restart.
    paired_with: str | None = None
    # Generated values only: the bot opens the rotation run itself when the secret falls
    # due (requester "secretbot"); the run still waits for approval.
    auto_rotate: bool = False


def chosen_policy(name: str, priority: str | None, source: str | None) -> SecretPolicy | None:
    """Build the policy of a priority and source chosen at `/secret add`, or None when either is missing or unknown.

    The value format and length are SecretPolicy's defaults for a generated value.
    """
    try:
        return SecretPolicy(name=name, priority=Priority(priority), source=Source(source))
    except ValueError:
        return None


@dataclass(frozen=True)
class SlackSettings:
    channel: str | None = None
    # User IDs (U…, W…) and user group IDs (S…); bot.people expands the groups.
    approvers: tuple[str, ...] = ()
    # Who may start runbooks, in the same form; empty lets everyone in the workspace.
    operators: tuple[str, ...] = ()
    # A second channel that hears about every compromised-secret run.
    security_channel: str | None = None
    # A compromised-secret run starts without approval (break-glass) unless this is set.
    compromised_requires_approval: bool = False
    # Seconds an approval request waits for a decision before the run ends as expired.
    approval_timeout: float = 24 * 3600.0
    # Runs on a high-priority secret need two different approvers.
    two_approvers_for_high: bool = False
    # Lets an approver approve a run they requested; off, someone else must.
    allow_self_approval: bool = False


@dataclass(frozen=True)
class FlySettings:
    apps: tuple[str, ...] = ()
    command_timeout: float = 60.0
    deploy_timeout: float = 900.0
    verify_timeout: float = 300.0
    verify_interval: float = 5.0
    health_urls: dict[str, str] = field(default_factory=dict)

    @property
    def default_app(self) -> str | None:
        return self.apps[0] if self.apps else None


@dataclass(frozen=True)
class BackupS3Settings:
    """The S3-compatible bucket that receives a second copy of each encrypted backup.

    The access key pair is not here: it comes from SECRETBOT_S3_ACCESS_KEY_ID and
    SECRETBOT_S3_SECRET_ACCESS_KEY, so the file can be committed.
    """

    endpoint_url: str
    bucket: str
    # Object keys are `<prefix><app>/<name>/v<version>.json`.
    prefix: str = "secretbot/"
    region: str = "us-east-1"


@dataclass(frozen=True)
class BackupSettings:
    # None keeps backups in the bot's database only.
    s3: BackupS3Settings | None = None


@dataclass(frozen=True)
class ReminderSettings:
    """When and where the daily list of due secrets is posted."""

    # None posts to slack.channel; with neither set, no reminder is posted.
    channel: str | None = None
    # Local wall-clock time in `timezone` (an IANA name), followed through daylight saving.
    time: dt.time = dt.time(9, 0)
    timezone: str = "UTC"
    # Secrets due within this many days are listed after the overdue ones.
    window_days: int = 7
    # Post "nothing is due" instead of staying silent.
    all_clear: bool = False
    # The longest snooze a person may pick in the Snooze dialog.
    max_snooze_days: int = 14
    snooze_reason_required: bool = False


@dataclass(frozen=True)
class InventorySettings:
    """How often the list of each app's secrets is read from Fly."""

    # Seconds between two syncs of every app; 0 syncs only at start-up and on demand.
    sync_interval: float = 3600.0
    # flyctl calls run at once during a sync.
    sync_concurrency: int = 8
    # The priority of a secret on Fly that secretbot.toml does not name.
    default_priority: Priority = Priority.MEDIUM


@dataclass(frozen=True)
class Policy:
    """The whole configuration read from secretbot.toml, or the built-in one."""

    slack: SlackSettings
    fly: FlySettings
    secrets: dict[str, SecretPolicy]
    source_path: str | None = None
    backups: BackupSettings = field(default_factory=BackupSettings)
    reminders: ReminderSettings = field(default_factory=ReminderSettings)
    inventory: InventorySettings = field(default_factory=InventorySettings)
    # Policies chosen with `/secret add` for names this file does not list, by app and then
    # by name, as stored in the inventory. The file never sets them; Services loads them.
    added: Mapping[str, Mapping[str, SecretPolicy]] = field(default_factory=dict)

    def secret(self, name: str) -> SecretPolicy | None:
        """Return the [secrets.NAME] policy of a secret, or None when secretbot.toml does not list it."""
        return self.secrets.get(name)

    def secret_for(self, app: str, name: str) -> SecretPolicy | None:
        """Return the policy that rotates `name` on `app`, or None when neither source describes it.

        A [secrets.NAME] table takes precedence over the choice stored when the secret was added,
        so a table written later changes the secret on every app at once, as it does the schedule.
        """
        configured = self.secrets.get(name)
        if configured is not None:
            return configured
        return self.added.get(app, {}).get(name)

    def with_added(self, added: Mapping[str, Mapping[str, SecretPolicy]]) -> Policy:
        """Return a copy of this policy with the stored choices of added secrets replaced by `added`."""
        copy = replace(self, added=added)
        # Every command is parsed with such a copy, which lists the same secrets. So the index
        # of their names is built once on this policy and shared by the copies. Built per
        # command, it took about 0.25 ms for 1,320 names before each rotate command's ack.
        copy.__dict__["lowercase_names"] = self.lowercase_names
        return copy

    @cached_property
    def lowercase_names(self) -> frozenset[str]:
        """The names of the secrets this file lists, in lower case, to recognise a name typed in any case."""
        return frozenset(name.lower() for name in self.secrets)

    def priority_of(self, name: str) -> Priority:
        """Return the configured priority of a secret, or the default for names the file does not list."""
        secret = self.secrets.get(name)
        return secret.priority if secret is not None else self.inventory.default_priority

    @property
    def reminder_channel(self) -> str | None:
        return self.reminders.channel or self.slack.channel


def _generated(name: str, priority: Priority, value_format: ValueFormat, length: int) -> SecretPolicy:
    return SecretPolicy(name=name, priority=priority, source=Source.GENERATED, value_format=value_format, length=length)


def _provider(name: str, priority: Priority, external: str, instructions: str, revoke: str) -> SecretPolicy:
    return SecretPolicy(
        name=name, priority=priority, source=Source.PROVIDER, external=external, instructions=instructions,
        revoke_instructions=revoke,
    )


_BUILTIN_LIST = (
    # 64 random bytes: well above the 256 bits an HMAC-SHA256 signing key needs.
    _generated("JWT_SECRET", Priority.HIGH, ValueFormat.BASE64URL, 64),
    # 32 bytes as 64 hex characters, the usual encoding of an AES-256 key.
    _generated("ENCRYPTION_KEY", Priority.HIGH, ValueFormat.HEX, 32),
    _provider(
        "SUPABASE_SERVICE_ROLE_KEY",
        Priority.HIGH,
        "Supabase",
        "Create a new secret key in the Supabase dashboard (Project Settings, API keys); "
        "delete the old one once its last use is older than the deploy.",
        "Delete the leaked secret key in the Supabase dashboard (Project Settings, API keys). A legacy "
        "service_role JWT can only be revoked by rotating the project's JWT secret.",
    ),
    _provider(
        "OPENAI_API_KEY",
        Priority.MEDIUM,
        "OpenAI",
        "Create a key for a new project service account; delete the old service account "
        "after the new key is verified.",
        "Delete the leaked key, or its service account, in the OpenAI dashboard now: leaked keys are "
        "abused within minutes.",
    ),
    _provider(
        "B2_APPLICATION_KEY",
        Priority.MEDIUM,
        "Backblaze B2",
        "Create a key with the same capabilities, bucket and prefix; the key ID changes "
        "with it, so rotate B2_APPLICATION_KEY_ID in the same run.",
        "Delete the leaked application key in the Backblaze B2 console (App Keys); its key ID goes with it.",
    ),
    _provider(
        "WAHA_API_KEY",
        Priority.MEDIUM,
        "WAHA server",
        "Set the new key on the WAHA server (as sha512:{hash}) before Fly is updated.",
        "Replace the key on the WAHA server; the old key stops working when WAHA restarts with the new one.",
    ),
    _provider(
        "HOTEL_MANAGEMENT_API_KEY",
        Priority.MEDIUM,
        "Hotel management vendor console",
        "Issue a new key in the vendor console; revoke the old one after verification.",
        "Revoke the key in the vendor console, or ask the vendor to revoke it.",
    ),
    _provider(
        "WAHA_TOKEN",
        Priority.LOW,
        "WAHA",
        "Issue a new token where the current one came from.",
        "Revoke the token where it was issued.",
    ),
    _generated("WAHA_WEBHOOK_TOKEN", Priority.LOW, ValueFormat.BASE64URL, 32),
    _provider(
        "B2_APPLICATION_KEY_ID",
        Priority.LOW,
        "Backblaze B2",
        "The key ID comes with a new application key; rotate it together with B2_APPLICATION_KEY.",
        "Delete the application key in the Backblaze B2 console; the ID is revoked with it.",
    ),
)


# A Backblaze B2 key ID and its key are issued together and must change together.
_PAIRS = {"B2_APPLICATION_KEY": "B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY_ID": "B2_APPLICATION_KEY"}
BUILTIN_SECRETS: dict[str, SecretPolicy] = {
    policy.name: replace(policy, paired_with=_PAIRS.get(policy.name)) for policy in _BUILTIN_LIST
}


def builtin_policy() -> Policy:
    return Policy(slack=SlackSettings(), fly=FlySettings(), secrets=dict(BUILTIN_SECRETS))
