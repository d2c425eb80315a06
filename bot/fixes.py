"""The one-click fixes that `/secret diagnose` offers: deploy staged secrets, or restart the app.

Neither needs an approval step. Neither puts a new value on Fly: `secrets deploy` rolls out
values that are already stored there (someone with Fly access set them), and a restart
runs the same release again. Both are what an approved rotation does anyway at its end.
They still restart production machines, so the clicker needs the right to start a
runbook (slack.operators), and the clicker is recorded in the audit log. A new value
always goes through the rotation runbook and its approval.

Each fix holds the app's change lock, so it never overlaps a run's import or another fix,
then verifies the app with the predicate a rotation uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot import audit
from bot.diagnose import NOT_DEPLOYED
from bot.errors import FlyctlError
from bot.flyctl import verify_deployment
from bot.operations import hold_app_lock, new_operation_id
from bot.runbook.context import Services

logger = logging.getLogger(__name__)

# Audit events of the two fixes.
DEPLOYED_EVENT = "secret.deployed_staged"
RESTARTED_EVENT = "app.restarted"


@dataclass
class FixResult:
    """The outcome of a fix; `problems` lists why verification failed, if it did."""

    operation_id: str
    app: str
    ok: bool
    summary: str
    problems: list[str] = field(default_factory=list)
    # False when the fix found nothing to do and ran no flyctl command.
    changed: bool = True


async def deploy_staged(services: Services, *, app: str, user_id: str, names: tuple[str, ...]) -> FixResult:
    """Run `flyctl secrets deploy` and verify that `names` (the staged ones) are now deployed.

    Raises LockBusy when a run or another fix is changing the app.
    """
    operation_id = new_operation_id("deploy")
    async with hold_app_lock(services.app_locks, app, operation_id, wait=False):
        # The button may be older than the last deploy (a second click, or a stale reply),
        # and a deploy with nothing staged still restarts every machine. So read Fly again.
        try:
            listed = await services.flyctl.list_secrets(app)
        except FlyctlError as exc:
            return await _failed(services, operation_id, app, user_id, DEPLOYED_EVENT, exc, names=names)
        if not any(secret.status in NOT_DEPLOYED for secret in listed):
            logger.info("fix skipped operation=%s app=%s: nothing staged", operation_id, app)
            return FixResult(operation_id=operation_id, app=app, ok=True, changed=False,
                             summary=f"Nothing was changed: no secret on {app} is staged any more, "
                                     "so there was nothing to deploy.")
        try:
            completed = await services.flyctl.deploy_secrets(app)
        except FlyctlError as exc:
            return await _failed(services, operation_id, app, user_id, DEPLOYED_EVENT, exc, names=names)
        # A deploy changes no digest, so there is no "before" to differ from: the check is
        # that each secret is listed Deployed and every machine runs the new release.
        result = await _verify(services, operation_id, app, names=names, seconds=completed.duration)
    await _record(services, result, user_id, DEPLOYED_EVENT, names=names)
    return result


async def restart_app(services: Services, *, app: str, user_id: str) -> FixResult:
    """Run `flyctl apps restart APP` and verify that every machine came back healthy.

    Raises LockBusy when a run or another fix is changing the app.
    """
    operation_id = new_operation_id("restart")
    async with hold_app_lock(services.app_locks, app, operation_id, wait=False):
        try:
            completed = await services.flyctl.restart_app(app)
        except FlyctlError as exc:
            return await _failed(services, operation_id, app, user_id, RESTARTED_EVENT, exc, names=())
        result = await _verify(services, operation_id, app, names=(), seconds=completed.duration)
    await _record(services, result, user_id, RESTARTED_EVENT, names=())
    return result


async def _verify(services: Services, operation_id: str, app: str, *, names: tuple[str, ...],
                  seconds: float) -> FixResult:
    fly = services.policy.fly
    report = await verify_deployment(services.flyctl, app, names, digests_before={}, timeout=fly.verify_timeout,
                                     poll_interval=fly.verify_interval, health_url=fly.health_urls.get(app))
    if report.ok:
        summary = (f"flyctl finished in {seconds:.0f} s; {report.machines} machine(s) started on release "
                   f"v{report.release_version} with passing checks")
        if names:
            summary += f"; {', '.join(names)} deployed"
        return FixResult(operation_id=operation_id, app=app, ok=True, summary=summary + ".")
    return FixResult(operation_id=operation_id, app=app, ok=False, problems=report.problems,
                     summary="flyctl finished, but verification failed: " + "; ".join(report.problems))


async def _failed(services: Services, operation_id: str, app: str, user_id: str, event: str, exc: FlyctlError,
                  *, names: tuple[str, ...]) -> FixResult:
    logger.warning("fix failed operation=%s app=%s event=%s error=%s", operation_id, app, event, exc)
    result = FixResult(operation_id=operation_id, app=app, ok=False, summary=str(exc), problems=[str(exc)])
    await _record(services, result, user_id, event, names=names)
    return result


async def _record(services: Services, result: FixResult, user_id: str, event: str, *,
                  names: tuple[str, ...]) -> None:
    logger.info("fix finished operation=%s app=%s event=%s ok=%s user=%s", result.operation_id, result.app, event,
                result.ok, user_id)
    await audit.append(services.sessions, audit.AuditEntry(
        event=event, actor=user_id, run_id=result.operation_id, app=result.app, secret=",".join(names) or None,
        detail={"ok": result.ok, "summary": result.summary, "problems": result.problems, "from": "diagnose"}))
