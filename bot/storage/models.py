"""ORM models. Every table here contains digests, IDs and ciphertext, never a secret value."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware datetime.

    SQLite has no time zone type and returns naive values, so the zone is restored here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One execution of a runbook (rotate, and later compromised or lost)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    app: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(16), default="slack")
    # pending | running | waiting | succeeded | failed | denied
    status: Mapped[str] = mapped_column(String(16))
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Refreshed by the `secretbot run` process driving a terminal run while it lives, so a
    # run whose process died can be told from one whose operator is thinking.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    secrets: Mapped[list[RunSecret]] = relationship(
        back_populates="run", order_by="RunSecret.position", lazy="selectin"
    )
    steps: Mapped[list[Step]] = relationship(back_populates="run", order_by="Step.position", lazy="selectin")
    # Read with the run, so a view can name everyone who decided a step (two approvers).
    decisions: Mapped[list[Decision]] = relationship(order_by="Decision.round", lazy="selectin", viewonly=True)


class RunSecret(Base):
    """A secret that a run changes, with its digests before and after."""

    __tablename__ = "run_secrets"
    __table_args__ = (
        # At most one open run per app and secret, enforced by the database so that two
        # bot processes cannot both start one.
        Index(
            "uq_run_secrets_open",
            "app",
            "name",
            unique=True,
            sqlite_where=text("open = 1"),
            postgresql_where=text("open"),
        ),
        UniqueConstraint("run_id", "name", name="uq_run_secrets_run_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    app: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    open: Mapped[bool | None] = mapped_column(Boolean, default=True)
    digest_before: Mapped[str | None] = mapped_column(String(128))
    digest_after: Mapped[str | None] = mapped_column(String(128))
    # The policy a person chose for a secret that an add run creates (priority high, medium
    # or low, value_source generated or provider); NULL when secretbot.toml sets it.
    priority: Mapped[str | None] = mapped_column(String(16))
    value_source: Mapped[str | None] = mapped_column(String(16))
    # The backup version an unset run keeps for a later restore, or that a restore run sets.
    backup_version: Mapped[int | None] = mapped_column(Integer)

    run: Mapped[Run] = relationship(back_populates="secrets")


class Step(Base):
    """One step of a run; its status is the checklist shown to people."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "position", name="uq_steps_run_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    # pending | running | waiting | done | skipped | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    detail: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    run: Mapped[Run] = relationship(back_populates="steps")


class Decision(Base):
    """A person's decision on a waiting step. The unique key admits only the first one per round."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("run_id", "position", "round", name="uq_decisions_run_position_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # 0 for the first decision on a step; a step that waits again (a second approval)
    # takes its next decision in round 1.
    round: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    user_id: Mapped[str] = mapped_column(String(64))
    # approve | deny | done
    decision: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunThread(Base):
    """The place a run is shown: for Slack, the channel and the parent message."""

    __tablename__ = "run_threads"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    surface: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64))
    message_ts: Mapped[str] = mapped_column(String(32))


class PendingValue(Base):
    """A new value between the step that makes it and the step that applies it, encrypted."""

    __tablename__ = "pending_values"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_pending_values_run_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # Identifies the key that encrypted the value, so a restart with another key is detected.
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRecord(Base):
    """Append-only audit trail; each record carries the hash of the one before it."""

    __tablename__ = "audit_log"
    # The history of one secret is read newest first.
    __table_args__ = (Index("ix_audit_log_app_secret", "app", "secret", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    app: Mapped[str | None] = mapped_column(String(64))
    secret: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    # Unique, so two writers that read the same last record cannot both append after it.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    def detail_fields(self) -> dict[str, Any]:
        value = json.loads(self.detail)
        return value if isinstance(value, dict) else {}


class Backup(Base):
    """One encrypted version of a secret's value as set on Fly, kept because Fly never shows it again."""

    __tablename__ = "backups"
    # Versions count up per app and secret; the constraint turns two writers that pick the
    # same next version into one IntegrityError, and the loser retries.
    __table_args__ = (UniqueConstraint("app", "name", "version", name="uq_backups_app_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    # AES-256-GCM nonce, ciphertext and tag, bound to app, name and version.
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    # No foreign key to runs: a backup must outlive the run that made it, and a value set
    # from the command line has no run.
    run_id: Mapped[str | None] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Fly's digest of the value once the deploy was verified; NULL until then.
    fly_digest: Mapped[str | None] = mapped_column(String(128))
    deployed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The object key of the copy in the S3 bucket; NULL if there is none.
    s3_key: Mapped[str | None] = mapped_column(String(512))


class InventorySecret(Base):
    """A secret seen on a Fly app by the inventory sync, with when it last changed."""

    __tablename__ = "inventory"
    __table_args__ = (UniqueConstraint("app", "name", name="uq_inventory_app_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    # Fly's digest of the current value and its deployment status (Deployed, Staged or NULL
    # when flyctl omits it).
    digest: Mapped[str | None] = mapped_column(String(128))
    fly_status: Mapped[str | None] = mapped_column(String(32))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set while the secret is missing from the app's list; cleared if it comes back.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # NULL while the last rotation is unknown: the secret is then due from first_seen_at.
    last_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # unknown | secretbot | outside | operator
    rotation_source: Mapped[str] = mapped_column(String(16), default="unknown")
    last_run_id: Mapped[str | None] = mapped_column(String(32))
    # When a sync noticed a digest change that no secretbot run made.
    changed_outside_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    snoozed_by: Mapped[str | None] = mapped_column(String(64))
    snooze_reason: Mapped[str | None] = mapped_column(Text)
    # The policy chosen when secretbot added the secret (`/secret add`). A [secrets.NAME]
    # table in secretbot.toml takes precedence; NULL uses inventory.default_priority.
    priority: Mapped[str | None] = mapped_column(String(16))
    value_source: Mapped[str | None] = mapped_column(String(16))


class ReminderPost(Base):
    """The daily reminder for one channel and local date; the unique key lets one process post it."""

    __tablename__ = "reminder_posts"
    __table_args__ = (UniqueConstraint("channel", "local_date", name="uq_reminder_posts_channel_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64))
    # The date in the reminder's time zone, as YYYY-MM-DD.
    local_date: Mapped[str] = mapped_column(String(10))
    # claimed | posted | empty (nothing due and no all-clear)
    status: Mapped[str] = mapped_column(String(16))
    # Host and process ID of the claimer: only the claimer may mark the day posted.
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    items: Mapped[int] = mapped_column(Integer, default=0)


class SeenRequest(Base):
    """A signed Slack request or event already handled, so a replay or a retry is not handled again."""

    __tablename__ = "seen_requests"

    # "signature:<v0=...>" for every request, "event:<event_id>" for Events API deliveries.
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AppLock(Base):
    """The run changing a Fly app right now; the primary key admits one per app."""

    __tablename__ = "app_locks"

    app: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key: a lock is cleared by the next run when its holder has ended.
    run_id: Mapped[str] = mapped_column(String(32))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InventoryApp(Base):
    """One configured app's last inventory sync. Each sync updates this row first, which
    makes two syncs of the same app take turns instead of both recording one change."""

    __tablename__ = "inventory_apps"

    app: Mapped[str] = mapped_column(String(64), primary_key=True)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SummaryPost(Base):
    """The Slack summary of a run started from a terminal, queued until one process posts it.

    The terminal posts it when the run ends if Slack is reachable. Otherwise a `secretbot serve`
    process or the next terminal run does. A process claims the row with a conditional
    update before posting, so only one of them posts it.
    """

    __tablename__ = "summary_posts"
    __table_args__ = (UniqueConstraint("run_id", name="uq_summary_posts_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
    # The summary as JSON (bot.summaries.RunSummary): names, statuses and digests, never a value.
    body: Mapped[str] = mapped_column(Text)
    # queued | posting | posted
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Host and process ID of the process posting it, and since when.
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(255))
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_ts: Mapped[str | None] = mapped_column(String(32))


class AutoRotation(Base):
    """A rotation the bot opened by itself for a secret with `auto_rotate`, one per due date.

    The unique key is the claim: of several processes, or of one restarted, only the first
    insert for a secret's due date opens a run. A run that has ended still counts, so a
    denied or failed automatic rotation is not opened again for the same due date.
    """

    __tablename__ = "auto_rotations"
    __table_args__ = (UniqueConstraint("app", "name", "due_at", name="uq_auto_rotations_app_name_due"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    # The due time in ISO 8601 (UTC): text, so equality does not depend on a driver's precision.
    due_at: Mapped[str] = mapped_column(String(40))
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The run opened for this claim; NULL when none could be opened (see `outcome`).
    run_id: Mapped[str | None] = mapped_column(String(32))
    # opened | already_open (a run was open for the secret) | rejected
    outcome: Mapped[str | None] = mapped_column(String(16))
