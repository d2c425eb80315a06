"""The benchmark's world on 127.0.0.1: the Slack stand-in, the flyctl stand-in's state and the bot process.

The stand-ins are the ones the end-to-end tests use (tests/standins), so the bot under
measurement talks to the same servers and executables as in the test suite.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.botprocess import SIGNING_SECRET, BotProcess, write_flyctl_wrapper
from tests.standins.fly_state import FlyState
from tests.standins.flyctl_impl import model, store
from tests.standins.slack_api import SlackStandin

CHANNEL = "C0123OPS"
REQUESTER = "U0AAA"
APPROVER = "U0BBB"
USERS = (REQUESTER, APPROVER)


def secret_name(index: int) -> str:
    return f"BENCH_{index:05d}"


def app_name(index: int) -> str:
    return f"bench-app-{index:03d}"


@dataclass(frozen=True)
class Fleet:
    """Apps and the generated secrets on them: secret i lives on app i % apps."""

    apps: int
    secrets: int

    @property
    def app_names(self) -> list[str]:
        return [app_name(index) for index in range(self.apps)]

    def app_of(self, secret_index: int) -> str:
        return app_name(secret_index % self.apps)

    def secrets_of(self, app_index: int) -> list[str]:
        return [secret_name(index) for index in range(app_index, self.secrets, self.apps)]


def policy_text(fleet: Fleet, *, sync_interval: int = 0, sync_concurrency: int = 8) -> str:
    """Build a secretbot.toml for `fleet`; every secret is low priority and generated, so one approval runs it."""
    apps = ", ".join(f'"{name}"' for name in fleet.app_names)
    lines = [
        "[slack]",
        f'channel = "{CHANNEL}"',
        f'approvers = ["{REQUESTER}", "{APPROVER}"]',
        "",
        "[fly]",
        f"apps = [{apps}]",
        "command_timeout = 60",
        "deploy_timeout = 120",
        "verify_timeout = 60",
        "verify_interval = 0.2",
        "",
        "[inventory]",
        f"sync_interval = {sync_interval}",
        f"sync_concurrency = {sync_concurrency}",
        'default_priority = "low"',
        "",
    ]
    for index in range(fleet.secrets):
        lines += [f"[secrets.{secret_name(index)}]", 'priority = "low"', 'source = "generated"', ""]
    return "\n".join(lines)


def populate_fly(state: FlyState, fleet: Fleet) -> None:
    """Add every app of `fleet` with its secrets deployed, in one write per app.

    FlyState.set_secret rewrites the whole state file per secret, which is quadratic for
    ten thousand secrets, so this applies each app's secrets as one batch the same way.
    """
    for app_index, app in enumerate(fleet.app_names):
        state.add_app(app, machines=1, checks_per_machine=1, ip=False)
        values: dict[str, str | None] = {name: secrets.token_urlsafe(24) for name in fleet.secrets_of(app_index)}
        with store.locked(state.path) as document:
            record = document["apps"][app]
            version = model.apply_secret_changes(document, record, values)
            latest = model.latest_release(record)
            for name in values:
                if latest is not None:
                    record["secrets"][name]["updated_at"] = latest["created_at"]
                    record["secrets"][name]["created_at"] = min(record["secrets"][name]["created_at"],
                                                                latest["created_at"])
            for machine in record["machines"]:
                machine["secrets_version"] = version


@dataclass
class World:
    """One working folder with the flyctl state, its wrapper and the bot's files."""

    root: Path
    slack: SlackStandin
    fleet: Fleet
    fly: FlyState = field(init=False)
    flyctl: Path = field(init=False)
    flyctl_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.fly = FlyState(self.root / "fly-state.json")
        self.flyctl_log = self.root / "flyctl-invocations.jsonl"
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        self.flyctl = write_flyctl_wrapper(bin_dir, state=Path(self.fly.path), log=self.flyctl_log)
        populate_fly(self.fly, self.fleet)

    def bot(self, name: str, *, config: str | None = None, log_level: str = "INFO",
            database_url: str | None = None) -> BotProcess:
        """Return a bot process (not started) with its own folder and, unless `database_url` is given,
        its own SQLite database under the world's root."""
        workdir = self.root / name
        workdir.mkdir(exist_ok=True)
        # The test suite logs at DEBUG to prove no level leaks a value; a deployed bot runs at INFO.
        env = {"LOG_LEVEL": log_level}
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        return BotProcess(workdir=workdir, slack_api_url=self.slack.base_url, flyctl=self.flyctl,
                          config=config or policy_text(self.fleet), extra_env=env)


def new_slack() -> SlackStandin:
    # A response_url is used once or twice per request here; Slack allows 5 uses in 30 minutes.
    return SlackStandin(users=USERS, channels=[CHANNEL])


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """Create an empty database on the server at `admin_url`, yield its URL and drop it afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"secretbot_bench_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        connection = await asyncpg.connect(admin_url, timeout=5)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def clear_proxy_variables() -> None:
    """Remove proxy variables, because slack_sdk hands them to aiohttp even for 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(name, None)


__all__ = ["APPROVER", "CHANNEL", "REQUESTER", "SIGNING_SECRET", "Fleet", "World", "new_slack", "policy_text"]
