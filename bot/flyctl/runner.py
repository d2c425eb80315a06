"""Running one flyctl process: environment, standard input, timeout and errors.

The child gets an environment built from scratch and an empty working directory, so
nothing from the bot's own environment (Slack tokens, the database URL, LOG_LEVEL,
which makes flyctl print HTTP bodies) and no stray fly.toml reaches flyctl.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.errors import FlyctlError, FlyctlNotFound, FlyctlTimeout
from bot.metrics import FLYCTL_CANCELLED, FLYCTL_EXIT, FLYCTL_NOT_STARTED, FLYCTL_TIMEOUT, BotMetrics
from bot.redact import Redactor

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

# Seconds between SIGTERM and SIGKILL when a command times out. flyctl handles SIGTERM
# by cancelling its work and exiting 127, so it gets a moment to wind down first.
DEFAULT_KILL_GRACE = 5.0

# Keys the client sets itself. extra_env may not replace them, and LOG_LEVEL is never
# passed because flyctl's debug level prints request bodies, secret values included.
FIXED_ENV_KEYS = frozenset(
    {
        "PATH",
        "HOME",
        "FLY_API_TOKEN",
        "FLY_ACCESS_TOKEN",
        "FLY_CONFIG_DIR",
        "NO_COLOR",
        "FLY_NO_UPDATE_CHECK",
        "FLY_NO_INCIDENTS_CHECK",
        "LOG_LEVEL",
    }
)

# Files flyctl loads from its working directory even when -a names the app.
APP_CONFIG_FILES = ("fly.toml", "fly.json", "fly.yaml", "fly.yml")


@dataclass(frozen=True)
class CommandResult:
    """A finished flyctl command; stdout and stderr are already redacted.

    `argv` never contains a secret value, because values travel on standard input.
    """

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    duration: float


@dataclass(frozen=True)
class Completed:
    """A command result plus the unredacted stdout, kept only long enough to parse JSON."""

    result: CommandResult
    raw_stdout: str


def build_env(
    *,
    api_token: str,
    config_dir: Path,
    home: Path,
    extra_env: Mapping[str, str] | None = None,
    path: str | None = None,
) -> dict[str, str]:
    """Build the complete child environment; nothing is inherited except PATH."""
    env = {
        "PATH": path if path is not None else os.environ.get("PATH", DEFAULT_PATH),
        "HOME": str(home),
        "FLY_API_TOKEN": api_token,
        "FLY_CONFIG_DIR": str(config_dir),
        "NO_COLOR": "1",
        "FLY_NO_UPDATE_CHECK": "1",
        "FLY_NO_INCIDENTS_CHECK": "1",
    }
    for key, value in (extra_env or {}).items():
        if key in FIXED_ENV_KEYS:
            raise ValueError(f"extra_env may not set {key}; the flyctl client sets or withholds it on purpose")
        env[key] = value
    return env


# The line that carries the API message after a multi-line GraphQL query in stderr,
# e.g. "}: Could not find App" or ": You must be authenticated to view this."
_QUERY_TAIL = re.compile(r"^\}?\s*:\s+(?P<message>\S.*)$")


def error_message(stderr: str) -> str | None:
    """Return the message of the last `Error:` line flyctl printed, without the prefix.

    fly-go wraps GraphQL errors as "failed to run <query text>: <API message>", and the
    query text spans many lines. For those the API message is taken from the line
    after the query, so the result stays one readable line.
    """
    lines = stderr.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("Error:")]
    if not starts:
        return None

    start = starts[-1]
    text = lines[start].removeprefix("Error:").strip()
    if text.endswith("failed to run") or text.endswith("{"):
        for line in lines[start + 1 :]:
            match = _QUERY_TAIL.match(line)
            if match:
                prefix = text.split("failed to run", 1)[0]
                return f"{prefix}failed to run a GraphQL query: {match['message']}"
    return text


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    # The child leads its own process group (start_new_session), so the signal also
    # reaches anything it started, which would otherwise keep the pipes open.
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    _signal_group(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=grace)
        return
    except TimeoutError:
        pass
    _signal_group(process, signal.SIGKILL)
    await process.wait()


class Runner:
    """Starts flyctl processes with a fixed environment and redacts their output."""

    def __init__(
        self,
        *,
        executable: str,
        env: Mapping[str, str],
        work_dir: Path,
        redactor: Redactor,
        kill_grace: float = DEFAULT_KILL_GRACE,
        metrics: BotMetrics | None = None,
    ) -> None:
        self.executable = executable
        self.env = dict(env)
        self.work_dir = work_dir
        self.redactor = redactor
        self.kill_grace = kill_grace
        self.metrics = metrics

    def _resolve_executable(self) -> str:
        found = shutil.which(self.executable, path=self.env.get("PATH"))
        if found is None:
            logger.error("flyctl not found executable=%s", self.executable)
            raise FlyctlNotFound(
                f"flyctl executable {self.executable!r} was not found or is not executable; "
                "install flyctl or set FLYCTL to its full path"
            )
        return found

    def _prepare_work_dir(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name in APP_CONFIG_FILES:
            if (self.work_dir / name).exists():
                raise FlyctlError(
                    f"flyctl working directory {self.work_dir} contains {name}, which flyctl would load "
                    "for every command; remove it or point work_dir at an empty directory"
                )

    async def run(
        self,
        args: list[str],
        *,
        app: str | None,
        command: str,
        timeout: float,
        stdin: bytes | None = None,
    ) -> Completed:
        """Run `flyctl ARGS`, raising FlyctlError on a non-zero exit.

        `command` names the subcommand for logs and messages, e.g. "secrets import",
        and `app` is the app it acts on, or None for commands such as `version`.
        `stdin` is written to the child and then closed. Without it the child's
        stdin is /dev/null, so a command that reads stdin gets end-of-file at once.
        """
        executable = self._resolve_executable()
        self._prepare_work_dir()
        argv = [self.executable, *args]
        subject = f"flyctl {command}" if app is None else f"flyctl {command} for app {app}"
        app = app or "-"

        logger.info("flyctl started app=%s command=%s", app, command)
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.work_dir,
                env=self.env,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as error:
            logger.error("flyctl could not start app=%s command=%s error=%s", app, command, error.strerror)
            self._record(command, app, started, failure=FLYCTL_NOT_STARTED)
            raise FlyctlNotFound(
                f"flyctl executable {self.executable!r} could not be started ({error.strerror}); "
                "install flyctl or set FLYCTL to its full path"
            ) from None

        try:
            raw_out, raw_err = await asyncio.wait_for(process.communicate(stdin), timeout=timeout)
        except TimeoutError:
            await _stop(process, self.kill_grace)
            duration = time.monotonic() - started
            logger.error(
                "flyctl timed out app=%s command=%s timeout=%.1fs duration=%.1fs", app, command, timeout, duration
            )
            self._record(command, app, started, failure=FLYCTL_TIMEOUT)
            raise FlyctlTimeout(
                f"{subject} did not finish within {timeout:g}s and was stopped; "
                "check the app's machines and releases before retrying",
                exit_code=process.returncode,
            ) from None
        except asyncio.CancelledError:
            # The caller gave up (e.g. shutdown): stop flyctl rather than orphan it.
            await asyncio.shield(_stop(process, self.kill_grace))
            logger.warning("flyctl stopped because its caller was cancelled app=%s command=%s", app, command)
            self._record(command, app, started, failure=FLYCTL_CANCELLED)
            raise

        duration = time.monotonic() - started
        exit_code = process.returncode if process.returncode is not None else -1
        raw_stdout = raw_out.decode("utf-8", errors="replace")
        result = CommandResult(
            argv=argv,
            exit_code=exit_code,
            stdout=self.redactor.redact(raw_stdout),
            stderr=self.redactor.redact(raw_err.decode("utf-8", errors="replace")),
            duration=duration,
        )

        if exit_code != 0:
            message = self._failure_message(result, subject=subject)
            logger.warning(
                "flyctl failed app=%s command=%s exit_code=%d duration=%.1fs error=%s",
                app,
                command,
                exit_code,
                duration,
                message,
            )
            self._record(command, app, started, failure=FLYCTL_EXIT)
            raise FlyctlError(message, exit_code=exit_code, stdout=result.stdout, stderr=result.stderr)

        logger.info("flyctl finished app=%s command=%s exit_code=0 duration=%.1fs", app, command, duration)
        self._record(command, app, started)
        return Completed(result=result, raw_stdout=raw_stdout)

    def _record(self, command: str, app: str, started: float, *, failure: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.flyctl_finished(command=command, app=app, seconds=time.monotonic() - started,
                                         failure=failure)

    @staticmethod
    def _failure_message(result: CommandResult, *, subject: str) -> str:
        if "Could not find App" in result.stderr:
            return (
                f"{subject} failed: the app was not found on Fly.io; "
                "check the app name and that the Fly token has access to it"
            )

        error_line = error_message(result.stderr)
        if error_line:
            return f"{subject} failed: {error_line}"

        if result.exit_code == 127:
            # flyctl exits 127 without a message when its context was cancelled,
            # including a rollout cancelled after another machine failed.
            return (
                f"{subject} exited with code 127 and printed no error, which is how flyctl "
                "reports a cancelled operation; check the app's machines and releases"
            )
        return f"{subject} exited with code {result.exit_code} and printed no Error: line"
