"""`secretbot status`: the inventory as a table in the terminal, most urgent first.

Read-only: it opens the bot's database without creating or migrating it and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from bot.config import load_policy
from bot.errors import CommandError, SecretbotError
from bot.inventory import InventoryStore, SecretStatus, State
from bot.inventory.urgency import by_urgency, count_states
from bot.settings import Settings, load_settings
from bot.storage.db import connect_existing, create_session_factory

logger = logging.getLogger(__name__)

COLUMNS = ("APP", "SECRET", "PRIORITY", "LAST ROTATED", "AGE", "DUE", "STATE")


async def _read_statuses(settings: Settings, app: str | None) -> list[SecretStatus]:
    policy = load_policy(settings.config_path, required=settings.config_required)
    if app is not None and app not in policy.fly.apps:
        configured = ", ".join(policy.fly.apps) or "none"
        raise CommandError(f"{app} is not a configured app; use one of: {configured}")
    async with connect_existing(settings.database_url) as engine:
        store = InventoryStore(sessions=create_session_factory(engine), policy=policy)
        return by_urgency(await store.statuses(app=app))


def state_cell(status: SecretStatus) -> str:
    """Describe the state in plain text, e.g. "overdue by 12 d" or "snoozed until 2025-03-01"."""
    if status.state is State.OVERDUE:
        return "overdue, due today" if status.overdue_days == 0 else f"overdue by {status.overdue_days} d"
    if status.state is State.DUE_SOON:
        return f"due soon, in {status.days_until_due} d"
    if status.state is State.SNOOZED and status.snoozed_until is not None:
        return f"snoozed until {status.snoozed_until:%Y-%m-%d}" + (f" by {status.snoozed_by}" if status.snoozed_by else "")
    if status.state is State.RUNNING:
        return f"rotation running, run {status.open_run_id}"
    if status.state is State.CHANGED_OUTSIDE and status.changed_outside_at is not None:
        return f"changed outside secretbot on {status.changed_outside_at:%Y-%m-%d}"
    return status.state.value


def table_rows(statuses: list[SecretStatus]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for status in statuses:
        rotated = f"{status.last_rotated_at:%Y-%m-%d}" if status.last_rotated_at else "unknown"
        rows.append((status.app, status.name, status.priority.value, rotated, f"{status.age_days} d",
                     f"{status.due_at:%Y-%m-%d}", state_cell(status)))
    return rows


def render_table(rows: list[tuple[str, ...]]) -> list[str]:
    """Align the rows under COLUMNS; the last column is left unpadded."""
    widths = [max(len(row[index]) for row in [COLUMNS, *rows]) for index in range(len(COLUMNS) - 1)]
    lines = []
    for row in [COLUMNS, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines


@click.command("status")
@click.option("--app", default=None, metavar="APP", help="Show only this configured app; every app if omitted.")
def status(app: str | None) -> None:
    """Print every secret in the inventory, most urgent first: priority, last rotation, age, due date and state.

    Reads DATABASE_URL and secretbot.toml as the bot does; the database is never changed.
    """
    # Imported here because bot.cli imports this module to add the command.
    from bot.cli import configure_logging

    try:
        settings = load_settings()
        configure_logging("WARNING")
        statuses = asyncio.run(_read_statuses(settings, app))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)

    if not statuses:
        where = f" of {app}" if app else ""
        click.echo(f"no secrets in the inventory{where}; the bot reads them from Fly at start-up, "
                   "or run `secretbot sync`")
        return
    for line in render_table(table_rows(statuses)):
        click.echo(line)
    counts = ", ".join(f"{count} {state.value}" for state, count in count_states(statuses).items())
    click.echo(f"\n{len(statuses)} secrets: {counts}")
