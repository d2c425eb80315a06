"""Start `secretbot serve` as a real process against the stand-ins, and stop it again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests import databases
from tests.databases import BotDatabase

REPO = Path(__file__).resolve().parent.parent
FLYCTL_STANDIN = REPO / "tests" / "standins" / "flyctl"
SIGNING_SECRET = "8f0e2b7c4d1a9e6f3b5c7d9e1f2a4b6c"
BOT_TOKEN = "xoxb-test"
FLY_TOKEN = "FlyV1 fm2_test-deploy-token"

DEFAULT_CONFIG = """
[slack]
channel = "C0123OPS"
approvers = ["U0AAA", "U0BBB"]

[fly]
apps = ["hotel-voice-bot", "hotel-staging"]
command_timeout = 20
deploy_timeout = 30
verify_timeout = 10
verify_interval = 0.2
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_flyctl_wrapper(directory: Path, *, state: Path, log: Path) -> Path:
    """Write an executable that runs the flyctl stand-in with its state and log files.

    The bot hands flyctl a minimal environment, so the stand-in's own variables are set
    here rather than inherited.
    """
    wrapper = directory / "flyctl"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export FLYCTL_STANDIN_STATE='{state}'\n"
        f"export FLYCTL_STANDIN_LOG='{log}'\n"
        f"exec '{sys.executable}' '{FLYCTL_STANDIN}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


@dataclass
class BotProcess:
    workdir: Path
    slack_api_url: str
    flyctl: Path
    config: str = DEFAULT_CONFIG
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # The test's backend decides, unless the test set DATABASE_URL itself.
    database: BotDatabase = field(init=False)

    def __post_init__(self) -> None:
        chosen = self.extra_env.get("DATABASE_URL")
        self.database = databases.from_url(chosen) if chosen else databases.for_workdir(self.workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    @property
    def log_path(self) -> Path:
        return self.workdir / "bot.log"

    @property
    def database_path(self) -> Path:
        """The SQLite file; only for tests about SQLite itself, since others run on both backends."""
        if not isinstance(self.database, databases.SqliteDatabase):
            raise AssertionError("database_path is SQLite-only; use bot.database in tests that run on both backends")
        return self.database.path

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "PORT": str(self.port),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack_api_url,
            "DATABASE_URL": self.database.url,
            "FLYCTL": str(self.flyctl),
            "FLY_API_TOKEN": FLY_TOKEN,
            "SECRETBOT_CONFIG": str(self.workdir / "secretbot.toml"),
            # DEBUG on purpose: no level may make a value appear in the log.
            "LOG_LEVEL": "DEBUG",
        }
        env.update(self.extra_env)
        return env

    async def start(self, timeout: float = 20.0) -> None:
        (self.workdir / "secretbot.toml").write_text(self.config)
        executable = Path(sys.executable).parent / "secretbot"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(executable), "serve"],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            await self.wait_healthy(timeout)
        except BaseException:
            # A bot that never became healthy must not outlive the test that started it.
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(trust_env=False) as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"secretbot exited with {self.process.returncode}:\n{self.log()}")
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"secretbot did not become healthy in {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    async def stop_async(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Stop the bot without blocking the event loop that the Slack stand-in runs on."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            return self.process.wait(timeout=10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
