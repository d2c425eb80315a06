"""The `secretbot` command line."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from bot.cli_backup import backup
from bot.cli_inventory import sync
from bot.cli_reminders import remind
from bot.cli_status import status
from bot.config import load_policy
from bot.errors import ConfigError, SecretbotError
from bot.settings import load_settings

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level)
    if not isinstance(numeric, int):
        raise click.BadParameter(f"LOG_LEVEL {level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosqlite and the Slack SDK log request bodies at DEBUG; those can hold message text.
    for noisy in ("aiosqlite", "slack_sdk", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
    # SQLAlchemy logs every statement with its parameters at INFO.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    # Alembic logs its context set-up on every revision check, i.e. every /healthz.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))


@click.group()
def main() -> None:
    """secretbot: run Fly.io secret rotation runbooks from Slack."""


@main.command()
def serve() -> None:
    """Start the HTTP server for Slack (POST /slack/events, GET /healthz) on $PORT."""
    from bot.server import serve as run_server

    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        asyncio.run(run_server(settings))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)


@main.command("check-config")
def check_config() -> None:
    """Validate secretbot.toml (or $SECRETBOT_CONFIG) and print what it configures."""
    try:
        settings = load_settings()
        policy = load_policy(settings.config_path, required=settings.config_required)
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
    source = policy.source_path or "built-in policy (no config file)"
    click.echo(f"configuration: {source}")
    click.echo(f"runbook channel: {policy.slack.channel or 'not set'}")
    click.echo(f"approvers: {', '.join(policy.slack.approvers) or 'none'}")
    click.echo(f"operators: {', '.join(policy.slack.operators) or 'everyone in the workspace'}")
    slack = policy.slack
    approvals = "two approvers for high-priority secrets" if slack.two_approvers_for_high else "one approver"
    self_approval = ", requester may approve" if slack.allow_self_approval else ""
    click.echo(f"approval: {approvals}{self_approval}; requests expire after {slack.approval_timeout:g} s")
    click.echo(f"apps: {', '.join(policy.fly.apps) or 'none'}")
    reminders = policy.reminders
    if policy.reminder_channel is None:
        click.echo("daily reminder: off (set reminders.channel or slack.channel)")
    else:
        click.echo(f"daily reminder: {reminders.time.isoformat()} {reminders.timezone} in {policy.reminder_channel}, "
                   f"due-soon window {reminders.window_days} days, snooze up to {reminders.max_snooze_days} days"
                   + (", all-clear on" if reminders.all_clear else ""))
    inventory = policy.inventory
    interval = f"every {inventory.sync_interval:g} s" if inventory.sync_interval else "at start-up and on demand only"
    click.echo(f"inventory sync: {interval}, {inventory.sync_concurrency} flyctl calls at once, "
               f"unlisted secrets {inventory.default_priority.value} priority")
    for secret in sorted(policy.secrets.values(), key=lambda item: item.name):
        click.echo(
            f"  {secret.name}: {secret.priority.value} (every {secret.priority.interval_days} days), "
            f"{secret.source.value}" + (f", external: {secret.external}" if secret.external else "")
        )


@main.group()
def pending() -> None:
    """New values that a running rotation keeps, encrypted, until it sets them on Fly."""


@pending.command("show")
@click.argument("run_id")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Print without asking for confirmation.")
def pending_show(run_id: str, name: str, yes: bool) -> None:
    """Print the new value of NAME held by run RUN_ID, for a person updating an external system.

    The value is printed to this terminal only, and the access is written to the audit log.
    """
    from bot.pending import show_pending_value

    try:
        settings = load_settings()
        configure_logging("WARNING")
        if not settings.backup_key:
            raise ConfigError("SECRETBOT_BACKUP_KEY is not set in this shell; use the same key as the running bot")
        if not yes:
            click.confirm(f"Print the new value of {name} for run {run_id} to this terminal?", abort=True)
        value = asyncio.run(show_pending_value(settings, run_id=run_id, name=name))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
    click.echo(value)


main.add_command(backup)
main.add_command(sync)
main.add_command(status)
main.add_command(remind)


@main.group()
def audit() -> None:
    """Inspect the append-only audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 at the first record that does not match."""
    from bot.audit import verify_chain
    from bot.storage.db import create_engine, create_session_factory

    async def run() -> tuple[int, int | None]:
        engine = create_engine(settings.database_url)
        try:
            return await verify_chain(create_session_factory(engine))
        finally:
            await engine.dispose()

    try:
        settings = load_settings()
        configure_logging("WARNING")
        checked, bad = asyncio.run(run())
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
    if bad is not None:
        click.echo(f"audit log broken at record {bad}: its hash does not follow from the {checked} records before it",
                   err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {checked} records")


if __name__ == "__main__":
    main()
