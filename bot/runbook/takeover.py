"""A compromise response taking over a routine rotation of the same secret.

A leaked secret has to be replaced at once, and a rotation left waiting for approval would
otherwise block the compromised-secret runbook until its requester or an approver cancels
it. The compromise run cancels such a rotation instead, in the transaction that creates
it, so an approval of the rotation and the takeover cannot both succeed. A run that is past
its approval may be changing Fly, so it keeps its secrets and blocks the new run as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.runbook.steps import Runbook
from bot.runbook.views import CANCELLED_STATUS
from bot.storage.models import PendingValue, Run, RunSecret, Step, utcnow

logger = logging.getLogger(__name__)

COMPROMISED_KIND = "compromised"
ROUTINE_KIND = "rotate"
# Step statuses in which a rotation has not yet been approved: not started, or waiting for a person.
_UNDECIDED = ("pending", "waiting")


@dataclass(frozen=True)
class OpenRun:
    """An open run on one of the requested secrets, and the step it is at."""

    run_id: str
    kind: str
    requester: str
    secret: str
    position: int
    step_kind: str
    step_status: str


def may_take_over(open_run: OpenRun, runbooks: Mapping[str, Runbook]) -> bool:
    """Tell whether a compromise response may cancel `open_run`: a routine rotation not yet past its approval."""
    if open_run.kind != ROUTINE_KIND:
        return False
    steps = runbooks[ROUTINE_KIND].steps
    approval = next((position for position, step in enumerate(steps)
                     if any(action.name == "approve" for action in step.actions)), None)
    if approval is None:
        return False
    return open_run.position <= approval and open_run.step_status in _UNDECIDED


async def open_runs(session: AsyncSession, app: str, secret_names: Sequence[str]) -> list[OpenRun]:
    """Return the open runs on `app` for any of `secret_names`, one entry per secret."""
    rows = (await session.execute(
        select(RunSecret.run_id, RunSecret.name, Run.kind, Run.requester, Run.current_step, Step.kind, Step.status)
        .join(Run, Run.id == RunSecret.run_id)
        .join(Step, (Step.run_id == Run.id) & (Step.position == Run.current_step))
        .where(RunSecret.app == app, RunSecret.name.in_(list(secret_names)), RunSecret.open.is_(True))
        .order_by(RunSecret.name)
    )).all()
    return [OpenRun(run_id=run_id, kind=kind, requester=requester, secret=name, position=position,
                    step_kind=step_kind, step_status=step_status)
            for run_id, name, kind, requester, position, step_kind, step_status in rows]


async def take_over_rotations(session: AsyncSession, *, app: str, secret_names: Sequence[str],
                              runbooks: Mapping[str, Runbook], reason: str, actor: str) -> list[OpenRun]:
    """End the routine rotations that block a compromise response on `secret_names`, inside `session`.

    Ends them all or none. When any open run may not be taken over, or one moved past its
    approval since it was read, nothing is changed. The caller's insert of the new run then
    fails on the open secret, as it would without a takeover. Returns the runs ended.
    """
    blocking = await open_runs(session, app, secret_names)
    runs = {open_run.run_id: open_run for open_run in blocking}
    if not runs or not all(may_take_over(open_run, runbooks) for open_run in runs.values()):
        return []

    now = utcnow()
    for open_run in runs.values():
        # The same conditional update as a click or the engine claiming the step, so only one wins.
        claimed = await session.execute(
            update(Step)
            .where(Step.run_id == open_run.run_id, Step.position == open_run.position, Step.status.in_(_UNDECIDED))
            .values(status="failed", detail=reason, actor=actor, finished_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            logger.info("rotation moved on before the takeover run_id=%s app=%s", open_run.run_id, app)
            return []
        await session.execute(update(Run).where(Run.id == open_run.run_id).values(
            status=CANCELLED_STATUS, outcome=reason, finished_at=now, updated_at=now))
        await session.execute(update(RunSecret).where(RunSecret.run_id == open_run.run_id).values(open=None))
        await session.execute(delete(PendingValue).where(PendingValue.run_id == open_run.run_id))
    return list(runs.values())
