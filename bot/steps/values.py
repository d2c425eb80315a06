"""The new value: generated here for generated secrets, entered by a person for provider ones."""

from __future__ import annotations

from bot.errors import UnsafeValueError
from bot.flyctl import encode_import
from bot.flyctl.importfile import CARRIAGE_RETURN_REASON
from bot.generate import generate_value
from bot.policy import Policy, SecretPolicy, Source, ValueFormat
from bot.runbook.context import StepContext
from bot.runbook.steps import (
    Action,
    Decision,
    Done,
    Failed,
    RequesterOrApproverStep,
    Skipped,
    StepOutcome,
    ValueInput,
    Waiting,
)
from bot.runbook.views import RunView
from bot.value_checks import pattern_mismatch_in_thread, value_problem

# The Slack form's plain_text_input accepts at most 3000 characters, so a longer value can
# only come from a forged submission.
MAX_ENTERED_LENGTH = 3000


def describe_format(policy: SecretPolicy) -> str:
    if policy.value_format is ValueFormat.ALPHANUMERIC:
        return f"{policy.length} random letters and digits"
    return f"{policy.length} random bytes, {policy.value_format.value}"


async def check_entered_value(policy: SecretPolicy, value: str) -> str | None:
    """Return why an entered value is rejected, or None. The message never quotes the value.

    The value_pattern match runs in a worker thread, so a slow pattern does not hold up the event loop.
    """
    if value == "":
        return "Enter a value."
    if len(value) > MAX_ENTERED_LENGTH:
        return f"The value is longer than {MAX_ENTERED_LENGTH} characters, the most the form accepts."
    problem = value_problem(value, allow_whitespace=policy.allow_whitespace)
    if problem is not None:
        return problem
    if policy.value_pattern is not None:
        problem = await pattern_mismatch_in_thread(policy.value_pattern, value, name=policy.name)
        if problem is not None:
            return problem
    try:
        encode_import({policy.name: value})
    except UnsafeValueError as exc:
        return _unsafe_value_message(exc)
    return None


def _unsafe_value_message(exc: UnsafeValueError) -> str:
    """Word flyctl's limit for the person who entered the value: a provider's value cannot be generated anew."""
    if exc.reason == CARRIAGE_RETURN_REASON:
        return ("The value has Windows line endings (a carriage return before each line feed), and flyctl drops "
                "a carriage return at the end of a line, so Fly would store a different value. Convert the line "
                "endings to LF and enter the value again.")
    return (f"The value cannot be passed to flyctl unchanged: {exc.reason}. Nothing was sent to Fly; check the "
            "value at its source and enter it again.")


class NewValues(RequesterOrApproverStep):
    kind = "values"
    title = "Generate or enter the new value"
    actions = (Action("enter", "Enter the new value", "primary"),)
    rejection = "Only the requester or an approver can enter the new value."

    def __init__(self, *, require_listed: bool = True) -> None:
        # A lost secret may have been unset on Fly, so that runbook does not require it.
        self.require_listed = require_listed

    def inputs(self, run: RunView, policy: Policy) -> tuple[ValueInput, ...]:
        inputs = []
        for name in run.secret_names:
            secret = policy.secret_for(run.app, name)
            # A secret with no policy is reported by execute(), which runs before any form opens.
            if secret is not None and secret.source is Source.PROVIDER:
                hint = " ".join(part for part in (f"From {secret.external}." if secret.external else None,
                                                  secret.instructions) if part)
                inputs.append(ValueInput(name=name, hint=hint or None))
        return tuple(inputs)

    async def execute(self, ctx: StepContext) -> StepOutcome:
        policies = [ctx.secret_policy(name) for name in ctx.run.secret_names]
        unreadable = [
            policy.name
            for policy in policies
            if policy.source is Source.GENERATED and policy.external is not None and ctx.services.sealer.ephemeral
        ]
        if unreadable:
            return Failed(
                f"{', '.join(unreadable)} must also be updated in an external system, and the person doing that "
                "reads the new value with `secretbot pending show`, which needs SECRETBOT_BACKUP_KEY. "
                "Set it for the bot and start a new rotation. Nothing was changed."
            )

        if await ctx.pending_names() >= set(ctx.run.secret_names):
            return Skipped("Not needed: the values restored from the backup are used.")

        listed = await ctx.fly_digests()
        missing = [name for name in ctx.run.secret_names if name not in listed]
        if missing and self.require_listed:
            return Failed(
                f"{', '.join(missing)} is not set on the Fly app {ctx.run.app}, so there is nothing to rotate. "
                "Nothing was changed."
            )

        generated = [policy for policy in policies if policy.source is Source.GENERATED]
        if generated:
            await ctx.store_values({policy.name: generate_value(policy) for policy in generated})
            await ctx.audit("values.generated", formats={policy.name: describe_format(policy) for policy in generated})
        summary = "; ".join(f"{policy.name}: {describe_format(policy)}" for policy in generated)

        to_enter = self.inputs(ctx.run, ctx.policy)
        if not to_enter:
            return Done("Generated with Python's secrets module: " + summary)
        names = ", ".join(item.name for item in to_enter)
        prompt = (
            f"Create the new value of {names} at the provider, then press the button to enter it. "
            "The form is visible only to you, and the value is never posted in Slack."
        )
        if generated:
            prompt = f"Generated {summary}.\n{prompt}"
        return Waiting(prompt=prompt, allowed_users=self.allowed_users(ctx.run, ctx.policy))

    async def validate(self, ctx: StepContext, decision: Decision) -> dict[str, str]:
        values = decision.values or {}
        problems: dict[str, str] = {}
        for item in self.inputs(ctx.run, ctx.policy):
            problem = await check_entered_value(ctx.secret_policy(item.name), values.get(item.name, ""))
            if problem is not None:
                problems[item.name] = problem
        return problems

    async def decide(self, ctx: StepContext, decision: Decision) -> StepOutcome:
        # The engine stores the values before it records the decision, so nothing is
        # left to do here, and a decision replayed after a restart finds them in place.
        entered = ", ".join(item.name for item in self.inputs(ctx.run, ctx.policy))
        return Done(f"New value entered for {entered}")
