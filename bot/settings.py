"""Process settings read from the environment.

Secrets the bot itself needs (Slack token, signing secret, Fly token) are read here and
nowhere else. They are kept out of reprs and logs, and only the Fly token goes to flyctl.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///secretbot.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# The values of LOG_FORMAT; bot/logs.py has a formatter for each.
LOG_FORMATS = ("text", "json")
# The variables that hold secrets. `secretbot check` masks their values in its output.
SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "FLY_API_TOKEN",
    "SECRETBOT_BACKUP_KEY",
    "SECRETBOT_S3_ACCESS_KEY_ID",
    "SECRETBOT_S3_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = field(repr=False, default=None)
    slack_signing_secret: str | None = field(repr=False, default=None)
    # An app-level token (xapp-). When it is set, `serve` receives Slack's requests over Socket Mode.
    slack_app_token: str | None = field(repr=False, default=None)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    database_url: str = DEFAULT_DATABASE_URL
    flyctl: str = "flyctl"
    fly_api_token: str | None = field(repr=False, default=None)
    config_path: Path = Path("secretbot.toml")
    # True when SECRETBOT_CONFIG names the file, which must then exist.
    config_required: bool = False
    backup_key: str | None = field(repr=False, default=None)
    # Credentials for the bucket in [backups.s3]; never read from secretbot.toml.
    s3_access_key_id: str | None = field(repr=False, default=None)
    s3_secret_access_key: str | None = field(repr=False, default=None)
    port: int = 8080
    log_level: str = "INFO"
    # "text" (readable lines) or "json" (one JSON object per line), as bot/logs.py formats them.
    log_format: str = "text"

    def require_slack(self) -> tuple[str, str]:
        """Return the Slack token and signing secret, or raise naming the missing variable."""
        missing = [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", self.slack_bot_token),
                ("SLACK_SIGNING_SECRET", self.slack_signing_secret),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"missing environment variable {' and '.join(missing)}: set it to the value from the "
                "Slack app's settings (OAuth & Permissions for the bot token, Basic Information for the signing secret)"
            )
        assert self.slack_bot_token and self.slack_signing_secret
        if not self.slack_bot_token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with 'xoxb-'")
        return self.slack_bot_token, self.slack_signing_secret

    def require_socket_mode(self) -> tuple[str, str]:
        """Return the bot token and the app-level token for Socket Mode, or raise naming the variable to fix.

        Socket Mode needs no signing secret, because Slack sends no HTTP requests to the bot then.
        """
        if not self.slack_bot_token:
            raise ConfigError("missing environment variable SLACK_BOT_TOKEN: set it to the bot token from the "
                              "Slack app's OAuth & Permissions page")
        if not self.slack_bot_token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with 'xoxb-'")
        return self.slack_bot_token, check_app_token(self.slack_app_token or "")

    def require_fly_api_token(self) -> str:
        """Return the Fly API token, or raise naming FLY_API_TOKEN."""
        if not self.fly_api_token:
            raise ConfigError("missing environment variable FLY_API_TOKEN: set it to a Fly deploy or org token "
                              "for the managed apps")
        return self.fly_api_token


# Only the characters are checked: a token pasted with a line break, a space or quotes is
# reported here rather than as a broken Authorization header.
_APP_TOKEN = re.compile(r"xapp-[A-Za-z0-9-]+")
_APP_TOKEN_HELP = ("create one on the Slack app's Basic Information page, under App-Level Tokens, with the "
                   "connections:write scope, or unset SLACK_APP_TOKEN to receive requests over HTTP")


def check_app_token(token: str) -> str:
    """Return `token` if it has the shape of an app-level token, or raise without repeating the token."""
    if token.startswith("xoxb-"):
        raise ConfigError("SLACK_APP_TOKEN is a bot token (xoxb-), which cannot open a Socket Mode connection; "
                          "set it to an app-level token starting with 'xapp-': " + _APP_TOKEN_HELP)
    if not token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with 'xapp-'; " + _APP_TOKEN_HELP)
    if not _APP_TOKEN.fullmatch(token):
        raise ConfigError("SLACK_APP_TOKEN contains characters other than letters, digits and '-'; "
                          "copy the token again without spaces, quotes or line breaks")
    return token


def normalize_database_url(url: str) -> str:
    """Map the URL schemes that hosting platforms hand out to SQLAlchemy's async drivers."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            # libpq's sslmode= is what hosts print; asyncpg calls the same option ssl=.
            return "postgresql+asyncpg://" + re.sub(r"([?&])sslmode=", r"\1ssl=", url[len(prefix) :])
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigError(
        f"DATABASE_URL has an unsupported scheme {url.split(':', 1)[0]!r}; "
        "use sqlite+aiosqlite:///PATH, postgres:// or postgresql://"
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    port_text = env.get("PORT", "8080")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigError(f"PORT must be a number, got {port_text!r}") from exc
    if not 0 <= port <= 65535:
        raise ConfigError(f"PORT must be between 0 and 65535, got {port}")
    log_format = (env.get("LOG_FORMAT") or "text").strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT {env.get('LOG_FORMAT')!r} is not a log format; set it to 'text' for "
                          "readable lines or 'json' for one JSON object per line")

    return Settings(
        slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
        slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
        slack_app_token=env.get("SLACK_APP_TOKEN") or None,
        slack_api_url=env.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL,
        database_url=normalize_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        flyctl=env.get("FLYCTL") or "flyctl",
        fly_api_token=env.get("FLY_API_TOKEN") or None,
        config_path=Path(env.get("SECRETBOT_CONFIG") or "secretbot.toml"),
        config_required=bool(env.get("SECRETBOT_CONFIG")),
        backup_key=env.get("SECRETBOT_BACKUP_KEY") or None,
        s3_access_key_id=env.get("SECRETBOT_S3_ACCESS_KEY_ID") or None,
        s3_secret_access_key=env.get("SECRETBOT_S3_SECRET_ACCESS_KEY") or None,
        port=port,
        log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
        log_format=log_format,
    )


def remove_secrets_from_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Delete the secret variables from the process environment (`os.environ` by default).

    `serve` calls this once the settings are read, so that the secrets reach only the code
    that Settings hands them to. Libraries that read the environment by themselves then
    find nothing: slack_bolt's AsyncApp (1.30) reads SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET
    when it is built, and logs that the token "will be unused" because the bot passes its
    own client. flyctl already gets an environment built from scratch (bot/flyctl/runner.py).
    """
    env = os.environ if environ is None else environ
    for name in SECRET_VARIABLES:
        env.pop(name, None)
