"""The `secretbot serve` process: wires configuration, storage, flyctl, the engine and Slack."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.backups import build_backup_store
from bot.config import load_policy
from bot.errors import ConfigError
from bot.flyctl import FlyctlClient, Redactor
from bot.heap import freeze_startup_heap, release_startup_heap
from bot.inventory import InventorySync
from bot.inventory.auto_rotate import AutoRotator, RotatingInventorySync, open_automatic_runs
from bot.metrics import CANCELLED, BotMetrics, metrics_route
from bot.people import People
from bot.policy import Policy
from bot.preflight import SlackAuthTest
from bot.reminders.ledger import ReminderLedger
from bot.reminders.report import Reminder
from bot.reminders.scheduler import ReminderPoster, ReminderScheduler
from bot.runbook.context import Services
from bot.runbook.engine import Engine
from bot.runbook.views import TERMINAL_STATUSES
from bot.sealing import Sealer
from bot.settings import Settings, remove_secrets_from_environment
from bot.storage.db import create_engine, create_session_factory, migrate, schema_is_current
from bot.storage.seen import SeenRequests
from bot.summaries import SummaryPoster, SummaryQueue
from handlers import detach
from handlers.http import SlackEndpoint
from handlers.listeners import register
from handlers.observer import SlackObserver
from handlers.reminder_poster import SlackReminderPoster
from handlers.reminder_views import reminder_text
from handlers.slack_app import SingleWorkspaceAuthorizer, SlackDirectory, create_app, create_client
from handlers.socket_mode import SocketModeReceiver
from handlers.summary_poster import SlackSummaryPoster, terminal_client
from handlers.turns import after_ack_turns
from runbooks import RUNBOOKS

logger = logging.getLogger(__name__)

# Fly sends SIGTERM on every deploy and waits kill_timeout (60 s in fly.toml) before
# SIGKILL; running steps get most of that to finish.
SHUTDOWN_GRACE_SECONDS = 45.0
# aiohttp's wait for handlers still running when the runner is cleaned up (its default is 60 s).
RUNNER_SHUTDOWN_SECONDS = 3.0
# How long a reminder being posted at SIGTERM may take to finish.
REMINDER_STOP_SECONDS = 10.0


@dataclass
class Bot:
    web_app: web.Application
    engine: Engine
    database: AsyncEngine
    inventory_sync: InventorySync
    reminders: ReminderScheduler
    # Set when SLACK_APP_TOKEN is set. Requests then come over Socket Mode instead of POST /slack/events.
    socket_mode: SocketModeReceiver | None = None
    # Summaries of runs started from a terminal that wait for Slack, and who posts them.
    summaries: SummaryQueue | None = None
    summary_poster: SummaryPoster | None = None
    # The replay ledger, closed at shutdown after the last request.
    seen: SeenRequests | None = None
    # The HTTP endpoint, when requests come over HTTP; it refuses requests once shutdown begins.
    endpoint: SlackEndpoint | None = None


class StoppedDuringStartup(Exception):
    """SIGTERM or SIGINT arrived while start-up waited for Slack, before the database was touched."""


async def build_bot(settings: Settings, policy: Policy | None = None, *, stop: asyncio.Event | None = None) -> Bot:
    """Check the settings, then create or migrate the database and wire the bot.

    Everything that can be checked without the database comes first (variables, keys,
    secretbot.toml, the Slack token), so a bad environment stops start-up before the
    database file or the flyctl folders exist. When `stop` is set during the Slack check,
    which can wait seconds for retries, raises StoppedDuringStartup.
    """
    app_token: str | None = None
    signing_secret: str | None = None
    if settings.slack_app_token is not None:
        token, app_token = settings.require_socket_mode()
    else:
        token, signing_secret = settings.require_slack()
    fly_api_token = settings.require_fly_api_token()
    remove_secrets_from_environment()
    policy = policy or load_policy(settings.config_path, required=settings.config_required)
    # One key encrypts both the values waiting between steps and the backups.
    sealer = Sealer.from_setting(settings.backup_key)

    metrics = BotMetrics()
    metrics.declare_runbooks(RUNBOOKS, (*TERMINAL_STATUSES, CANCELLED))
    # Neither call opens a connection, so the database is not created yet.
    database = create_engine(settings.database_url)
    sessions = create_session_factory(database)
    backups = build_backup_store(settings=settings, policy=policy, sessions=sessions,
                                 sealer=None if sealer.ephemeral else sealer)
    client = create_client(token=token, base_url=settings.slack_api_url, on_api_error=metrics.slack_api_error)
    authorizer = SingleWorkspaceAuthorizer(client)
    await _unless_stopped(authorizer.check(), stop)

    await migrate(database)
    state_dir = _state_dir(settings)
    redactor = Redactor()
    flyctl = FlyctlClient(
        executable=settings.flyctl,
        api_token=fly_api_token,
        work_dir=state_dir / "flyctl-work",
        config_dir=state_dir / "flyctl-config",
        command_timeout=policy.fly.command_timeout,
        deploy_timeout=policy.fly.deploy_timeout,
        redactor=redactor,
        metrics=metrics,
    )
    services = Services(policy=policy, sessions=sessions, flyctl=flyctl, sealer=sealer, redactor=redactor,
                        backups=backups, people=People(directory=SlackDirectory(client)))
    slack_app = create_app(client=client, authorizer=authorizer)

    engine: Engine
    observer = SlackObserver(client=client, sessions=sessions, policy=policy,
                             load_run=lambda run_id: engine.get_run(run_id),
                             resolved_policy=lambda: services.policy)
    engine = Engine(services=services, runbooks=RUNBOOKS, observer=observer, metrics=metrics)
    # After each sync of all apps, the due auto_rotate secrets get their rotation run.
    auto_rotator = AutoRotator(engine=engine, store=services.inventory, sessions=sessions, policy=policy)
    inventory_sync = RotatingInventorySync(flyctl=flyctl, sessions=sessions, policy=policy, clock=services.clock,
                                           rotator=auto_rotator if auto_rotator.enabled else None)
    register(slack_app, engine=engine, policy=policy, observer=observer, inventory_sync=inventory_sync)

    web_app = web.Application(client_max_size=2 * 1024 * 1024)
    socket_mode: SocketModeReceiver | None = None
    endpoint: SlackEndpoint | None = None
    seen = SeenRequests(sessions)
    if app_token is not None:
        socket_mode = SocketModeReceiver(slack_app, app_token=app_token, api_url=settings.slack_api_url, seen=seen)
        await socket_mode.check_token()
    else:
        assert signing_secret is not None
        endpoint = SlackEndpoint(slack_app, signing_secret, seen=seen)
        web_app.router.add_post("/slack/events", endpoint.handle)
    web_app.router.add_get("/healthz", _healthz(database))
    web_app.router.add_get("/metrics", metrics_route(
        metrics, read_statuses=lambda: services.inventory.statuses(shared=True), apps=policy.fly.apps))

    async def refresh_inventory() -> None:
        # The reminder lists the secrets on Fly now, not those of the last periodic sync.
        await inventory_sync.sync_all()

    reminders = ReminderScheduler(store=services.inventory, ledger=ReminderLedger(sessions=sessions, clock=services.clock),
                                  poster=SlackReminderPoster(client), policy=policy, clock=services.clock,
                                  before_post=refresh_inventory, metrics=metrics,
                                  read_automatic=lambda: open_automatic_runs(sessions))
    return Bot(web_app=web_app, engine=engine, database=database, inventory_sync=inventory_sync, reminders=reminders,
               socket_mode=socket_mode, summaries=SummaryQueue(sessions=sessions, clock=services.clock),
               summary_poster=SlackSummaryPoster(client), seen=seen, endpoint=endpoint)


def reminder_poster(settings: Settings) -> ReminderPoster:
    """Return the Slack poster for `secretbot remind`, which posts without the HTTP server."""
    if not settings.slack_bot_token:
        raise ConfigError("missing environment variable SLACK_BOT_TOKEN: set it to the bot token from the Slack "
                          "app's OAuth & Permissions page, or use --dry-run to print the reminder only")
    return SlackReminderPoster(create_client(token=settings.slack_bot_token, base_url=settings.slack_api_url))


def render_reminder(reminder: Reminder, *, channel: str) -> str:
    """Render a reminder as terminal text; the wording lives in handlers, which the core does not import."""
    return reminder_text(reminder, channel=channel)


def terminal_summary_poster(settings: Settings) -> SummaryPoster | None:
    """Return the Slack poster for the summary of `secretbot run`, or None without SLACK_BOT_TOKEN."""
    if not settings.slack_bot_token:
        return None
    return SlackSummaryPoster(terminal_client(token=settings.slack_bot_token, base_url=settings.slack_api_url))


def slack_auth_test() -> SlackAuthTest:
    """Return the auth.test call for `secretbot check`, which reaches Slack code only through this module."""
    from handlers.slack_auth import call_auth_test

    return call_auth_test


def _state_dir(settings: Settings) -> Path:
    """Return the folder for flyctl's config and working directories, beside the SQLite file if there is one."""
    url = settings.database_url
    if url.startswith("sqlite+aiosqlite:///") and not url.endswith(":memory:"):
        base = Path(url[len("sqlite+aiosqlite:///") :]).resolve().parent
    else:
        base = Path.cwd()
    return base / ".secretbot"


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event | None) -> None:
    """Await `work`, or cancel it and raise StoppedDuringStartup if `stop` is set first."""
    if stop is None:
        await work
        return
    task = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    raise StoppedDuringStartup


def _healthz(database: AsyncEngine) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def healthz(_request: web.Request) -> web.Response:
        try:
            current = await asyncio.wait_for(schema_is_current(database), timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", reported below
            logger.warning("health check failed: database unreachable (%s)", type(exc).__name__)
            return web.json_response({"status": "error", "database": "unreachable"}, status=503)
        if not current:
            return web.json_response({"status": "error", "database": "schema is not at the latest revision"},
                                     status=503)
        return web.json_response({"status": "ok", "database": "ok"})

    return healthz


async def serve(settings: Settings) -> None:
    """Run the HTTP server until SIGTERM or SIGINT, then finish running steps and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Taken over before start-up, so a deploy's SIGTERM during it stops the bot cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Only the Slack check is cancelled, because a migration stopped halfway could leave
    # part of a schema. A stop during the rest of start-up is handled once it is done.
    try:
        bot = await build_bot(settings, stop=stop)
    except StoppedDuringStartup:
        logger.info("secretbot stopped during start-up, before serving")
        return
    if stop.is_set():
        with suppress(Exception):
            await bot.database.dispose()
        logger.info("secretbot stopped during start-up, before serving")
        return
    # After the drains, cleanup closes the connections; a handler still running then (a
    # client that never sends the rest of its body) is cancelled after this long instead
    # of aiohttp's 60 s, which alone would reach the kill_timeout of 60 s in fly.toml.
    runner = web.AppRunner(bot.web_app, access_log=None, shutdown_timeout=RUNNER_SHUTDOWN_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        with suppress(Exception):
            await bot.database.dispose()
        if exc.errno == errno.EADDRINUSE:
            message = f"PORT {settings.port} is already in use by another process; stop it or set PORT to a free port"
        else:
            message = f"cannot listen on PORT {settings.port} ({exc.strerror or exc}); set PORT to another port"
        raise ConfigError(message) from exc
    logger.info("secretbot listening port=%d", settings.port)
    # Start-up is over: what it loaded lives as long as the process (see bot/heap.py).
    freeze_startup_heap()
    try:
        await _serve_until_stopped(settings, bot, runner, site, stop)
    finally:
        # Idempotent; also here for an error raised before the stop signal.
        release_startup_heap()


async def _serve_until_stopped(settings: Settings, bot: Bot, runner: web.AppRunner, site: web.TCPSite,
                               stop: asyncio.Event) -> None:
    """Serve until SIGTERM or SIGINT, then stop the background tasks, drain the running steps and close."""
    if bot.socket_mode is not None:
        await bot.socket_mode.start()

    resumed = await bot.engine.resume()
    if resumed:
        logger.info("resumed %d run(s) left in progress", resumed)

    loop = asyncio.get_running_loop()
    expiry = asyncio.create_task(bot.engine.run_expiry(stop), name="approval-expiry")
    # Started after the site is up, so the first sync of every app does not delay /healthz.
    sync_task = asyncio.create_task(bot.inventory_sync.run_periodic(stop), name="inventory-sync")
    # Also after the site is up: a reminder missed while the bot was down is sent now, late.
    reminder_task = asyncio.create_task(bot.reminders.run(stop), name="daily-reminder")
    # Summaries that terminal runs queued while Slack was unreachable: now, then every minute.
    summary_task = (asyncio.create_task(bot.summaries.run(bot.summary_poster, stop), name="terminal-summaries")
                    if bot.summaries is not None and bot.summary_poster is not None else None)
    await stop.wait()
    # No new request is taken from here on, including on connections a client keeps open,
    # so every click that shutdown waits for below was accepted before the signal.
    if bot.endpoint is not None:
        bot.endpoint.stop_accepting()
    # Before anything is closed, so what shutdown drops is finalized as without the freeze.
    release_startup_heap()
    await expiry
    # A sync in progress is cancelled, which stops its flyctl process; the next start syncs again.
    sync_task.cancel()
    with suppress(asyncio.CancelledError):
        await sync_task
    # The loop ends when it next checks `stop`. A reminder still posting after the grace
    # is cancelled, and its claim expires, so a process posts it again later.
    with suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(reminder_task, timeout=REMINDER_STOP_SECONDS)
    if summary_task is not None:
        # A summary still posting is cancelled; its claim expires and another process posts it.
        with suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(summary_task, timeout=REMINDER_STOP_SECONDS)

    logger.info("shutting down; waiting up to %.0f s for running steps", SHUTDOWN_GRACE_SECONDS)
    if bot.socket_mode is not None:
        await bot.socket_mode.stop()
    await site.stop()
    # Requests acknowledged just before the signal may still wait for their turn. Their work
    # (a run row, a decision) must start before shutdown waits for the engine's own work.
    started = loop.time()
    if bot.endpoint is not None:
        # Requests begun before the signal acknowledge first, so their work is in the drains below.
        await bot.endpoint.finish_requests(SHUTDOWN_GRACE_SECONDS)
    await after_ack_turns.drain(max(0.0, SHUTDOWN_GRACE_SECONDS - (loop.time() - started)))
    # Listeners that open a modal have no after-ack turn; their work is tracked only here.
    await detach.drain(max(0.0, SHUTDOWN_GRACE_SECONDS - (loop.time() - started)))
    await bot.engine.drain(max(0.0, SHUTDOWN_GRACE_SECONDS - (loop.time() - started)))
    await runner.cleanup()
    if bot.seen is not None:
        with suppress(Exception):
            await bot.seen.close()
    with suppress(Exception):
        await bot.database.dispose()
    logger.info("secretbot stopped")
