"""Reading a pending value on the bot's host, for the person who updates an external system."""

from __future__ import annotations

import getpass
import logging

from sqlalchemy import select

from bot import audit
from bot.errors import ConfigError, SecretbotError
from bot.sealing import SealError, Sealer
from bot.settings import Settings
from bot.storage.db import create_engine, create_session_factory, schema_is_current
from bot.storage.models import PendingValue, Run

logger = logging.getLogger(__name__)


async def show_pending_value(settings: Settings, *, run_id: str, name: str) -> str:
    """Decrypt the value that run `run_id` holds for `name`, after writing an audit record."""
    if not settings.backup_key:
        raise ConfigError(
            "SECRETBOT_BACKUP_KEY is not set in this shell; use the same key as the running bot "
            "(without one, the bot keeps pending values under a key that only its own process has)"
        )
    sealer = Sealer.from_setting(settings.backup_key)
    engine = create_engine(settings.database_url)
    try:
        if not await schema_is_current(engine):
            raise SecretbotError("the database schema is not current; start the bot once to migrate it")
        sessions = create_session_factory(engine)
        async with sessions() as session:
            run = await session.get(Run, run_id)
            row = await session.scalar(
                select(PendingValue).where(PendingValue.run_id == run_id, PendingValue.name == name)
            )
        if run is None:
            raise SecretbotError(f"run {run_id} does not exist")
        if row is None:
            raise SecretbotError(
                f"run {run_id} has no pending value for {name}; a run keeps one only between the "
                "generate step and the Fly update"
            )
        if row.key_id != sealer.key_id:
            raise SecretbotError(
                f"the value of {name} in run {run_id} was encrypted with another key; "
                "SECRETBOT_BACKUP_KEY here differs from the bot's"
            )
        try:
            value = sealer.open(row.ciphertext, context=f"{run_id}/{name}")
        except SealError as exc:
            raise SecretbotError(f"the value of {name} in run {run_id} cannot be decrypted") from exc
        await audit.append(
            sessions,
            audit.AuditEntry(event="value.shown", actor=f"local:{getpass.getuser()}", run_id=run_id,
                             app=run.app, secret=name, detail={"where": "terminal"}),
        )
        return value
    finally:
        await engine.dispose()
