"""Encrypted, versioned backups of the values secretbot sets on Fly."""

from bot.backups.records import BackupError, BackupNotFound, BackupRecord, BackupsDisabled, from_entry, open_ciphertext
from bot.backups.s3 import S3Copy, S3CopyError
from bot.backups.store import BackupStore, build_backup_store

__all__ = [
    "BackupError",
    "BackupNotFound",
    "BackupRecord",
    "BackupStore",
    "BackupsDisabled",
    "S3Copy",
    "S3CopyError",
    "build_backup_store",
    "from_entry",
    "open_ciphertext",
]
