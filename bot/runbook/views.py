"""Read-only snapshots of a run for front ends, and the observer interface they implement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.runbook.steps import Action


# A run stopped on purpose (Failed.cancelled) rather than by an error.
CANCELLED_STATUS = "cancelled"
# Run statuses after which nothing more happens.
TERMINAL_STATUSES = ("succeeded", "failed", "denied", "expired", CANCELLED_STATUS)


@dataclass(frozen=True)
class StepView:
    position: int
    kind: str
    title: str
    status: str  # pending | running | waiting | done | skipped | failed
    detail: str | None
    actor: str | None
    actions: tuple[Action, ...]
    allowed_users: tuple[str, ...]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # (user ID, action) of each decision on the step, oldest first.
    decisions: tuple[tuple[str, str], ...] = ()

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(user for user, action in self.decisions if action == "approve")


@dataclass(frozen=True)
class SecretView:
    name: str
    digest_before: str | None
    digest_after: str | None


@dataclass(frozen=True)
class RunView:
    id: str
    kind: str
    title: str
    app: str
    requester: str
    reason: str | None
    status: str  # pending | running | waiting | succeeded | failed | denied | expired | cancelled
    current_step: int
    outcome: str | None
    secrets: tuple[SecretView, ...]
    steps: tuple[StepView, ...]
    created_at: datetime
    finished_at: datetime | None

    @property
    def secret_names(self) -> tuple[str, ...]:
        return tuple(secret.name for secret in self.secrets)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def waiting_step(self) -> StepView | None:
        for step in self.steps:
            if step.status == "waiting":
                return step
        return None


class RunObserver(Protocol):
    """The interface a front end implements to show runs. Errors it raises are logged, not fatal."""

    async def run_created(self, run: RunView) -> bool:
        """Show a new run. Return False if it could not be shown, which stops the run."""
        ...

    async def step_changed(self, run: RunView, step: StepView) -> None: ...

    async def step_progress(self, run: RunView, step: StepView, message: str) -> None: ...

    async def run_finished(self, run: RunView) -> None: ...


class NullObserver:
    """An observer that shows nothing, for the command line and tests."""

    async def run_created(self, run: RunView) -> bool:
        return True

    async def step_changed(self, run: RunView, step: StepView) -> None:
        return None

    async def step_progress(self, run: RunView, step: StepView, message: str) -> None:
        return None

    async def run_finished(self, run: RunView) -> None:
        return None
