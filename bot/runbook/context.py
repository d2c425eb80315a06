"""The services a running step uses: the run, the policy, flyctl, sealed values and the audit log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.backups import BackupStore
from bot.clock import Clock, SystemClock
from bot.errors import ConfigError
from bot.flyctl import FlyctlClient, Redactor
from bot.inventory import InventoryStore
from bot.inventory.added import AddedPolicies, load_added_policies
from bot.people import People
from bot.policy import Policy, SecretPolicy
from bot.runbook.views import TERMINAL_STATUSES, RunView
from bot.sealing import SealError, Sealer
from bot.shared_reads import FreshSharedRead
from bot.storage.models import AppLock, Decision, PendingValue, Run, RunSecret, utcnow
from bot.terminal.lease import lease_expired

logger = logging.getLogger(__name__)


# The requester of a run the bot opens by itself, for a secret with `auto_rotate = true`.
AUTOMATIC_REQUESTER = "secretbot"


class ValueLostError(Exception):
    """A sealed value can no longer be opened, usually after a restart without a fixed key."""


# A lock holder that is not a run: `secretbot import`, or a fix started from /secret diagnose.
# No run row tells whether such a holder still lives, so it refreshes acquired_at while it
# works (`refresh`), and its lock is stale once OPERATION_LEASE passes without a refresh.
OPERATION_PREFIX = "op-"
OPERATION_LEASE = timedelta(minutes=2)


class AppLocks:
    """One change at a time per Fly app, held by a run from its import to its verification.

    flyctl rollouts on one app collide on machine leases, and a run verifying while
    another run's rollout restarts machines would see them replacing. The lock is a row
    keyed by the app, so it holds across bot processes sharing the database. It belongs
    to a run rather than a task, so a run resumed after a restart still holds it, and a
    lock left by a run that has ended is cleared by the next run that wants the app.
    An operation (a holder ID starting with OPERATION_PREFIX) holds it while it refreshes it.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, poll_interval: float = 0.5) -> None:
        self.sessions = sessions
        self.poll_interval = poll_interval

    async def acquire(self, app: str, run_id: str) -> None:
        logged_holder: str | None = None
        while True:
            holder = await self._try_acquire(app, run_id)
            if holder is None:
                return
            if holder != logged_holder:
                logger.info("waiting for another run's change to finish run_id=%s app=%s holder=%s", run_id, app, holder)
                logged_holder = holder
            await asyncio.sleep(self.poll_interval)

    async def try_acquire(self, app: str, holder_id: str) -> str | None:
        """Take the lock once if it is free or stale; return the run or operation holding it otherwise."""
        return await self._try_acquire(app, holder_id)

    async def refresh(self, app: str, holder_id: str) -> bool:
        """Mark an operation's lock as still in use; False when the lock is no longer `holder_id`'s."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(AppLock).where(AppLock.app == app, AppLock.run_id == holder_id).values(acquired_at=utcnow()))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _try_acquire(self, app: str, run_id: str) -> str | None:
        """Take the lock if it is free or stale; return the run holding it otherwise."""
        try:
            async with self.sessions.begin() as session:
                lock = (await session.execute(
                    select(AppLock.run_id, AppLock.acquired_at).where(AppLock.app == app))).first()
                holder = lock.run_id if lock is not None else None
                if holder == run_id:
                    return None
                if lock is not None and holder is not None:
                    if holder.startswith(OPERATION_PREFIX):
                        if lock.acquired_at > utcnow() - OPERATION_LEASE:
                            return holder
                        logger.warning("clearing a lock left by an operation that stopped refreshing it "
                                       "app=%s holder=%s", app, holder)
                    else:
                        run = (await session.execute(select(Run.status, Run.origin, Run.heartbeat_at, Run.updated_at)
                                                     .where(Run.id == holder))).first()
                        if run is not None and run.status not in TERMINAL_STATUSES:
                            # A terminal run whose process stopped refreshing its lease died
                            # with the lock; `secretbot run --abandon` ends the run itself.
                            if run.origin != "terminal" or not lease_expired(run.heartbeat_at, run.updated_at):
                                return holder
                            logger.warning("clearing a lock left by a terminal run whose process stopped "
                                           "refreshing its lease app=%s holder=%s", app, holder)
                        else:
                            logger.warning("clearing a lock left by an ended run app=%s holder=%s", app, holder)
                    await session.execute(delete(AppLock).where(AppLock.app == app, AppLock.run_id == holder))
                session.add(AppLock(app=app, run_id=run_id, acquired_at=utcnow()))
        except IntegrityError:
            # Another process took it between the read and the insert.
            return "another process"
        return None

    async def release_run(self, run_id: str) -> None:
        async with self.sessions.begin() as session:
            await session.execute(delete(AppLock).where(AppLock.run_id == run_id))

    async def holder(self, app: str) -> str | None:
        async with self.sessions() as session:
            return await session.scalar(select(AppLock.run_id).where(AppLock.app == app))


@dataclass
class Services:
    """Long-lived dependencies shared by every run.

    `policy` has the user groups in slack.approvers and slack.operators expanded into
    user IDs as of the last `resolve_people()`, and the policies of added secrets as of the
    last `refresh_added_policies()`; `configured_policy` is the file as read.
    """

    policy: Policy
    sessions: async_sessionmaker[AsyncSession]
    flyctl: FlyctlClient
    sealer: Sealer
    redactor: Redactor
    backups: BackupStore
    clock: Clock = field(default_factory=SystemClock)
    people: People = field(default_factory=People)
    app_locks: AppLocks = field(init=False)
    inventory: InventoryStore = field(init=False)
    configured_policy: Policy = field(init=False)
    _added_reads: FreshSharedRead[AddedPolicies] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.configured_policy = self.policy
        self.app_locks = AppLocks(self.sessions)
        self.inventory = InventoryStore(sessions=self.sessions, policy=self.policy, clock=self.clock)
        # Every command reads these before it is parsed, so a burst of commands shares reads.
        self._added_reads = FreshSharedRead(lambda: load_added_policies(self.sessions))

    async def refresh_policy(self) -> Policy:
        """Re-read stale user groups and the policies of added secrets, and return the policy with both.

        The engine calls this before it runs steps and before it takes a decision, so a run
        resumed after a restart, or decided in another process, reads the stored choices too.
        """
        await self.resolve_people()
        await self.refresh_added_policies()
        return self.policy

    async def resolve_people(self) -> Policy:
        """Re-read stale user groups and return the policy with approvers and operators as user IDs.

        Listeners that only check who may act call this rather than `refresh_policy`: it
        reads the database not at all, and Slack only when a group's cached members are
        stale, so it fits before an acknowledgement.
        """
        resolved = await self.people.resolve(self.configured_policy)
        self.policy = resolved.with_added(self.policy.added)
        return self.policy

    async def refresh_added_policies(self) -> Mapping[str, Mapping[str, SecretPolicy]]:
        """Re-read the policies chosen with `/secret add` into `policy.added` and return them.

        When the database cannot be read, the choices read last are kept, so secrets listed in
        secretbot.toml stay rotatable.
        """
        try:
            added = await self._added_reads.get()
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("reading the policies of added secrets failed; keeping the last ones read error=%s",
                           type(exc).__name__)
            return self.policy.added
        self.policy = self.policy.with_added(added)
        return added

    async def may_operate(self, user_id: str) -> bool:
        """Tell whether `user_id` may start runbooks and snooze reminders.

        An empty slack.operators in the file lets everyone. A configured list whose groups
        expand to no user (a group that cannot be read, or is empty) lets no one, so a
        Slack failure never opens the bot to the whole workspace. The bot itself
        (AUTOMATIC_REQUESTER, for `auto_rotate`) may; no Slack user ID has that form.
        """
        if user_id == AUTOMATIC_REQUESTER:
            return True
        resolved = await self.resolve_people()
        if not self.configured_policy.slack.operators:
            return True
        return user_id in resolved.slack.operators


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

    def secret_policy(self, name: str) -> SecretPolicy:
        """Return the policy of one of the run's secrets, from secretbot.toml or as chosen when it was added."""
        policy = self.policy.secret_for(self.run.app, name)
        if policy is None:
            raise ConfigError(
                f"{name} on {self.run.app} is neither in secretbot.toml nor added with `/secret add`, so there is "
                f"no policy to rotate it by; add a [secrets.{name}] table and start a new run")
        return policy

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

    async def decisions(self, position: int | None = None) -> list[Decision]:
        """Return the decisions taken on a step of this run (this step by default), oldest first."""
        step = self.position if position is None else position
        async with self.services.sessions() as session:
            return list(await session.scalars(
                select(Decision).where(Decision.run_id == self.run.id, Decision.position == step)
                .order_by(Decision.round)))

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
