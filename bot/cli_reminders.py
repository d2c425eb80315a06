"""`secretbot remind`: post today's rotation reminder now, or print it with --dry-run.

For cron or a manual check. It claims the day in the same ledger as the bot, so it posts
nothing when the bot or an earlier run already posted today's reminder in that channel.
"Today" is the date in reminders.timezone, whatever the configured time of day.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from zoneinfo import ZoneInfo

import click

from bot.clock import SystemClock
from bot.config import load_policy
from bot.errors import ConfigError, SecretbotError
from bot.inventory.store import InventoryStore
from bot.reminders.ledger import ReminderLedger
from bot.reminders.scheduler import (
    EMPTY,
    POSTED,
    ReminderPostError,
    ReminderScheduler,
    read_reminder,
)
from bot.reminders.timing import local_today
from bot.settings import Settings, load_settings
from bot.storage.db import connect_existing, create_session_factory

logger = logging.getLogger(__name__)

# The ledger's row states, as the dry run describes them.
_LEDGER_STATES = {"claimed": "claimed", "posted": "already posted", "empty": "checked with nothing due"}


async def _remind(settings: Settings, *, dry_run: bool) -> None:
    # Imported here because bot.server loads the Slack app, and the core imports Slack code only through it.
    from bot.server import reminder_poster, render_reminder

    policy = load_policy(settings.config_path, required=settings.config_required)
    channel = policy.reminder_channel
    if channel is None:
        raise ConfigError("no channel for the daily reminder: set reminders.channel or slack.channel in secretbot.toml")
    today = local_today(SystemClock().now(), ZoneInfo(policy.reminders.timezone))
    # Checked before the database is opened, so a missing token fails fast.
    poster = None if dry_run else reminder_poster(settings)

    async with connect_existing(settings.database_url) as engine:
        sessions = create_session_factory(engine)
        store = InventoryStore(sessions=sessions, policy=policy)
        ledger = ReminderLedger(sessions=sessions)
        if poster is None:
            click.echo(render_reminder(await read_reminder(store, policy, today), channel=channel))
            existing = await ledger.get(channel=channel, local_date=today)
            if existing is not None:
                state = _LEDGER_STATES.get(existing.status, existing.status)
                click.echo(f"Today's reminder was {state} by {existing.claimed_by}, "
                           "so `secretbot remind` would post nothing now.")
            return
        scheduler = ReminderScheduler(store=store, ledger=ledger, poster=poster, policy=policy)
        result = await scheduler.send_once(local_date=today)

    if result.outcome == POSTED:
        click.echo(f"Reminder for {today} posted in {channel}: {result.items} secrets listed (ts {result.message_ts}).")
    elif result.outcome == EMPTY:
        click.echo(f"Nothing is due on {today}; no reminder posted in {channel} (reminders.all_clear is off).")
    else:
        click.echo(f"Reminder for {today} in {channel} not posted: {result.outcome} ({result.holder or 'unknown'}).")


@click.command("remind")
@click.option("--dry-run", is_flag=True,
              help="Print today's reminder instead of posting it; nothing is claimed or posted.")
def remind(dry_run: bool) -> None:
    """Post today's secret rotation reminder now, unless it was already posted today.

    Exits 1 when Slack rejects the post, which may be tried again once the day's claim
    expires (10 minutes), and 2 on a configuration or database error.
    """
    # Imported here because bot.cli imports this module to add the command.
    from bot.cli import configure_logging

    try:
        settings = load_settings()
        configure_logging("WARNING")
        asyncio.run(_remind(settings, dry_run=dry_run))
    except ReminderPostError as exc:
        click.echo(f"secretbot: reminder not posted: {exc}", err=True)
        sys.exit(1)
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
