"""FlyctlClient against throw-away flyctl scripts: environment, stdin, timeouts, errors.

The script `fake_flyctl` written by the `fake` fixture records its argv, environment,
working directory and standard input as JSON, then prints and exits as the test's
FAKE_* variables request. Integration tests against the flyctl stand-in come last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import (
    CommandError,
    ConfigError,
    FlyctlError,
    FlyctlNotFound,
    FlyctlOutputError,
    FlyctlTimeout,
    UnsafeValueError,
)
from bot.flyctl import AppStatus, Check, FlyctlClient, FlySecret, Release, encode_import, parse_import
from bot.redact import MASK, Redactor
from tests.standins.fly_state import STANDIN_PATH, FlyState

TOKEN = "FlyV1 fm2_test-token-not-real"

FAKE_FLYCTL = f"""#!{sys.executable}
import json, os, signal, subprocess, sys, time

record = {{
    "argv": sys.argv,
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "cwd_entries": sorted(os.listdir(".")),
    "pid": os.getpid(),
}}
if os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("FAKE_GRANDCHILD"):
    child = subprocess.Popen(["sleep", "30"])
    record["grandchild"] = child.pid
record["stdin"] = sys.stdin.read() if os.environ.get("FAKE_READ_STDIN") else None
with open(os.environ["FAKE_RECORD"], "w") as handle:
    json.dump(record, handle)

time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
sys.stdout.write(os.environ.get("FAKE_STDOUT", ""))
sys.stderr.write(os.environ.get("FAKE_STDERR", ""))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@dataclass
class Fake:
    executable: Path
    record_path: Path
    work_dir: Path
    config_dir: Path

    def client(
        self, *, redactor: Redactor | None = None, command_timeout: float = 10.0, **fake_env: str
    ) -> FlyctlClient:
        return FlyctlClient(
            str(self.executable),
            api_token=TOKEN,
            work_dir=self.work_dir,
            config_dir=self.config_dir,
            command_timeout=command_timeout,
            deploy_timeout=command_timeout,
            redactor=redactor,
            extra_env={"FAKE_RECORD": str(self.record_path), **fake_env},
            kill_grace=0.5,
        )

    def record(self) -> dict[str, Any]:
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


# --- environment, argv, working directory ---------------------------------------


async def test_child_env_built_from_scratch(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-for-flyctl")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@localhost/db")
    monkeypatch.setenv("SECRETBOT_SEAL_KEY", "do-not-pass")
    monkeypatch.setenv("FLY_ACCESS_TOKEN", "stale-token")

    await fake.client().version()
    env = fake.record()["env"]

    expected_keys = {
        "PATH",
        "HOME",
        "FLY_API_TOKEN",
        "FLY_CONFIG_DIR",
        "NO_COLOR",
        "FLY_NO_UPDATE_CHECK",
        "FLY_NO_INCIDENTS_CHECK",
        "FAKE_RECORD",
    }
    # Python itself may add LC_CTYPE when it coerces the C locale.
    assert set(env) - {"LC_CTYPE"} == expected_keys
    assert env["FLY_API_TOKEN"] == TOKEN
    assert env["FLY_CONFIG_DIR"] == str(fake.config_dir)
    assert env["HOME"] == str(fake.config_dir.parent)
    assert env["NO_COLOR"] == "1"
    assert env["FLY_NO_UPDATE_CHECK"] == "1"
    assert env["FLY_NO_INCIDENTS_CHECK"] == "1"


async def test_config_dir_private(fake: Fake) -> None:
    fake.client()
    assert stat.S_IMODE(fake.config_dir.stat().st_mode) == 0o700


async def test_runs_in_empty_work_dir(fake: Fake) -> None:
    await fake.client().version()
    record = fake.record()
    assert record["cwd"] == str(fake.work_dir)
    assert record["cwd_entries"] == []


async def test_work_dir_with_fly_toml_rejected(fake: Fake) -> None:
    fake.work_dir.mkdir(parents=True)
    (fake.work_dir / "fly.toml").write_text('app = "wrong-app"\n')
    with pytest.raises(FlyctlError, match="fly.toml"):
        await fake.client().list_secrets("my-app")
    assert not fake.record_path.exists()


@pytest.mark.parametrize("key", ["LOG_LEVEL", "FLY_API_TOKEN", "PATH", "FLY_ACCESS_TOKEN"])
def test_extra_env_cannot_override(fake: Fake, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        FlyctlClient(
            str(fake.executable),
            api_token=TOKEN,
            work_dir=fake.work_dir,
            config_dir=fake.config_dir,
            extra_env={key: "x"},
        )


def test_empty_token_rejected(fake: Fake) -> None:
    with pytest.raises(ConfigError, match="FLY_API_TOKEN"):
        FlyctlClient(str(fake.executable), api_token="", work_dir=fake.work_dir, config_dir=fake.config_dir)


@pytest.mark.parametrize("app", ["-a", "--help", "My-App", "app name", "", "app;rm"])
async def test_invalid_app_rejected(fake: Fake, app: str) -> None:
    with pytest.raises(CommandError, match="app name"):
        await fake.client().status(app)
    assert not fake.record_path.exists()


async def test_read_commands_argv(fake: Fake) -> None:
    client = fake.client(FAKE_STDOUT="[]")
    await client.list_secrets("my-app")
    assert fake.record()["argv"][1:] == ["secrets", "list", "--app", "my-app", "--json"]
    await client.releases("my-app")
    assert fake.record()["argv"][1:] == ["releases", "--app", "my-app", "--json"]


async def test_version_returns_first_line(fake: Fake) -> None:
    client = fake.client(FAKE_STDOUT="flyctl v0.4.87 linux/amd64 Commit: ad0172f\n")
    assert await client.version() == "flyctl v0.4.87 linux/amd64 Commit: ad0172f"


# --- secrets import ---------------------------------------------------------------

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nline two\n-----END PRIVATE KEY-----\n"
VALUES = {"JWT_SECRET": "s3cr#t \"quoted\" value  ", "TLS_KEY": PEM, "EMPTY": ""}


async def test_import_sends_values_on_stdin_only(fake: Fake) -> None:
    result = await fake.client(FAKE_READ_STDIN="1").import_secrets("my-app", VALUES)
    record = fake.record()

    assert parse_import(record["stdin"]) == VALUES
    assert record["argv"][1:] == ["secrets", "import", "--app", "my-app"]
    assert result.argv == [str(fake.executable), "secrets", "import", "--app", "my-app"]
    for value in ("s3cr#t", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"):
        assert not any(value in arg for arg in record["argv"])
        assert not any(value in env_value for env_value in record["env"].values())


async def test_import_rejects_unsafe_before_running(fake: Fake) -> None:
    with pytest.raises(UnsafeValueError, match="BAD"):
        await fake.client().import_secrets("my-app", {"GOOD": "x", "BAD": "a\r\nb"})
    assert not fake.record_path.exists()


async def test_import_result_fields(fake: Fake) -> None:
    result = await fake.client(FAKE_STDOUT="Updating existing machines\n", FAKE_READ_STDIN="1").import_secrets(
        "my-app", {"A": "value-1"}
    )
    assert result.exit_code == 0
    assert result.stdout == "Updating existing machines\n"
    assert result.stderr == ""
    assert result.duration > 0


async def test_import_echo_redacted(fake: Fake) -> None:
    value = "MIIEvQIBADANBgkq-not-a-real-key"
    stderr = (
        "Error: Failed to parse secrets from stdin: "
        f"Secrets must be provided as NAME=VALUE pairs ({value} is invalid)\n"
    )
    client = fake.client(FAKE_STDERR=stderr, FAKE_EXIT="1", FAKE_READ_STDIN="1")
    with pytest.raises(FlyctlError) as caught:
        await client.import_secrets("my-app", {"K": value})
    assert value not in str(caught.value)
    assert value not in caught.value.stderr
    assert MASK in caught.value.stderr


async def test_stdout_redacted(fake: Fake) -> None:
    redactor = Redactor()
    redactor.add("known-secret-value")
    client = fake.client(redactor=redactor, FAKE_STDOUT=f"echo known-secret-value and {TOKEN}\n")
    result = await client.import_secrets("my-app", {"A": "other-value"})
    assert "known-secret-value" not in result.stdout
    assert "fm2_test-token-not-real" not in result.stdout


async def test_logs_name_command_never_value(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await fake.client(FAKE_READ_STDIN="1").import_secrets("my-app", VALUES)

    messages = [record.getMessage() for record in caplog.records]
    assert any("flyctl started app=my-app command=secrets import" in message for message in messages)
    assert any("flyctl finished app=my-app command=secrets import exit_code=0" in message for message in messages)
    for message in messages:
        assert "s3cr#t" not in message
        assert "MIIEvQ" not in message
        assert "fm2_test" not in message


# --- failures ---------------------------------------------------------------------


async def test_error_message_is_last_error_line(fake: Fake) -> None:
    stderr = "Error: first problem\nsome detail\nError: failed to get lease on VM 3d8d9017b29e18: held\n"
    with pytest.raises(FlyctlError) as caught:
        await fake.client(FAKE_STDERR=stderr, FAKE_STDOUT="partial\n", FAKE_EXIT="1").status("my-app")
    error = caught.value
    assert str(error) == "flyctl status for app my-app failed: failed to get lease on VM 3d8d9017b29e18: held"
    assert error.exit_code == 1
    assert error.stdout == "partial\n"
    assert error.stderr == stderr


async def test_error_message_redacted(fake: Fake) -> None:
    stderr = 'Error: update secrets: "xoxb-123-456-abcdefghijkl" is not a valid secret name\n'
    with pytest.raises(FlyctlError) as caught:
        await fake.client(FAKE_STDERR=stderr, FAKE_EXIT="1").list_secrets("my-app")
    assert "xoxb-123" not in str(caught.value)


async def test_silent_exit_127(fake: Fake) -> None:
    with pytest.raises(FlyctlError, match="code 127") as caught:
        await fake.client(FAKE_EXIT="127").import_secrets("my-app", {"A": "value-1"})
    assert caught.value.exit_code == 127


async def test_silent_nonzero_exit(fake: Fake) -> None:
    with pytest.raises(FlyctlError, match="exited with code 3"):
        await fake.client(FAKE_STDOUT="Oops, something went wrong!\n", FAKE_EXIT="3").status("my-app")


async def test_version_failure_names_no_app(fake: Fake) -> None:
    with pytest.raises(FlyctlError) as caught:
        await fake.client(FAKE_STDERR="Error: boom\n", FAKE_EXIT="1").version()
    assert str(caught.value) == "flyctl version failed: boom"


async def test_app_not_found(fake: Fake) -> None:
    stderr = 'Error: failed to get app: failed to run query(...) {\n  app\n}: Could not find App "ghost"\n'
    with pytest.raises(FlyctlError, match="flyctl status for app ghost failed: the app was not found"):
        await fake.client(FAKE_STDERR=stderr, FAKE_EXIT="1").status("ghost")


async def test_missing_executable(fake: Fake) -> None:
    client = FlyctlClient(
        str(fake.executable.parent / "absent"), api_token=TOKEN, work_dir=fake.work_dir, config_dir=fake.config_dir
    )
    with pytest.raises(FlyctlNotFound, match="install flyctl or set FLYCTL"):
        await client.version()


async def test_executable_not_on_path(fake: Fake) -> None:
    client = FlyctlClient(
        "flyctl-does-not-exist-here", api_token=TOKEN, work_dir=fake.work_dir, config_dir=fake.config_dir
    )
    with pytest.raises(FlyctlNotFound):
        await client.version()


async def test_non_executable_file(fake: Fake) -> None:
    fake.executable.chmod(0o644)
    with pytest.raises(FlyctlNotFound):
        await fake.client().version()


# --- timeouts -------------------------------------------------------------------


def process_gone(pid: int, timeout: float = 3.0) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; a signal is not acted on instantly."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        # A killed grandchild may linger as a zombie until init reaps it.
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


async def test_timeout_terminates(fake: Fake) -> None:
    started = time.monotonic()
    with pytest.raises(FlyctlTimeout, match="flyctl status for app my-app did not finish within 0.5s"):
        await fake.client(command_timeout=0.5, FAKE_SLEEP="30").status("my-app")
    assert time.monotonic() - started < 5
    assert process_gone(fake.record()["pid"])


async def test_timeout_kills_after_grace(fake: Fake) -> None:
    started = time.monotonic()
    with pytest.raises(FlyctlTimeout) as caught:
        await fake.client(command_timeout=0.5, FAKE_SLEEP="30", FAKE_IGNORE_TERM="1").status("my-app")
    assert time.monotonic() - started < 5
    assert caught.value.exit_code == -9
    assert process_gone(fake.record()["pid"])


async def test_timeout_stops_grandchildren(fake: Fake) -> None:
    started = time.monotonic()
    with pytest.raises(FlyctlTimeout):
        await fake.client(command_timeout=0.5, FAKE_SLEEP="30", FAKE_GRANDCHILD="1").status("my-app")
    assert time.monotonic() - started < 5
    assert process_gone(fake.record()["grandchild"])


# --- JSON shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (
            '[{"name": "API_KEY", "digest": "522d6815e668a102", "status": "Deployed"}]',
            [FlySecret("API_KEY", "522d6815e668a102", "Deployed")],
        ),
        (
            '[{"name": "API_KEY", "digest": "522d6815e668a102", "created_at": "2025-10-01T00:00:00Z"}]',
            [FlySecret("API_KEY", "522d6815e668a102", None)],
        ),
        (
            '[{"Name": "API_KEY", "Digest": "a" , "CreatedAt": "2024-01-01T00:00:00Z"}]',
            [FlySecret("API_KEY", "a", None)],
        ),
        ("[]\n", []),
    ],
)
async def test_secrets_list_shapes(fake: Fake, stdout: str, expected: list[FlySecret]) -> None:
    assert await fake.client(FAKE_STDOUT=stdout).list_secrets("my-app") == expected


@pytest.mark.parametrize(
    ("stdout", "problem"),
    [
        ("", "is empty"),
        ("NAME  DIGEST\nAPI_KEY  abc\n", "is not JSON"),
        ("{}", "expected an array"),
        ('{"secrets": []}', "expected an array"),
        ('[{"key": "API_KEY", "hash": "abc"}]', "has keys (hash, key)"),
        ('[{"name": "API_KEY", "digest": 7}]', "expected a string"),
        ('[{"name": "API_KEY", "digest": "a", "status": 1}]', "expected a string"),
        ('["API_KEY"]', "expected an object"),
    ],
)
async def test_secrets_list_unknown_shape(fake: Fake, stdout: str, problem: str) -> None:
    with pytest.raises(FlyctlOutputError) as caught:
        await fake.client(FAKE_STDOUT=stdout).list_secrets("my-app")
    assert "app my-app" in str(caught.value)
    assert problem in str(caught.value)


STATUS_JSON = {
    "AppURL": "https://my-app.fly.dev",
    "Deployed": True,
    "Hostname": "my-app.fly.dev",
    "ID": "my-app",
    "Machines": [
        {
            "id": "3d8d9017b29e18",
            "name": "bold-sun-1",
            "state": "started",
            "region": "ams",
            "config": {
                "metadata": {"fly_release_version": "7", "fly_process_group": "app"},
                "services": [{"autostop": "stop", "internal_port": 8080}],
            },
            "checks": [
                {"name": "http", "status": "passing", "output": "token=xoxb-1-2-abcdefabcdef", "updated_at": "x"}
            ],
            "host_status": "ok",
            "cordoned": False,
        },
        {"id": "148e272b650e89", "state": "stopped", "config": {}},
    ],
    "Name": "my-app",
    "Status": "deployed",
    "Version": 7,
}


async def test_status_parsed(fake: Fake) -> None:
    status = await fake.client(FAKE_STDOUT=json.dumps(STATUS_JSON, indent=4)).status("my-app")
    assert status.name == "my-app"
    assert status.version == 7
    assert status.deployed is True
    assert [machine.id for machine in status.machines] == ["3d8d9017b29e18", "148e272b650e89"]
    first, second = status.machines
    assert first.release_version == "7"
    assert first.host_status == "ok"
    assert first.auto_stop is True
    assert first.checks == [Check(name="http", status="passing", output=f"token={MASK}")]
    assert second.release_version is None
    assert second.host_status is None
    assert second.checks == []
    assert second.auto_stop is False


async def test_status_null_machines(fake: Fake) -> None:
    document = {**STATUS_JSON, "Machines": None, "Deployed": False, "Version": 0}
    status = await fake.client(FAKE_STDOUT=json.dumps(document)).status("my-app")
    assert status == AppStatus(name="my-app", version=0, deployed=False, machines=[])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"Version": "7"}, "Version is a string"),
        ({"Version": True}, "Version is a boolean"),
        ({"Deployed": "yes"}, "Deployed is a string"),
        ({"Machines": {}}, "Machines is an object"),
        ({"Machines": [{"state": "started"}]}, "Machines[0] has no 'id' key"),
        ({"Machines": [{"id": "m", "state": "started", "checks": [{"name": "x"}]}]}, "has no 'status' key"),
        (
            {"Machines": [{"id": "m", "state": "started", "config": {"metadata": {"fly_release_version": 7}}}]},
            "fly_release_version is a number",
        ),
    ],
)
async def test_status_unknown_shape(fake: Fake, change: dict[str, Any], problem: str) -> None:
    document = {**STATUS_JSON, **change}
    with pytest.raises(FlyctlOutputError, match="status --json for app my-app") as caught:
        await fake.client(FAKE_STDOUT=json.dumps(document)).status("my-app")
    assert problem in str(caught.value)


async def test_status_without_machines_key(fake: Fake) -> None:
    document = {key: value for key, value in STATUS_JSON.items() if key != "Machines"}
    with pytest.raises(FlyctlOutputError, match="Machines"):
        await fake.client(FAKE_STDOUT=json.dumps(document)).status("my-app")


async def test_releases_parsed(fake: Fake) -> None:
    releases = [
        {"ID": "r2", "Version": 8, "Status": "complete", "CreatedAt": "2026-01-02T00:00:00Z", "Stable": True},
        {"ID": "r1", "Version": 7, "Status": "failed", "CreatedAt": "2026-01-01T00:00:00Z", "Stable": False},
    ]
    parsed = await fake.client(FAKE_STDOUT=json.dumps(releases)).releases("my-app")
    assert parsed == [
        Release(version=8, status="complete", created_at="2026-01-02T00:00:00Z"),
        Release(version=7, status="failed", created_at="2026-01-01T00:00:00Z"),
    ]


@pytest.mark.parametrize(
    "stdout", ['{"Version": 1}', '[{"Version": "8", "Status": "complete", "CreatedAt": "x"}]', '[{"Version": 8}]']
)
async def test_releases_unknown_shape(fake: Fake, stdout: str) -> None:
    with pytest.raises(FlyctlOutputError, match="releases --json for app my-app"):
        await fake.client(FAKE_STDOUT=stdout).releases("my-app")


def test_process_gone_detects_live_process() -> None:
    assert not process_gone(os.getpid())


# --- against the flyctl stand-in ---------------------------------------------------

AWKWARD_VALUES = {
    "JWT_SECRET": 'new "value" # with a comment sign ',
    "TLS_KEY": PEM,
    "SPACED": "  leading and trailing  ",
    "SINGLE": "'single quoted'",
    "EQUALS": "a=b==c",
    "DOLLAR": "$HOME and \\n literal",
    "BARE_HASH": 'a"b#c',
    "UNICODE": "pässwörd ☃",
    "EMPTY": "",
}


@dataclass
class Standin:
    state: FlyState
    log_path: Path
    work_dir: Path
    config_dir: Path

    def client(self, *, api_token: str = TOKEN, command_timeout: float = 30.0) -> FlyctlClient:
        return FlyctlClient(
            str(STANDIN_PATH),
            api_token=api_token,
            work_dir=self.work_dir,
            config_dir=self.config_dir,
            command_timeout=command_timeout,
            deploy_timeout=command_timeout,
            extra_env=self.state.env(log_path=self.log_path),
            kill_grace=2.0,
        )

    def invocations(self) -> list[dict[str, Any]]:
        return FlyState.invocations(self.log_path)


@pytest.fixture
def standin(tmp_path: Path) -> Standin:
    state = FlyState(tmp_path / "fly-state.json")
    state.add_app("my-app", machines=2)
    state.set_secret("my-app", "JWT_SECRET", "old-value-1234")
    return Standin(
        state=state,
        log_path=tmp_path / "calls.jsonl",
        work_dir=tmp_path / "work",
        config_dir=tmp_path / "home" / ".fly",
    )


async def test_standin_version(standin: Standin) -> None:
    assert (await standin.client().version()).startswith("flyctl v0.4.87")


async def test_standin_import_byte_exact(standin: Standin) -> None:
    result = await standin.client().import_secrets("my-app", AWKWARD_VALUES)
    assert result.exit_code == 0
    for name, value in AWKWARD_VALUES.items():
        assert standin.state.secret_value("my-app", name) == value, name


async def test_standin_import_argv_and_env(standin: Standin) -> None:
    await standin.client().import_secrets("my-app", AWKWARD_VALUES)
    call = standin.invocations()[-1]
    assert call["argv"] == ["secrets", "import", "--app", "my-app"]
    assert call["stdin_bytes"] == len(encode_import(AWKWARD_VALUES).encode("utf-8"))
    assert call["cwd"] == str(standin.work_dir)
    for forbidden in ("LOG_LEVEL", "SLACK_BOT_TOKEN", "DATABASE_URL", "FLY_ACCESS_TOKEN"):
        assert forbidden not in call["env_keys"]


async def test_standin_list_digests(standin: Standin) -> None:
    await standin.client().import_secrets("my-app", {"JWT_SECRET": "fresh-value-5678", "NEW_ONE": "x-1234"})
    secrets = await standin.client().list_secrets("my-app")
    assert {secret.name: secret.digest for secret in secrets} == {
        "JWT_SECRET": standin.state.secret_digest("my-app", "JWT_SECRET"),
        "NEW_ONE": standin.state.secret_digest("my-app", "NEW_ONE"),
    }
    assert {secret.status for secret in secrets} == {"Deployed"}


@pytest.mark.parametrize("list_format", ["v0.3", "legacy"])
async def test_standin_older_list_formats(standin: Standin, list_format: str) -> None:
    standin.state.set_list_format("my-app", list_format)
    secrets = await standin.client().list_secrets("my-app")
    assert secrets == [FlySecret("JWT_SECRET", standin.state.secret_digest("my-app", "JWT_SECRET"), None)]


async def test_standin_status_and_releases(standin: Standin) -> None:
    status = await standin.client().status("my-app")
    releases = await standin.client().releases("my-app")
    assert status.version == 1
    assert sorted(machine.id for machine in status.machines) == standin.state.machine_ids("my-app")
    assert {machine.release_version for machine in status.machines} == {"1"}
    assert releases[0] == Release(version=1, status="complete", created_at=releases[0].created_at)


async def test_standin_app_not_found(standin: Standin) -> None:
    with pytest.raises(FlyctlError, match="for app ghost-app failed: the app was not found"):
        await standin.client().status("ghost-app")


async def test_standin_revoked_token(standin: Standin) -> None:
    standin.state.set_accepted_tokens(["some-other-token"])
    with pytest.raises(FlyctlError) as caught:
        await standin.client().status("my-app")
    message = str(caught.value)
    assert message == (
        "flyctl status for app my-app failed: failed to get app: "
        "failed to run a GraphQL query: You must be authenticated to view this."
    )
    assert "fm2_test-token" not in caught.value.stderr


async def test_standin_rollout_failure(standin: Standin) -> None:
    standin.state.inject("my-app", "secrets import", failure="health_timeout")
    with pytest.raises(FlyctlError, match="timeout reached waiting for health checks") as caught:
        await standin.client().import_secrets("my-app", {"JWT_SECRET": "rolled-half-way"})
    assert caught.value.exit_code == 1
    assert "rolled-half-way" not in caught.value.stdout + caught.value.stderr


async def test_standin_hang_times_out(standin: Standin) -> None:
    standin.state.inject("my-app", "secrets import", failure="hang")
    started = time.monotonic()
    with pytest.raises(FlyctlTimeout, match="secrets import for app my-app"):
        await standin.client(command_timeout=1.0).import_secrets("my-app", {"JWT_SECRET": "never-confirmed"})
    assert time.monotonic() - started < 10


async def test_standin_garbage_json(standin: Standin) -> None:
    standin.state.inject("my-app", "status", failure="garbage_json")
    with pytest.raises(FlyctlOutputError, match="status --json for app my-app"):
        await standin.client().status("my-app")


async def test_standin_panic(standin: Standin) -> None:
    standin.state.inject("my-app", "secrets list", failure="panic")
    with pytest.raises(FlyctlError) as caught:
        await standin.client().list_secrets("my-app")
    assert caught.value.exit_code == 3
    assert "exited with code 3" in str(caught.value)


async def test_standin_rejects_nothing_on_unsafe(standin: Standin) -> None:
    with pytest.raises(UnsafeValueError):
        await standin.client().import_secrets("my-app", {"JWT_SECRET": "bad\r\nvalue"})
    assert standin.invocations() == []
    assert standin.state.secret_value("my-app", "JWT_SECRET") == "old-value-1234"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.text(
        alphabet=st.sampled_from(list(" \t\"'#=\n\r\\$-aZ09") + ["é", "☃"]),
        max_size=30,
    )
)
def test_standin_agrees_with_model(standin: Standin, value: str) -> None:
    # The stand-in has its own import parser, so this cross-checks parse_import.
    try:
        text = encode_import({"PROBE": value})
    except UnsafeValueError:
        return
    assert parse_import(text) == {"PROBE": value}
    asyncio.run(standin.client().import_secrets("my-app", {"PROBE": value}))
    assert standin.state.secret_value("my-app", "PROBE") == value
