"""The services a running step uses: the run, the policy, flyctl, sealed values and the audit log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.backups import BackupStore
from bot.clock import Clock, SystemClock
from bot.flyctl import FlyctlClient, Redactor
from bot.inventory import InventoryStore
from bot.policy import Policy
from bot.runbook.views import RunView
from bot.sealing import SealError, Sealer
from bot.storage.models import PendingValue, RunSecret

logger = logging.getLogger(__name__)


class ValueLostError(Exception):
    """A sealed value can no longer be opened, usually after a restart without a fixed key."""


class AppLocks:
    """One change at a time per Fly app, held by a run from its import to its verification.

    flyctl rollouts on one app collide on machine leases, and a run verifying while
    another run's rollout restarts machines would see them replacing. The lock belongs
    to a run rather than a task, so two steps of the same run can share it.
    NOTE: the lock is per process; two bot processes on one database do not share it.
    """

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}
        self._changed = asyncio.Condition()

    async def acquire(self, app: str, run_id: str) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._holders.get(app) in (None, run_id))
            self._holders[app] = run_id

    async def release_run(self, run_id: str) -> None:
        async with self._changed:
            for app in [app for app, holder in self._holders.items() if holder == run_id]:
                del self._holders[app]
            self._changed.notify_all()

    def holder(self, app: str) -> str | None:
        return self._holders.get(app)


@dataclass
class Services:
    """Long-lived dependencies shared by every run."""

    policy: Policy
    sessions: async_sessionmaker[AsyncSession]
    flyctl: FlyctlClient
    sealer: Sealer
    redactor: Redactor
    backups: BackupStore
    app_locks: AppLocks = field(default_factory=AppLocks)
    clock: Clock = field(default_factory=SystemClock)
    inventory: InventoryStore = field(init=False)

    def __post_init__(self) -> None:
        self.inventory = InventoryStore(sessions=self.sessions, policy=self.policy, clock=self.clock)


@dataclass
class StepContext:
    run: RunView
    position: int
    services: Services
    reporter: Callable[[str], Awaitable[None]]

    @property
    def policy(self) -> Policy:
        return self.services.policy

    @property
    def flyctl(self) -> FlyctlClient:
        return self.services.flyctl

    def log_context(self) -> str:
        return f"run_id={self.run.id} step={self.position} app={self.run.app} secrets={','.join(self.run.secret_names)}"

    async def fly_digests(self) -> dict[str, str]:
        """Return Fly's digest of each secret of the run's app, from `flyctl secrets list`."""
        return {secret.name: secret.digest for secret in await self.flyctl.list_secrets(self.run.app)}

    async def report(self, message: str) -> None:
        """Show a progress message for this step (a thread reply in Slack)."""
        await self.reporter(self.services.redactor.redact(message))

    async def audit(self, event: str, *, actor: str | None = None, secret: str | None = None, **detail: Any) -> None:
        await audit.append(
            self.services.sessions,
            audit.AuditEntry(
                event=event,
                actor=actor,
                run_id=self.run.id,
                app=self.run.app,
                secret=secret if secret is not None else ",".join(self.run.secret_names),
                detail={"step": self.position, **detail},
            ),
        )

    async def store_values(self, values: Mapping[str, str]) -> None:
        """Keep new values encrypted until the step that applies them."""
        for value in values.values():
            self.services.redactor.add(value)
        async with self.services.sessions.begin() as session:
            await session.execute(
                delete(PendingValue).where(PendingValue.run_id == self.run.id, PendingValue.name.in_(list(values)))
            )
            for name, value in values.items():
                session.add(
                    PendingValue(
                        run_id=self.run.id,
                        name=name,
                        ciphertext=self.services.sealer.seal(value, context=f"{self.run.id}/{name}"),
                        key_id=self.services.sealer.key_id,
                    )
                )

    async def pending_names(self) -> set[str]:
        """Return the names that already have a new value waiting, without decrypting them."""
        async with self.services.sessions() as session:
            rows = await session.scalars(select(PendingValue.name).where(PendingValue.run_id == self.run.id))
            return set(rows)

    async def load_values(self) -> dict[str, str]:
        async with self.services.sessions() as session:
            rows = list(await session.scalars(select(PendingValue).where(PendingValue.run_id == self.run.id)))
        values: dict[str, str] = {}
        for row in rows:
            if row.key_id != self.services.sealer.key_id:
                raise ValueLostError(f"the new value of {row.name} was encrypted with a key this process does not have")
            try:
                values[row.name] = self.services.sealer.open(row.ciphertext, context=f"{self.run.id}/{row.name}")
            except SealError as exc:
                raise ValueLostError(f"the new value of {row.name} cannot be decrypted") from exc
        for value in values.values():
            self.services.redactor.add(value)
        return values

    async def clear_values(self) -> None:
        async with self.services.sessions.begin() as session:
            await session.execute(delete(PendingValue).where(PendingValue.run_id == self.run.id))

    async def record_digests(self, *, before: Mapping[str, str | None] | None = None,
                             after: Mapping[str, str | None] | None = None) -> None:
        async with self.services.sessions.begin() as session:
            for name in self.run.secret_names:
                changes: dict[str, Any] = {}
                if before is not None and name in before:
                    changes["digest_before"] = before[name]
                if after is not None and name in after:
                    changes["digest_after"] = after[name]
                if changes:
                    await session.execute(
                        update(RunSecret)
                        .where(RunSecret.run_id == self.run.id, RunSecret.name == name)
                        .values(**changes)
                    )
