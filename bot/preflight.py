"""Pre-flight checks for `secretbot check`: whether `secretbot serve` has what it needs.

Each check yields one `CheckResult` that is ok, warning, failed or skipped. A warning is
something `serve` runs without but that an operator should know about, such as backups
being off. A check is skipped when it needs something that an earlier check found
missing, for example the apps when flyctl is not installed. Checks that wait on the network (database, flyctl, Slack, each
app) run under a time limit, so one that hangs fails instead of stalling the command.

No result contains a secret value: details carry names, versions, counts and error
codes, flyctl output is redacted by the flyctl client, and `run_checks` masks the
values of the secret variables once more before it returns.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from bot.config import example_placeholders, load_policy
from bot.errors import (
    CommandError,
    ConfigError,
    FlyctlError,
    FlyctlNotFound,
    FlyctlTimeout,
)
from bot.flyctl import FlyctlClient
from bot.policy import Policy
from bot.sealing import NEW_KEY_COMMAND, Sealer
from bot.settings import SECRET_VARIABLES, Settings, load_settings
from bot.storage.db import create_engine, schema_is_current

logger = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL for a flyctl that outlives its time limit. The bot
# allows more, but a pre-flight only reads, so it should end promptly.
FLYCTL_KILL_GRACE = 2.0
# Extra seconds on top of the flyctl time limit and the kill grace before a flyctl check
# is given up by asyncio, in case stopping the process itself stalls.
BACKSTOP_MARGIN = 1.0

# `flyctl version` makes no API call, so it runs even when FLY_API_TOKEN is missing, with
# this placeholder where the client requires a token. Calls that need the real token
# (the apps) are skipped in that case.
VERSION_ONLY_TOKEN = "not-used-by-flyctl-version"

MASK = "«redacted»"
# Shorter values are not masked: replacing "1" everywhere would garble the output.
MIN_MASKED_LENGTH = 4

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# auth.test errors that mean the token itself is wrong, not Slack or the network.
SLACK_TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})

ENVIRONMENT = "environment"
CONFIGURATION = "configuration"
DATABASE = "database"
FLYCTL = "flyctl"
SLACK = "slack"
BACKUP_KEY = "backup key"
APPS = "apps"


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: what was checked, how it went, and on failure what to do."""

    item: str
    status: Status
    detail: str
    fix: str | None = None


def _ok(item: str, detail: str) -> CheckResult:
    return CheckResult(item=item, status=Status.OK, detail=detail)


def _warning(item: str, detail: str, *, fix: str) -> CheckResult:
    return CheckResult(item=item, status=Status.WARNING, detail=detail, fix=fix)


def _failed(item: str, detail: str, *, fix: str) -> CheckResult:
    return CheckResult(item=item, status=Status.FAILED, detail=detail, fix=fix)


def _skipped(item: str, reason: str) -> CheckResult:
    return CheckResult(item=item, status=Status.SKIPPED, detail=f"not run because {reason}")


@dataclass(frozen=True)
class SlackAuth:
    """The result of auth.test: the workspace and bot user, or why the call failed.

    `error` is Slack's error code (e.g. "invalid_auth") or a short description of a
    failed request; it is None when Slack accepted the token.
    """

    team: str | None = None
    team_id: str | None = None
    user: str | None = None
    user_id: str | None = None
    error: str | None = None
    # Slack's error for SLACK_APP_TOKEN at apps.connections.open; None when accepted or not checked.
    app_token_error: str | None = None


class SlackAuthTest(Protocol):
    """A function that calls Slack's auth.test with a bot token, and apps.connections.open with an app token.

    The caller passes it in, because the core imports no Slack code.
    """

    def __call__(self, *, token: str, base_url: str, timeout: float,
                 app_token: str | None = None) -> Awaitable[SlackAuth]: ...


async def run_checks(
    environ: Mapping[str, str], *, timeout: float, slack_auth_test: SlackAuthTest
) -> list[CheckResult]:
    """Run every check and return the results in display order.

    `timeout` is the limit in seconds for each check that waits on the network.
    """
    try:
        settings = load_settings(environ)
    except ConfigError as exc:
        # Every later check reads its settings from the environment, so none can run.
        failure = _failed(ENVIRONMENT, str(exc), fix="correct the variable in the bot's environment and run again")
        dependents = (CONFIGURATION, DATABASE, FLYCTL, SLACK, BACKUP_KEY, APPS)
        return _masked([failure, *(_skipped(item, "the environment is invalid") for item in dependents)], environ)

    results = [_check_environment(settings)]
    configuration, policy = _check_configuration(settings)
    results.append(configuration)

    with tempfile.TemporaryDirectory(prefix="secretbot-check-") as scratch:
        # A folder of its own for flyctl, so the check never races a running bot on its config.yml.
        flyctl = FlyctlClient(
            executable=settings.flyctl,
            api_token=settings.fly_api_token or VERSION_ONLY_TOKEN,
            work_dir=Path(scratch) / "work",
            config_dir=Path(scratch) / "config",
            command_timeout=timeout,
            kill_grace=FLYCTL_KILL_GRACE,
        )
        # The three are independent, so the command waits for the slowest, not for the sum.
        database, version, slack = await asyncio.gather(
            _guarded(DATABASE, _check_database(settings, timeout=timeout)),
            _guarded(FLYCTL, _check_flyctl(flyctl, timeout=timeout)),
            _guarded(SLACK, _check_slack(settings, timeout=timeout, slack_auth_test=slack_auth_test)),
        )
        results += [database, version, slack, _check_backup_key(settings, policy)]
        results += await _check_apps(settings, policy, flyctl, flyctl_ok=version.status is Status.OK, timeout=timeout)
    return _masked(results, environ)


def _check_environment(settings: Settings) -> CheckResult:
    problems = []
    try:
        # The same choice as `serve`: an app-level token means Socket Mode, which needs no signing secret.
        if settings.slack_app_token is not None:
            settings.require_socket_mode()
        else:
            settings.require_slack()
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        settings.require_fly_api_token()
    except ConfigError as exc:
        problems.append(str(exc))
    if settings.log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL {settings.log_level!r} is not a logging level; use {', '.join(LOG_LEVELS)}")
    if problems:
        detail = problems[0] if len(problems) == 1 else f"{problems[0]}; also {'; '.join(problems[1:])}"
        return _failed(ENVIRONMENT, detail, fix="set the variables named above where the bot runs "
                                                "(`fly secrets set` for the deployed bot) and run again")
    mode = "Socket Mode" if settings.slack_app_token is not None else f"HTTP on PORT {settings.port}"
    return _ok(ENVIRONMENT, f"the variables that serve needs are set; {mode}, LOG_LEVEL {settings.log_level}")


def _check_configuration(settings: Settings) -> tuple[CheckResult, Policy | None]:
    """Load secretbot.toml as `serve` does, and also fail a configuration with which the bot rejects every run."""
    try:
        policy = load_policy(settings.config_path, required=settings.config_required)
        if policy.backups.s3 is not None:
            # Imported here because boto3 is slow to import and only needed with a bucket.
            from bot.backups.s3 import S3Copy

            S3Copy.from_settings(policy.backups.s3, settings)
    except ConfigError as exc:
        fix = "correct the file as the message says; `secretbot check-config` prints what it reads"
        return _failed(CONFIGURATION, str(exc), fix=fix), None

    source = str(policy.source_path) if policy.source_path else "built-in policy (no config file)"
    missing = []
    if not policy.slack.channel:
        missing.append("[slack] channel")
    if not policy.slack.approvers:
        missing.append("[slack] approvers")
    if missing:
        # `serve` starts without them, but rejects every /secret rotate.
        detail = f"{source}: {' and '.join(missing)} not set, so the bot rejects every rotation"
        return _failed(CONFIGURATION, detail, fix=f"set {' and '.join(missing)} in secretbot.toml"), policy
    apps = len(policy.fly.apps)
    summary = (f"{source}: {apps} app{'s' if apps != 1 else ''}, {len(policy.secrets)} secrets, "
               f"channel {policy.slack.channel}")
    placeholders = example_placeholders(policy)
    if placeholders:
        # Not a failure: the file is valid, and a test workspace may use such IDs on purpose.
        return _warning(CONFIGURATION, f"{summary}; {'; '.join(placeholders)}",
                        fix="replace the example IDs in secretbot.toml with your workspace's"), policy
    return _ok(CONFIGURATION, summary), policy


def _describe_database(url: str) -> str:
    """Name the database without its user name or password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {Path(parsed.database or '').resolve()}"
    where = f"{parsed.host or 'localhost'}:{parsed.port}" if parsed.port else (parsed.host or "localhost")
    return f"{parsed.get_backend_name()} database {parsed.database} on {where}"


async def _check_database(settings: Settings, *, timeout: float) -> CheckResult:
    """Reach the database and compare its schema revision with the latest, as GET /healthz does.

    Unlike `serve`, the check never creates a SQLite file or migrates the schema.
    """
    where = _describe_database(settings.database_url)
    parsed = make_url(settings.database_url)
    is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    # Connecting would create an empty file, which is not the bot's database either.
    if is_file and not Path(parsed.database or "").exists():
        return _failed(DATABASE, f"{where} does not exist",
                           fix="point DATABASE_URL at the bot's database, or start the bot once "
                               "(`secretbot serve`), which creates and migrates it")

    engine = create_engine(settings.database_url)
    try:
        async with asyncio.timeout(timeout):
            current = await schema_is_current(engine)
    except TimeoutError:
        return _failed(DATABASE, f"{where} did not answer within {timeout:g} s",
                       fix="check that the database server is running and reachable from this machine")
    except (SQLAlchemyError, OSError) as exc:
        return _failed(DATABASE, f"cannot reach the {where}: {_cause(exc)}",
                       fix="check DATABASE_URL and that the database server is running and accepts the connection")
    finally:
        await engine.dispose()
    if not current:
        return _failed(DATABASE, f"{where} is reachable, but its schema is not at the latest revision",
                       fix="start the bot once (`secretbot serve`), which migrates the schema at start-up")
    return _ok(DATABASE, f"{where}, schema at the latest revision")


def _cause(exc: BaseException) -> str:
    """Return the driver's error type and first line, because SQLAlchemy's own text adds the SQL and a link."""
    original: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        original = exc.orig.__cause__ or exc.orig
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0]}" if lines else type(original).__name__


async def _check_flyctl(flyctl: FlyctlClient, *, timeout: float) -> CheckResult:
    try:
        async with asyncio.timeout(timeout + FLYCTL_KILL_GRACE + BACKSTOP_MARGIN):
            version = await flyctl.version()
    except FlyctlNotFound as exc:
        return _failed(FLYCTL, str(exc), fix="install flyctl (https://fly.io/docs/flyctl/install/) "
                                             "or set FLYCTL to its full path")
    except (FlyctlTimeout, TimeoutError):
        return _failed(FLYCTL, f"`flyctl version` did not finish within {timeout:g} s and was stopped",
                       fix="run `flyctl version` by hand to see what it waits for, and check FLYCTL")
    except FlyctlError as exc:
        return _failed(FLYCTL, str(exc), fix="run `flyctl version` by hand, and check FLYCTL")
    if not version:
        return _failed(FLYCTL, "`flyctl version` printed nothing", fix="check that FLYCTL names flyctl")
    return _ok(FLYCTL, version)


async def _check_slack(settings: Settings, *, timeout: float, slack_auth_test: SlackAuthTest) -> CheckResult:
    if not settings.slack_bot_token:
        return _skipped(SLACK, "SLACK_BOT_TOKEN is not set")
    try:
        async with asyncio.timeout(timeout):
            auth = await slack_auth_test(token=settings.slack_bot_token, base_url=settings.slack_api_url,
                                         timeout=timeout, app_token=settings.slack_app_token)
    except TimeoutError:
        return _failed(SLACK, f"auth.test at {settings.slack_api_url} did not answer within {timeout:g} s",
                       fix="check SLACK_API_URL and that this machine can reach Slack")

    if auth.error in SLACK_TOKEN_ERRORS:
        return _failed(SLACK, f"Slack rejected SLACK_BOT_TOKEN: {auth.error}",
                       fix="copy the Bot User OAuth Token (xoxb-) again from the Slack app's OAuth & Permissions page")
    if auth.error is not None:
        return _failed(SLACK, f"auth.test at {settings.slack_api_url} failed: {auth.error}",
                       fix="check SLACK_API_URL and that this machine can reach Slack, then run again")
    accepted = f"token accepted: team {auth.team} ({auth.team_id}), bot user {auth.user} ({auth.user_id})"
    if auth.app_token_error is not None:
        return _failed(SLACK, f"{accepted}, but Slack rejected SLACK_APP_TOKEN at apps.connections.open: "
                              f"{auth.app_token_error}",
                       fix="create an app-level token (xapp-) with the connections:write scope under the Slack "
                           "app's Basic Information and set it as SLACK_APP_TOKEN")
    if settings.slack_app_token:
        accepted += "; app-level token accepted for Socket Mode"
    return _ok(SLACK, accepted)


def _check_backup_key(settings: Settings, policy: Policy | None) -> CheckResult:
    """Check SECRETBOT_BACKUP_KEY: optional, unless secretbot.toml sets [backups.s3], which copies the backups."""
    create = NEW_KEY_COMMAND
    if not settings.backup_key and policy is not None and policy.backups.s3 is not None:
        return _failed(BACKUP_KEY, "SECRETBOT_BACKUP_KEY is not set, so backups are off and [backups.s3] in "
                                   "secretbot.toml has nothing to copy",
                       fix=f"create a key with {create} and set it as SECRETBOT_BACKUP_KEY, "
                           "or remove [backups.s3]")
    if not settings.backup_key:
        return _warning(BACKUP_KEY, "SECRETBOT_BACKUP_KEY is not set, so no backups are kept: `/secret lost` "
                                    "cannot restore a lost value and can only replace it, rollback is off, and a "
                                    "value waiting on a manual step is lost if the bot restarts",
                        fix=f"to keep backups, create a key with {create} and set it as SECRETBOT_BACKUP_KEY")
    try:
        sealer = Sealer.from_setting(settings.backup_key)
    except ConfigError as exc:
        return _failed(BACKUP_KEY, str(exc), fix="set SECRETBOT_BACKUP_KEY to the key the bot already uses; "
                                                 f"a new key comes from {create}")
    return _ok(BACKUP_KEY, f"SECRETBOT_BACKUP_KEY is a valid AES-256 key, key ID {sealer.key_id}")


async def _check_apps(
    settings: Settings, policy: Policy | None, flyctl: FlyctlClient, *, flyctl_ok: bool, timeout: float
) -> list[CheckResult]:
    """List each configured app's secrets through flyctl, a read-only call, one row per app."""
    if policy is None:
        return [_skipped(APPS, "the configuration is invalid")]
    if not policy.fly.apps:
        return [_failed(APPS, "no apps are configured, so the bot rejects every run",
                        fix="list the managed apps in [fly] apps in secretbot.toml")]
    items = [f"app {app}" for app in policy.fly.apps]
    if not flyctl_ok:
        return [_skipped(item, "flyctl failed") for item in items]
    if not settings.fly_api_token:
        return [_skipped(item, "FLY_API_TOKEN is not set") for item in items]

    # At most as many flyctl processes at once as the inventory sync runs.
    slots = asyncio.Semaphore(policy.inventory.sync_concurrency)

    async def check_one(app: str, item: str) -> CheckResult:
        async with slots:
            return await _guarded(item, _check_app(flyctl, app, item=item, timeout=timeout))

    return list(await asyncio.gather(*(check_one(app, item) for app, item in zip(policy.fly.apps, items,
                                                                                   strict=True))))


async def _check_app(flyctl: FlyctlClient, app: str, *, item: str, timeout: float) -> CheckResult:
    try:
        async with asyncio.timeout(timeout + FLYCTL_KILL_GRACE + BACKSTOP_MARGIN):
            secrets = await flyctl.list_secrets(app)
    except (FlyctlTimeout, TimeoutError):
        return _failed(item, f"`flyctl secrets list` did not finish within {timeout:g} s and was stopped",
                       fix="check that this machine can reach Fly.io, then run again")
    except (FlyctlError, CommandError) as exc:
        # FlyctlError messages are built from flyctl output that the client has already redacted.
        return _failed(item, str(exc), fix="check the app name in [fly] apps and that FLY_API_TOKEN can "
                                           "read the app's secrets (`fly secrets list -a APP`)")
    count = len(secrets)
    return _ok(item, f"reachable through flyctl, {count} secret{'s' if count != 1 else ''} listed")


async def _guarded(item: str, check: Awaitable[CheckResult]) -> CheckResult:
    """Turn an unexpected exception into a failed row, so one broken check does not hide the others."""
    try:
        return await check
    except Exception as exc:
        # Only the type is logged, because a driver's message can contain a connection string.
        logger.warning("check raised unexpectedly item=%s error=%s", item, type(exc).__name__)
        logger.debug("check raised unexpectedly item=%s", item, exc_info=True)
        return _failed(item, f"the check raised {type(exc).__name__}",
                       fix="run again with LOG_LEVEL=DEBUG to see the traceback")


def _masked(results: list[CheckResult], environ: Mapping[str, str]) -> list[CheckResult]:
    values = [environ[name] for name in SECRET_VARIABLES if len(environ.get(name, "").strip()) >= MIN_MASKED_LENGTH]
    database_url = environ.get("DATABASE_URL")
    if database_url:
        try:
            password = make_url(database_url).password
        except (ArgumentError, ValueError):
            # An unparsable URL has no password to mask, and the database check reports it.
            password = None
        if password and len(str(password)) >= MIN_MASKED_LENGTH:
            values.append(str(password))
    # A proxy or gateway in front of Slack may take credentials in the URL's user part.
    slack_password = urlsplit(environ.get("SLACK_API_URL", "")).password
    if slack_password and len(slack_password) >= MIN_MASKED_LENGTH:
        values.append(slack_password)
    # Longest first, so a value that contains another one is masked whole.
    values.sort(key=len, reverse=True)

    def mask(text: str | None) -> str | None:
        if text is None:
            return None
        for value in values:
            text = text.replace(value, MASK).replace(value.strip(), MASK)
        return text

    return [replace(result, detail=mask(result.detail) or "", fix=mask(result.fix)) for result in results]

