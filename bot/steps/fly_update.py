"""Setting the new values on Fly with `flyctl secrets import`, values on standard input."""

from __future__ import annotations

import logging

from bot.errors import FlyctlError, FlyctlTimeout, SecretbotError, UnsafeValueError
from bot.flyctl import encode_import
from bot.policy import Policy
from bot.runbook.context import StepContext, ValueLostError
from bot.runbook.steps import RESTART_CAUSE, Done, Failed, StepKind, StepOutcome, app_change_time_limit

logger = logging.getLogger(__name__)

# Lines of flyctl's rollout transcript shown in the thread; the whole output goes to the log.
TRANSCRIPT_LINES = 12

# The digest recorded for a secret that Fly did not list: before an import of a new name,
# or after an unset. It differs from None, which means the digests were never read, so a
# settle after a restart can tell that flyctl may have run.
NOT_LISTED = ""


class UpdateFlySecrets(StepKind):
    kind = "fly_update"
    title = "Update the Fly.io secret"
    # flyctl may have stored the value before the bot died, so a restart must not simply
    # run it again.
    restartable = False
    changes_fly = True

    def time_limit(self, policy: Policy) -> float:
        return app_change_time_limit(policy)

    async def execute(self, ctx: StepContext) -> StepOutcome:
        app = ctx.run.app
        names = list(ctx.run.secret_names)
        try:
            values = await ctx.load_values()
        except ValueLostError as exc:
            return Failed(
                f"{exc}. This happens when the bot restarts without SECRETBOT_BACKUP_KEY; "
                "start a new rotation. Nothing was changed on Fly."
            )
        missing = [name for name in names if name not in values]
        if missing:
            return Failed(f"no new value is stored for {', '.join(missing)}; start a new rotation. Nothing was changed.")
        try:
            # Encoding first proves every value survives flyctl's import parser unchanged.
            encode_import(values)
        except UnsafeValueError as exc:
            return Failed(f"{exc}. Nothing was changed on Fly.")

        holder = await ctx.services.app_locks.holder(app)
        if holder not in (None, ctx.run.id):
            await ctx.report(f"Waiting for run `{holder}` to finish its change to {app} (its import and "
                             "verification); changes to one app run one at a time.")
        # Held until verification ends, or released by the engine when the run stops.
        await ctx.services.app_locks.acquire(app, ctx.run.id)
        return await self._import(ctx, app, names, values)

    async def _import(self, ctx: StepContext, app: str, names: list[str], values: dict[str, str]) -> StepOutcome:
        problem = await self._back_up(ctx, app, names, values)
        if problem is not None:
            return Failed(problem)
        before = await ctx.fly_digests()
        await ctx.record_digests(before={name: before.get(name, NOT_LISTED) for name in names})
        await ctx.audit("fly.import.started", digests_before={name: before.get(name) for name in names})
        await ctx.report(
            f"Running `flyctl secrets import -a {app}` for {', '.join(names)} "
            "(value on standard input); Fly restarts the app's machines one by one."
        )

        try:
            result = await ctx.flyctl.import_secrets(app, {name: values[name] for name in names})
        except FlyctlError as exc:
            return await self._failed(ctx, app, names, before, exc)

        await ctx.audit("fly.import.finished", exit_code=result.exit_code, seconds=round(result.duration, 1))
        await ctx.clear_values()
        transcript = _tail(result.stdout)
        if transcript:
            await ctx.report("flyctl output:\n" + transcript)
        return Done(f"flyctl secrets import finished in {result.duration:.0f} s (exit 0).")

    async def _back_up(self, ctx: StepContext, app: str, names: list[str], values: dict[str, str]) -> str | None:
        """Back up every value before Fly gets it, since Fly never shows a value again."""
        backups = ctx.services.backups
        if not backups.enabled:
            await ctx.report("Backups are off (SECRETBOT_BACKUP_KEY is not set): this value cannot be recovered "
                             "from secretbot later, and rollback is not possible.")
            return None
        saved = []
        for name in names:
            try:
                record = await backups.save(app=app, name=name, value=values[name], run_id=ctx.run.id,
                                            created_by=ctx.run.requester)
            except SecretbotError as exc:
                logger.error("backup failed; Fly not changed %s error=%s", ctx.log_context(), exc)
                return f"the backup of {name} could not be written ({exc}), so Fly was not changed"
            saved.append(f"{name} v{record.version}")
            if record.s3_error:
                await ctx.report(f"The bucket copy of the {name} backup failed ({record.s3_error}); "
                                 "the database copy is kept.")
        await ctx.audit("backup.saved", versions=saved)
        await ctx.report(f"Backed up (encrypted): {', '.join(saved)}.")
        return None

    async def _failed(
        self, ctx: StepContext, app: str, names: list[str], before: dict[str, str], exc: FlyctlError
    ) -> StepOutcome:
        what = "timed out" if isinstance(exc, FlyctlTimeout) else f"failed (exit {exc.exit_code})"
        logger.warning("flyctl secrets import %s %s stderr=%s", what, ctx.log_context(), exc.stderr)
        after = await self._digests_or_none(ctx)
        stored = {name for name in names if after is not None and after.get(name) != before.get(name)}
        if after is not None:
            await ctx.record_digests(after={name: after.get(name) for name in names})
        await ctx.audit("fly.import.failed", exit_code=exc.exit_code, error=str(exc), stored=sorted(stored))
        if exc.stdout or exc.stderr:
            await ctx.report("flyctl output:\n" + _tail(exc.stdout + "\n" + exc.stderr))
        if stored:
            state = (
                f"Fly reports a new digest for {', '.join(sorted(stored))}: the new value is stored, "
                "but the rollout did not finish. Check the app before retrying."
            )
        else:
            state = "Fly still reports the old digest, so the old value is in place."
        return Failed(f"flyctl secrets import {what}: {exc}. {state}")

    async def _digests_or_none(self, ctx: StepContext) -> dict[str, str] | None:
        try:
            return await ctx.fly_digests()
        except FlyctlError as exc:
            logger.warning("cannot read secrets after a failed import %s error=%s", ctx.log_context(), exc)
            return None

    async def settle(self, ctx: StepContext, *, cause: str = RESTART_CAUSE) -> StepOutcome:
        """Read Fly's digests to learn whether an import cut short (restart or time limit) stored the value."""
        app = ctx.run.app
        before = {secret.name: secret.digest_before for secret in ctx.run.secrets}
        if any(digest is None for digest in before.values()):
            # The step stopped before the digests were read, so flyctl never ran.
            return Failed(f"{cause} before `flyctl secrets import` ran; nothing was changed. "
                          "Start a new rotation.")
        after = await self._digests_or_none(ctx)
        if after is None:
            return await super().settle(ctx, cause=cause)
        names = list(ctx.run.secret_names)
        changed = [name for name in names if after.get(name, NOT_LISTED) != before[name]]
        await ctx.record_digests(after={name: after.get(name) for name in names})
        await ctx.audit("fly.import.settled", changed=changed)
        # NOTE: a flyctl left running by a killed bot may still store the value after
        # this check; the verification step reads the digests again.
        if len(changed) == len(names):
            await ctx.clear_values()
            return Done(
                f"{cause[:1].upper()}{cause[1:]} during `flyctl secrets import`, but Fly reports a new digest for "
                f"{', '.join(names)}, so the new value is stored. Verification checks the rollout."
            )
        if not changed:
            return Failed(
                f"{cause} during `flyctl secrets import` and Fly still reports the old digest, "
                "so nothing was changed. Start a new rotation."
            )
        return Failed(
            f"{cause} during `flyctl secrets import`; Fly reports a new digest only for "
            f"{', '.join(changed)}. Check `flyctl secrets list -a {app}` before starting a new run."
        )


def _tail(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return "\n".join(lines[-TRANSCRIPT_LINES:])
