"""Typed flyctl commands: runs the command lines of `bot.flyctl.commands` and parses their output."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ConfigError
from bot.flyctl import commands
from bot.flyctl.commands import FlyCommand
from bot.flyctl.importfile import encode_import
from bot.flyctl.runner import DEFAULT_KILL_GRACE, CommandResult, Completed, Runner, build_env
from bot.flyctl.shapes import (
    AppStatus,
    FlySecret,
    LogLine,
    Release,
    parse_logs,
    parse_releases,
    parse_secrets,
    parse_status,
)
from bot.redact import Redactor

if TYPE_CHECKING:
    from bot.metrics import BotMetrics

logger = logging.getLogger(__name__)


class FlyctlClient:
    """Runs flyctl commands for secretbot and parses their JSON output.

    Each command runs with a fresh environment (see `runner.build_env`) in `work_dir`,
    which the client creates empty. Reads use `command_timeout`; `import_secrets`
    waits for the rolling restart and uses `deploy_timeout`.

    NOTE: flyctl rewrites config.yml in the config dir (the secrets min-version per
    app) and two flyctl processes sharing that dir can race on it. The client does
    not serialize commands; callers should run one change per app at a time.
    """

    def __init__(
        self,
        executable: str = "flyctl",
        *,
        api_token: str,
        work_dir: Path,
        config_dir: Path,
        command_timeout: float = 60.0,
        deploy_timeout: float = 600.0,
        redactor: Redactor | None = None,
        extra_env: Mapping[str, str] | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        metrics: BotMetrics | None = None,
    ) -> None:
        if not api_token:
            raise ConfigError("the Fly API token is missing; set FLY_API_TOKEN to a Fly deploy or org token")

        self.redactor = redactor if redactor is not None else Redactor()
        self.redactor.add(api_token)
        self.command_timeout = command_timeout
        self.deploy_timeout = deploy_timeout

        # flyctl writes its cache and the secrets min-version into the config dir on
        # every run; 0700 because config.yml can also hold an access token.
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = build_env(api_token=api_token, config_dir=config_dir, home=config_dir.parent, extra_env=extra_env)
        self._runner = Runner(
            executable=executable,
            env=env,
            work_dir=work_dir,
            redactor=self.redactor,
            kill_grace=kill_grace,
            metrics=metrics,
        )

    async def version(self) -> str:
        """Return flyctl's version line, e.g. "flyctl v0.4.87 linux/amd64 …"."""
        completed = await self._run(commands.version(), timeout=self.command_timeout)
        # Unredacted on purpose: the line contains no input, but its 40-hex commit ID
        # looks like key material to the redactor.
        lines = completed.raw_stdout.strip().splitlines()
        return lines[0] if lines else ""

    async def list_secrets(self, app: str) -> list[FlySecret]:
        """List the app's secret names and digests (never values)."""
        completed = await self._run(commands.secrets_list(app), timeout=self.command_timeout)
        return parse_secrets(completed.raw_stdout, app=app)

    async def status(self, app: str) -> AppStatus:
        """Return the app's current release and machines, with check output redacted."""
        completed = await self._run(commands.status(app), timeout=self.command_timeout)
        status = parse_status(completed.raw_stdout, app=app)

        # Health check output is written by the app and may echo its environment.
        machines = [
            dataclasses.replace(
                machine,
                checks=[
                    dataclasses.replace(check, output=self.redactor.redact(check.output)) for check in machine.checks
                ],
            )
            for machine in status.machines
        ]
        return dataclasses.replace(status, machines=machines)

    async def releases(self, app: str) -> list[Release]:
        """Return the app's recent releases, newest first."""
        completed = await self._run(commands.releases(app), timeout=self.command_timeout)
        return parse_releases(completed.raw_stdout, app=app)

    async def recent_logs(self, app: str, *, limit: int = 50) -> list[LogLine]:
        """Return the last `limit` lines that `flyctl logs --no-tail` prints, messages redacted.

        Messages are written by the app and may echo its environment, so each one
        passes through the redactor. flyctl decides how far back `--no-tail` reaches,
        and `limit` only trims what it printed.
        """
        command = commands.recent_logs(app)
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, got {limit}; pass how many of the newest lines to return")

        completed = await self._run(command, timeout=self.command_timeout)
        lines = parse_logs(completed.raw_stdout, app=app)[-limit:]
        return [dataclasses.replace(line, message=self.redactor.redact(line.message)) for line in lines]

    async def import_secrets(self, app: str, values: Mapping[str, str]) -> CommandResult:
        """Set secrets through `flyctl secrets import`, values on standard input only.

        The values are encoded and checked first, so an `UnsafeValueError` leaves the
        app untouched. flyctl then stores all values in one batch and rolls every
        machine; a non-zero exit after that point means "stored, not fully rolled out".
        """
        command = commands.secrets_import(app, tuple(values))
        text = encode_import(values)
        for value in values.values():
            # flyctl echoes a malformed input line on stderr; mask it before anyone reads it.
            self.redactor.add(value)

        logger.info("importing secrets app=%s names=%s", app, ",".join(sorted(values)))
        completed = await self._run(command, timeout=self.deploy_timeout, stdin=text.encode("utf-8"))
        return completed.result

    async def unset_secrets(self, app: str, names: Sequence[str]) -> CommandResult:
        """Remove secrets with `flyctl secrets unset`, which then rolls every machine.

        flyctl v0.4.87 does not fail for a name the app does not have, so callers check
        the list first. As for an import, a non-zero exit after the batch update means
        "removed, not fully rolled out". Uses `deploy_timeout`.
        """
        command = commands.secrets_unset(app, tuple(names))
        logger.info("unsetting secrets app=%s names=%s", app, ",".join(sorted(names)))
        completed = await self._run(command, timeout=self.deploy_timeout)
        return completed.result

    async def deploy_secrets(self, app: str) -> CommandResult:
        """Roll staged secrets out with `flyctl secrets deploy`; every machine is updated in place.

        Uses `deploy_timeout`, since flyctl waits for the rolling restart as for an import.
        """
        logger.info("deploying staged secrets app=%s", app)
        completed = await self._run(commands.secrets_deploy(app), timeout=self.deploy_timeout)
        return completed.result

    async def restart_app(self, app: str) -> CommandResult:
        """Restart the app's started machines with `flyctl apps restart`, without a new release.

        A restart is not documented to apply staged secrets; `deploy_secrets` does that.
        """
        logger.info("restarting app=%s", app)
        completed = await self._run(commands.apps_restart(app), timeout=self.deploy_timeout)
        return completed.result

    async def _run(self, command: FlyCommand, *, timeout: float, stdin: bytes | None = None) -> Completed:
        return await self._runner.run(command.argv, app=command.app, command=command.name, timeout=timeout,
                                      stdin=stdin)
