"""Automatic rotation: the bot opens the rotation run of a due `auto_rotate` secret by itself.

The run is an ordinary rotation with the requester AUTOMATIC_REQUESTER ("secretbot"): it
is posted in the runbook channel and waits for an approver like any other. The check runs
after every inventory sync of all apps (at start-up, periodically, on `/secret sync` and
before the daily reminder), because a sync is what moves a secret's due date.

Exactly once per due date: a row in `auto_rotations`, unique per app, secret and due time,
is inserted before the run is started. Another process, or this one after a restart,
fails that insert and opens nothing. A run that ended (denied, failed) still keeps its
claim, so the bot does not ask again for the same due date. A rotation that reached Fly
moves the due date, and the next due date gets a new claim.

NOTE: a process that dies between the claim and the start of its run leaves a claim with
no run; that due date then gets no automatic run, and the reminder offers Rotate now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.errors import SecretbotError
from bot.inventory.schedule import SecretStatus
from bot.inventory.store import InventoryStore
from bot.inventory.sync import AppSync, InventorySync
from bot.policy import Policy
from bot.reminders.ledger import process_identity
from bot.runbook.context import AUTOMATIC_REQUESTER
from bot.runbook.engine import AlreadyOpen, Engine, Rejected
from bot.storage.models import AutoRotation, RunSecret

logger = logging.getLogger(__name__)

OPENED = "opened"
ALREADY_OPEN = "already_open"
REJECTED = "rejected"
AUTO_STARTED_EVENT = "run.auto_started"


@dataclass(frozen=True)
class AutoRun:
    """A run opened automatically, as the reminder lists it."""

    app: str
    name: str
    run_id: str
    due_at: str


def is_candidate(status: SecretStatus, policy: Policy) -> bool:
    """Tell whether a secret should get an automatic run now: configured, due, not snoozed, no run open.

    A snooze delays the automatic run too, since it is a decision to rotate later.
    """
    secret = policy.secret(status.name)
    return (secret is not None and secret.auto_rotate and status.known_app and status.is_overdue
            and not status.snoozed and status.open_run_id is None)


class AutoRotator:
    def __init__(self, *, engine: Engine, store: InventoryStore, sessions: async_sessionmaker[AsyncSession],
                 policy: Policy, owner: str | None = None) -> None:
        self.engine = engine
        self.store = store
        self.sessions = sessions
        self.policy = policy
        self.owner = owner or process_identity()
        # The periodic sync and the reminder's sync may check at once. Taking turns lets
        # the second see the first's run as open, so the reminder lists it as opened.
        self._turn = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return any(secret.auto_rotate for secret in self.policy.secrets.values())

    async def check(self) -> list[AutoRun]:
        """Open a run for every due `auto_rotate` secret whose due date has no claim yet; return the new runs."""
        if not self.enabled:
            return []
        opened: list[AutoRun] = []
        async with self._turn:
            for status in await self.store.statuses():
                if not is_candidate(status, self.policy):
                    continue
                run = await self._open(status)
                if run is not None:
                    opened.append(run)
        return opened

    async def check_guarded(self) -> None:
        """Run `check`, logging instead of raising, so a failure never stops a sync or a reminder."""
        try:
            await self.check()
        except Exception:
            logger.exception("automatic rotation check failed; the next sync checks again")

    async def _open(self, status: SecretStatus) -> AutoRun | None:
        due_at = status.due_at.isoformat()
        claim_id = await self._claim(status.app, status.name, due_at)
        if claim_id is None:
            return None

        reason = f"automatic rotation: due on {status.due_at:%Y-%m-%d} (auto_rotate in secretbot.toml)"
        result = await self.engine.start_run(kind="rotate", app=status.app, secret_names=self._names(status.name),
                                             requester=AUTOMATIC_REQUESTER, reason=reason)
        if isinstance(result, AlreadyOpen):
            logger.info("automatic rotation not opened: run open app=%s secret=%s run_id=%s", status.app,
                        status.name, result.run_id)
            await self._settle(claim_id, outcome=ALREADY_OPEN, run_id=result.run_id)
            return None
        if isinstance(result, Rejected):
            logger.warning("automatic rotation rejected app=%s secret=%s reason=%s", status.app, status.name,
                           result.reason)
            await self._settle(claim_id, outcome=REJECTED, run_id=None)
            return None

        run_id = result.run.id
        await self._settle(claim_id, outcome=OPENED, run_id=run_id)
        logger.info("automatic rotation opened app=%s secret=%s run_id=%s due_at=%s", status.app, status.name,
                    run_id, due_at)
        try:
            await audit.append(self.sessions, audit.AuditEntry(
                event=AUTO_STARTED_EVENT, actor=AUTOMATIC_REQUESTER, run_id=run_id, app=status.app,
                secret=",".join(result.run.secret_names),
                detail={"due_at": due_at, "priority": status.priority.value, "claimed_by": self.owner}))
        except SecretbotError as exc:
            logger.error("audit record of an automatic rotation not written run_id=%s error=%s", run_id, exc)
        return AutoRun(app=status.app, name=status.name, run_id=run_id, due_at=due_at)

    def _names(self, name: str) -> tuple[str, ...]:
        # A paired secret rotates with its partner, as `/secret rotate` does it.
        partner = self.policy.secrets[name].paired_with
        return (name,) if partner is None else (name, partner)

    async def _claim(self, app: str, name: str, due_at: str) -> int | None:
        """Insert the claim for this due date; None when it exists (another process, or an earlier run)."""
        try:
            async with self.sessions.begin() as session:
                row = AutoRotation(app=app, name=name, due_at=due_at, claimed_by=self.owner)
                session.add(row)
                await session.flush()
                return row.id
        except IntegrityError:
            logger.debug("automatic rotation already claimed app=%s secret=%s due_at=%s", app, name, due_at)
            return None

    async def _settle(self, claim_id: int, *, outcome: str, run_id: str | None) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(AutoRotation).where(AutoRotation.id == claim_id)
                                  .values(outcome=outcome, run_id=run_id))


async def open_automatic_runs(sessions: async_sessionmaker[AsyncSession]) -> dict[tuple[str, str], str]:
    """Return the runs opened automatically that are still open, by (app, secret), for the reminder."""
    async with sessions() as session:
        rows = await session.execute(
            select(AutoRotation.app, AutoRotation.name, AutoRotation.run_id)
            .join(RunSecret, (RunSecret.run_id == AutoRotation.run_id) & (RunSecret.name == AutoRotation.name))
            .where(AutoRotation.outcome == OPENED, RunSecret.open.is_(True)))
        return {(app, name): run_id for app, name, run_id in rows if run_id is not None}


class RotatingInventorySync(InventorySync):
    """The inventory sync of `secretbot serve`: after each sync of all apps, it opens due automatic rotations."""

    def __init__(self, *, rotator: AutoRotator | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rotator = rotator

    async def sync_all(self, apps: Iterable[str] | None = None) -> list[AppSync]:
        results = await super().sync_all(apps)
        if self.rotator is not None:
            await self.rotator.check_guarded()
        return results
