"""Exception hierarchy for secretbot.

    SecretbotError
    ├── ConfigError            invalid environment or secretbot.toml
    ├── CommandError           a user's command is malformed or names unknown things
    ├── AuthorizationError     the user may not take this action
    ├── FlyctlError            flyctl failed, timed out or printed output we cannot read
    │   ├── FlyctlTimeout
    │   ├── FlyctlNotFound
    │   └── FlyctlOutputError
    ├── UnsafeValueError       a value cannot reach Fly byte-exact, so nothing is changed
    ├── VerificationError      the app did not come back healthy after a change
    └── StorageError           the database is unreachable or not migrated

Messages name the app, the secret and the step involved, never a secret value.
"""

from __future__ import annotations


class SecretbotError(Exception):
    """Base class for every error secretbot raises on purpose."""


class ConfigError(SecretbotError):
    """The environment or the configuration file is invalid."""


class CommandError(SecretbotError):
    """A command from a user is malformed or names an unknown secret or app."""


class AuthorizationError(SecretbotError):
    """The user is not allowed to take the requested action."""


class FlyctlError(SecretbotError):
    """flyctl exited non-zero; stdout and stderr are already redacted."""

    def __init__(self, message: str, *, exit_code: int | None = None, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class FlyctlTimeout(FlyctlError):
    """flyctl did not finish within its timeout and was killed."""


class FlyctlNotFound(FlyctlError):
    """The flyctl executable does not exist or is not executable."""


class FlyctlOutputError(FlyctlError):
    """flyctl printed JSON in a shape secretbot does not know."""


class UnsafeValueError(SecretbotError):
    """A secret value cannot be passed to flyctl byte-exact, so nothing was changed.

    `reason` is the cause alone ("a line of the value ends in a carriage return, ..."),
    for callers that word the advice themselves; it never quotes the value.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class VerificationError(SecretbotError):
    """The deployment did not pass verification after a secret change."""


class StorageError(SecretbotError):
    """The database is unreachable or its schema is not at the expected revision."""
