"""Shared fixtures: the Slack stand-in, the flyctl stand-in's state, and the bot process."""

from __future__ import annotations

import base64
import inspect
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import databases
from tests.botprocess import SIGNING_SECRET, BotProcess, write_flyctl_wrapper
from tests.databases import POSTGRES_ADMIN_DSN
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

APP = "hotel-voice-bot"
REQUESTER = "U0AAA"
APPROVER = "U0BBB"
BYSTANDER = "U0CCC"
CHANNEL = "C0123OPS"

# Fixtures through which a test picks SQLite or PostgreSQL itself.
TESTS_DIR = str(Path(__file__).resolve().parent)
OWN_BACKEND_FIXTURES = {"postgres_url", "database_url", "any_database_url", "database"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend", choices=["both", databases.SQLITE, databases.POSTGRESQL], default="both",
        help="Database backend for the end-to-end tests that start the bot process (default: both).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "own_database: the test sets DATABASE_URL itself, so it runs once rather than once per backend")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each end-to-end test on SQLite and on PostgreSQL.

    A test is end-to-end when it starts the bot process: when BotProcess is built in its
    body, in a fixture it uses or in a helper function of the tests package that they call.
    Tests that choose their database through one of OWN_BACKEND_FIXTURES already cover
    both, and tests marked own_database set DATABASE_URL themselves.
    """
    if "database_backend" not in metafunc.fixturenames:
        return
    names = set(metafunc.fixturenames)
    if names & OWN_BACKEND_FIXTURES or metafunc.definition.get_closest_marker("own_database"):
        return
    # The last definition of a name is the one that applies: a module's own fixture overrides conftest's.
    fixture_functions = [definitions[-1].func for definitions in metafunc._arg2fixturedefs.values() if definitions]
    starts_bot = any(_builds_bot_process(function, seen=set()) for function in [metafunc.function, *fixture_functions])
    if not starts_bot:
        return
    choice = metafunc.config.getoption("--backend")
    backends = [databases.SQLITE, databases.POSTGRESQL] if choice == "both" else [choice]
    metafunc.parametrize("database_backend", backends, indirect=True)


def _builds_bot_process(function: Any, *, seen: set[int]) -> bool:
    """Whether `function`, or a function of the tests package that it calls by name, uses BotProcess."""
    function = inspect.unwrap(function)  # pytest wraps fixture functions
    code = getattr(function, "__code__", None)
    if code is None or not code.co_filename.startswith(TESTS_DIR) or id(code) in seen:
        return False
    seen.add(id(code))
    namespace = getattr(function, "__globals__", {})
    for candidate in _code_objects(code):
        for name in candidate.co_names:
            if name == "BotProcess":
                return True
            called = namespace.get(name)
            if callable(called) and _builds_bot_process(called, seen=seen):
                return True
    return False


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """`code` and the code of the functions, lambdas and comprehensions nested in it."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


@pytest.fixture(autouse=True)
def database_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend of the bot processes that this test starts; SQLite unless parametrized."""
    chosen = getattr(request, "param", databases.SQLITE)
    if chosen == databases.POSTGRESQL:
        reason = databases.postgres_available()
        if reason is not None:
            pytest.skip(reason)
    databases.backend = chosen
    try:
        yield chosen
    finally:
        databases.backend = databases.SQLITE
        databases.drop_created()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk hands proxy variables to aiohttp even for 127.0.0.1.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(users=[REQUESTER, APPROVER, BYSTANDER], channels=[CHANNEL]) as stand_in:
        yield stand_in


@pytest.fixture
def fly(tmp_path: Path) -> FlyState:
    state = FlyState(tmp_path / "fly-state.json")
    state.add_app(APP, machines=2, checks_per_machine=1, ip=True)
    state.add_app("hotel-staging", machines=1, checks_per_machine=1, ip=False)
    for name, value in (
        ("JWT_SECRET", "old-jwt-secret-value"),
        ("ENCRYPTION_KEY", "00" * 32),
        ("WAHA_WEBHOOK_TOKEN", "old-webhook-token"),
        ("OPENAI_API_KEY", "sk-old-openai-key"),
    ):
        state.set_secret(APP, name, value)
    state.set_secret("hotel-staging", "JWT_SECRET", "staging-jwt-secret")
    return state


@pytest.fixture
def flyctl_log(tmp_path: Path) -> Path:
    return tmp_path / "flyctl-invocations.jsonl"


@pytest.fixture
def flyctl_wrapper(tmp_path: Path, fly: FlyState, flyctl_log: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    return write_flyctl_wrapper(directory, state=fly.path, log=flyctl_log)


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bot"
    directory.mkdir()
    return directory


@pytest.fixture
async def bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


# A fixed backup key for tests that need backups, rollback or `pending show`.
BACKUP_KEY = base64.b64encode(bytes(range(50, 82))).decode()


@pytest.fixture
async def keyed_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    """The bot process with SECRETBOT_BACKUP_KEY set, so backups are on."""
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                         extra_env={"SECRETBOT_BACKUP_KEY": BACKUP_KEY})
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


@pytest.fixture
def driver(bot: BotProcess, slack: SlackStandin) -> SlackDriver:
    return SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio

    name = f"secretbot_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_DSN} is not available: {exc}")
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
