"""`secretbot run`: a runbook driven from the terminal, the break-glass path when Slack is down.

A person must be at the terminal: every step is confirmed before it runs, and there is
no option to answer yes in advance. `--dry-run` prints the steps and the flyctl command
lines instead, and needs neither flyctl nor the database.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import shutil
import sys

import click
from rich.console import Console
from rich.text import Text

from bot.config import load_policy
from bot.errors import ConfigError, SecretbotError
from bot.flyctl.runner import DEFAULT_PATH
from bot.policy import Policy, Priority
from bot.redact import Redactor
from bot.settings import Settings, load_settings
from bot.terminal.display import print_step_plan, step_heading
from bot.terminal.driver import RunRequest
from bot.terminal.identity import TerminalIdentity, clean_name, name_problem
from bot.terminal.plan import PlanRequest, plan_run

logger = logging.getLogger(__name__)

RUNBOOK_KINDS = ("rotate", "compromised", "lost")
# The limits of the Slack command, so a reason reads the same in the audit log and in Slack.
MAX_REASON_LENGTH = 500
MAX_SECRETS_PER_RUN = 20
# With no values registered it masks what looks like key material.
_REDACTOR = Redactor()


def resolve_app(app: str | None, policy: Policy) -> str:
    configured = list(policy.fly.apps)
    if not configured:
        raise ConfigError("no Fly app is configured; add app names to fly.apps in secretbot.toml")
    if app is None:
        return configured[0]
    if app in configured:
        return app
    raise click.UsageError(f"unknown app {app!r}{_suggestion(app, configured)}; "
                           f"configured apps: {', '.join(configured)}")


def resolve_names(names: tuple[str, ...], policy: Policy) -> tuple[str, ...]:
    """Check the names against secretbot.toml and add the partner of each paired secret."""
    known = sorted(policy.secrets)
    resolved: list[str] = []
    for name in names:
        if "=" in name:
            # Not quoted: the part after "=" may be a value, typed by mistake.
            raise click.UsageError("a name contains '=': values are never given as arguments; name only the "
                                   "secret, e.g. `secretbot run rotate JWT_SECRET`, and the run makes or asks for "
                                   "the new value")
        if name not in policy.secrets:
            raise click.UsageError(f"unknown secret {_shown(name)}{_suggestion(name, known)}; "
                                   f"known secrets: {', '.join(known)}")
        if name not in resolved:
            resolved.append(name)
    for name in list(resolved):
        # A key ID and its key change together, in one flyctl call and one restart.
        partner = policy.secrets[name].paired_with
        if partner is not None and partner not in resolved:
            resolved.append(partner)
    if len(resolved) > MAX_SECRETS_PER_RUN:
        raise click.UsageError(f"at most {MAX_SECRETS_PER_RUN} secrets can change in one run, got {len(resolved)}")
    return tuple(resolved)


def check_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    cleaned = " ".join("".join(char for char in reason if char.isprintable() or char.isspace()).split())
    if len(cleaned) > MAX_REASON_LENGTH:
        raise click.UsageError(f"--reason is {len(cleaned)} characters long; keep it under {MAX_REASON_LENGTH}")
    if _REDACTOR.redact(cleaned) != cleaned:
        raise click.UsageError("--reason looks like it contains a key or token; leave values out of the reason")
    return cleaned or None


def check_operator(operator: str | None) -> str | None:
    if operator is None:
        return None
    cleaned = clean_name(operator)
    problem = name_problem(operator, cleaned)
    if problem is not None:
        raise click.UsageError(f"--operator is not accepted: {problem}")
    return cleaned


def check_approvers(policy: Policy, names: tuple[str, ...]) -> None:
    """Raise ConfigError when the approval step would fail at once for want of approvers.

    The terminal reads no Slack user groups, so only user IDs in slack.approvers count.
    """
    users = [entry for entry in policy.slack.approvers if not entry.startswith("S")]
    high = any(policy.priority_of(name) is Priority.HIGH for name in names)
    needed = 2 if policy.slack.two_approvers_for_high and high else 1
    if len(users) < needed:
        raise ConfigError(
            f"the approval step needs {needed} user ID(s) in slack.approvers, and {len(users)} are listed; user "
            "groups (S…) do not count at the terminal. Add user IDs to slack.approvers in secretbot.toml")


def _suggestion(word: str, candidates: list[str]) -> str:
    by_upper = {candidate.upper(): candidate for candidate in candidates}
    matches = difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=0.6)
    return f" (did you mean {by_upper[matches[0]]}?)" if matches else ""


def _shown(text: str) -> str:
    """Quote what was typed, masked if it looks like a key, since a value may have been typed by mistake."""
    return repr(_REDACTOR.redact(text)[:80])


def print_dry_run(console: Console, *, settings: Settings, policy: Policy, request: RunRequest,
                  plan_request: PlanRequest) -> None:
    plans = plan_run(plan_request)
    headline = f"{plan_request.runbook.title} {', '.join(request.names)} on {request.app}"
    console.print(Text(f"Dry run of {headline}: nothing runs, and nothing is read or written.", style="bold"))
    console.print(Text(f"configuration: {policy.source_path or 'built-in policy (no config file)'}"))
    for plan in plans:
        console.print()
        console.print(step_heading(plan.position, len(plans), plan.title))
        print_step_plan(console, plan, executable=settings.flyctl)
    console.print()
    console.print(Text("A real run asks before each step, and values show as ****** here and nowhere else."))
    if shutil.which(settings.flyctl, path=os.environ.get("PATH", DEFAULT_PATH)) is None:
        console.print(Text(f"Note: {settings.flyctl!r} is not found on PATH here; a real run needs flyctl, or "
                           "FLYCTL set to its full path.", style="yellow"))
    if not settings.fly_api_token:
        console.print(Text("Note: FLY_API_TOKEN is not set here; a real run needs it.", style="yellow"))
    try:
        check_approvers(policy, request.names)
    except ConfigError as exc:
        console.print(Text(f"Note: a real run would not start: {exc}.", style="yellow"))


@click.command("run")
@click.argument("kind", type=click.Choice(RUNBOOK_KINDS), required=False)
@click.argument("names", nargs=-1)
@click.option("--app", help="The Fly app, one of fly.apps; the first one by default.")
@click.option("--reason", help="Why the run is needed; stored in the audit log and the summary.")
@click.option("--operator", help="Your name, recorded with your OS user and the host name.")
@click.option("--dry-run", is_flag=True, help="Print every step and flyctl command line, values masked; run nothing.")
@click.option("--new-database", is_flag=True,
              help="Allow creating the SQLite file of DATABASE_URL when it does not exist (a machine where the bot "
                   "never ran). Without it a missing file is an error, because a new database does not see the "
                   "bot's app locks and open runs.")
@click.option("--abandon", "abandon_id", metavar="RUN_ID",
              help="End a terminal run whose `secretbot run` process died (its lease ran out): asks first, reads "
                   "Fly's state if a step was running, and records the run as failed. Takes no KIND or NAMES.")
def run(kind: str | None, names: tuple[str, ...], app: str | None, reason: str | None, operator: str | None,
        dry_run: bool, new_database: bool, abandon_id: str | None) -> None:
    """Run the KIND runbook on NAMES from this terminal, for when Slack is unavailable.

    Every step is confirmed at the terminal before it runs, approvals are answered here,
    and values are typed at a hidden prompt (or read from standard input when it is not a
    terminal). The run goes into the bot's database and audit log, and its summary is
    posted to the runbook channel, or queued until Slack can be reached. DATABASE_URL
    must name the bot's existing database (see --new-database). Ctrl-C, SIGTERM and
    SIGHUP stop the run and release the app.
    Exits 0 when the run succeeded, 1 when it failed or was denied or stopped, 2 on a usage or configuration error.
    """
    # Imported here because bot.cli imports this module to add the command.
    from bot.logs import configure_logging
    from runbooks import RUNBOOKS

    if abandon_id is not None:
        if kind is not None or names or dry_run or new_database or app or reason:
            raise click.UsageError("--abandon RUN_ID takes no KIND, NAMES or other options than --operator")
        sys.exit(_abandon(abandon_id, operator))
    if kind is None or not names:
        raise click.UsageError("give a KIND (rotate, compromised or lost) and at least one secret NAME, "
                               "e.g. `secretbot run rotate JWT_SECRET`")
    try:
        settings = load_settings()
        policy = load_policy(settings.config_path, required=settings.config_required)
        request = RunRequest(kind=kind, app=resolve_app(app, policy), names=resolve_names(names, policy),
                             reason=check_reason(reason))
        operator_name = check_operator(operator)
        plan_request = PlanRequest(runbook=RUNBOOKS[kind], app=request.app, names=request.names, policy=policy,
                                   backups_enabled=bool(settings.backup_key))
        console = Console(highlight=False)
        if dry_run:
            print_dry_run(console, settings=settings, policy=policy, request=request, plan_request=plan_request)
            return
        identity = TerminalIdentity.current(operator=operator_name)
        check_approvers(policy, request.names)
        configure_logging("WARNING")
        status = asyncio.run(_run(settings=settings, policy=policy, request=request, identity=identity,
                                  plan_request=plan_request, console=console, new_database=new_database))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
    sys.exit(status)


async def _run(*, settings: Settings, policy: Policy, request: RunRequest, identity: TerminalIdentity,
               plan_request: PlanRequest, console: Console, new_database: bool) -> int:
    from bot.terminal.prompts import Interrupts
    from bot.terminal.session import run_from_terminal

    return await run_from_terminal(settings=settings, policy=policy, request=request, identity=identity,
                                   plans=plan_run(plan_request), console=console, interrupts=Interrupts(),
                                   new_database=new_database)


def _abandon(run_id: str, operator: str | None) -> int:
    from bot.logs import configure_logging
    from bot.terminal.prompts import Interrupts
    from bot.terminal.session import abandon_from_terminal

    try:
        settings = load_settings()
        policy = load_policy(settings.config_path, required=settings.config_required)
        identity = TerminalIdentity.current(operator=check_operator(operator))
        configure_logging("WARNING")
        return asyncio.run(abandon_from_terminal(settings=settings, policy=policy, run_id=run_id.strip(),
                                                 identity=identity, console=Console(highlight=False),
                                                 interrupts=Interrupts()))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        return 2
