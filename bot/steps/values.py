"""Making the new value: generated here for generated secrets."""

from __future__ import annotations

from bot.generate import generate_value
from bot.policy import SecretPolicy, Source, ValueFormat
from bot.runbook.context import StepContext
from bot.runbook.steps import Done, Failed, StepKind, StepOutcome


def describe_format(policy: SecretPolicy) -> str:
    if policy.value_format is ValueFormat.ALPHANUMERIC:
        return f"{policy.length} random letters and digits"
    return f"{policy.length} random bytes, {policy.value_format.value}"


class GenerateValues(StepKind):
    kind = "generate"
    title = "Generate the new value"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        policies = [ctx.policy.secrets[name] for name in ctx.run.secret_names]
        provided = [policy for policy in policies if policy.source is Source.PROVIDER]
        if provided:
            names = ", ".join(f"{policy.name} (from {policy.external or 'its provider'})" for policy in provided)
            return Failed(
                f"{names}: the new value comes from the provider and must be entered by a person, "
                "which this version of secretbot does not support yet. Nothing was changed."
            )

        unreadable = [
            policy.name for policy in policies if policy.external is not None and ctx.services.sealer.ephemeral
        ]
        if unreadable:
            return Failed(
                f"{', '.join(unreadable)} must also be updated in an external system, and the person doing that "
                "reads the new value with `secretbot pending show`, which needs SECRETBOT_BACKUP_KEY. "
                "Set it for the bot and start a new rotation. Nothing was changed."
            )

        listed = {secret.name for secret in await ctx.flyctl.list_secrets(ctx.run.app)}
        missing = [name for name in ctx.run.secret_names if name not in listed]
        if missing:
            return Failed(
                f"{', '.join(missing)} is not set on the Fly app {ctx.run.app}, so there is nothing to rotate. "
                "Nothing was changed."
            )

        values = {policy.name: generate_value(policy) for policy in policies}
        await ctx.store_values(values)
        await ctx.audit("values.generated", formats={policy.name: describe_format(policy) for policy in policies})
        lines = [f"{policy.name}: {describe_format(policy)}" for policy in policies]
        return Done("Generated with Python's secrets module: " + "; ".join(lines))
