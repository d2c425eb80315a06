"""`secretbot sync`: read the secrets of the configured Fly apps into the inventory once, now.

For an operator who wants the inventory current without waiting for the bot's next
periodic sync. It writes the same rows and audit records as the bot's sync.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click
from sqlalchemy.exc import SQLAlchemyError

from bot.config import load_policy
from bot.errors import CommandError, ConfigError, SecretbotError, StorageError
from bot.flyctl import FlyctlClient
from bot.inventory.sync import AppSync, InventorySync, failed_apps
from bot.settings import Settings, load_settings
from bot.storage.db import create_engine, create_session_factory, schema_is_current

logger = logging.getLogger(__name__)


async def _sync(settings: Settings, apps: tuple[str, ...]) -> list[AppSync]:
    # The bot's folder for flyctl state, beside its database. It is imported here
    # because bot.server loads the whole Slack app.
    from bot.server import _state_dir

    policy = load_policy(settings.config_path, required=settings.config_required)
    if not policy.fly.apps:
        raise ConfigError("no Fly apps are configured; list them in [fly] apps in secretbot.toml")
    for app in apps:
        if app not in policy.fly.apps:
            raise CommandError(
                f"app {app} is not configured; use one of {', '.join(policy.fly.apps)} "
                "or add it to [fly] apps in secretbot.toml"
            )

    state_dir = _state_dir(settings)
    flyctl = FlyctlClient(
        executable=settings.flyctl,
        api_token=settings.fly_api_token or "",
        # Not the bot's own folders: two flyctl processes sharing a config dir race on
        # its config.yml, and the bot may be running next to this command.
        work_dir=state_dir / "cli-flyctl-work",
        config_dir=state_dir / "cli-flyctl-config",
        command_timeout=policy.fly.command_timeout,
    )

    engine = create_engine(settings.database_url)
    try:
        try:
            current = await schema_is_current(engine)
        except (SQLAlchemyError, OSError) as exc:
            # The URL may carry a password, so only the error's type is shown.
            raise StorageError(f"cannot reach the database in DATABASE_URL: {type(exc).__name__}") from exc
        if not current:
            raise StorageError("the database schema is not current; start the bot once to migrate it")
        sync = InventorySync(flyctl=flyctl, sessions=create_session_factory(engine), policy=policy)
        return await sync.sync_all(apps or None)
    finally:
        await engine.dispose()


@click.command("sync")
@click.option("--app", "apps", multiple=True, metavar="APP",
              help="Sync only this configured app; repeat for several. Every configured app if omitted.")
def sync(apps: tuple[str, ...]) -> None:
    """Read each configured Fly app's secrets (names, digests, status) into the inventory now.

    Prints one line per app and exits 1 if any app failed to sync.
    """
    # Imported here because bot.cli imports this module to add the command.
    from bot.cli import configure_logging

    try:
        settings = load_settings()
        configure_logging("WARNING")
        results = asyncio.run(_sync(settings, apps))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)

    for result in results:
        click.echo(result.summary())
    if failed_apps(results):
        sys.exit(1)
