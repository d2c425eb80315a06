"""`secretbot import FILE --app APP`: set an app's secrets from an env file on an operator's machine.

For the first setup of an app, when the values exist in a local `.env` file. The values
go from the file to flyctl's standard input and to the encrypted backups, never through
Slack, a log line or a process argument. The command lists what would change and asks
for confirmation. Then it backs up, sets every value in one `flyctl secrets import`,
verifies the app and records the import in the audit log and the inventory. Its summary,
without values, goes to the runbook channel, or waits in the database when Slack cannot be
reached.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from bot.backups import build_backup_store
from bot.config import load_policy
from bot.errors import ConfigError, SecretbotError
from bot.flyctl import FlyctlClient, Redactor
from bot.importing.apply import (
    SUCCEEDED,
    Importer,
    ImportResult,
    ImportServices,
    apply_plan,
)
from bot.importing.envfile import EnvFile, check_values, read_env_file
from bot.importing.plan import Change, ImportPlan, build_plan
from bot.inventory import InventoryStore
from bot.operations import new_operation_id
from bot.policy import Policy
from bot.runbook.context import AppLocks
from bot.sealing import Sealer
from bot.settings import Settings, load_settings
from bot.storage.db import connect_existing, create_session_factory
from bot.summaries import (
    RunSummary,
    SecretDigests,
    StepSummary,
    SummaryPoster,
    SummaryPostError,
    SummaryQueue,
)
from bot.terminal.identity import TerminalIdentity

logger = logging.getLogger(__name__)

CHANGE_LABELS = {Change.NEW: "new", Change.CHANGED: "changed", Change.UNCHANGED: "unchanged, not sent"}
# Exit statuses, as for `secretbot run`: 1 when the import failed or was declined, 2 for a usage error.
EXIT_FAILED = 1
EXIT_USAGE = 2


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--app", help="The Fly app, one of fly.apps; the first one by default.")
@click.option("--reason", help="Why the values are set; stored in the audit log and the summary.")
@click.option("--yes", is_flag=True, help="Set the values without asking, for a script that owns FILE.")
def import_file(file: Path, app: str | None, reason: str | None, yes: bool) -> None:
    """Set the secrets in FILE (an env file) on APP, after showing what changes.

    Each name is listed as new, changed or unchanged against Fly's current list; unchanged
    values are not sent. Every value set is backed up first, so SECRETBOT_BACKUP_KEY must
    be set as the bot has it. Exits 0 when the import succeeded or nothing needed setting,
    1 when it failed or was declined, 2 on a usage, configuration or file error.
    """
    # Imported here because bot.cli imports this module to add the command.
    from bot.cli_run import check_reason, resolve_app
    from bot.logs import configure_logging

    try:
        settings = load_settings()
        policy = load_policy(settings.config_path, required=settings.config_required)
        target = resolve_app(app, policy)
        cleaned_reason = check_reason(reason)
        if not settings.backup_key:
            raise ConfigError("SECRETBOT_BACKUP_KEY is not set in this shell; `secretbot import` backs up every "
                              "value before it sets it, so set the key the bot runs with")
        env = read_env_file(file)
        check_values(env, allows_whitespace=lambda name: _allows_whitespace(policy, target, name))
        _print_file_problems(env)
        if env.problems:
            raise click.UsageError(f"{len(env.problems)} line(s) of {file} give no secret or a rejected value; "
                                   "fix them and run the import again. Nothing was changed.")
        if not env.values:
            raise click.UsageError(f"{file} sets no secret; nothing was changed")
        configure_logging("WARNING")
        identity = TerminalIdentity.current(operator=None)
        status = asyncio.run(_import(settings=settings, policy=policy, env=env, app=target, reason=cleaned_reason,
                                     identity=identity, ask=not yes))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(status)


def _allows_whitespace(policy: Policy, app: str, name: str) -> bool:
    secret = policy.secret_for(app, name)
    return secret is not None and secret.allow_whitespace


def _print_file_problems(env: EnvFile) -> None:
    for problem in env.problems:
        click.echo(f"{env.path}: line {problem.line}: {problem.reason}", err=True)
    for name, lines in env.repeated.items():
        numbers = ", ".join(str(line) for line in lines)
        click.echo(f"{env.path}: {name} is set on lines {numbers}; the last one is used", err=True)


async def _import(*, settings: Settings, policy: Policy, env: EnvFile, app: str, reason: str | None,
                  identity: TerminalIdentity, ask: bool) -> int:
    # Imported here because bot.server loads the Slack app, and the core reaches Slack only through it.
    from bot.server import _state_dir, terminal_summary_poster
    from bot.terminal.session import check_flyctl

    check_flyctl(settings)
    state_dir = _state_dir(settings)
    redactor = Redactor()
    for value in env.values.values():
        # flyctl echoes a line it cannot parse; every value of the file is masked in its output.
        redactor.add(value)
    flyctl = FlyctlClient(
        executable=settings.flyctl,
        api_token=settings.fly_api_token or "",
        # Not the bot's own folders: two flyctl processes sharing a config dir race on its config.yml.
        work_dir=state_dir / "import-flyctl-work",
        config_dir=state_dir / "import-flyctl-config",
        command_timeout=policy.fly.command_timeout,
        deploy_timeout=policy.fly.deploy_timeout,
        redactor=redactor,
    )
    async with connect_existing(settings.database_url) as database:
        sessions = create_session_factory(database)
        sealer = Sealer.from_setting(settings.backup_key)
        services = ImportServices(
            policy=policy, sessions=sessions, flyctl=flyctl,
            backups=build_backup_store(settings=settings, policy=policy, sessions=sessions, sealer=sealer),
            locks=AppLocks(sessions), inventory=InventoryStore(sessions=sessions, policy=policy))

        plan = await build_plan(env, app=app, listing=await flyctl.list_secrets(app), backups=services.backups)
        _print_plan(plan, env)
        if not plan.values:
            click.echo(f"Nothing to set: Fly already holds every value of {env.path}.")
            return 0
        if ask and not click.confirm(f"Set {len(plan.values)} secret(s) on {app} and restart its machines?",
                                     default=False):
            click.echo("Nothing was set.")
            return EXIT_FAILED

        operation_id = new_operation_id("import")
        importer = Importer(actor=identity.requester, hostname=identity.hostname, os_user=identity.os_user,
                            source=str(env.path.resolve()), reason=reason)

        async def report(message: str) -> None:
            click.echo(redactor.redact(message))

        result = await apply_plan(plan, services=services, importer=importer, operation_id=operation_id,
                                  report=report)
        _print_result(result)
        await _send_summary(result, plan=plan, policy=policy, importer=importer, queue=SummaryQueue(
            sessions=sessions), poster=terminal_summary_poster(settings))
    return 0 if result.status == SUCCEEDED else EXIT_FAILED


def _print_plan(plan: ImportPlan, env: EnvFile) -> None:
    click.echo(f"{env.path} against the secrets on {plan.app}:")
    width = max(len(secret.name) for secret in plan.secrets)
    for secret in plan.secrets:
        line = f"  {secret.name.ljust(width)}  {CHANGE_LABELS[secret.change]}  (line {secret.line})"
        if secret.note:
            line += f": {secret.note}"
        click.echo(line)
    counts = ", ".join(f"{len(plan.of(change))} {change.value}" for change in Change)
    click.echo(f"{counts}.")
    if plan.untouched:
        click.echo(f"Not in the file, left as they are on Fly: {', '.join(plan.untouched)}.")


def _print_result(result: ImportResult) -> None:
    for position, step in enumerate(result.steps, start=1):
        detail = f": {step.detail}" if step.detail else ""
        click.echo(f"{position}. {step.title}: {step.status}{detail}")
    if result.status == SUCCEEDED:
        click.echo(f"Import {result.operation_id} succeeded: {result.outcome}")
    else:
        click.echo(f"Import {result.operation_id} failed: {result.outcome}", err=True)


async def _send_summary(result: ImportResult, *, plan: ImportPlan, policy: Policy, importer: Importer,
                        queue: SummaryQueue, poster: SummaryPoster | None) -> None:
    """Post the summary to the runbook channel, or queue it for `secretbot serve`, and print which."""
    channel = policy.slack.channel
    if channel is None:
        click.echo("No summary is posted or queued: slack.channel is not set in secretbot.toml.")
        return
    summary = import_summary(result, plan=plan, importer=importer)
    later = "`secretbot serve` posts it when it starts and checks for queued summaries every minute."
    if poster is None:
        await queue.enqueue(summary, channel=channel, claim=False)
        click.echo(f"Summary queued in the database, not posted: SLACK_BOT_TOKEN is not set here. {later}")
        return
    claim = await queue.enqueue(summary, channel=channel, claim=True)
    assert claim is not None
    try:
        await queue.post(claim, poster, late=False)
    except SummaryPostError as exc:
        click.echo(f"Slack did not take the summary ({exc}), so it is queued in the database. {later}")
        return
    click.echo(f"Summary posted to the runbook channel {channel}.")


def import_summary(result: ImportResult, *, plan: ImportPlan, importer: Importer) -> RunSummary:
    """Describe an import as a terminal run's summary, so the queue and the Slack poster of those take it."""
    steps = tuple(StepSummary(title=step.title, status=step.status, detail=step.detail, actor=importer.actor)
                  for step in result.steps)
    secrets = tuple(SecretDigests(name, result.digests_before.get(name), result.digests_after.get(name))
                    for name in plan.values)
    return RunSummary(run_id=result.operation_id, title="Import", kind="import", app=result.app,
                      status=result.status, outcome=result.outcome, reason=importer.reason,
                      requester=importer.actor, operator=None, hostname=importer.hostname,
                      created_at=result.started_at, finished_at=result.finished_at, secrets=secrets, steps=steps)
