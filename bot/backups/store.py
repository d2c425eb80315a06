"""Versioned, encrypted backups of every value secretbot sets on Fly.

Fly never shows a secret's value again once it is set, so these rows are the way back
to a lost value. Each version is sealed with SECRETBOT_BACKUP_KEY (AES-256-GCM, bound to
app, name and version) and kept in the bot's database. An optional second copy goes to
an S3-compatible bucket. Nothing here logs or returns a value except `value()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from bot.backups.records import (
    BackupNotFound,
    BackupRecord,
    BackupsDisabled,
    check_target,
    open_ciphertext,
    sealing_context,
    to_entry,
)
from bot.backups.s3 import S3Copy, S3CopyError
from bot.errors import StorageError
from bot.policy import Policy
from bot.sealing import NEW_KEY_COMMAND, Sealer
from bot.settings import Settings
from bot.storage.models import Backup, utcnow

logger = logging.getLogger(__name__)

# Two writers that read the same last version collide on the unique (app, name, version);
# the loser reads again. Each round lets at least one writer in, so this bounds how many
# saves of one secret may race at once.
MAX_SAVE_ATTEMPTS = 40
# A short random pause after a collision spreads out writers that would collide again.
RETRY_JITTER_SECONDS = 0.02

DISABLED_MESSAGE = (
    "backups are off because SECRETBOT_BACKUP_KEY is not set; set it to a base64 key of 32 random bytes "
    f"({NEW_KEY_COMMAND}) and keep a copy away from the bot's host"
)


class BackupStore:
    """Saves and reads backup versions; `value()` is the only way back to a value."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], sealer: Sealer | None, s3: S3Copy | None = None
    ) -> None:
        self._sessions = sessions
        self._sealer = sealer
        self._s3 = s3

    @property
    def enabled(self) -> bool:
        # A random per-process key would make every backup unreadable after a restart.
        return self._sealer is not None and not self._sealer.ephemeral

    def _require_sealer(self) -> Sealer:
        if self._sealer is None or self._sealer.ephemeral:
            raise BackupsDisabled(DISABLED_MESSAGE)
        return self._sealer

    async def save(self, *, app: str, name: str, value: str, run_id: str | None, created_by: str) -> BackupRecord:
        """Store `value` as the next version of `name` on `app`, then copy it to S3 if configured.

        Raises BackupsDisabled without a key and StorageError if the database write fails.
        A failed S3 copy does not raise: the returned record carries `s3_error` instead.
        """
        sealer = self._require_sealer()
        check_target(app, name)

        record, ciphertext = await self._insert(sealer, app=app, name=name, value=value, run_id=run_id,
                                                created_by=created_by)
        logger.info("backup saved app=%s secret=%s version=%d run_id=%s", app, name, record.version, run_id)
        if self._s3 is None:
            return record

        try:
            key = await self._s3.put(record, ciphertext)
        except S3CopyError as exc:
            logger.warning(
                "backup copy to S3 failed; the database copy is kept app=%s secret=%s version=%d error=%s",
                app, name, record.version, exc,
            )
            return replace(record, s3_error=str(exc))

        await self._set_s3_key(record, key)
        return replace(record, s3_key=key)

    async def _insert(
        self, sealer: Sealer, *, app: str, name: str, value: str, run_id: str | None, created_by: str
    ) -> tuple[BackupRecord, bytes]:
        for attempt in range(1, MAX_SAVE_ATTEMPTS + 1):
            try:
                async with self._sessions.begin() as session:
                    last = await session.scalar(
                        select(func.max(Backup.version)).where(Backup.app == app, Backup.name == name)
                    )
                    version = (last or 0) + 1
                    # Sealed inside the loop because the version is part of the associated data.
                    ciphertext = sealer.seal(value, context=sealing_context(app, name, version))
                    row = Backup(app=app, name=name, version=version, ciphertext=ciphertext, key_id=sealer.key_id,
                                 run_id=run_id, created_by=created_by)
                    session.add(row)
                    await session.flush()
                return BackupRecord.from_row(row), ciphertext
            except IntegrityError:
                logger.info("backup version raced another writer; retrying attempt=%d app=%s secret=%s",
                            attempt, app, name)
                await asyncio.sleep(random.uniform(0, RETRY_JITTER_SECONDS))
            except SQLAlchemyError as exc:
                raise StorageError(f"cannot save the backup of {name} for {app}: {type(exc).__name__}") from exc
        raise StorageError(f"could not save the backup of {name} for {app} after {MAX_SAVE_ATTEMPTS} attempts")

    async def _set_s3_key(self, record: BackupRecord, key: str) -> None:
        try:
            async with self._sessions.begin() as session:
                row = await self._row(session, record.app, record.name, record.version)
                if row is not None:
                    row.s3_key = key
        except SQLAlchemyError as exc:
            # The object exists either way; only the listing's S3 column is stale.
            logger.warning("cannot record the S3 key of a backup app=%s secret=%s version=%d error=%s",
                           record.app, record.name, record.version, type(exc).__name__)

    async def mark_deployed(self, *, app: str, name: str, version: int, fly_digest: str) -> BackupRecord:
        """Record Fly's digest of the version once the deploy that set it was verified."""
        try:
            async with self._sessions.begin() as session:
                row = await self._row(session, app, name, version)
                if row is None:
                    raise BackupNotFound(f"no backup of {name} version {version} for {app}")
                row.fly_digest = fly_digest
                row.deployed_at = utcnow()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot mark {app}/{name} version {version} deployed: {type(exc).__name__}") from exc
        logger.info("backup deployed app=%s secret=%s version=%d digest=%s", app, name, version, fly_digest)
        return BackupRecord.from_row(row)

    async def latest(self, app: str, name: str) -> BackupRecord | None:
        rows = await self._select(app, name, newest_first=True, limit=1)
        return BackupRecord.from_row(rows[0]) if rows else None

    async def versions(self, app: str, name: str | None = None) -> list[BackupRecord]:
        """Return the versions of `name` on `app` (every secret if `name` is None), oldest first."""
        return [BackupRecord.from_row(row) for row in await self._select(app, name, newest_first=False)]

    async def latest_verified(self, app: str, name: str) -> BackupRecord | None:
        """Return the newest version whose deploy was verified on Fly, the one a rollback restores."""
        verified = [record for record in await self.versions(app, name) if record.fly_digest]
        return verified[-1] if verified else None

    async def get(self, app: str, name: str, version: int | None = None) -> BackupRecord:
        """Return one version, the latest if `version` is None; raise BackupNotFound."""
        record = await self.latest(app, name) if version is None else await self._get(app, name, version)
        if record is None:
            version_text = "any version" if version is None else f"version {version}"
            raise BackupNotFound(
                f"no backup of {name} ({version_text}) for {app}; `secretbot backup list {app}` lists the versions"
            )
        return record

    async def _get(self, app: str, name: str, version: int) -> BackupRecord | None:
        async with self._sessions() as session:
            row = await self._row(session, app, name, version, with_ciphertext=False)
        return BackupRecord.from_row(row) if row else None

    async def value(self, app: str, name: str, version: int | None = None) -> str:
        """Decrypt one version, the latest if `version` is None.

        The caller writes the audit record: this method cannot tell who will see the value.
        """
        sealer = self._require_sealer()
        record = await self.get(app, name, version)
        async with self._sessions() as session:
            row = await self._row(session, app, name, record.version)
        if row is None:
            raise BackupNotFound(f"no backup of {name} version {record.version} for {app}")
        return open_ciphertext(sealer, BackupRecord.from_row(row), row.ciphertext)

    async def entries(self, app: str | None = None) -> list[dict[str, Any]]:
        """Return every version (of `app` only, if given) as portable entries that hold ciphertext only."""
        statement = select(Backup).order_by(Backup.app, Backup.name, Backup.version)
        if app is not None:
            statement = statement.where(Backup.app == app)
        async with self._sessions() as session:
            rows = list(await session.scalars(statement))
        return [to_entry(BackupRecord.from_row(row), row.ciphertext) for row in rows]

    async def _select(self, app: str, name: str | None, *, newest_first: bool, limit: int | None = None) -> list[Backup]:
        order = (Backup.name, Backup.version.desc()) if newest_first else (Backup.name, Backup.version)
        statement = select(Backup).options(defer(Backup.ciphertext)).where(Backup.app == app).order_by(*order)
        if name is not None:
            statement = statement.where(Backup.name == name)
        if limit is not None:
            statement = statement.limit(limit)
        async with self._sessions() as session:
            return list(await session.scalars(statement))

    @staticmethod
    async def _row(
        session: AsyncSession, app: str, name: str, version: int, *, with_ciphertext: bool = True
    ) -> Backup | None:
        statement = select(Backup).where(Backup.app == app, Backup.name == name, Backup.version == version)
        if not with_ciphertext:
            statement = statement.options(defer(Backup.ciphertext))
        return await session.scalar(statement)


def build_backup_store(
    *, settings: Settings, policy: Policy, sessions: async_sessionmaker[AsyncSession], sealer: Sealer | None
) -> BackupStore:
    """Build the bot's store from its settings and policy, raising ConfigError for a half-configured bucket."""
    s3 = S3Copy.from_settings(policy.backups.s3, settings) if policy.backups.s3 is not None else None
    store = BackupStore(sessions=sessions, sealer=sealer, s3=s3)
    if not store.enabled:
        logger.warning("backups are off: SECRETBOT_BACKUP_KEY is not set, so a lost value cannot be recovered")
    elif s3 is not None:
        logger.info("backups on, with a copy in bucket=%s prefix=%s", s3.bucket, s3.prefix)
    else:
        logger.info("backups on, in the database only")
    return store
