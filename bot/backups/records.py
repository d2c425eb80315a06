"""A backup outside the database: its record, its errors and its portable entry.

An entry is the JSON object that the S3 copy and an export bundle hold for one version:
the record's fields plus the ciphertext in base64. It opens only with the key whose ID it
names, and only as its own app, name and version, because those are the AES-GCM
associated data.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import SecretbotError
from bot.policy import APP_NAME_PATTERN, SECRET_NAME_PATTERN
from bot.sealing import SealError, Sealer
from bot.storage.models import Backup

ENTRY_FORMAT = "secretbot-backup/1"


class BackupError(SecretbotError):
    """A backup cannot be saved, found, copied or decrypted."""


class BackupsDisabled(BackupError):
    """SECRETBOT_BACKUP_KEY is not set, so no backup can be written or decrypted."""


class BackupNotFound(BackupError):
    """No backup exists for the requested app, secret and version."""


@dataclass(frozen=True)
class BackupRecord:
    """One backed-up version, without its value or ciphertext."""

    app: str
    name: str
    version: int
    run_id: str | None
    created_by: str
    created_at: datetime
    key_id: str
    fly_digest: str | None = None
    deployed_at: datetime | None = None
    s3_key: str | None = None
    # Set by BackupStore.save when the bucket did not take the copy; the database copy exists.
    s3_error: str | None = None

    @classmethod
    def from_row(cls, row: Backup) -> BackupRecord:
        return cls(
            app=row.app,
            name=row.name,
            version=row.version,
            run_id=row.run_id,
            created_by=row.created_by,
            created_at=row.created_at,
            key_id=row.key_id,
            fly_digest=row.fly_digest,
            deployed_at=row.deployed_at,
            s3_key=row.s3_key,
        )

    @property
    def label(self) -> str:
        return f"{self.app}/{self.name} version {self.version}"


def check_target(app: str, name: str) -> None:
    """Raise ValueError unless `app` and `name` are a Fly app name and a secret name.

    Both go into object keys and the sealing context, so a slash or dot-dot must never reach them.
    """
    if not APP_NAME_PATTERN.match(app):
        raise ValueError(f"{app!r} is not a Fly app name (lowercase letters, digits and dashes)")
    if not SECRET_NAME_PATTERN.match(name):
        raise ValueError(f"{name!r} is not a secret name (letters, digits and underscores)")


def sealing_context(app: str, name: str, version: int) -> str:
    # Pending values are sealed as "<run_id>/<name>" with one slash. This context has three,
    # so a pending ciphertext and a backup ciphertext under the same key never open as each other.
    return f"backup/{app}/{name}/{version}"


def open_ciphertext(sealer: Sealer, record: BackupRecord, ciphertext: bytes) -> str:
    """Decrypt one version, raising BackupError that names the wrong key or the changed row."""
    if record.key_id != sealer.key_id:
        raise BackupError(
            f"{record.label} was encrypted with key {record.key_id}, but SECRETBOT_BACKUP_KEY here is key "
            f"{sealer.key_id}; set SECRETBOT_BACKUP_KEY to the key the bot used when it saved this version"
        )
    try:
        return sealer.open(ciphertext, context=sealing_context(record.app, record.name, record.version))
    except SealError as exc:
        raise BackupError(
            f"{record.label} cannot be decrypted: its ciphertext was changed or belongs to another backup"
        ) from exc


def to_entry(record: BackupRecord, ciphertext: bytes) -> dict[str, Any]:
    return {
        "format": ENTRY_FORMAT,
        "app": record.app,
        "name": record.name,
        "version": record.version,
        "run_id": record.run_id,
        "created_by": record.created_by,
        "created_at": record.created_at.isoformat(),
        "key_id": record.key_id,
        "fly_digest": record.fly_digest,
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }


def from_entry(entry: Any) -> tuple[BackupRecord, bytes]:
    """Read an entry written by `to_entry`, raising BackupError on anything malformed."""
    if not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT:
        raise BackupError(f"not a secretbot backup entry; expected an object with \"format\": \"{ENTRY_FORMAT}\"")
    try:
        record = BackupRecord(
            app=_text(entry, "app"),
            name=_text(entry, "name"),
            version=int(entry["version"]),
            run_id=entry.get("run_id"),
            created_by=_text(entry, "created_by"),
            created_at=datetime.fromisoformat(_text(entry, "created_at")),
            key_id=_text(entry, "key_id"),
            fly_digest=entry.get("fly_digest"),
        )
        check_target(record.app, record.name)
        ciphertext = base64.b64decode(_text(entry, "ciphertext"), validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise BackupError(f"backup entry is malformed: {type(exc).__name__}: {exc}") from exc
    return record, ciphertext


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry[key]
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string")
    return value
