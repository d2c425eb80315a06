"""Process settings read from the environment.

Secrets the bot itself needs (Slack token, signing secret, Fly token) are read here and
nowhere else. They are kept out of reprs and logs, and only the Fly token goes to flyctl.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///secretbot.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = field(repr=False, default=None)
    slack_signing_secret: str | None = field(repr=False, default=None)
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

    return Settings(
        slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
        slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
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
    )
