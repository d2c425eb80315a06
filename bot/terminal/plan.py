"""What each step of a runbook does, in words and flyctl command lines, before it runs.

`secretbot run --dry-run` prints the whole plan, and a real terminal run shows each
step's part before asking to run it. The command lines come from `bot.flyctl.commands`,
the builder that `FlyctlClient` executes, so the preview matches what runs.

The descriptions follow the step kinds in `bot/steps/`; a kind without an entry here is
shown by its title only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.flyctl import commands
from bot.flyctl.commands import FlyCommand
from bot.policy import Policy, Priority, SecretPolicy, Source
from bot.runbook.steps import Runbook
from bot.steps.values import describe_format


@dataclass(frozen=True)
class PlanRequest:
    """The run being planned: its runbook, app and secrets, and whether backups are on."""

    runbook: Runbook
    app: str
    names: tuple[str, ...]
    policy: Policy
    backups_enabled: bool

    def secrets(self) -> list[SecretPolicy]:
        return [self.policy.secrets[name] for name in self.names]


@dataclass(frozen=True)
class StepPlan:
    position: int
    kind: str
    title: str
    # Sentences saying what the step does and what the operator is asked.
    description: tuple[str, ...]
    # The flyctl commands the step runs, in order.
    commands: tuple[FlyCommand, ...] = ()


def plan_run(request: PlanRequest) -> list[StepPlan]:
    """Describe every step of the request's runbook; nothing is run or read."""
    plans = []
    for position, step in enumerate(request.runbook.steps):
        describe = _DESCRIBERS.get(step.kind)
        description, fly_commands = describe(request) if describe else ((), ())
        plans.append(StepPlan(position=position, kind=step.kind, title=step.title,
                              description=tuple(description), commands=tuple(fly_commands)))
    return plans


Description = tuple[list[str], list[FlyCommand]]


def _approval(request: PlanRequest) -> Description:
    lines = ["You approve or deny the run at this terminal; no Slack approver is asked."]
    high = any(secret.priority is Priority.HIGH for secret in request.secrets())
    if request.policy.slack.two_approvers_for_high and high:
        lines.append("A high-priority secret needs two approvers (slack.two_approvers_for_high): a second "
                     "person at this terminal types their name and approves too.")
    return lines, []


def _values(request: PlanRequest) -> Description:
    lines = []
    for secret in request.secrets():
        if secret.source is Source.GENERATED:
            lines.append(f"{secret.name}: generated here with Python's secrets module ({describe_format(secret)}).")
        else:
            origin = f" at {secret.external}" if secret.external else ""
            lines.append(f"{secret.name}: you create it{origin} and type it at a hidden prompt; "
                         "it is never shown or written in plain text.")
    if request.runbook.name == "lost":
        lines.append("Skipped when a backup is restored in the step before.")
    else:
        lines.append(f"First checks that every secret is set on {request.app}.")
    return lines, [commands.secrets_list(request.app)]


def _external(request: PlanRequest) -> Description:
    todo = [secret for secret in request.secrets() if secret.external and secret.source is Source.GENERATED]
    if not todo:
        return ["Not applicable: no external system needs a value the bot makes."], []
    lines = []
    for secret in todo:
        line = f"{secret.name}: update {secret.external} by hand."
        if secret.instructions:
            line += f" {secret.instructions}"
        lines.append(line)
    lines.append("Read each new value in another shell with `secretbot pending show RUN_ID NAME` "
                 "(needs SECRETBOT_BACKUP_KEY), then confirm here.")
    return lines, []


def _fly_update(request: PlanRequest) -> Description:
    if request.backups_enabled:
        backup = "Backs up each new value, encrypted, in the database first."
    else:
        backup = ("Backups are off (SECRETBOT_BACKUP_KEY is not set): the new value cannot be recovered "
                  "from secretbot later.")
    lines = [
        backup,
        f"Waits while another run changes {request.app}, reads the current digests, then sets the values "
        "on standard input; Fly restarts the app's machines one by one.",
    ]
    return lines, [commands.secrets_list(request.app), commands.secrets_import(request.app, request.names)]


def _verify(request: PlanRequest) -> Description:
    fly = request.policy.fly
    names = ", ".join(request.names)
    line = (f"Checks every {fly.verify_interval:g} s, for up to {fly.verify_timeout:g} s, that every machine runs "
            f"the new release with passing checks and that Fly lists a new digest for {names}.")
    health_url = fly.health_urls.get(request.app)
    if health_url:
        line += f" Also GET {health_url}, which must answer 2xx."
    return [line], [commands.status(request.app), commands.releases(request.app), commands.secrets_list(request.app)]


def _record(request: PlanRequest) -> Description:
    return ["Writes the audit record of each secret: who, why, when and the digests before and after."], []


def _revoke(request: PlanRequest) -> Description:
    lines = []
    for secret in request.secrets():
        if secret.source is Source.GENERATED:
            lines.append(f"{secret.name}: the leaked value stops working when the new one is deployed.")
        else:
            how = secret.revoke_instructions or f"revoke the leaked value at {secret.external or 'its provider'}."
            lines.append(f"{secret.name}: {how} You confirm here once it is done.")
    return lines, []


def _incident(request: PlanRequest) -> Description:
    return ["Writes the incident record: what happened and the timeline of every step."], []


def _backups(request: PlanRequest) -> Description:
    if not request.backups_enabled:
        return ["Backups are off (SECRETBOT_BACKUP_KEY is not set), so the value is regenerated."], []
    lines = ["Looks up the newest backup of each secret and compares it with the digest Fly reports; "
             "you choose to restore the backup or to regenerate the value."]
    return lines, [commands.secrets_list(request.app)]


def _review(request: PlanRequest) -> Description:
    return ["You type what will prevent this next time; the text goes into the audit log and the summary."], []


def _restore(request: PlanRequest) -> Description:
    return ["Takes the last value that passed verification from the backups."], []


_DESCRIBERS: dict[str, Callable[[PlanRequest], Description]] = {
    "approval": _approval,
    "values": _values,
    "external": _external,
    "fly_update": _fly_update,
    "verify": _verify,
    "record": _record,
    "revoke": _revoke,
    "incident": _incident,
    "backups": _backups,
    "review": _review,
    "restore": _restore,
}
