"""Read-only queries behind the status views: one secret's audit history and the open runs.

The Slack views, the Home tab and `secretbot status` all read through here, so they list
the same records and runs. The order of secrets is in bot/inventory/urgency.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.runbook.views import TERMINAL_STATUSES
from bot.storage.models import AuditRecord, Run

HISTORY_LIMIT = 25


@dataclass(frozen=True)
class SecretHistory:
    """The newest audit records of one secret and how many older ones were left out."""

    app: str
    name: str
    records: list[AuditRecord]
    older: int


async def secret_history(sessions: async_sessionmaker[AsyncSession], *, app: str, name: str,
                         limit: int = HISTORY_LIMIT) -> SecretHistory:
    """Read the audit records of one secret on one app, newest first.

    A run on several secrets stores them comma-joined in one record's `secret`, so those
    records match when `name` is one of the list.
    """
    async with sessions() as session:
        dialect = session.get_bind().dialect.name
        matches = [AuditRecord.app == app, _secret_includes(name, dialect=dialect)]
        records = list(await session.scalars(
            select(AuditRecord).where(*matches).order_by(AuditRecord.id.desc()).limit(limit)))
        total = await session.scalar(select(func.count()).select_from(AuditRecord).where(*matches)) or 0
    return SecretHistory(app=app, name=name, records=records, older=max(0, total - len(records)))


def _secret_includes(name: str, *, dialect: str) -> ColumnElement[bool]:
    """Match a record whose `secret` is `name` alone or has it as one item of a comma-joined list.

    SQLite's LIKE ignores case, and secret names are case-sensitive, so SQLite uses GLOB.
    Names are letters, digits and underscores, none of which GLOB treats as a wildcard;
    LIKE treats `_` as one, so the other databases escape it.
    """
    column = AuditRecord.secret
    if dialect == "sqlite":
        return or_(column == name, column.op("GLOB")(f"{name},*"), column.op("GLOB")(f"*,{name}"),
                   column.op("GLOB")(f"*,{name},*"))
    return or_(column == name, column.startswith(f"{name},", autoescape=True),
               column.endswith(f",{name}", autoescape=True), column.contains(f",{name},", autoescape=True))


@dataclass(frozen=True)
class OpenRun:
    """A run that has not finished, as listed on the Home tab."""

    id: str
    kind: str
    app: str
    secret_names: tuple[str, ...]
    status: str
    requester: str
    created_at: datetime


async def open_runs(sessions: async_sessionmaker[AsyncSession], *, limit: int = 50) -> list[OpenRun]:
    """Read the unfinished runs, oldest first, at most `limit` of them."""
    async with sessions() as session:
        runs = await session.scalars(
            select(Run).where(Run.status.not_in(TERMINAL_STATUSES)).order_by(Run.created_at).limit(limit))
        return [
            OpenRun(id=run.id, kind=run.kind, app=run.app, secret_names=tuple(secret.name for secret in run.secrets),
                    status=run.status, requester=run.requester, created_at=run.created_at)
            for run in runs
        ]
