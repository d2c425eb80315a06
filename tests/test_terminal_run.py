"""`secretbot run`: runbooks from the terminal, through the real executable and the flyctl stand-in.

The terminal's answers come through standard input, one line per prompt. Runs that meet
a `secretbot serve` process use the test's database backend; the others use SQLite.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.storage.db import create_engine, create_session_factory, migrate
from bot.summaries import (
    POSTED,
    QUEUED,
    RunSummary,
    SecretDigests,
    StepSummary,
    SummaryPostError,
    SummaryQueue,
)
from bot.terminal.session import new_sqlite_file
from tests import databases
from tests.botprocess import (
    DEFAULT_CONFIG,
    FLY_TOKEN,
    SIGNING_SECRET,
    BotProcess,
    free_port,
)
from tests.conftest import APP, APPROVER, BACKUP_KEY, CHANNEL
from tests.databases import BotDatabase
from tests.flow import database_bytes, query, response_texts, slack_traffic
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

SECRETBOT = Path(sys.executable).parent / "secretbot"
OLD_JWT = "old-jwt-secret-value"
# Enough answers for every prompt of a six-step rotation.
ALL_YES = "y\n" * 8


@dataclass
class TerminalResult:
    returncode: int
    output: str


@dataclass
class Terminal:
    """`secretbot run` in a working folder, against the flyctl stand-in and a database."""

    workdir: Path
    flyctl: Path
    database: BotDatabase
    slack_api_url: str | None = None
    config: str = DEFAULT_CONFIG
    extra_env: dict[str, str] = field(default_factory=dict)
    # `secretbot run` refuses a SQLite file that does not exist, so the test creates it as the bot would.
    create_database: bool = True

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "DATABASE_URL": self.database.url,
            "FLYCTL": str(self.flyctl),
            "FLY_API_TOKEN": FLY_TOKEN,
            "SECRETBOT_CONFIG": str(self.workdir / "secretbot.toml"),
            # Wide enough that no checked line wraps.
            "COLUMNS": "200",
        }
        if self.slack_api_url is not None:
            env["SLACK_BOT_TOKEN"] = "xoxb-test"
            env["SLACK_API_URL"] = self.slack_api_url
        env.update(self.extra_env)
        return env

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        (self.workdir / "secretbot.toml").write_text(self.config)
        if self.create_database and new_sqlite_file(self.database.url) is not None:
            engine = create_engine(self.database.url)
            await migrate(engine)
            await engine.dispose()
        # Asynchronous, because the Slack stand-in serves on the test's event loop.
        return await asyncio.create_subprocess_exec(
            str(SECRETBOT), "run", *args, cwd=self.workdir, env=self.environment(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def run(self, *args: str, answers: str, timeout: float = 90) -> TerminalResult:
        process = await self.start(*args)
        output, _ = await asyncio.wait_for(process.communicate(answers.encode()), timeout=timeout)
        assert process.returncode is not None
        return TerminalResult(returncode=process.returncode, output=output.decode(errors="replace"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "ops"
    directory.mkdir()
    return directory


@pytest.fixture
def sqlite_terminal(workdir: Path, flyctl_wrapper: Path) -> Terminal:
    return Terminal(workdir=workdir, flyctl=flyctl_wrapper, database=databases.SqliteDatabase(workdir / "secretbot.db"))


def closed_port_url() -> str:
    """A Slack API URL on 127.0.0.1 where nothing listens, so every call is refused."""
    return f"http://127.0.0.1:{free_port()}/api/"


def run_messages(slack: SlackStandin, run_id: str) -> list[str]:
    return [message.text for message in slack.messages(CHANNEL) if run_id in message.text]


def only_run_id(database: BotDatabase) -> str:
    rows = query(database, "SELECT id FROM runs")
    assert len(rows) == 1
    return str(rows[0]["id"])


# ----------------------------------------------------------------------------- whole runs


async def test_rotation_from_terminal(workdir: Path, flyctl_wrapper: Path, fly: FlyState, flyctl_log: Path,
                                      slack: SlackStandin) -> None:
    terminal = Terminal(workdir=workdir, flyctl=flyctl_wrapper,
                        database=databases.SqliteDatabase(workdir / "secretbot.db"), slack_api_url=slack.base_url)
    old_digest = fly.secret_digest(APP, "JWT_SECRET")

    result = await terminal.run("rotate", "JWT_SECRET", "--reason", "Slack is down", "--operator", "Jane Doe",
                                answers=ALL_YES)

    assert result.returncode == 0, result.output
    new_value = fly.secret_value(APP, "JWT_SECRET")
    assert new_value is not None
    assert new_value != OLD_JWT
    assert len(new_value) == 86
    assert fly.secret_digest(APP, "JWT_SECRET") != old_digest

    # One import, the value on standard input only.
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1
    assert imports[0]["argv"] == ["secrets", "import", "--app", APP]
    assert imports[0]["stdin_bytes"] > len(new_value)
    assert not [call for call in fly.invocations(flyctl_log) if new_value in json.dumps(call["argv"])]

    # The run and its audit trail say it came from a terminal, who ran it and where.
    run_id = only_run_id(terminal.database)
    runs = query(terminal.database, "SELECT origin, status, requester FROM runs")
    assert runs[0]["origin"] == "terminal"
    assert runs[0]["status"] == "succeeded"
    assert str(runs[0]["requester"]).startswith("local:")
    started = query(terminal.database, "SELECT actor, detail FROM audit_log WHERE event = 'run.started_from_terminal'")
    assert len(started) == 1
    detail = json.loads(started[0]["detail"])
    assert detail["operator"] == "Jane Doe"
    assert detail["hostname"]
    assert detail["os_user"]
    requested = query(terminal.database, "SELECT detail FROM audit_log WHERE event = 'run.requested'")
    assert json.loads(requested[0]["detail"])["origin"] == "terminal"
    rotated = query(terminal.database, "SELECT detail FROM audit_log WHERE event = 'secret.rotated'")
    assert len(rotated) == 1
    assert json.loads(rotated[0]["detail"])["reason"] == "Slack is down"

    # The summary went to the runbook channel at the end of the run.
    assert "Summary posted to the runbook channel" in result.output
    summaries = run_messages(slack, run_id)
    assert len(summaries) == 1
    assert "started from a terminal" in summaries[0]
    assert "Jane Doe" in summaries[0]
    assert query(terminal.database, "SELECT status FROM summary_posts")[0]["status"] == POSTED

    # Every step was announced with the command lines it runs.
    assert "Step 6/6" in result.output
    assert f"secrets import --app {APP}" in result.output
    assert "JWT_SECRET=******" in result.output

    # The value is only in the stand-in's state.
    assert new_value not in result.output
    assert new_value.encode() not in database_bytes(terminal.database)
    assert new_value not in slack_traffic(slack)
    assert new_value not in flyctl_log.read_text()


async def test_denied_approval_changes_nothing(sqlite_terminal: Terminal, fly: FlyState, flyctl_log: Path) -> None:
    result = await sqlite_terminal.run("rotate", "JWT_SECRET", answers="n\n")

    assert result.returncode == 1, result.output
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT
    assert not [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    runs = query(sqlite_terminal.database, "SELECT status FROM runs")
    assert [row["status"] for row in runs] == ["denied"]
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM app_locks")[0]["n"] == 0
    # Without SLACK_BOT_TOKEN the summary waits in the database.
    assert "Summary queued in the database" in result.output
    assert query(sqlite_terminal.database, "SELECT status FROM summary_posts")[0]["status"] == QUEUED


async def test_declined_step_cancels_before_fly(sqlite_terminal: Terminal, fly: FlyState, flyctl_log: Path) -> None:
    # Approve, run the value and external steps, then refuse the Fly update.
    result = await sqlite_terminal.run("rotate", "JWT_SECRET", answers="y\ny\ny\nn\n")

    assert result.returncode == 1, result.output
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT
    assert not [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "declined at the terminal before step 'Update the Fly.io secret'" in runs[0]["outcome"]
    steps = query(sqlite_terminal.database, "SELECT status FROM steps ORDER BY position")
    assert [row["status"] for row in steps] == ["done", "done", "skipped", "failed", "pending", "pending"]


async def test_end_of_input_stops_run(sqlite_terminal: Terminal, fly: FlyState) -> None:
    result = await sqlite_terminal.run("rotate", "JWT_SECRET", answers="y\n")

    assert result.returncode == 1, result.output
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "stopped at the terminal" in runs[0]["outcome"]


async def test_lost_secret_from_hidden_input(sqlite_terminal: Terminal, fly: FlyState, flyctl_log: Path) -> None:
    value = "sk-proj-" + "Q7w" * 15
    review = "Keep provider keys in the team vault."
    # Approve, check backups, enter the value, update Fly, verify, write the review.
    answers = f"y\ny\ny\n{value}\ny\ny\ny\n{review}\n"

    result = await sqlite_terminal.run("lost", "OPENAI_API_KEY", answers=answers)

    assert result.returncode == 0, result.output
    assert fly.secret_value(APP, "OPENAI_API_KEY") == value
    assert "hidden" in result.output
    assert value not in result.output
    assert value.encode() not in database_bytes(sqlite_terminal.database)
    assert value not in flyctl_log.read_text()
    entered = query(sqlite_terminal.database, "SELECT actor FROM audit_log WHERE event = 'values.entered'")
    assert len(entered) == 1
    assert str(entered[0]["actor"]).startswith("local:")
    reviews = query(sqlite_terminal.database, "SELECT detail FROM audit_log WHERE event = 'review.recorded'")
    assert json.loads(reviews[0]["detail"])["review"] == review


async def test_compromised_from_terminal(sqlite_terminal: Terminal, fly: FlyState) -> None:
    value = "sk-proj-" + "M2x" * 15
    # Approve; run and confirm the revocation; run the value step and enter the value;
    # update Fly; verify; document the incident.
    answers = f"y\ny\ny\ny\n{value}\ny\ny\ny\n"

    result = await sqlite_terminal.run("compromised", "OPENAI_API_KEY", "--reason", "key pasted in a ticket",
                                       answers=answers)

    assert result.returncode == 0, result.output
    assert "Is the leaked value revoked at its source?" in result.output
    assert fly.secret_value(APP, "OPENAI_API_KEY") == value
    assert value not in result.output
    incidents = query(sqlite_terminal.database, "SELECT detail FROM audit_log WHERE event = 'incident.recorded'")
    assert len(incidents) == 1
    assert json.loads(incidents[0]["detail"])["what_happened"] == "key pasted in a ticket"


async def test_second_approver_named_at_terminal(sqlite_terminal: Terminal, fly: FlyState) -> None:
    sqlite_terminal.config = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                                    'approvers = ["U0AAA", "U0BBB"]\ntwo_approvers_for_high = true\n')
    # JWT_SECRET is high priority: a first approval, then a second person's name and approval.
    answers = "y\nBob Smith\ny\n" + ALL_YES

    result = await sqlite_terminal.run("rotate", "JWT_SECRET", answers=answers)

    assert result.returncode == 0, result.output
    assert "A second approver is needed" in result.output
    assert fly.secret_value(APP, "JWT_SECRET") != OLD_JWT
    decisions = query(sqlite_terminal.database, "SELECT user_id, decision FROM decisions WHERE position = 0")
    assert [row["decision"] for row in decisions] == ["approve", "approve"]
    assert str(decisions[0]["user_id"]).startswith("local:")
    assert decisions[1]["user_id"] == "terminal:Bob Smith"


async def test_invalid_value_asks_again(sqlite_terminal: Terminal, fly: FlyState) -> None:
    value = "sk-proj-" + "Z4k" * 15
    # The first entry ends with a space, which the policy rejects.
    answers = f"y\ny\ny\n{value} \n{value}\ny\ny\ny\nA review.\n"

    result = await sqlite_terminal.run("lost", "OPENAI_API_KEY", answers=answers)

    assert result.returncode == 0, result.output
    assert "whitespace" in result.output
    assert fly.secret_value(APP, "OPENAI_API_KEY") == value


# ----------------------------------------------------------------------------- the summary queue


async def test_queued_summary_posted_once_by_serve(workdir: Path, flyctl_wrapper: Path, fly: FlyState,
                                                   slack: SlackStandin) -> None:
    bot = BotProcess(workdir=workdir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper)
    terminal = Terminal(workdir=workdir, flyctl=flyctl_wrapper, database=bot.database,
                        slack_api_url=closed_port_url())

    result = await terminal.run("rotate", "JWT_SECRET", answers=ALL_YES)

    assert result.returncode == 0, result.output
    assert "queued in the database" in result.output
    run_id = only_run_id(bot.database)
    assert query(bot.database, "SELECT status FROM summary_posts")[0]["status"] == QUEUED

    await bot.start()
    try:
        await slack.wait_for(lambda: run_messages(slack, run_id), timeout=20, description="queued summary posted")
        await asyncio.sleep(1.5)
    finally:
        await bot.stop_async()
    # A second start finds nothing left to post.
    await bot.start()
    try:
        await asyncio.sleep(2)
    finally:
        await bot.stop_async()

    summaries = run_messages(slack, run_id)
    assert len(summaries) == 1
    assert "Posted late" in summaries[0]
    rows = query(bot.database, "SELECT status, message_ts FROM summary_posts")
    assert rows[0]["status"] == POSTED
    assert rows[0]["message_ts"]


async def test_next_terminal_run_posts_queued_summary(sqlite_terminal: Terminal, slack: SlackStandin) -> None:
    sqlite_terminal.slack_api_url = closed_port_url()
    first = await sqlite_terminal.run("rotate", "JWT_SECRET", answers="n\n")
    assert first.returncode == 1, first.output
    first_run = only_run_id(sqlite_terminal.database)

    sqlite_terminal.slack_api_url = slack.base_url
    second = await sqlite_terminal.run("rotate", "WAHA_WEBHOOK_TOKEN", answers="n\n")

    assert second.returncode == 1, second.output
    assert "Also posted 1 summary" in second.output
    assert len(run_messages(slack, first_run)) == 1
    statuses = query(sqlite_terminal.database, "SELECT status FROM summary_posts")
    assert [row["status"] for row in statuses] == [POSTED, POSTED]


def summary_of(run_id: str) -> RunSummary:
    now = datetime.now(UTC)
    return RunSummary(run_id=run_id, title="Rotate", kind="rotate", app=APP, status="succeeded", outcome=None,
                      reason=None, requester="local:ops", operator=None, hostname="ops-1", created_at=now,
                      finished_at=now, secrets=(SecretDigests("JWT_SECRET", "a", "b"),),
                      steps=(StepSummary("Approval", "done", "Approved", "local:ops"),))


class RecordingPoster:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.posted: list[str] = []

    async def post(self, summary: RunSummary, *, channel: str, queued_at: datetime | None) -> str:
        if self.fail:
            raise SummaryPostError("chat.postMessage failed: ClientConnectorError")
        self.posted.append(summary.run_id)
        return f"1.{len(self.posted)}"


async def test_summary_claim_admits_one_process(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}")
    await migrate(engine)
    sessions = create_session_factory(engine)
    try:
        first = SummaryQueue(sessions=sessions, owner="host-a:1")
        second = SummaryQueue(sessions=sessions, owner="host-b:2")
        await first.enqueue(summary_of("aaaaaaaaaaaa"), channel=CHANNEL, claim=False)

        claims = await asyncio.gather(first.claim_next(), second.claim_next())

        assert len([claim for claim in claims if claim is not None]) == 1
        assert await first.claim_next() is None
        assert await second.claim_next() is None
    finally:
        await engine.dispose()


async def test_failed_post_requeues_summary(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}")
    await migrate(engine)
    sessions = create_session_factory(engine)
    try:
        queue = SummaryQueue(sessions=sessions, owner="host-a:1")
        claim = await queue.enqueue(summary_of("bbbbbbbbbbbb"), channel=CHANNEL, claim=True)
        assert claim is not None
        # Claimed at once, so no other process takes it while this one posts.
        assert await SummaryQueue(sessions=sessions, owner="host-b:2").claim_next() is None

        with pytest.raises(SummaryPostError):
            await queue.post(claim, RecordingPoster(fail=True), late=False)
        assert await queue.status_of("bbbbbbbbbbbb") == QUEUED

        poster = RecordingPoster()
        result = await queue.flush(poster)
        assert result.posted == 1
        assert poster.posted == ["bbbbbbbbbbbb"]
        assert await queue.status_of("bbbbbbbbbbbb") == POSTED
        assert (await queue.flush(poster)).posted == 0
    finally:
        await engine.dispose()


async def test_expired_claim_is_taken_over(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}")
    await migrate(engine)
    sessions = create_session_factory(engine)
    try:
        dead = SummaryQueue(sessions=sessions, owner="host-a:1")
        await dead.enqueue(summary_of("cccccccccccc"), channel=CHANNEL, claim=True)
        live = SummaryQueue(sessions=sessions, owner="host-b:2", lease=timedelta(seconds=0.2))
        assert await SummaryQueue(sessions=sessions, owner="host-c:3").claim_next() is None

        await asyncio.sleep(0.3)
        poster = RecordingPoster()
        assert (await live.flush(poster)).posted == 1
        assert poster.posted == ["cccccccccccc"]
    finally:
        await engine.dispose()


# ----------------------------------------------------------------------------- dry run and usage errors


async def test_dry_run_needs_no_flyctl_or_database(workdir: Path, tmp_path: Path) -> None:
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    database_file = tmp_path / "data" / "secretbot.db"
    (workdir / "secretbot.toml").write_text(DEFAULT_CONFIG)
    env = {"PATH": str(empty_bin), "HOME": str(workdir), "COLUMNS": "200",
           "SECRETBOT_CONFIG": str(workdir / "secretbot.toml"), "DATABASE_URL": f"sqlite:///{database_file}"}

    process = await asyncio.create_subprocess_exec(
        str(SECRETBOT), "run", "rotate", "JWT_SECRET", "--dry-run", cwd=workdir, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    raw, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    output = raw.decode()

    assert process.returncode == 0, output
    for title in ("Approval", "Generate or enter the new value", "Update the external service",
                  "Update the Fly.io secret", "Verify the deployment", "Document"):
        assert title in output
    assert f"$ flyctl secrets import --app {APP}" in output
    assert "stdin: JWT_SECRET=******" in output
    assert f"$ flyctl status --app {APP} --json" in output
    assert "not found on PATH" in output
    assert not database_file.exists()
    assert not database_file.parent.exists()
    assert not (workdir / "secretbot.db").exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["retire", "JWT_SECRET"], "'retire' is not one of"),
        (["rotate", "JWT_SECRT"], "did you mean JWT_SECRET?"),
        (["rotate", "NOT_A_SECRET"], "known secrets: B2_APPLICATION_KEY"),
        (["rotate", "JWT_SECRET", "--app", "hotel-prod"], "configured apps: hotel-voice-bot, hotel-staging"),
        (["rotate", "JWT_SECRET", "--yes"], "No such option '--yes'"),
        (["rotate", "JWT_SECRET", "--operator", "\u200b\u202e"], "--operator is not accepted"),
        (["rotate", "JWT_SECRET=typed-by-mistake-7f3k"], "values are never given as arguments"),
    ],
)
async def test_usage_errors_exit_2(sqlite_terminal: Terminal, arguments: list[str], expected: str) -> None:
    sqlite_terminal.create_database = False
    result = await sqlite_terminal.run(*arguments, answers=ALL_YES)

    assert result.returncode == 2, result.output
    assert expected in result.output
    assert "typed-by-mistake" not in result.output
    assert not (sqlite_terminal.workdir / "secretbot.db").exists()


# ----------------------------------------------------------------------------- next to `secretbot serve`


SHORT_EXPIRY_CONFIG = DEFAULT_CONFIG.replace('approvers = ["U0AAA", "U0BBB"]\n',
                                             'approvers = ["U0AAA", "U0BBB"]\napproval_timeout = 1\n')


async def wait_for_row(database: BotDatabase, sql: str, *, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            if await asyncio.to_thread(database.query, sql):
                return
        except Exception as exc:  # noqa: BLE001 - the table appears once the terminal has migrated
            if not databases.is_missing_table(exc):
                raise
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no row for {sql} within {timeout} s")


async def test_serve_leaves_terminal_run_alone(workdir: Path, flyctl_wrapper: Path, fly: FlyState,
                                               slack: SlackStandin) -> None:
    bot = BotProcess(workdir=workdir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=SHORT_EXPIRY_CONFIG)
    terminal = Terminal(workdir=workdir, flyctl=flyctl_wrapper, database=bot.database, slack_api_url=slack.base_url,
                        config=SHORT_EXPIRY_CONFIG)
    process = await terminal.start("rotate", "JWT_SECRET")
    assert process.stdin is not None
    try:
        # At the approval prompt: a Slack run would expire here after approval_timeout (1 s).
        # The audit record of the wait is written just after the step row, so the count below waits for it.
        await wait_for_row(bot.database, "SELECT 1 FROM audit_log WHERE event = 'step.waiting'")
        run_id = only_run_id(bot.database)
        run_events = "SELECT COUNT(*) AS n FROM audit_log WHERE run_id = ?"
        events_before = query(bot.database, run_events, run_id)[0]["n"]

        await bot.start()
        # The bot's expiry check runs every second with this timeout; give it several.
        await asyncio.sleep(4)

        assert query(bot.database, "SELECT status FROM runs")[0]["status"] == "waiting"
        assert query(bot.database, "SELECT status FROM steps WHERE position = 0")[0]["status"] == "waiting"
        assert query(bot.database, "SELECT COUNT(*) AS n FROM decisions")[0]["n"] == 0
        # The bot's inventory sync writes records of its own, none about the run.
        assert query(bot.database, run_events, run_id)[0]["n"] == events_before
        assert run_id not in slack_traffic(slack)

        # An approver's click forged with the run's ID is rejected by the bot.
        driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
        button = {"type": "button", "action_id": "step_approve", "value": "x",
                  "text": {"type": "plain_text", "text": "Approve"}}
        forged = slack.add_message(CHANNEL, "forged", user=APPROVER,
                                   blocks=[{"type": "actions", "block_id": "forged", "elements": [button]}])
        click = await driver.click(channel=CHANNEL, ts=forged.ts, action_id="step_approve", user_id=APPROVER,
                                   value=f"{run_id}:0")
        assert click.status == 200
        await slack.wait_for(lambda: any("started from a terminal" in text for text in response_texts(slack, APPROVER)),
                             description="rejection of the forged click")
        assert query(bot.database, "SELECT COUNT(*) AS n FROM decisions")[0]["n"] == 0

        # At the prompt before step 2: a Slack run found like this would be advanced by a starting bot.
        process.stdin.write(b"y\n")
        await process.stdin.drain()
        await wait_for_row(bot.database, "SELECT 1 FROM runs WHERE status = 'running' AND current_step = 1")
        await bot.stop_async()
        events_before = query(bot.database, run_events, run_id)[0]["n"]
        await bot.start()
        await asyncio.sleep(2)

        assert query(bot.database, "SELECT status FROM steps WHERE position = 1")[0]["status"] == "pending"
        assert query(bot.database, run_events, run_id)[0]["n"] == events_before
        assert run_messages(slack, run_id) == []

        output, _ = await asyncio.wait_for(process.communicate(ALL_YES.encode()), timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await bot.stop_async()

    assert process.returncode == 0, output.decode()
    assert fly.secret_value(APP, "JWT_SECRET") != OLD_JWT
    assert query(bot.database, "SELECT status FROM runs")[0]["status"] == "succeeded"
    # Only the terminal's own summary mentions the run.
    assert len(run_messages(slack, run_id)) == 1


async def test_terminal_waits_for_app_lock(sqlite_terminal: Terminal, fly: FlyState, flyctl_log: Path) -> None:
    # A Slack run holds the app's change lock, as it does from its import to its verification.
    engine = create_engine(sqlite_terminal.database.url)
    await migrate(engine)
    await engine.dispose()
    now = datetime.now(UTC)
    sqlite_terminal.database.execute(
        "INSERT INTO runs (id, kind, app, requester, origin, status, current_step, created_at, updated_at) "
        "VALUES ('a1a1a1a1a1a1', 'rotate', ?, 'U0AAA', 'slack', 'running', 4, ?, ?)", APP, now, now)
    sqlite_terminal.database.execute("INSERT INTO app_locks (app, run_id, acquired_at) VALUES (?, 'a1a1a1a1a1a1', ?)",
                                     APP, now)

    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(ALL_YES.encode())
    await process.stdin.drain()
    seen = b""
    try:
        while b"Waiting for run `a1a1a1a1a1a1`" not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, seen.decode()
            seen += line
        await asyncio.sleep(1)
        assert not [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]

        # The Slack run ends; its lock is then stale, and the terminal run takes it.
        sqlite_terminal.database.execute("UPDATE runs SET status = 'succeeded' WHERE id = 'a1a1a1a1a1a1'")
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, (seen + rest).decode()
    assert fly.secret_value(APP, "JWT_SECRET") != OLD_JWT
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM app_locks")[0]["n"] == 0


# ----------------------------------------------------------------------------- Ctrl-C


async def read_until(process: asyncio.subprocess.Process, marker: str, *, timeout: float = 60) -> str:
    """Read the process's output line by line until a line contains `marker`; return all of it."""
    assert process.stdout is not None
    seen = ""
    while marker not in seen:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=timeout)
        assert line, f"output ended before {marker!r}:\n{seen}"
        seen += line.decode(errors="replace")
    return seen


async def test_ctrl_c_at_prompt_stops_run(sqlite_terminal: Terminal, fly: FlyState) -> None:
    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    try:
        await read_until(process, "Recorded in the audit log")
        await wait_for_row(sqlite_terminal.database, "SELECT 1 FROM steps WHERE position = 0 AND status = 'waiting'")
        process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 1, rest.decode()
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "stopped at the terminal at step 'Approval'" in runs[0]["outcome"]


async def test_ctrl_c_during_import_stops_after_it(sqlite_terminal: Terminal, fly: FlyState) -> None:
    # Each machine takes a second to roll out, so the import is still running when Ctrl-C comes.
    fly.set_delay(1.0)
    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    assert process.stdin is not None
    process.stdin.write(ALL_YES.encode())
    await process.stdin.drain()
    try:
        await read_until(process, "Running `flyctl secrets import")
        process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    output = rest.decode()
    assert process.returncode == 1, output
    assert "A step that is running finishes first" in output
    # The import finished, so Fly holds the new value; the run stopped before verification.
    assert fly.secret_value(APP, "JWT_SECRET") != OLD_JWT
    steps = query(sqlite_terminal.database, "SELECT status FROM steps ORDER BY position")
    assert [row["status"] for row in steps][3:5] == ["done", "failed"]
    runs = query(sqlite_terminal.database, "SELECT outcome FROM runs")
    assert "stopped with Ctrl-C at the terminal before step 'Verify the deployment'" in runs[0]["outcome"]


async def test_second_ctrl_c_stops_running_step(sqlite_terminal: Terminal, fly: FlyState) -> None:
    fly.set_delay(10.0)
    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    assert process.stdin is not None
    process.stdin.write(ALL_YES.encode())
    await process.stdin.drain()
    try:
        await read_until(process, "Running `flyctl secrets import")
        process.send_signal(signal.SIGINT)
        await read_until(process, "Press Ctrl-C again")
        process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 1, rest.decode()
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    # The stopped import was settled by reading Fly's digests, so the outcome says what Fly holds.
    assert "Cancelled: the run was interrupted at the terminal" in runs[0]["outcome"]
    assert "Fly" in runs[0]["outcome"]
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM audit_log WHERE event = 'fly.import.settled'"
                 )[0]["n"] == 1
    # The run let go of the app, so the next run can change it.
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM app_locks")[0]["n"] == 0


# ----------------------------------------------------------------------------- SIGTERM and SIGHUP


async def test_sigterm_during_import_settles(sqlite_terminal: Terminal, fly: FlyState) -> None:
    # Each machine takes ten seconds to roll out, so the import is running when SIGTERM comes.
    fly.set_delay(10.0)
    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    assert process.stdin is not None
    process.stdin.write(ALL_YES.encode())
    await process.stdin.drain()
    try:
        await read_until(process, "Running `flyctl secrets import")
        await wait_for_row(sqlite_terminal.database, "SELECT 1 FROM app_locks")
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    output = rest.decode()
    assert process.returncode == 1, output
    assert "SIGTERM: stopping the run" in output
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "Cancelled: the run was stopped by SIGTERM" in runs[0]["outcome"]
    settled = query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM audit_log WHERE event = 'fly.import.settled'")
    assert settled[0]["n"] == 1
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM app_locks")[0]["n"] == 0
    # The outcome matches what Fly holds: the old value, or a new one and a stop before verification.
    steps = [row["status"] for row in query(sqlite_terminal.database, "SELECT status FROM steps ORDER BY position")]
    if fly.secret_value(APP, "JWT_SECRET") == OLD_JWT:
        assert steps[3] == "failed", steps
    else:
        assert steps[3:5] == ["done", "failed"], steps


async def test_sighup_at_prompt_stops_run(sqlite_terminal: Terminal, fly: FlyState) -> None:
    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    try:
        await read_until(process, "Recorded in the audit log")
        await wait_for_row(sqlite_terminal.database, "SELECT 1 FROM steps WHERE position = 0 AND status = 'waiting'")
        process.send_signal(signal.SIGHUP)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 1, rest.decode()
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "stopped by SIGHUP at step 'Approval'" in runs[0]["outcome"]


# ----------------------------------------------------------------------------- a process that died


async def test_expired_lease_frees_app_lock(tmp_path: Path) -> None:
    from bot.runbook.context import AppLocks

    engine = create_engine(databases.SqliteDatabase(tmp_path / "locks.db").url)
    await migrate(engine)
    sessions = create_session_factory(engine)
    now = datetime.now(UTC)
    old = now - timedelta(minutes=5)
    try:
        async with sessions.begin() as session:
            for run_id, origin, heartbeat in (("live00000000", "terminal", now), ("dead00000000", "terminal", old),
                                              ("slack0000000", "slack", old)):
                await session.execute(sa.text(
                    "INSERT INTO runs (id, kind, app, requester, origin, status, current_step, created_at, "
                    "updated_at, heartbeat_at) VALUES (:id, 'rotate', :app, 'local:ops', :origin, 'running', 3, "
                    ":old, :old, :heartbeat)"),
                    {"id": run_id, "app": f"app-{run_id}", "origin": origin, "old": old, "heartbeat": heartbeat})
                await session.execute(sa.text("INSERT INTO app_locks (app, run_id, acquired_at) "
                                              "VALUES (:app, :id, :old)"), {"app": f"app-{run_id}", "id": run_id,
                                                                             "old": old})
        locks = AppLocks(sessions)
        # A live terminal run and a Slack run (resumed by serve) keep their locks; a dead terminal run does not.
        assert await locks.try_acquire("app-live00000000", "newrun000000") == "live00000000"
        assert await locks.try_acquire("app-slack0000000", "newrun000000") == "slack0000000"
        assert await locks.try_acquire("app-dead00000000", "newrun000000") is None
        assert await locks.holder("app-dead00000000") == "newrun000000"
    finally:
        await engine.dispose()


async def test_abandon_run_whose_process_died(sqlite_terminal: Terminal, fly: FlyState) -> None:
    fly.set_delay(10.0)
    process = await sqlite_terminal.start("rotate", "JWT_SECRET")
    assert process.stdin is not None
    process.stdin.write(ALL_YES.encode())
    await process.stdin.drain()
    try:
        await read_until(process, "Running `flyctl secrets import")
        await wait_for_row(sqlite_terminal.database, "SELECT 1 FROM runs WHERE heartbeat_at IS NOT NULL")
        process.kill()
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    run_id = only_run_id(sqlite_terminal.database)
    assert query(sqlite_terminal.database, "SELECT status FROM runs")[0]["status"] == "running"

    # The lease is fresh: the process might be alive, so the run is not ended.
    refused = await sqlite_terminal.run("--abandon", run_id, answers="y\n")
    assert refused.returncode == 1, refused.output
    assert "still held by its `secretbot run` process" in refused.output
    assert query(sqlite_terminal.database, "SELECT status FROM runs")[0]["status"] == "running"

    stale = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    sqlite_terminal.database.execute("UPDATE runs SET heartbeat_at = ?", stale)
    declined = await sqlite_terminal.run("--abandon", run_id, answers="n\n")
    assert declined.returncode == 1, declined.output
    assert "Nothing was changed" in declined.output
    assert query(sqlite_terminal.database, "SELECT status FROM runs")[0]["status"] == "running"

    result = await sqlite_terminal.run("--abandon", run_id, answers="y\n")

    assert result.returncode == 0, result.output
    assert "That step was running" in result.output
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "Cancelled: the run was abandoned by local:" in runs[0]["outcome"]
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM app_locks")[0]["n"] == 0
    assert query(sqlite_terminal.database, "SELECT COUNT(*) AS n FROM run_secrets WHERE open IS NOT NULL"
                 )[0]["n"] == 0
    events = [row["event"] for row in query(sqlite_terminal.database,
                                            "SELECT event FROM audit_log WHERE run_id = ? ORDER BY id", run_id)]
    assert "run.abandoned" in events
    assert "fly.import.settled" in events
    assert events[-1] == "run.cancelled"


async def test_abandon_refuses_slack_and_ended_runs(sqlite_terminal: Terminal) -> None:
    engine = create_engine(sqlite_terminal.database.url)
    await migrate(engine)
    await engine.dispose()
    old = datetime.now(UTC) - timedelta(hours=1)
    for run_id, origin, status in (("s1s1s1s1s1s1", "slack", "running"), ("e1e1e1e1e1e1", "terminal", "succeeded")):
        sqlite_terminal.database.execute(
            "INSERT INTO runs (id, kind, app, requester, origin, status, current_step, created_at, updated_at) "
            "VALUES (?, 'rotate', ?, 'U0AAA', ?, ?, 0, ?, ?)", run_id, APP, origin, status, old, old)

    slack_run = await sqlite_terminal.run("--abandon", "s1s1s1s1s1s1", answers="y\n")
    ended = await sqlite_terminal.run("--abandon", "e1e1e1e1e1e1", answers="y\n")
    missing = await sqlite_terminal.run("--abandon", "000000000000", answers="y\n")
    mixed = await sqlite_terminal.run("rotate", "JWT_SECRET", "--abandon", "e1e1e1e1e1e1", answers="y\n")

    assert slack_run.returncode == 1
    assert "/secret cancel s1s1s1s1s1s1" in slack_run.output
    assert ended.returncode == 1
    assert "already ended (succeeded)" in ended.output
    assert missing.returncode == 1
    assert "does not exist" in missing.output
    assert mixed.returncode == 2
    assert "--abandon RUN_ID takes no KIND" in mixed.output
    statuses = {row["id"]: row["status"] for row in query(sqlite_terminal.database, "SELECT id, status FROM runs")}
    assert statuses == {"s1s1s1s1s1s1": "running", "e1e1e1e1e1e1": "succeeded"}


# ----------------------------------------------------------------------------- input from a pipe


async def test_piped_yes_rejected_as_value(sqlite_terminal: Terminal, fly: FlyState,
                                                 flyctl_log: Path) -> None:
    old_value = fly.secret_value(APP, "OPENAI_API_KEY")
    # What `yes | secretbot run lost OPENAI_API_KEY` sends: "y" at every prompt, the value prompt too.
    result = await sqlite_terminal.run("lost", "OPENAI_API_KEY", answers="y\n" * 40)

    assert result.returncode == 1, result.output
    assert result.output.count("that is an answer to a yes/no prompt") == 3
    assert fly.secret_value(APP, "OPENAI_API_KEY") == old_value
    assert not [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs")
    assert runs[0]["status"] == "cancelled"
    assert "were rejected 3 times" in runs[0]["outcome"]


async def test_short_value_refused_then_accepted(sqlite_terminal: Terminal, fly: FlyState) -> None:
    value = "sk-proj-" + "W9c" * 15
    answers = f"y\ny\ny\n NO \nab12\n{value}\ny\ny\ny\nA review.\n"

    result = await sqlite_terminal.run("lost", "OPENAI_API_KEY", answers=answers)

    assert result.returncode == 0, result.output
    assert "that is an answer to a yes/no prompt" in result.output
    assert "the value is 4 characters long" in result.output
    assert fly.secret_value(APP, "OPENAI_API_KEY") == value


async def test_invisible_and_empty_values_rejected(sqlite_terminal: Terminal, fly: FlyState) -> None:
    value = "sk-proj-" + "W9c" * 15
    answers = f"y\ny\ny\n{value}\u200b\n\n{value}\ny\ny\ny\nA review.\n"

    result = await sqlite_terminal.run("lost", "OPENAI_API_KEY", answers=answers)

    assert result.returncode == 0, result.output
    assert "U+200B ZERO WIDTH SPACE at position 54 of 54" in result.output
    assert "The value is empty" in result.output
    assert value not in result.output
    assert fly.secret_value(APP, "OPENAI_API_KEY") == value


def test_typed_value_rules() -> None:
    from bot.terminal.driver import typed_value_problem

    for answer in ("y", "Yes", " n ", "NO", "yes\r"):
        assert typed_value_problem(answer, None) is not None, answer
    # A configured pattern admits a short value, but never a prompt answer.
    assert typed_value_problem("1234", r"\d{4}") is None
    assert typed_value_problem("12345", r"\d{4}") is not None
    assert typed_value_problem("y", r"[a-z]") is not None
    assert typed_value_problem("8chars!!", None) is None


async def test_choice_stops_after_three_invalid(sqlite_terminal: Terminal, fly: FlyState) -> None:
    sqlite_terminal.extra_env["SECRETBOT_BACKUP_KEY"] = BACKUP_KEY
    # A rotation leaves a backup of JWT_SECRET, so the lost runbook asks to restore or regenerate.
    first = await sqlite_terminal.run("rotate", "JWT_SECRET", answers=ALL_YES)
    assert first.returncode == 0, first.output
    deployed = fly.secret_value(APP, "JWT_SECRET")

    result = await sqlite_terminal.run("lost", "JWT_SECRET", answers="y\n" * 1000, timeout=60)

    assert result.returncode == 1, result.output
    assert result.output.count("'y' is not one of") == 3
    assert "No valid choice after 3 invalid entries" in result.output
    assert fly.secret_value(APP, "JWT_SECRET") == deployed
    runs = query(sqlite_terminal.database, "SELECT status, outcome FROM runs WHERE kind = 'lost'")
    assert runs[0]["status"] == "cancelled"
    assert "Cancelled: no valid choice was given in 3 answers at step 'Check backups'" in runs[0]["outcome"]


# ----------------------------------------------------------------------------- the database file


async def test_bad_backup_key_leaves_no_new_database(sqlite_terminal: Terminal, fly: FlyState) -> None:
    sqlite_terminal.create_database = False
    sqlite_terminal.extra_env["SECRETBOT_BACKUP_KEY"] = "too-short"
    database_file = sqlite_terminal.workdir / "secretbot.db"

    refused = await sqlite_terminal.run("rotate", "JWT_SECRET", "--new-database", answers=ALL_YES)

    assert refused.returncode == 2, refused.output
    assert "SECRETBOT_BACKUP_KEY" in refused.output
    assert not database_file.exists()
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT


async def test_missing_sqlite_file_is_refused(sqlite_terminal: Terminal, fly: FlyState) -> None:
    sqlite_terminal.create_database = False
    database_file = sqlite_terminal.workdir / "secretbot.db"

    refused = await sqlite_terminal.run("rotate", "JWT_SECRET", answers=ALL_YES)

    assert refused.returncode == 2, refused.output
    assert f"the SQLite database file {database_file.resolve()} of DATABASE_URL does not exist" in refused.output
    assert "--new-database" in refused.output
    assert not database_file.exists()
    assert fly.secret_value(APP, "JWT_SECRET") == OLD_JWT

    created = await sqlite_terminal.run("rotate", "JWT_SECRET", "--new-database", answers="n\n")

    assert created.returncode == 1, created.output
    assert "Created a new database" in created.output
    assert [row["status"] for row in query(sqlite_terminal.database, "SELECT status FROM runs")] == ["denied"]
