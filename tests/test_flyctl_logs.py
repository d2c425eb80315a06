"""FlyctlClient.recent_logs: parsing `logs --json`, redaction, the limit and --no-tail.

The first tests run a throw-away script that records its argv and prints the test's
FAKE_STDOUT, so they control flyctl's output byte for byte. The last ones run the
flyctl stand-in, whose log lines come from the machine starts of a rollout.
"""

from __future__ import annotations

import json
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.errors import CommandError, FlyctlOutputError, FlyctlTimeout
from bot.flyctl import FlyctlClient, LogLine
from bot.flyctl.shapes import parse_logs
from bot.redact import MASK, Redactor
from tests.standins.fly_state import STANDIN_PATH, FlyState

TOKEN = "FlyV1 fm2_test-token-not-real"
APP = "my-app"

FAKE_FLYCTL = f"""#!{sys.executable}
import json, os, sys, time

with open(os.environ["FAKE_RECORD"], "w") as handle:
    json.dump(sys.argv, handle)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
sys.stdout.write(os.environ.get("FAKE_STDOUT", ""))
"""


def entry(message: str, *, instance: str = "3d8d9017b29e18", stamp: str = "2026-03-01T10:00:00Z") -> dict[str, Any]:
    return {
        "level": "info",
        "instance": instance,
        "message": message,
        "region": "ams",
        "timestamp": stamp,
        "meta": {"instance": instance, "region": "ams", "event": {"provider": "app"}},
    }


def go_output(*entries: dict[str, Any]) -> str:
    # flyctl prints each entry as its own 4-space indented object with a newline.
    return "".join(json.dumps(item, indent=4) + "\n" for item in entries)


@dataclass
class Fake:
    executable: Path
    record_path: Path
    work_dir: Path
    config_dir: Path

    def client(
        self, stdout: str, *, redactor: Redactor | None = None, command_timeout: float = 10.0, **fake_env: str
    ) -> FlyctlClient:
        return FlyctlClient(
            str(self.executable),
            api_token=TOKEN,
            work_dir=self.work_dir,
            config_dir=self.config_dir,
            command_timeout=command_timeout,
            redactor=redactor,
            extra_env={"FAKE_RECORD": str(self.record_path), "FAKE_STDOUT": stdout, **fake_env},
            kill_grace=0.5,
        )

    def argv(self) -> list[str]:
        return json.loads(self.record_path.read_text())


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    executable = tmp_path / "bin" / "fake_flyctl"
    executable.parent.mkdir()
    executable.write_text(FAKE_FLYCTL)
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    return Fake(
        executable=executable,
        record_path=tmp_path / "record.json",
        work_dir=tmp_path / "state" / "work",
        config_dir=tmp_path / "state" / "fly",
    )


# --- argv and parsing ---------------------------------------------------------------


async def test_logs_argv_never_tails(fake: Fake) -> None:
    await fake.client("").recent_logs(APP)
    argv = fake.argv()[1:]
    assert argv[0] == "logs"
    assert "--no-tail" in argv
    assert "--json" in argv
    assert argv[argv.index("--app") + 1] == APP


async def test_logs_pretty_printed_objects(fake: Fake) -> None:
    stdout = go_output(
        entry("listening on 0.0.0.0:8080", stamp="2026-03-01T10:00:00Z"),
        entry("GET /healthz 200", stamp="2026-03-01T10:00:01Z"),
        {**entry("worker stopped", stamp="2026-03-01T10:00:02Z"), "level": "error", "region": None},
    )
    assert "\n    " in stdout

    lines = await fake.client(stdout).recent_logs(APP)

    assert lines == [
        LogLine("2026-03-01T10:00:00Z", "ams", "3d8d9017b29e18", "info", "listening on 0.0.0.0:8080"),
        LogLine("2026-03-01T10:00:01Z", "ams", "3d8d9017b29e18", "info", "GET /healthz 200"),
        LogLine("2026-03-01T10:00:02Z", None, "3d8d9017b29e18", "error", "worker stopped"),
    ]


def test_parse_adjacent_objects_without_whitespace() -> None:
    text = json.dumps(entry("first")) + json.dumps(entry("second"))
    assert [line.message for line in parse_logs(text, app=APP)] == ["first", "second"]


def test_parse_optional_keys_missing() -> None:
    lines = parse_logs('{"timestamp": "2026-03-01T10:00:00Z", "message": "bare"}', app=APP)
    assert lines == [LogLine("2026-03-01T10:00:00Z", None, None, None, "bare")]


@pytest.mark.parametrize("stdout", ["", "\n", "  \n\t\r\n"])
async def test_logs_empty_output(fake: Fake, stdout: str) -> None:
    assert await fake.client(stdout).recent_logs(APP) == []


@pytest.mark.parametrize(
    ("stdout", "problem"),
    [
        ("Error: not json at all\n", "entry 0 is not JSON"),
        (go_output(entry("fine")) + '{\n    "message": "cut off', "entry 1 is not JSON"),
        ("[1, 2]\n", "entry 0 is an array, expected an object"),
        (go_output(entry("fine")) + '"a string"\n', "entry 1 is a string, expected an object"),
        ('{"timestamp": "2026-03-01T10:00:00Z", "level": "info"}', "entry 0 has no 'message' key"),
        ('{"timestamp": "2026-03-01T10:00:00Z", "message": 7}', "entry 0.message is a number, expected a string"),
        ('{"message": "no time"}', "entry 0 has no 'timestamp' key"),
        ('{"timestamp": "t", "message": "m", "level": 3}', "entry 0.level is a number, expected a string"),
    ],
)
async def test_logs_garbage_names_app(fake: Fake, stdout: str, problem: str) -> None:
    with pytest.raises(FlyctlOutputError) as caught:
        await fake.client(stdout).recent_logs(APP)
    message = str(caught.value)
    assert f"flyctl logs --json for app {APP}" in message
    assert problem in message


async def test_logs_garbage_message_hides_text(fake: Fake) -> None:
    stdout = '{\n    "timestamp": "t",\n    "message": "password=hunter2-value'
    with pytest.raises(FlyctlOutputError) as caught:
        await fake.client(stdout).recent_logs(APP)
    assert "hunter2" not in str(caught.value)
    assert "line 3 column" in str(caught.value)


# --- redaction and limit ------------------------------------------------------------


async def test_logs_known_secret_redacted(fake: Fake) -> None:
    redactor = Redactor()
    redactor.add("known-secret-value")
    stdout = go_output(entry("booting with JWT_SECRET=known-secret-value set"))

    lines = await fake.client(stdout, redactor=redactor).recent_logs(APP)

    assert "known-secret-value" not in lines[0].message
    assert lines[0].message == f"booting with JWT_SECRET={MASK} set"


async def test_logs_key_material_redacted(fake: Fake) -> None:
    key = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
    stdout = go_output(entry(f"loaded key {key}"), entry(f"token {TOKEN}"))

    lines = await fake.client(stdout).recent_logs(APP)

    assert key not in lines[0].message
    assert "fm2_test-token-not-real" not in lines[1].message


async def test_logs_limit_keeps_newest(fake: Fake) -> None:
    stdout = go_output(*(entry(f"line {index}") for index in range(5)))
    lines = await fake.client(stdout).recent_logs(APP, limit=2)
    assert [line.message for line in lines] == ["line 3", "line 4"]


async def test_logs_limit_above_count(fake: Fake) -> None:
    stdout = go_output(*(entry(f"line {index}") for index in range(3)))
    lines = await fake.client(stdout).recent_logs(APP, limit=50)
    assert [line.message for line in lines] == ["line 0", "line 1", "line 2"]


@pytest.mark.parametrize("limit", [0, -1])
async def test_logs_limit_must_be_positive(fake: Fake, limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be 1 or more"):
        await fake.client("").recent_logs(APP, limit=limit)
    assert not fake.record_path.exists()


async def test_logs_invalid_app_rejected(fake: Fake) -> None:
    with pytest.raises(CommandError, match="app name '--no-tail=false' is invalid"):
        await fake.client("").recent_logs("--no-tail=false")
    assert not fake.record_path.exists()


async def test_logs_use_command_timeout(fake: Fake) -> None:
    client = fake.client("", command_timeout=0.5, FAKE_SLEEP="30")
    started = time.monotonic()
    with pytest.raises(FlyctlTimeout, match=f"flyctl logs for app {APP} did not finish within 0.5s"):
        await client.recent_logs(APP)
    assert time.monotonic() - started < 5


# --- flyctl stand-in ----------------------------------------------------------------


@dataclass
class Standin:
    state: FlyState
    log_path: Path
    work_dir: Path
    config_dir: Path

    def client(self, *, command_timeout: float = 30.0) -> FlyctlClient:
        return FlyctlClient(
            str(STANDIN_PATH),
            api_token=TOKEN,
            work_dir=self.work_dir,
            config_dir=self.config_dir,
            command_timeout=command_timeout,
            deploy_timeout=command_timeout,
            extra_env=self.state.env(log_path=self.log_path),
            kill_grace=2.0,
        )


@pytest.fixture
def standin(tmp_path: Path) -> Standin:
    state = FlyState(tmp_path / "fly-state.json")
    state.add_app(APP, machines=2)
    # A tailing `logs` (one without --no-tail) exits after this many seconds, not the
    # default 300, so a regression cannot leave a stand-in process running for long.
    state.set_hang_limit(5)
    return Standin(
        state=state,
        log_path=tmp_path / "calls.jsonl",
        work_dir=tmp_path / "work",
        config_dir=tmp_path / "home" / ".fly",
    )


async def test_standin_no_logs(standin: Standin) -> None:
    assert await standin.client(command_timeout=3.0).recent_logs(APP) == []


async def test_standin_rollout_logs(standin: Standin) -> None:
    client = standin.client()
    await client.import_secrets(APP, {"JWT_SECRET": "fresh-value-5678"})

    lines = await standin.client(command_timeout=3.0).recent_logs(APP)

    assert [line.message for line in lines] == ["Machine started, running release v2"] * 2
    assert sorted(line.instance or "" for line in lines) == standin.state.machine_ids(APP)
    assert {line.region for line in lines} == {"ams"}
    assert {line.level for line in lines} == {"info"}
    assert all(line.timestamp for line in lines)


async def test_standin_argv_recorded(standin: Standin) -> None:
    await standin.client(command_timeout=3.0).recent_logs(APP)
    assert FlyState.invocations(standin.log_path)[-1]["argv"] == ["logs", "--app", APP, "--no-tail", "--json"]


async def test_standin_limit(standin: Standin) -> None:
    await standin.client().import_secrets(APP, {"JWT_SECRET": "fresh-value-5678"})
    await standin.client().import_secrets(APP, {"JWT_SECRET": "newer-value-9012"})

    lines = await standin.client(command_timeout=3.0).recent_logs(APP, limit=3)

    assert [line.message for line in lines] == [
        "Machine started, running release v2",
        "Machine started, running release v3",
        "Machine started, running release v3",
    ]


async def test_standin_garbage_json(standin: Standin) -> None:
    await standin.client().import_secrets(APP, {"JWT_SECRET": "fresh-value-5678"})
    standin.state.inject(APP, "logs", failure="garbage_json")
    with pytest.raises(FlyctlOutputError, match=f"logs --json for app {APP}"):
        await standin.client(command_timeout=3.0).recent_logs(APP)
