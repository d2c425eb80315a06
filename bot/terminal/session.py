"""One terminal run from start to end: services, the run itself, and its summary for Slack.

The services are the bot's own (database, flyctl, sealed values, backups), built from the
same settings, so the run lands in the same tables and audit log as the bot's runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.backups import build_backup_store
from bot.errors import ConfigError, StorageError
from bot.flyctl import FlyctlClient, Redactor
from bot.flyctl.runner import DEFAULT_PATH
from bot.policy import Policy
from bot.runbook.context import Services
from bot.runbook.engine import TERMINAL_ORIGIN, Engine
from bot.runbook.views import TERMINAL_STATUSES, RunView
from bot.sealing import Sealer
from bot.settings import Settings
from bot.storage.db import (
    connect_existing,
    create_engine,
    create_session_factory,
    migrate,
)
from bot.storage.models import Run
from bot.summaries import RunSummary, SummaryPoster, SummaryPostError, SummaryQueue
from bot.terminal.display import TerminalObserver
from bot.terminal.driver import DRAIN_SECONDS, RunRequest, TerminalRun
from bot.terminal.identity import TerminalIdentity
from bot.terminal.lease import LEASE, Heartbeat, lease_expired
from bot.terminal.plan import StepPlan
from bot.terminal.prompts import Interrupts, Prompter

logger = logging.getLogger(__name__)


def check_flyctl(settings: Settings) -> None:
    """Raise ConfigError unless the flyctl executable is found as the flyctl client will look for it."""
    if shutil.which(settings.flyctl, path=os.environ.get("PATH", DEFAULT_PATH)) is None:
        raise ConfigError(f"flyctl executable {settings.flyctl!r} was not found or is not executable; "
                          "install flyctl or set FLYCTL to its full path")


def new_sqlite_file(url: str) -> Path | None:
    """Return the SQLite file of `url` if it does not exist yet (the run would create it), else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database or "")
    return None if path.exists() else path.resolve()


def check_database_exists(url: str, *, new_database: bool) -> Path | None:
    """Raise StorageError when `url` names a SQLite file that does not exist, unless `new_database`.

    A new file would hold none of the bot's app locks and open runs, so the run could change
    an app while the bot changes it too. Returns the file to be created when allowed.
    """
    created = new_sqlite_file(url)
    if created is not None and not new_database:
        raise StorageError(f"the SQLite database file {created} of DATABASE_URL does not exist; set DATABASE_URL to "
                           "the bot's database, or pass --new-database on a machine where the bot has never run")
    return created


def _flyctl_client(settings: Settings, policy: Policy, redactor: Redactor) -> FlyctlClient:
    from bot.server import _state_dir

    state_dir = _state_dir(settings)
    return FlyctlClient(
        executable=settings.flyctl,
        api_token=settings.fly_api_token or "",
        # Not the bot's own folders: two flyctl processes sharing a config dir race on its
        # config.yml, and the bot may be running next to this command.
        work_dir=state_dir / "run-flyctl-work",
        config_dir=state_dir / "run-flyctl-config",
        command_timeout=policy.fly.command_timeout,
        deploy_timeout=policy.fly.deploy_timeout,
        redactor=redactor,
    )


async def run_from_terminal(*, settings: Settings, policy: Policy, request: RunRequest, identity: TerminalIdentity,
                            plans: list[StepPlan], console: Console, interrupts: Interrupts,
                            new_database: bool = False) -> int:
    """Run the request to its end and post or queue its summary; return the exit status (0 succeeded, 1 not)."""
    # Imported here because bot.server loads the Slack app, and the core reaches Slack only through it.
    from bot.server import terminal_summary_poster
    from runbooks import RUNBOOKS

    check_flyctl(settings)
    redactor = Redactor()
    flyctl = _flyctl_client(settings, policy, redactor)
    poster = terminal_summary_poster(settings)
    # Checked before the database is touched, so a bad key leaves no new database behind.
    sealer = Sealer.from_setting(settings.backup_key)

    created = check_database_exists(settings.database_url, new_database=new_database)
    database = create_engine(settings.database_url)
    heartbeat = Heartbeat(settings.database_url)
    try:
        await migrate(database)
        if created is not None:
            console.print(Text(f"Created a new database at {created} (--new-database). If the bot uses another "
                               "DATABASE_URL, this run's audit trail is not in the bot's database.", style="yellow"))
        sessions = create_session_factory(database)
        backups = build_backup_store(settings=settings, policy=policy, sessions=sessions,
                                     sealer=None if sealer.ephemeral else sealer)
        services = Services(policy=policy, sessions=sessions, flyctl=flyctl, sealer=sealer, redactor=redactor,
                            backups=backups)

        terminal = TerminalRun(console=console, prompter=Prompter(console, interrupts), request=request,
                               identity=identity, plans=plans, executable=settings.flyctl)
        terminal.heartbeat = heartbeat
        observer = TerminalObserver(console, redactor, on_created=terminal.record_origin)
        engine = Engine(services=services, runbooks=RUNBOOKS, observer=observer, gate=terminal.gate)
        terminal.attach(engine=engine, observer=observer)

        interrupts.install(asyncio.get_running_loop(), terminal.interrupt)
        try:
            view = await terminal.execute()
        finally:
            interrupts.restore()
            heartbeat.stop()
        if view is None:
            return 1
        await _send_summary(view, sessions=sessions, policy=policy, identity=identity, poster=poster, console=console)
        return 0 if view.status == "succeeded" else 1
    finally:
        await database.dispose()


async def _send_summary(view: RunView, *, sessions: async_sessionmaker[AsyncSession], policy: Policy,
                        identity: TerminalIdentity, poster: SummaryPoster | None, console: Console) -> None:
    """Post the run's summary to the runbook channel, or leave it queued for a later poster, and print which."""
    channel = policy.slack.channel
    if channel is None:
        console.print(Text("No summary is posted or queued: slack.channel is not set in secretbot.toml."))
        return
    summary = RunSummary.from_run(view, operator=identity.operator, hostname=identity.hostname)
    queue = SummaryQueue(sessions=sessions)
    later = ("`secretbot serve` posts it when it starts and checks for queued summaries every minute; "
             "the next `secretbot run` with Slack access posts it too.")
    if poster is None:
        await queue.enqueue(summary, channel=channel, claim=False)
        console.print(Text(f"Summary queued in the database, not posted: SLACK_BOT_TOKEN is not set here. {later}"))
        return

    claim = await queue.enqueue(summary, channel=channel, claim=True)
    assert claim is not None
    try:
        await queue.post(claim, poster, late=False)
    except SummaryPostError as exc:
        console.print(Text(f"Slack did not accept the summary ({exc}), so it is queued in the database. {later}",
                           style="yellow"))
        return
    console.print(Text(f"Summary posted to the runbook channel {channel}."))

    earlier = await queue.flush(poster)
    if earlier.posted:
        console.print(Text(f"Also posted {earlier.posted} summary(ies) that earlier terminal runs had queued."))


async def abandon_from_terminal(*, settings: Settings, policy: Policy, run_id: str, identity: TerminalIdentity,
                                console: Console, interrupts: Interrupts) -> int:
    """End a terminal run whose `secretbot run` process died; return the exit status (0 ended, 1 not).

    An explicit command rather than `serve` ending such runs by itself: a lease also runs out
    when the process is only suspended (Ctrl-Z, a laptop asleep), and a person who has checked
    that the process is gone should be the one to end its run. The app lock is already stale
    once the lease has run out (AppLocks), so other runs do not wait for this command.
    NOTE: the lease is read once, before the question; a suspended process resumed while
    this command runs is not stopped, and its next step then finds the run ended.
    """
    from bot.server import terminal_summary_poster
    from runbooks import RUNBOOKS

    check_flyctl(settings)
    redactor = Redactor()
    flyctl = _flyctl_client(settings, policy, redactor)
    async with connect_existing(settings.database_url) as database:
        sessions = create_session_factory(database)
        async with sessions() as session:
            run = await session.get(Run, run_id)
        if run is None:
            console.print(Text(f"Run {run_id} does not exist in this DATABASE_URL's database.", style="red"))
            return 1
        if run.status in TERMINAL_STATUSES:
            console.print(Text(f"Run {run_id} already ended ({run.status}); nothing to abandon.", style="red"))
            return 1
        if run.origin != TERMINAL_ORIGIN:
            console.print(Text(f"Run {run_id} was started in Slack, where `secretbot serve` resumes it; cancel it "
                               f"there with `/secret cancel {run_id}`.", style="red"))
            return 1
        last = run.heartbeat_at or run.updated_at
        if not lease_expired(run.heartbeat_at, run.updated_at):
            console.print(Text(
                f"Run {run_id} is still held by its `secretbot run` process (last heartbeat {last:%H:%M:%S} UTC). "
                f"Stop it in its terminal (Ctrl-C), or wait {int(LEASE.total_seconds())} s after the process has "
                "died and try again.", style="red"))
            return 1

        sealer = Sealer.from_setting(settings.backup_key)
        backups = build_backup_store(settings=settings, policy=policy, sessions=sessions,
                                     sealer=None if sealer.ephemeral else sealer)
        services = Services(policy=policy, sessions=sessions, flyctl=flyctl, sealer=sealer, redactor=redactor,
                            backups=backups)
        observer = TerminalObserver(console, redactor, on_created=_never_created)
        engine = Engine(services=services, runbooks=RUNBOOKS, observer=observer)
        view = await engine.require_run(run_id)
        step = view.steps[view.current_step]
        console.print(Text.assemble(("Run ", "bold"), (run_id, "bold"),
                                    f": {view.title} {', '.join(view.secret_names)} on {view.app}, "
                                    f"started by {view.requester}"))
        console.print(Text(f"Its process stopped refreshing its lease at {last:%Y-%m-%d %H:%M:%S} UTC. It is at step "
                           f"{step.position + 1}/{len(view.steps)} '{step.title}' ({step.status})."))
        if step.status == "running":
            console.print(Text(f"That step was running: Fly's state is read to learn what it did "
                               f"(`flyctl secrets list -a {view.app}`)."))
        prompter = Prompter(console, interrupts)
        if not prompter.confirm(f"End run {run_id} as failed?"):
            console.print(Text("Nothing was changed."))
            return 1

        cause = (f"the run was abandoned by {identity.requester} on host {identity.hostname}, because its "
                 "`secretbot run` process stopped refreshing its lease")
        await audit.append(sessions, audit.AuditEntry(
            event="run.abandoned", actor=identity.requester, run_id=run_id, app=view.app,
            secret=",".join(view.secret_names),
            detail={"os_user": identity.os_user, "operator": identity.operator, "hostname": identity.hostname,
                    "step": step.position, "step_status": step.status,
                    "last_heartbeat": last.isoformat()}))
        logger.warning("abandoning terminal run run_id=%s step=%d status=%s", run_id, step.position, step.status)
        view = await engine.stop_settled(run_id=run_id, user_id=identity.requester, cause=cause)
        await engine.drain(DRAIN_SECONDS)
        await _send_summary(view, sessions=sessions, policy=policy, identity=identity,
                            poster=terminal_summary_poster(settings), console=console)
        return 0


async def _never_created(run: RunView) -> bool:
    """The observer's start hook, which an abandon never calls: it creates no run."""
    return False
