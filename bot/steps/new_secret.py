"""Steps of `/secret add`: a name not yet on Fly, its policy and value, and the record of it.

The value and, for a name secretbot.toml does not list, the policy are chosen in one form.
The rest of the run is the rotation's path: approval, backup and `flyctl secrets import`
with the value on standard input, verification, audit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import select

from bot.generate import generate_value
from bot.policy import Policy, Priority, SecretPolicy, Source
from bot.runbook.context import StepContext
from bot.runbook.steps import (
    Action,
    Decision,
    Done,
    Failed,
    RequesterOrApproverStep,
    StepKind,
    StepOutcome,
    ValueInput,
    Waiting,
)
from bot.runbook.views import RunView
from bot.steps.approvers import approvers_of
from bot.steps.external import ExternalUpdate
from bot.steps.fly_update import NOT_LISTED
from bot.steps.policy_choice import (
    PRIORITY_INPUT,
    SOURCE_INPUT,
    choices_from_values,
    describe_policy,
    run_choices,
    save_run_choice,
    unlisted_policies,
    with_stored_policies,
)
from bot.steps.values import check_entered_value, describe_format
from bot.steps.verify import VerifyDeployment
from bot.storage.models import RunSecret

logger = logging.getLogger(__name__)


def already_listed(names: list[str], app: str) -> str:
    """Return the reason an add stops for names that Fly already lists, with the command to use instead."""
    return (f"{', '.join(names)} is already set on the Fly app {app}, so there is nothing to add; "
            f"to change its value, use `/secret rotate {names[0]}`. Nothing was changed.")


class NewSecretValue(RequesterOrApproverStep):
    """The policy and the value of a new secret, entered in one form.

    A name that secretbot.toml lists as generated gets its value at once, without a form.
    """

    kind = "new_value"
    title = "Choose the policy and enter the value"
    actions = (Action("define", "Choose the policy and value", "primary"),)
    rejection = "Only the requester or an approver can choose the policy and enter the value."

    def inputs(self, run: RunView, policy: Policy) -> tuple[ValueInput, ...]:
        inputs: list[ValueInput] = []
        choose = False
        for name in run.secret_names:
            configured = policy.secret(name)
            if configured is None:
                choose = True
                inputs.append(ValueInput(name=name, hint="Only for a value from the provider; leave it empty "
                                                         "when secretbot generates the value."))
            elif configured.source is Source.PROVIDER:
                hint = " ".join(part for part in (f"From {configured.external}." if configured.external else None,
                                                  configured.instructions) if part)
                inputs.append(ValueInput(name=name, hint=hint or None))
        if choose:
            inputs += [ValueInput(name=PRIORITY_INPUT, label="Priority", secret=False),
                       ValueInput(name=SOURCE_INPUT, label="Source of the value", secret=False)]
        return tuple(inputs)

    async def execute(self, ctx: StepContext) -> StepOutcome:
        names = list(ctx.run.secret_names)
        listed = await ctx.fly_digests()
        present = [name for name in names if name in listed]
        if present:
            return Failed(already_listed(present, ctx.run.app))

        configured = {name: ctx.policy.secret(name) for name in names}
        unreadable = [name for name, policy in configured.items()
                      if policy is not None and policy.source is Source.GENERATED and policy.external is not None
                      and ctx.services.sealer.ephemeral]
        if unreadable:
            return Failed(
                f"{', '.join(unreadable)} must also be set in an external system, and the person doing that "
                "reads the value with `secretbot pending show`, which needs SECRETBOT_BACKUP_KEY. "
                "Set it for the bot and start the add again. Nothing was changed."
            )
        if all(policy is not None and policy.source is Source.GENERATED for policy in configured.values()):
            generated = [policy for policy in configured.values() if policy is not None]
            summary = await self._generate(ctx, generated)
            return Done(f"Policy from secretbot.toml; generated with Python's secrets module: {summary}")

        what = "enter the value"
        if any(policy is None for policy in configured.values()):
            what = "choose the policy and enter the value"
        return Waiting(
            prompt=(f"{', '.join(names)} is not set on {ctx.run.app} yet. Press the button to {what}. "
                    "The form is visible only to you, and the value is never posted in Slack."),
            allowed_users=self.allowed_users(ctx.run, ctx.policy),
        )

    async def validate(self, ctx: StepContext, decision: Decision) -> dict[str, str]:
        values = decision.values or {}
        problems: dict[str, str] = {}
        for name in ctx.run.secret_names:
            configured = ctx.policy.secret(name)
            if configured is not None:
                if configured.source is Source.PROVIDER:
                    problem = await check_entered_value(configured, values.get(name, ""))
                    if problem is not None:
                        problems[name] = problem
                continue
            problems.update(await _choice_problems(name, values))
        return problems

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        values = decision.values or {}
        stored = await run_choices(ctx)
        policies: list[SecretPolicy] = []
        for name in ctx.run.secret_names:
            configured = ctx.policy.secret(name)
            if configured is not None:
                policies.append(configured)
                continue
            chosen = choices_from_values(name, values) or stored.get(name)
            if chosen is None:
                # NOTE: the engine stores only secret inputs with the decision. A restart between the
                # decision and this step therefore loses the choice, and the run ends here.
                return Failed("the bot restarted before the chosen policy was saved; start "
                              f"`/secret add {name}` again. Nothing was changed.")
            await save_run_choice(ctx, chosen)
            policies.append(chosen)

        # A chosen policy has the default format and length of a generated value.
        generated = [policy for policy in policies if policy.source is Source.GENERATED]
        summary = await self._generate(ctx, generated) if generated else ""
        await ctx.audit("policy.chosen", actor=decision.user_id,
                        policies={policy.name: describe_policy(policy) for policy in policies})
        logger.info("new secret policy chosen %s user=%s policies=%s", ctx.log_context(), decision.user_id,
                    ",".join(f"{policy.name}:{policy.priority.value}:{policy.source.value}" for policy in policies))
        parts = []
        for policy in policies:
            origin = "from secretbot.toml" if ctx.policy.secret(policy.name) is not None else "chosen"
            parts.append(f"{policy.name}: {describe_policy(policy)} ({origin})")
        detail = "; ".join(parts)
        if summary:
            detail += f". Generated: {summary}"
        return Done(detail)

    async def _generate(self, ctx: StepContext, policies: list[SecretPolicy]) -> str:
        await ctx.store_values({policy.name: generate_value(policy) for policy in policies})
        await ctx.audit("values.generated", formats={policy.name: describe_format(policy) for policy in policies})
        return "; ".join(f"{policy.name}: {describe_format(policy)}" for policy in policies)


async def _choice_problems(name: str, values: Mapping[str, str]) -> dict[str, str]:
    """Return the problems with a submitted priority, source and value for a name secretbot.toml does not list."""
    problems: dict[str, str] = {}
    priority, source, value = values.get(PRIORITY_INPUT), values.get(SOURCE_INPUT), values.get(name, "")
    if priority not in {item.value for item in Priority}:
        problems[PRIORITY_INPUT] = "Choose a priority."
    if source not in {item.value for item in Source}:
        problems[SOURCE_INPUT] = "Choose where the value comes from."
    elif source == Source.PROVIDER.value:
        problem = await check_entered_value(SecretPolicy(name=name, priority=Priority.MEDIUM,
                                                         source=Source.PROVIDER), value)
        if problem is not None:
            problems[name] = problem
    elif value:
        problems[name] = "Leave the value empty when secretbot generates it, or choose the provider as the source."
    return problems


class NewSecretExternalUpdate(ExternalUpdate):
    """The external-system step, for a name whose policy may come from the add form instead of secretbot.toml."""

    async def execute(self, ctx: StepContext) -> StepOutcome:
        return await super().execute(await with_stored_policies(ctx))


class VerifyNewSecret(VerifyDeployment):
    """Verification of an add, which also records the chosen policy in the inventory once the value is on Fly."""

    async def execute(self, ctx: StepContext) -> StepOutcome:
        outcome = await super().execute(ctx)
        on_fly = await _names_on_fly(ctx)
        recorded = False
        for name, policy in (await unlisted_policies(ctx)).items():
            # A value that reached Fly is scheduled by its chosen policy even if the checks failed.
            if name in on_fly:
                await ctx.services.inventory.record_policy(app=ctx.run.app, name=name, priority=policy.priority.value,
                                                           value_source=policy.source.value)
                recorded = True
        if recorded:
            # Commands are parsed with the policies read last (handlers/listeners.py), so this
            # process's next command accepts the new name at once.
            await ctx.services.refresh_added_policies()
        return outcome


async def _names_on_fly(ctx: StepContext) -> set[str]:
    """Return the run's secrets whose digest after the change shows them listed on Fly."""
    async with ctx.services.sessions() as session:
        rows = (await session.execute(
            select(RunSecret.name, RunSecret.digest_after).where(RunSecret.run_id == ctx.run.id))).all()
    return {name for name, digest in rows if digest not in (None, NOT_LISTED)}


class RecordNewSecret(StepKind):
    kind = "record"
    title = "Document"

    async def execute(self, ctx: StepContext) -> StepOutcome:
        approvers = await approvers_of(ctx)
        chosen = await unlisted_policies(ctx)
        described = []
        for secret in ctx.run.secrets:
            policy = ctx.policy.secret(secret.name) or chosen.get(secret.name)
            await ctx.audit(
                "secret.added",
                actor=ctx.run.requester,
                secret=secret.name,
                requested_by=ctx.run.requester,
                approvers=approvers,
                requested_at=ctx.run.created_at.isoformat(),
                reason=ctx.run.reason,
                digest_after=secret.digest_after,
                priority=policy.priority.value if policy else None,
                source=policy.source.value if policy else None,
                policy_from="secretbot.toml" if ctx.policy.secret(secret.name) is not None else "add form",
            )
            described.append(f"{secret.name} ({describe_policy(policy)})" if policy else secret.name)
        return Done(f"Audit record written: {', '.join(described)} added to {ctx.run.app}; "
                    "the inventory lists it with source secretbot.")
