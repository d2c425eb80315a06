"""Summaries of runs started from a terminal, queued in the database until Slack takes them.

A terminal run may happen while Slack is down, so its summary is stored first and posted
afterwards: by the terminal itself when Slack is reachable, otherwise by a `secretbot serve`
process (at start-up and then periodically) or by the next terminal run. Each poster
claims the row with a conditional UPDATE, so of several processes only one posts it.

NOTE: a process that dies after Slack accepted the post but before the row is marked
`posted` leaves a claim that another process takes over after CLAIM_LEASE, so that
summary is posted twice. chat.postMessage has no idempotency key to prevent this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock, SystemClock
from bot.errors import SecretbotError
from bot.reminders.ledger import process_identity
from bot.runbook.views import RunView
from bot.storage.models import SummaryPost

logger = logging.getLogger(__name__)

QUEUED = "queued"
POSTING = "posting"
POSTED = "posted"

# A post, with Slack's rate-limit waits, takes seconds; a claim this old belongs to a
# process that died, and another process may take it over.
CLAIM_LEASE = timedelta(minutes=5)
# How often `secretbot serve` looks for queued summaries after its start-up check.
FLUSH_INTERVAL_SECONDS = 60.0
# Step details kept per step; the whole detail is in the audit log.
DETAIL_LENGTH = 300


class SummaryPostError(SecretbotError):
    """Slack did not accept a run summary; the summary stays queued."""


@dataclass(frozen=True)
class StepSummary:
    title: str
    status: str
    # The first line of the step's outcome, shortened.
    detail: str | None
    actor: str | None


@dataclass(frozen=True)
class SecretDigests:
    name: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class RunSummary:
    """The body of a queued summary: what a terminal run did, without any value."""

    run_id: str
    title: str
    kind: str
    app: str
    status: str
    outcome: str | None
    reason: str | None
    requester: str
    # The free-text name given with --operator, if any, and the host the run came from.
    operator: str | None
    hostname: str
    created_at: datetime
    finished_at: datetime | None
    secrets: tuple[SecretDigests, ...]
    steps: tuple[StepSummary, ...]

    @property
    def headline(self) -> str:
        return f"{self.title} {', '.join(secret.name for secret in self.secrets)} on {self.app}"

    @classmethod
    def from_run(cls, run: RunView, *, operator: str | None, hostname: str) -> RunSummary:
        steps = tuple(
            StepSummary(title=step.title, status=step.status, actor=step.actor,
                        detail=_first_line(step.detail))
            for step in run.steps
        )
        secrets = tuple(SecretDigests(secret.name, secret.digest_before, secret.digest_after) for secret in run.secrets)
        return cls(run_id=run.id, title=run.title, kind=run.kind, app=run.app, status=run.status,
                   outcome=run.outcome, reason=run.reason, requester=run.requester, operator=operator,
                   hostname=hostname, created_at=run.created_at, finished_at=run.finished_at,
                   secrets=secrets, steps=steps)

    def to_json(self) -> str:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        data: dict[str, Any] = json.loads(text)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        data["finished_at"] = datetime.fromisoformat(data["finished_at"]) if data["finished_at"] else None
        data["secrets"] = tuple(SecretDigests(**item) for item in data["secrets"])
        data["steps"] = tuple(StepSummary(**item) for item in data["steps"])
        return cls(**data)


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    line = text.splitlines()[0]
    return line if len(line) <= DETAIL_LENGTH else line[: DETAIL_LENGTH - 1] + "…"


class SummaryPoster(Protocol):
    async def post(self, summary: RunSummary, *, channel: str, queued_at: datetime | None) -> str:
        """Post `summary` in `channel` and return the message's ts; raise SummaryPostError on failure.

        `queued_at` is set when the summary waited in the queue, so the message can mark it as late.
        """
        ...


@dataclass(frozen=True)
class Claim:
    """A summary row that this process has claimed and is posting."""

    id: int
    run_id: str
    channel: str
    body: str
    created_at: datetime
    owner: str
    claimed_at: datetime


@dataclass(frozen=True)
class FlushResult:
    posted: int
    # Slack's error for the summary that could not be posted, which ends the flush.
    error: str | None = None


class SummaryQueue:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], owner: str | None = None,
                 clock: Clock | None = None, lease: timedelta = CLAIM_LEASE) -> None:
        self.sessions = sessions
        self.owner = owner or process_identity()
        self.clock = clock or SystemClock()
        self.lease = lease

    async def enqueue(self, summary: RunSummary, *, channel: str, claim: bool) -> Claim | None:
        """Store the summary of a run; with `claim`, the row is claimed by this process to post it at once.

        A claimed row is never in state `queued`, so no other process starts posting it
        meanwhile. Returns the claim, or None without `claim`.
        """
        now = self.clock.now()
        async with self.sessions.begin() as session:
            row = SummaryPost(run_id=summary.run_id, channel=channel, body=summary.to_json(),
                              status=POSTING if claim else QUEUED, created_at=now,
                              claimed_by=self.owner if claim else None, claimed_at=now if claim else None,
                              attempts=1 if claim else 0)
            session.add(row)
            await session.flush()
            held = Claim(id=row.id, run_id=summary.run_id, channel=channel, body=row.body, created_at=now,
                         owner=self.owner, claimed_at=now)
        logger.info("run summary queued run_id=%s channel=%s claimed=%s", summary.run_id, channel, claim)
        return held if claim else None

    async def claim_next(self) -> Claim | None:
        """Claim the oldest summary that is queued, or whose claim has expired; None when there is none."""
        now = self.clock.now()
        async with self.sessions() as session:
            candidates = list(await session.scalars(
                select(SummaryPost)
                .where(or_(SummaryPost.status == QUEUED,
                           (SummaryPost.status == POSTING) & (SummaryPost.claimed_at <= now - self.lease)))
                .order_by(SummaryPost.id).limit(20)))
        for row in candidates:
            # The old status, claimer and claim time in the WHERE clause make this a
            # compare-and-set: of two processes claiming the same row, one UPDATE matches.
            conditions = [SummaryPost.id == row.id, SummaryPost.status == row.status]
            if row.claimed_at is None:
                conditions.append(SummaryPost.claimed_at.is_(None))
            else:
                conditions.append(SummaryPost.claimed_at == row.claimed_at)
            async with self.sessions.begin() as session:
                result = await session.execute(
                    update(SummaryPost).where(*conditions)
                    .values(status=POSTING, claimed_by=self.owner, claimed_at=now, attempts=row.attempts + 1)
                    .execution_options(synchronize_session=False))
            if _row_count(result) != 1:
                continue
            if row.status == POSTING:
                logger.warning("run summary claim taken over run_id=%s previous=%s", row.run_id, row.claimed_by)
            return Claim(id=row.id, run_id=row.run_id, channel=row.channel, body=row.body, created_at=row.created_at,
                         owner=self.owner, claimed_at=now)
        return None

    async def post(self, claim: Claim, poster: SummaryPoster, *, late: bool) -> str:
        """Post a claimed summary and mark it posted; on failure put it back in the queue and raise.

        Returns the message's ts. Raises SummaryPostError with Slack's error.
        """
        summary = RunSummary.from_json(claim.body)
        try:
            message_ts = await poster.post(summary, channel=claim.channel, queued_at=claim.created_at if late else None)
        except SummaryPostError as exc:
            await self._release(claim, error=str(exc))
            raise
        await self._mark_posted(claim, message_ts=message_ts)
        return message_ts

    async def flush(self, poster: SummaryPoster) -> FlushResult:
        """Post every queued summary, oldest first, until the queue is empty or Slack fails."""
        posted = 0
        while (claim := await self.claim_next()) is not None:
            try:
                await self.post(claim, poster, late=True)
            except SummaryPostError as exc:
                logger.warning("queued run summary not posted run_id=%s error=%s", claim.run_id, exc)
                return FlushResult(posted=posted, error=str(exc))
            posted += 1
        return FlushResult(posted=posted)

    async def run(self, poster: SummaryPoster, stop: asyncio.Event, *,
                  interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        """Post queued summaries now and then every `interval` seconds, until `stop` is set."""
        while not stop.is_set():
            try:
                result = await self.flush(poster)
                if result.posted:
                    logger.info("queued run summaries posted count=%d", result.posted)
            except Exception:
                logger.exception("posting queued run summaries failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def status_of(self, run_id: str) -> str | None:
        async with self.sessions() as session:
            return await session.scalar(select(SummaryPost.status).where(SummaryPost.run_id == run_id))

    async def _mark_posted(self, claim: Claim, *, message_ts: str) -> None:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(SummaryPost)
                .where(SummaryPost.id == claim.id, SummaryPost.status == POSTING, SummaryPost.claimed_by == claim.owner)
                .values(status=POSTED, posted_at=self.clock.now(), message_ts=message_ts, last_error=None)
                .execution_options(synchronize_session=False))
        if _row_count(result) != 1:
            logger.error("run summary claim was taken over before it was marked posted run_id=%s owner=%s",
                         claim.run_id, claim.owner)
            return
        logger.info("run summary posted run_id=%s channel=%s ts=%s", claim.run_id, claim.channel, message_ts)

    async def _release(self, claim: Claim, *, error: str) -> None:
        async with self.sessions.begin() as session:
            await session.execute(
                update(SummaryPost)
                .where(SummaryPost.id == claim.id, SummaryPost.status == POSTING, SummaryPost.claimed_by == claim.owner)
                .values(status=QUEUED, claimed_by=None, claimed_at=None, last_error=error[:255])
                .execution_options(synchronize_session=False))


def _row_count(result: object) -> int:
    return result.rowcount if isinstance(result, CursorResult) else -1
