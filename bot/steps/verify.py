"""Verification: the app's machines came back healthy on the new release with the new digest."""

from __future__ import annotations

from bot.flyctl import verify_deployment
from bot.policy import Policy
from bot.runbook.context import StepContext
from bot.runbook.steps import STEP_MARGIN_SECONDS, Done, Failed, StepKind, StepOutcome


class VerifyDeployment(StepKind):
    kind = "verify"
    title = "Verify the deployment"

    def time_limit(self, policy: Policy) -> float:
        # The last poll may start just before verify_timeout and run three flyctl calls.
        return STEP_MARGIN_SECONDS + policy.fly.verify_timeout + 3 * policy.fly.command_timeout

    async def execute(self, ctx: StepContext) -> StepOutcome:
        app = ctx.run.app
        names = list(ctx.run.secret_names)
        fly = ctx.policy.fly
        health_url = fly.health_urls.get(app)
        await ctx.report(
            f"Checking machines, release, checks and digests of {app} for up to {fly.verify_timeout:.0f} s"
            + (f", and GET {health_url}." if health_url else ".")
        )
        try:
            report = await verify_deployment(
                ctx.flyctl,
                app,
                names,
                digests_before={secret.name: secret.digest_before for secret in ctx.run.secrets},
                timeout=fly.verify_timeout,
                poll_interval=fly.verify_interval,
                health_url=health_url,
            )
        finally:
            # Taken by the Fly update step; another run's rollout may start once this one is checked.
            await ctx.services.app_locks.release_run(ctx.run.id)
        await ctx.record_digests(after=report.digests_after)
        # A value that reached Fly counts as a rotation even if the app then failed its
        # checks, so the next inventory sync does not take the new digest for a change
        # made outside secretbot.
        changed = {name: digest for name, digest in report.digests_after.items()
                   if digest is not None and digest != _digest_before(ctx, name)}
        if changed:
            await ctx.services.inventory.record_rotation(app=app, digests=changed, run_id=ctx.run.id)
        await ctx.audit(
            "verification.passed" if report.ok else "verification.failed",
            problems=report.problems,
            digests_after=report.digests_after,
            machines=report.machines,
            release=report.release_version,
        )
        if not report.ok:
            return Failed("verification failed: " + "; ".join(report.problems))
        await self._mark_backups_deployed(ctx, report.digests_after)
        detail = (
            f"{report.machines} machine(s) started on release v{report.release_version} with passing checks; "
            f"new digest for {', '.join(names)}"
        )
        if health_url:
            detail += f"; {health_url} answered 2xx"
        return Done(detail + ".")

    async def _mark_backups_deployed(self, ctx: StepContext, digests: dict[str, str | None]) -> None:
        """Record Fly's digest on this run's backups, so a later check can match them to Fly."""
        backups = ctx.services.backups
        if not backups.enabled:
            return
        for name, digest in digests.items():
            latest = await backups.latest(ctx.run.app, name)
            if latest is not None and latest.run_id == ctx.run.id and digest is not None:
                await backups.mark_deployed(app=ctx.run.app, name=name, version=latest.version, fly_digest=digest)


def _digest_before(ctx: StepContext, name: str) -> str | None:
    return next((secret.digest_before for secret in ctx.run.secrets if secret.name == name), None)
