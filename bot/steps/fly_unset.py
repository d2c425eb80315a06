"""Removing secrets from Fly with `flyctl secrets unset`, settled from Fly's list after a restart."""

from __future__ import annotations

import logging

from bot.errors import FlyctlError, FlyctlTimeout
from bot.policy import Policy
from bot.runbook.context import StepContext
from bot.runbook.steps import RESTART_CAUSE, Done, Failed, StepKind, StepOutcome, app_change_time_limit
from bot.steps.fly_update import NOT_LISTED, TRANSCRIPT_LINES

logger = logging.getLogger(__name__)


class UnsetFlySecrets(StepKind):
    kind = "fly_unset"
    title = "Remove the secret from Fly.io"
    # flyctl may have removed the secret before the bot died, so a restart reads Fly's
    # list instead of running flyctl again.
    restartable = False
    changes_fly = True

    def time_limit(self, policy: Policy) -> float:
        return app_change_time_limit(policy)

    async def execute(self, ctx: StepContext) -> StepOutcome:
        app = ctx.run.app
        names = list(ctx.run.secret_names)
        holder = await ctx.services.app_locks.holder(app)
        if holder not in (None, ctx.run.id):
            await ctx.report(f"Waiting for run `{holder}` to finish its change to {app}; changes to one app "
                             "run one at a time.")
        # Held until verification ends, or released by the engine when the run stops.
        await ctx.services.app_locks.acquire(app, ctx.run.id)

        before = await ctx.fly_digests()
        gone = [name for name in names if name not in before]
        if gone:
            # flyctl v0.4.87 does not fail for a name the app lacks, so the list is the only check.
            return Failed(f"{', '.join(gone)} is no longer set on {app}: something removed it after the run "
                          "started. Nothing was changed.")
        await ctx.record_digests(before={name: before[name] for name in names})
        await ctx.audit("fly.unset.started", digests_before={name: before[name] for name in names})
        await ctx.report(f"Running `flyctl secrets unset {' '.join(names)} --app {app}`; Fly restarts the app's "
                         "machines one by one.")

        try:
            result = await ctx.flyctl.unset_secrets(app, names)
        except FlyctlError as exc:
            return await self._failed(ctx, names, exc)

        await ctx.audit("fly.unset.finished", exit_code=result.exit_code, seconds=round(result.duration, 1))
        transcript = _tail(result.stdout)
        if transcript:
            await ctx.report("flyctl output:\n" + transcript)
        return Done(f"flyctl secrets unset finished in {result.duration:.0f} s (exit 0).")

    async def _failed(self, ctx: StepContext, names: list[str], exc: FlyctlError) -> StepOutcome:
        what = "timed out" if isinstance(exc, FlyctlTimeout) else f"failed (exit {exc.exit_code})"
        logger.warning("flyctl secrets unset %s %s stderr=%s", what, ctx.log_context(), exc.stderr)
        after = await self._digests_or_none(ctx)
        removed = sorted(name for name in names if after is not None and name not in after)
        if after is not None:
            await ctx.record_digests(after={name: after.get(name, NOT_LISTED) for name in names})
        await ctx.audit("fly.unset.failed", exit_code=exc.exit_code, error=str(exc), removed=removed)
        if exc.stdout or exc.stderr:
            await ctx.report("flyctl output:\n" + _tail(exc.stdout + "\n" + exc.stderr))
        if removed:
            state = (f"Fly no longer lists {', '.join(removed)}: the secret is removed, but the rollout did not "
                     "finish. Check the app before retrying.")
        elif after is None:
            state = f"Fly's list could not be read; check `flyctl secrets list -a {ctx.run.app}`."
        else:
            state = "Fly still lists the secret, so nothing was changed."
        return Failed(f"flyctl secrets unset {what}: {exc}. {state}")

    async def _digests_or_none(self, ctx: StepContext) -> dict[str, str] | None:
        try:
            return await ctx.fly_digests()
        except FlyctlError as exc:
            logger.warning("cannot read secrets after a failed unset %s error=%s", ctx.log_context(), exc)
            return None

    async def settle(self, ctx: StepContext, *, cause: str = RESTART_CAUSE) -> StepOutcome:
        """Read Fly's list to learn whether an unset cut short (restart or time limit) removed the secrets."""
        before = {secret.name: secret.digest_before for secret in ctx.run.secrets}
        if any(digest is None for digest in before.values()):
            # The digests are recorded just before flyctl runs, so it never ran.
            return Failed(f"{cause} before `flyctl secrets unset` ran; nothing was changed. Start a new unset.")
        after = await self._digests_or_none(ctx)
        if after is None:
            return await super().settle(ctx, cause=cause)
        names = list(ctx.run.secret_names)
        removed = [name for name in names if name not in after]
        await ctx.record_digests(after={name: after.get(name, NOT_LISTED) for name in names})
        await ctx.audit("fly.unset.settled", removed=removed)
        # NOTE: a flyctl left running by a killed bot may still remove the secret after this
        # check; the verification step reads the list again.
        if len(removed) == len(names):
            return Done(f"{cause[:1].upper()}{cause[1:]} during `flyctl secrets unset`, but Fly no longer lists "
                        f"{', '.join(names)}, so the removal is stored. Verification checks the rollout.")
        if not removed:
            return Failed(f"{cause} during `flyctl secrets unset` and Fly still lists {', '.join(names)}, "
                          "so nothing was changed. Start a new unset.")
        return Failed(f"{cause} during `flyctl secrets unset`; Fly no longer lists only {', '.join(removed)}. "
                      f"Check `flyctl secrets list -a {ctx.run.app}` before starting a new run.")


def _tail(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return "\n".join(lines[-TRANSCRIPT_LINES:])
