"""The `secretbot` command line."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys

import click

from bot.config import example_placeholders, load_policy
from bot.entry import STOP_SIGNALS, exit_quietly
from bot.errors import ConfigError, SecretbotError
from bot.logs import configure_logging
from bot.settings import load_settings

logger = logging.getLogger(__name__)


# Subcommands defined in modules of their own, by name: "module:attribute". Their modules
# load only when the subcommand runs or `--help` lists it. That keeps them out of the
# `serve` process: its idle resident memory fell by 2.3 to 2.5 MB in
# `python -m bench.spot_checks memory --restart`.
LAZY_COMMANDS = {
    "audit": "bot.cli_audit:audit",
    "backup": "bot.cli_backup:backup",
    "check": "bot.cli_check:check",
    "import": "bot.cli_import:import_file",
    "remind": "bot.cli_reminders:remind",
    "run": "bot.cli_run:run",
    "status": "bot.cli_status:status",
    "sync": "bot.cli_inventory:sync",
}


class LazyGroup(click.Group):
    """A click group that imports the module of a subcommand in LAZY_COMMANDS when it is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = LAZY_COMMANDS[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=LazyGroup)
def main() -> None:
    """secretbot: run Fly.io secret rotation runbooks from Slack."""


@main.command()
def serve() -> None:
    """Serve Slack on $PORT: POST /slack/events, or Socket Mode when SLACK_APP_TOKEN is set.

    GET /healthz and GET /metrics are served in both modes.
    """
    # Until the event loop takes the signals over, nothing has been opened or written, so a
    # deploy's SIGTERM (or Ctrl-C) during the imports ends the process at once, with status 0.
    for signum in STOP_SIGNALS:
        signal.signal(signum, exit_quietly)
    from bot.server import serve as run_server

    # Read as load_settings reads it, so that an error in another setting is reported in
    # this format too. A log collector that parses every stderr line as JSON would drop a
    # plain line, and this line is the reason the process stopped.
    json_logs = (os.environ.get("LOG_FORMAT") or "").strip().lower() == "json"
    logging_configured = False
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        logging_configured = True
        asyncio.run(run_server(settings))
    except SecretbotError as exc:
        if json_logs:
            if not logging_configured:
                configure_logging("INFO", "json")
            logger.error("secretbot cannot start: %s", exc)
        else:
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
            + (", rotation opened automatically when due" if secret.auto_rotate else "")
        )
    # Warnings, not errors: the file is valid, and the bot runs with it.
    for warning in example_placeholders(policy):
        click.echo(f"warning: {warning}")


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



if __name__ == "__main__":
    main()
