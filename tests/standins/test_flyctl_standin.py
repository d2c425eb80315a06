"""Tests of the flyctl stand-in, run as a subprocess the way the bot runs flyctl.

Every run gets an argv list, stdin as a pipe (or /dev/null), an empty working
directory and a minimal environment, so the tests also check that the stand-in needs
nothing from the test process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .fly_state import STANDIN_PATH, FlyState

APP = "hotel-voice-bot"
TOKEN = "FlyV1 fm2_standin-token"
RUN_TIMEOUT = 30


class FlyctlRunner:
    """Runs the stand-in with the environment the bot gives the real flyctl."""

    def __init__(self, tmp_path: Path, state: FlyState) -> None:
        self.state = state
        self.log_path = tmp_path / "invocations.jsonl"
        self.workdir = tmp_path / "work"
        self.workdir.mkdir()
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.config_dir = tmp_path / "fly-config"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "FLY_API_TOKEN": TOKEN,
            "FLY_CONFIG_DIR": str(self.config_dir),
            "NO_COLOR": "1",
            "FLY_NO_UPDATE_CHECK": "1",
            "FLY_NO_INCIDENTS_CHECK": "1",
            **state.env(log_path=self.log_path),
        }

    def environment(self, extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
        env = {key: value for key, value in self.env.items() if key not in drop}
        env.update(extra or {})
        return env

    def __call__(
        self,
        *args: str,
        stdin: bytes | None = b"",
        extra_env: dict[str, str] | None = None,
        drop_env: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [str(STANDIN_PATH), *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            cwd=cwd or self.workdir,
            env=self.environment(extra_env, drop_env),
            timeout=RUN_TIMEOUT,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode("utf-8", "surrogateescape"),
            completed.stderr.decode("utf-8", "surrogateescape"),
        )

    def start(self, *args: str, stdin: bytes = b"") -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [str(STANDIN_PATH), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            env=self.env,
        )
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.close()
        # communicate() would flush the closed pipe otherwise.
        process.stdin = None
        return process

    def invocations(self) -> list[dict[str, object]]:
        return FlyState.invocations(self.log_path)


@pytest.fixture
def state(tmp_path: Path) -> FlyState:
    fly_state = FlyState(tmp_path / "fly-state.json")
    fly_state.add_app(APP, machines=2, checks_per_machine=1, ip=True)
    fly_state.set_secret(APP, "JWT_SECRET", "old-value")
    # A stray `hang` ends by itself well inside the subprocess timeout.
    fly_state.set_hang_limit(20)
    return fly_state


@pytest.fixture
def flyctl(tmp_path: Path, state: FlyState) -> FlyctlRunner:
    return FlyctlRunner(tmp_path, state)


def wait_until(predicate: Callable[[], object], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached within the timeout")


def secrets_json(flyctl: FlyctlRunner, app: str = APP) -> dict[str, dict[str, object]]:
    result = flyctl("secrets", "list", "-a", app, "--json")
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def rollout_transcript(machine_ids: list[str], checks: int = 1) -> list[str]:
    """Build the stdout flyctl prints for a successful rolling update of started machines."""
    lines = [f"Updating existing machines in '{APP}' with rolling strategy"]
    total = len(machine_ids)
    for index, machine_id in enumerate(machine_ids, start=1):
        counter = f"[{index}/{total}] " if total > 1 else ""
        label = f"{machine_id} [app]"
        lines += [
            f"> {counter}Updating {label}",
            f"> {counter}Updating {label}",
            f"> {counter}Waiting for {label} to have state: started",
            f"> {counter}Machine {label} has state: started",
            f"> {counter}Checking that {label} is up and running",
        ]
        if checks:
            lines += [
                f"> {counter}Waiting for {label} to become healthy: 0/{checks}",
                "",
                f"> {counter}Waiting for {label} to become healthy: {checks}/{checks}",
                "",
            ]
        lines.append(f"✔ {counter}Machine {label} update succeeded")
    return lines


# --- secrets import parser ------------------------------------------------------------

IMPORT_CASES = [
    ("plain", "A=1\n", {"A": "1"}),
    ("equals in value", "A=x=y=z\n", {"A": "x=y=z"}),
    ("spaces around equals", "A = spaced\n", {"A": "spaced"}),
    ("trailing spaces kept", "A=trailing   \n", {"A": "trailing   "}),
    ("leading spaces dropped", "A=   lead\n", {"A": "lead"}),
    ("leading tab kept", "A=\ttab\n", {"A": "\ttab"}),
    ("empty value", "A=\n", {"A": ""}),
    ("unquoted hash cuts", "A=abc#def\n", {"A": "abc"}),
    ("single quoted hash cuts", "A='abc#def'\n", {"A": "'abc"}),
    ("double quoted hash kept", 'A="abc#def"\n', {"A": "abc#def"}),
    ("inline comment after quotes", 'A="x" # note\n', {"A": "x"}),
    ("hash only value", "A=#x\n", {"A": ""}),
    ("double quotes stripped", 'A="dq"\n', {"A": "dq"}),
    ("single quotes stripped", "A='sq'\n", {"A": "sq"}),
    ("no escape processing", 'A="a\\nb"\n', {"A": "a\\nb"}),
    ("no interpolation", "A=$HOME\n", {"A": "$HOME"}),
    ("comment and blank lines", "# comment\n\n   \nA=1\n", {"A": "1"}),
    ("crlf lines", "A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("no final newline", "A=1", {"A": "1"}),
    ("later duplicate wins", "A=1\nA=2\n", {"A": "2"}),
    ("triple quotes one line", 'A="""one line"""\n', {"A": "one line"}),
    ("empty triple quotes", 'A=""""""\n', {"A": ""}),
    ("block closes on own line", 'A="""line1\nline2\n"""\n', {"A": "line1\nline2\n"}),
    ("block opens on own line", 'A="""\nline1\nline2"""\n', {"A": "\nline1\nline2"}),
    ("block keeps comments and crlf", 'A="""x\r\n# kept\r\n\r\ny"""\r\n', {"A": "x\n# kept\n\ny"}),
    ("block close needs line end", 'A="""x\nend""" \nB=1"""\n', {"A": 'x\nend""" \nB=1'}),
    ("unclosed block dropped", 'B=2\nA="""open\nstill open\n', {"B": "2"}),
    ("pem block", 'KEY="""-----BEGIN KEY-----\nabc=\n-----END KEY-----"""\n',
     {"KEY": "-----BEGIN KEY-----\nabc=\n-----END KEY-----"}),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in IMPORT_CASES], ids=[case[0] for case in IMPORT_CASES])
def test_import_parser_rules(flyctl: FlyctlRunner, state: FlyState, text: str, expected: dict[str, str]) -> None:
    result = flyctl("secrets", "import", "-a", APP, "--stage", stdin=text.encode())

    assert result.returncode == 0, result.stderr
    for name, value in expected.items():
        assert state.secret_value(APP, name) == value, name
    assert set(state.secret_names(APP)) == {"JWT_SECRET"} | set(expected)


IMPORT_ERRORS = [
    ("line without equals", "NOEQUALS\n",
     "Error: Failed to parse secrets from stdin: Secrets must be provided as NAME=VALUE pairs (NOEQUALS is invalid)"),
    ("indented comment is parsed", "  # indented\n",
     "Secrets must be provided as NAME=VALUE pairs (  # indented is invalid)"),
    ("empty input", "", "Error: requires at least one SECRET=VALUE pair"),
    ("only comments", "# nothing\n", "Error: requires at least one SECRET=VALUE pair"),
    ("export prefix", "export FOO=bar\n", 'failed to update app secrets: "export FOO" is not a valid secret name'),
]


@pytest.mark.parametrize(("text", "message"), [case[1:] for case in IMPORT_ERRORS], ids=[case[0] for case in IMPORT_ERRORS])
def test_import_parser_errors(flyctl: FlyctlRunner, state: FlyState, text: str, message: str) -> None:
    result = flyctl("secrets", "import", "-a", APP, stdin=text.encode())

    assert result.returncode == 1
    assert message in result.stderr
    assert state.secret_names(APP) == ["JWT_SECRET"]
    assert state.secrets_version(APP) == 1


@pytest.mark.parametrize("lone_quote", ['"', "'"])
def test_import_lone_quote_panics(flyctl: FlyctlRunner, state: FlyState, lone_quote: str) -> None:
    result = flyctl("secrets", "import", "-a", APP, stdin=f"A=ok\nB={lone_quote}\n".encode())

    assert result.returncode == 3
    assert result.stdout.startswith("Oops, something went wrong! Could you try that again?")
    assert "slice bounds out of range" in result.stdout
    assert state.secret_value(APP, "A") is None


def test_import_long_line_ends_scan(flyctl: FlyctlRunner, state: FlyState) -> None:
    text = "A=1\nB=" + "x" * 65536 + "\nC=3\n"
    result = flyctl("secrets", "import", "-a", APP, "--stage", stdin=text.encode())

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "A") == "1"
    assert state.secret_value(APP, "B") is None
    assert state.secret_value(APP, "C") is None


def test_import_line_below_limit_kept(flyctl: FlyctlRunner, state: FlyState) -> None:
    value = "y" * (65535 - len("B="))
    result = flyctl("secrets", "import", "-a", APP, "--stage", stdin=f"B={value}\nC=3\n".encode())

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "B") == value
    assert state.secret_value(APP, "C") == "3"


def test_import_keeps_non_utf8_bytes(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "import", "-a", APP, "--stage", stdin=b"A=caf\xe9\n")

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "A") == b"caf\xe9".decode("utf-8", "surrogateescape")


# --- secrets set arguments and stdin ---------------------------------------------------

SET_CASES = [
    ("equals in value", ["A=x=y"], {"A": "x=y"}),
    ("empty value", ["A="], {"A": ""}),
    ("leading dash", ["A=-dash"], {"A": "-dash"}),
    ("spaces verbatim", ["A= spaced "], {"A": " spaced "}),
    ("quotes verbatim", ["A='q'"], {"A": "'q'"}),
    ("hash verbatim", ["A=abc#def"], {"A": "abc#def"}),
    ("newline verbatim", ["A=line1\nline2"], {"A": "line1\nline2"}),
    ("later duplicate wins", ["A=1", "A=2"], {"A": "2"}),
    ("several names", ["A=1", "B=2"], {"A": "1", "B": "2"}),
]


@pytest.mark.parametrize(("arguments", "expected"), [case[1:] for case in SET_CASES], ids=[case[0] for case in SET_CASES])
def test_set_argument_rules(flyctl: FlyctlRunner, state: FlyState, arguments: list[str], expected: dict[str, str]) -> None:
    result = flyctl("secrets", "set", *arguments, "-a", APP, "--stage")

    assert result.returncode == 0, result.stderr
    for name, value in expected.items():
        assert state.secret_value(APP, name) == value, name


def test_set_argument_without_equals(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "A=1", "NOEQ", "-a", APP)

    assert result.returncode == 1
    assert "Error: could not parse secrets: 'NOEQ': must be in the format NAME=VALUE" in result.stderr
    assert state.secret_value(APP, "A") is None


def test_set_stdin_value_trimmed(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "JWT_SECRET=-", "-a", APP, stdin=b"  \n new-value\n\n")

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "JWT_SECRET") == "new-value"


def test_set_stdin_at_cap_accepted(flyctl: FlyctlRunner, state: FlyState) -> None:
    value = "v" * 65536
    result = flyctl("secrets", "set", "BIG=-", "-a", APP, "--stage", stdin=value.encode())

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "BIG") == value


def test_set_stdin_over_cap_rejected(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "BIG=-", "-a", APP, stdin=b"v" * 65537)

    assert result.returncode == 1
    assert "Error: error reading stdin for 'BIG': Input exceeded max length of 65536 bytes" in result.stderr
    assert state.secret_value(APP, "BIG") is None


def test_set_stdin_char_device_rejected(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "JWT_SECRET=-", "-a", APP, stdin=None)

    assert result.returncode == 1
    assert "Error: secret `JWT_SECRET` expects standard input but none provided" in result.stderr
    assert state.secret_value(APP, "JWT_SECRET") == "old-value"


def test_set_second_stdin_value_empty(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "A=-", "B=-", "-a", APP, "--stage", stdin=b"first")

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "A") == "first"
    assert state.secret_value(APP, "B") == ""


def test_set_invalid_name_stores_nothing(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "GOOD=1", "bad-name=2", "-a", APP)

    assert result.returncode == 1
    assert 'Error: update secrets: failed to update app secrets: "bad-name" is not a valid secret name (Request ID: ' in result.stderr
    assert state.secret_value(APP, "GOOD") is None


def test_unset_unknown_name_still_rolls_out(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "unset", "NEVER_SET", "-a", APP)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == rollout_transcript(state.machine_ids(APP))
    assert state.releases(APP)[-1]["status"] == "complete"


def test_unset_removes_secret(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "unset", "JWT_SECRET", "-a", APP, "--stage")

    assert result.returncode == 0, result.stderr
    assert state.secret_value(APP, "JWT_SECRET") is None


# --- global mechanics ------------------------------------------------------------------

def test_version_line(flyctl: FlyctlRunner) -> None:
    for arguments in (["version"], ["--version"]):
        result = flyctl(*arguments)
        assert result.returncode == 0
        assert result.stdout.startswith("flyctl v0.4.87 linux/amd64 Commit: ")


def test_version_setting(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.set_version("0.3.100")
    result = flyctl("version")

    assert result.stdout.startswith("flyctl v0.3.100 ")


def test_flags_anywhere_in_argv(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "-a", APP, "list", "--json")

    assert result.returncode == 0, result.stderr
    assert [entry["name"] for entry in json.loads(result.stdout)] == ["JWT_SECRET"]


def test_double_dash_ends_flags(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "set", "-a", APP, "--", "--looks-like-flag=1")

    assert result.returncode == 1
    assert '"--looks-like-flag" is not a valid secret name' in result.stderr


def test_unknown_flag_prints_usage(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "set", "A=1", "-a", APP, "--json")

    assert result.returncode == 1
    assert result.stdout.startswith("Usage:\n  flyctl secrets set [flags]")
    assert result.stderr == "Error: unknown flag: --json\n"


def test_unknown_shorthand_on_apps_restart(flyctl: FlyctlRunner) -> None:
    result = flyctl("apps", "restart", "-a", APP)

    assert result.returncode == 1
    assert "Usage:" in result.stdout
    assert result.stderr == "Error: unknown shorthand flag: 'a' in -a\n"


def test_missing_flag_value(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list", "-a")

    assert result.returncode == 1
    assert result.stderr == "Error: flag needs an argument: 'a' in -a\n"


def test_invalid_bool_value(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "set", "A=1", "-a", APP, "--dns-checks=maybe")

    assert result.returncode == 1
    assert 'invalid argument "maybe" for "--dns-checks" flag' in result.stderr


def test_set_without_arguments(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "set", "-a", APP)

    assert result.returncode == 1
    assert "Usage:" in result.stdout
    assert result.stderr == "Error: requires at least 1 arg(s), only received 0\n"


def test_unknown_top_level_command(flyctl: FlyctlRunner) -> None:
    result = flyctl("frobnicate")

    assert result.returncode == 1
    assert 'Error: unknown command "frobnicate" for "flyctl"' in result.stderr


def test_unknown_secrets_subcommand_exits_zero(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "frobnicate")

    assert result.returncode == 0
    assert "Available Commands:" in result.stdout


def test_no_token_error(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list", "-a", APP, drop_env=("FLY_API_TOKEN",))

    assert result.returncode == 1
    assert result.stderr == "Error: no access token available. Please login with 'flyctl auth login'\n"


def test_token_checked_before_app(flyctl: FlyctlRunner) -> None:
    result = flyctl("status", drop_env=("FLY_API_TOKEN",))

    assert "no access token available" in result.stderr


@pytest.mark.parametrize(
    ("extra_env", "arguments"),
    [({"FLY_ACCESS_TOKEN": "a"}, []), ({}, ["-t", "flag-token"]), ({}, ["--access-token=flag-token"])],
    ids=["access token env", "short flag", "long flag"],
)
def test_token_sources(flyctl: FlyctlRunner, extra_env: dict[str, str], arguments: list[str]) -> None:
    result = flyctl("secrets", "list", "-a", APP, *arguments, extra_env=extra_env, drop_env=("FLY_API_TOKEN",))

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("days_ago", "accepted"), [(1, True), (40, False)])
def test_config_file_token_age(flyctl: FlyctlRunner, days_ago: int, accepted: bool) -> None:
    flyctl.config_dir.mkdir()
    login = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days_ago * 86400))
    (flyctl.config_dir / "config.yml").write_text(f"access_token: config-token\nlast_login: {login}\n")
    result = flyctl("secrets", "list", "-a", APP, drop_env=("FLY_API_TOKEN",))

    assert (result.returncode == 0) is accepted


def test_revoked_token_rejected(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.set_accepted_tokens(["some-other-token"])
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 1
    assert "You must be authenticated to view this." in result.stderr


def test_app_from_fly_app_env(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list", "--json", extra_env={"FLY_APP": APP})

    assert result.returncode == 0, result.stderr


def test_app_from_fly_toml(flyctl: FlyctlRunner, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "fly.toml").write_text(f'app = "{APP}"\n')
    result = flyctl("secrets", "list", "--json", cwd=project)

    assert result.returncode == 0, result.stderr


def test_app_flag_beats_fly_toml(flyctl: FlyctlRunner, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "fly.toml").write_text('app = "some-other-app"\n')
    result = flyctl("secrets", "list", "--json", "-a", APP, cwd=project)

    assert result.returncode == 0, result.stderr


def test_broken_fly_toml_fails_with_app_flag(flyctl: FlyctlRunner, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "fly.toml").write_text("app = [unclosed\n")
    result = flyctl("secrets", "list", "-a", APP, cwd=project)

    assert result.returncode == 1
    assert f"Error: failed loading app config from {project / 'fly.toml'}: " in result.stderr


def test_missing_config_path(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list", "-c", "/nonexistent/fly.toml")

    assert result.stderr == "Error: config file not found at specified path: /nonexistent/fly.toml\n"


def test_no_app_name(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list")

    assert result.returncode == 1
    assert "missing an app name, add an app field to the fly.toml file or specify with the -a flag" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["secrets", "set", "A=1", "-a", "ghost-app"],
        ["secrets", "import", "-a", "ghost-app"],
        ["status", "-a", "ghost-app", "--json"],
        ["releases", "-a", "ghost-app", "--json"],
        ["apps", "restart", "ghost-app"],
    ],
    ids=["set", "import", "status", "releases", "apps restart"],
)
def test_unknown_app_graphql_error(flyctl: FlyctlRunner, arguments: list[str]) -> None:
    result = flyctl(*arguments, stdin=b"A=1\n")

    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert 'Could not find App "ghost-app"' in result.stderr
    assert "query" in result.stderr


def test_unknown_app_secrets_list(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list", "-a", "ghost-app")

    assert result.returncode == 1
    assert result.stderr.startswith("Error: failed to list app secrets: ")
    assert "Could not find App" not in result.stderr


def test_unknown_app_fails_before_stdin_read(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "import", "-a", "ghost-app", stdin=b"A=1\n")

    assert flyctl.invocations()[-1]["stdin_bytes"] == 0


def test_missing_state_variable(flyctl: FlyctlRunner) -> None:
    result = flyctl("version", drop_env=("FLYCTL_STANDIN_STATE",))

    assert result.returncode == 2
    assert "FLYCTL_STANDIN_STATE is not set" in result.stderr


def test_missing_state_file(flyctl: FlyctlRunner, tmp_path: Path) -> None:
    result = flyctl("version", extra_env={"FLYCTL_STANDIN_STATE": str(tmp_path / "absent.json")})

    assert result.returncode == 2
    assert "does not exist" in result.stderr


# --- rollout -----------------------------------------------------------------------------

def test_rollout_transcript(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "import", "-a", APP, stdin=b"JWT_SECRET=new-value\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == rollout_transcript(state.machine_ids(APP))
    assert result.stderr == f"Checking DNS configuration for {APP}.fly.dev\n✓ DNS configuration verified\n"


def test_rollout_updates_machines(flyctl: FlyctlRunner, state: FlyState) -> None:
    flyctl("secrets", "import", "-a", APP, stdin=b"JWT_SECRET=new-value\n")
    release = state.releases(APP)[-1]

    assert release["status"] == "complete"
    assert release["version"] == 2
    for machine in state.machines(APP):
        assert machine["release_version"] == 2
        assert machine["secrets_version"] == state.secrets_version(APP)
        assert machine["checks"][0]["status"] == "passing"
    assert state.secret_value(APP, "JWT_SECRET") == "new-value"
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Deployed"


def test_rollout_single_machine_has_no_counter(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("solo-app", machines=1, checks_per_machine=0)
    result = flyctl("secrets", "set", "A=1", "-a", "solo-app")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        line.replace(APP, "solo-app") for line in rollout_transcript(state.machine_ids("solo-app"), checks=0)
    ]
    assert result.stderr == ""


def test_rollout_counter_zero_padded(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("wide-app", machines=10, checks_per_machine=0)
    result = flyctl("secrets", "set", "A=1", "-a", "wide-app")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("> [01/10] Updating ")


def test_rollout_stopped_machine_not_started(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("idle-app", machines=1, machine_state="stopped")
    machine_id = state.machine_ids("idle-app")[0]
    result = flyctl("secrets", "set", "A=1", "-a", "idle-app")

    assert result.stdout.splitlines() == [
        "Updating existing machines in 'idle-app' with rolling strategy",
        f"> Updating {machine_id} [app]",
        f"> Updating {machine_id} [app]",
        f"✔ Machine {machine_id} [app] update succeeded",
    ]
    assert state.machines("idle-app")[0]["state"] == "stopped"
    assert state.machines("idle-app")[0]["release_version"] == 2


def test_rollout_detach_skips_waits(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "A=1", "-a", APP, "--detach")
    first = state.machine_ids(APP)[0]

    assert result.stdout.splitlines()[1:5] == [
        f"> [1/2] Updating {first} [app]",
        f"> [1/2] Updating {first} [app]",
        f"> [1/2] Checking that {first} [app] is up and running",
        f"✔ [1/2] Machine {first} [app] update succeeded",
    ]
    assert result.stderr == ""


def test_rollout_dns_checks_disabled(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "set", "A=1", "-a", APP, "--dns-checks=false")

    assert result.returncode == 0
    assert result.stderr == ""


def test_stage_touches_no_machine(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "JWT_SECRET=staged", "-a", APP, "--stage")

    assert result.stdout == (
        "Secrets have been staged, but not set on VMs. "
        "Deploy or update machines in this app for the secrets to take effect.\n"
    )
    assert [machine["release_version"] for machine in state.machines(APP)] == [1, 1]
    assert len(state.releases(APP)) == 1
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Staged"


def test_staged_secrets_listed_with_marker(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "NEW_KEY=1", "-a", APP, "--stage")
    result = flyctl("secrets", "list", "-a", APP)
    lines = result.stdout.splitlines()

    assert lines[0].split("│")[0].strip() == "NAME"
    assert any(line.startswith(" * NEW_KEY ") for line in lines)
    assert lines[-1] == "There is 1 secret not deployed. Deploy with `fly secrets deploy` to make them available."


def test_staged_and_partial_footer(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "health_timeout")
    flyctl("secrets", "set", "PARTIAL_KEY=1", "-a", APP)
    flyctl("secrets", "set", "STAGED_A=1", "STAGED_B=2", "-a", APP, "--stage")
    lines = flyctl("secrets", "list", "-a", APP).stdout.splitlines()

    assert any(line.startswith(" ! PARTIAL_KEY ") for line in lines)
    assert lines[-5:] == [
        "Some secrets need to be deployed:",
        "  * 2 secrets staged (not yet deployed)",
        "  ! 1 secret partially deployed (deployed to some machines)",
        "",
        "Deploy with `fly secrets deploy` to sync all machines.",
    ]


def test_no_status_over_100_machines(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("big-app", machines=101, checks_per_machine=0)
    state.set_secret("big-app", "A", "1")
    entries = json.loads(flyctl("secrets", "list", "-a", "big-app", "--json").stdout)

    assert list(entries[0]) == ["name", "digest"]


def test_undeployed_app_stages_for_first_deployment(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("fresh-app", machines=0, deployed=False)
    result = flyctl("secrets", "set", "A=1", "-a", "fresh-app")

    assert result.returncode == 0
    assert result.stdout == "Secrets are staged for the first deployment\n"


def test_secrets_deploy_needs_machines(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("fresh-app", machines=0, deployed=False)
    result = flyctl("secrets", "deploy", "-a", "fresh-app")

    assert result.returncode == 1
    assert result.stderr == (
        "Error: no machines available to deploy\n"
        "'fly secrets deploy' will only work if the app has been deployed and there are machines available\n"
        "\n"
        "Try 'fly deploy' first\n"
        "\n"
    )


def test_secrets_deploy_applies_staged(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "JWT_SECRET=staged", "-a", APP, "--stage")
    result = flyctl("secrets", "deploy", "-a", APP)

    assert result.returncode == 0, result.stderr
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Deployed"


def test_min_secrets_version_saved(flyctl: FlyctlRunner, state: FlyState) -> None:
    flyctl("secrets", "set", "A=1", "-a", APP, "--stage")
    config = (flyctl.config_dir / "config.yml").read_text()

    assert f"app_secrets_minvers:\n    {APP}: {state.secrets_version(APP)}\n" in config


def test_secrets_sync_bumps_version_silently(flyctl: FlyctlRunner, state: FlyState) -> None:
    before = state.secrets_version(APP)
    result = flyctl("secrets", "sync", "-a", APP)

    assert result.returncode == 0
    assert result.stdout == ""
    assert state.secrets_version(APP) == before + 1
    assert state.secret_names(APP) == ["JWT_SECRET"]


def test_apps_restart_transcript(flyctl: FlyctlRunner, state: FlyState) -> None:
    first, second = state.machine_ids(APP)
    result = flyctl("apps", "restart", APP)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Restarting machine {first}",
        f"Machine {first} restarted successfully!",
        f"Restarting machine {second}",
        f"Machine {second} restarted successfully!",
    ]
    assert result.stderr.splitlines() == [
        f"  Waiting for {first} to become healthy (started, 1/1)",
        f"  Waiting for {second} to become healthy (started, 1/1)",
    ]
    assert len(state.releases(APP)) == 1


def test_apps_restart_keeps_staged_secret(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "JWT_SECRET=staged", "-a", APP, "--stage")
    flyctl("apps", "restart", APP)

    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Staged"


def test_deploy_picks_up_staged_secrets(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "JWT_SECRET=staged", "-a", APP, "--stage")
    result = flyctl("deploy", "-a", APP, "-i", "registry.fly.io/hotel-voice-bot:v2")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Watch your deployment at https://fly.io/apps/{APP}/monitoring\n")
    assert result.stdout.endswith(f"Visit your newly deployed app at https://{APP}.fly.dev/\n")
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Deployed"


def test_emit_release_json(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "set", "A=1", "-a", APP, extra_env={"FLY_EMIT_RELEASE_JSON": "1"})
    record = json.loads(result.stdout.splitlines()[-1])

    assert record["version"] == state.releases(APP)[-1]["version"]


# --- JSON shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("list_format", "keys"),
    [
        ("current", ["name", "digest", "status"]),
        ("v0.3", ["name", "digest", "created_at", "updated_at"]),
        ("legacy", ["Name", "Digest", "CreatedAt"]),
    ],
)
def test_secrets_list_json_formats(flyctl: FlyctlRunner, state: FlyState, list_format: str, keys: list[str]) -> None:
    state.set_list_format(APP, list_format)
    result = flyctl("secrets", "list", "-a", APP, "-j")
    entries = json.loads(result.stdout)

    assert list(entries[0]) == keys


def test_secrets_list_json_layout(flyctl: FlyctlRunner, state: FlyState) -> None:
    result = flyctl("secrets", "list", "-a", APP, "--json")

    assert result.stdout == (
        "[\n"
        "    {\n"
        '        "name": "JWT_SECRET",\n'
        f'        "digest": "{state.secret_digest(APP, "JWT_SECRET")}",\n'
        '        "status": "Deployed"\n'
        "    }\n"
        "]\n"
    )


def test_secrets_list_empty(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("bare-app")
    result = flyctl("secrets", "list", "-a", "bare-app", "--json")

    assert result.stdout == "[]\n"


def test_secrets_list_fly_json_env(flyctl: FlyctlRunner) -> None:
    result = flyctl("secrets", "list", "-a", APP, extra_env={"FLY_JSON": "1"})

    assert json.loads(result.stdout)[0]["name"] == "JWT_SECRET"


def test_digest_is_sha256_prefix(state: FlyState) -> None:
    assert state.secret_digest(APP, "JWT_SECRET") == hashlib.sha256(b"old-value").hexdigest()[:16]


def test_status_json_shape(flyctl: FlyctlRunner, state: FlyState) -> None:
    flyctl("secrets", "set", "A=1", "-a", APP)
    status = json.loads(flyctl("status", "-a", APP, "--json").stdout)

    assert list(status) == sorted(status)
    assert status["Version"] == 2
    assert status["Deployed"] is True
    assert [machine["id"] for machine in status["Machines"]] == sorted(state.machine_ids(APP), reverse=True)
    for machine in status["Machines"]:
        assert machine["state"] == "started"
        assert machine["host_status"] == "ok"
        assert machine["config"]["metadata"]["fly_release_version"] == "2"
        assert [check["status"] for check in machine["checks"]] == ["passing"]
        assert set(machine["checks"][0]) == {"name", "status", "output", "updated_at"}


def test_releases_json_shape(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "A=1", "-a", APP)
    releases = json.loads(flyctl("releases", "-a", APP, "--json").stdout)

    assert [release["Version"] for release in releases] == [2, 1]
    assert releases[0]["Status"] == "complete"
    assert set(releases[0]) == {
        "ID", "Version", "Stable", "InProgress", "Reason", "Description", "Status",
        "DeploymentStrategy", "Metadata", "User", "EvaluationID", "CreatedAt", "ImageRef",
    }


def test_checks_list_json_shape(flyctl: FlyctlRunner, state: FlyState) -> None:
    checks = json.loads(flyctl("checks", "list", "-a", APP, "--json").stdout)

    assert list(checks) == state.machine_ids(APP)
    assert checks[state.machine_ids(APP)[0]][0]["status"] == "passing"


def test_checks_list_no_machines(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.add_app("empty-app", machines=0)

    assert flyctl("checks", "list", "-a", "empty-app", "--json").stdout == "{}\n"


def test_machines_list_json(flyctl: FlyctlRunner, state: FlyState) -> None:
    machines = json.loads(flyctl("machines", "list", "-a", APP, "--json").stdout)

    assert [machine["id"] for machine in machines] == state.machine_ids(APP)


def test_logs_json_not_json_lines(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "A=1", "-a", APP)
    result = flyctl("logs", "-a", APP, "--no-tail", "--json")

    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "{"
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(result.stdout)
    assert set(first) == {"level", "instance", "message", "region", "timestamp", "meta"}
    assert result.stdout[end:].strip().startswith("{")


def test_logs_human_has_ansi(flyctl: FlyctlRunner) -> None:
    flyctl("secrets", "set", "A=1", "-a", APP)
    result = flyctl("logs", "-a", APP, "-n")

    assert "\x1b[" in result.stdout


def test_logs_without_no_tail_waits(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.set_hang_limit(0.5)
    started = time.monotonic()
    result = flyctl("logs", "-a", APP)

    assert result.returncode == 127
    assert time.monotonic() - started >= 0.5


# --- injected failures ---------------------------------------------------------------------

def test_exit1_before_store(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "import", "exit1_before_store")
    result = flyctl("secrets", "import", "-a", APP, stdin=b"JWT_SECRET=new-value\n")

    assert result.returncode == 1
    assert "Error: update secrets: failed to update app secrets: request returned non-2xx status: 500" in result.stderr
    assert state.secret_value(APP, "JWT_SECRET") == "old-value"
    assert result.stdout == ""


def test_health_timeout(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "import", "health_timeout")
    first, second = state.machine_ids(APP)
    result = flyctl("secrets", "import", "-a", APP, stdin=b"JWT_SECRET=new-value\n")
    lines = result.stdout.splitlines()

    assert result.returncode == 1
    assert lines[-2].startswith(f"✖ [1/2] Machine {first} [app] update failed: timeout reached waiting for health checks")
    assert lines[-1] == f"✖ [2/2] Machine {second} [app] update canceled"
    assert result.stderr.startswith(f"Error: timeout reached waiting for health checks to pass for machine {first}: ")
    assert state.secret_value(APP, "JWT_SECRET") == "new-value"
    assert state.releases(APP)[-1]["status"] == "failed"
    assert state.machines(APP)[0]["checks"][0]["status"] == "critical"
    assert state.machines(APP)[1]["release_version"] == 1
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Partial"


def test_health_timeout_on_chosen_machine(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "health_timeout", machine=1)
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 1
    assert state.machines(APP)[0]["checks"][0]["status"] == "passing"
    assert state.machines(APP)[1]["checks"][0]["status"] == "critical"


def test_crash_loop(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "crash_loop")
    first = state.machine_ids(APP)[0]
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 1
    assert f"update failed: smoke checks for {first} failed: the app appears to be crashing" in result.stdout
    assert f"Check its logs: here's the last lines below, or run 'fly logs -i {first}':" in result.stderr
    assert state.machines(APP)[0]["state"] == "stopped"
    assert state.releases(APP)[-1]["status"] == "failed"


def test_start_timeout(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "start_timeout")
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 1
    assert result.stderr.startswith("Error: timeout reached waiting for machine's state to change\n")
    assert "--wait-timeout" in result.stderr


def test_lease_conflict(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "lease_conflict")
    result = flyctl("secrets", "set", "JWT_SECRET=new-value", "-a", APP)

    assert result.returncode == 1
    assert result.stdout.startswith("WARN failed to acquire lease: ")
    assert f"Error: failed to get lease on VM {state.machine_ids(APP)[0]}: " in result.stderr
    assert state.secret_value(APP, "JWT_SECRET") == "new-value"
    assert [machine["release_version"] for machine in state.machines(APP)] == [1, 1]
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Staged"


def test_concurrent_update(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "concurrent_update")
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 1
    assert "machine is replacing: concurrent update in progress" in result.stderr


def test_hang_killed_by_sigterm(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "import", "hang")
    process = flyctl.start("secrets", "import", "-a", APP, stdin=b"JWT_SECRET=new-value\n")
    assert process.stdout is not None
    lines = []
    while not any("to have state: started" in line for line in lines):
        line = process.stdout.readline().decode()
        assert line, "stand-in ended before the rollout reached the hang"
        lines.append(line)
    process.send_signal(signal.SIGTERM)
    rest, errors = process.communicate(timeout=RUN_TIMEOUT)

    assert process.returncode == 127
    assert rest == b""
    assert errors == b""
    assert state.secret_value(APP, "JWT_SECRET") == "new-value"
    assert state.releases(APP)[-1]["status"] == "interrupted"
    assert all(machine["lease"] is None for machine in state.machines(APP))


def test_hang_before_store(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "import", "hang_before_store")
    process = flyctl.start("secrets", "import", "-a", APP, stdin=b"JWT_SECRET=new-value\n")
    wait_until(lambda: not state.pending_injections())
    process.send_signal(signal.SIGTERM)
    output, errors = process.communicate(timeout=RUN_TIMEOUT)

    assert process.returncode == 127
    assert output == b""
    assert errors == b""
    assert state.secret_value(APP, "JWT_SECRET") == "old-value"


def test_hang_ends_at_limit(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.set_hang_limit(0.2)
    state.inject(APP, "status", "hang")
    result = flyctl("status", "-a", APP, "--json")

    assert result.returncode == 127
    assert result.stdout == ""


def test_injected_app_not_found(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "status", "app_not_found")
    result = flyctl("status", "-a", APP, "--json")

    assert result.returncode == 1
    assert f'Could not find App "{APP}"' in result.stderr


def test_unhealthy_after(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "unhealthy_after")
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 0
    assert state.releases(APP)[-1]["status"] == "complete"
    assert [machine["checks"][0]["status"] for machine in state.machines(APP)] == ["passing", "critical"]


def test_panic(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "panic")
    result = flyctl("secrets", "set", "JWT_SECRET=new-value", "-a", APP)

    assert result.returncode == 3
    assert result.stdout.startswith("Oops, something went wrong! Could you try that again?\n")
    assert state.secret_value(APP, "JWT_SECRET") == "old-value"


@pytest.mark.parametrize(
    "arguments",
    [["status", "-a", APP, "--json"], ["secrets", "list", "-a", APP, "--json"], ["releases", "-a", APP, "--json"]],
    ids=["status", "secrets list", "releases"],
)
def test_garbage_json(flyctl: FlyctlRunner, state: FlyState, arguments: list[str]) -> None:
    state.inject(APP, " ".join(arguments[:2]) if arguments[0] == "secrets" else arguments[0], "garbage_json")
    result = flyctl(*arguments)

    assert result.returncode == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_stale_release(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "stale_release")
    result = flyctl("secrets", "set", "JWT_SECRET=new-value", "-a", APP)
    status = json.loads(flyctl("status", "-a", APP, "--json").stdout)

    assert result.returncode == 0
    assert status["Version"] == 2
    assert {machine["config"]["metadata"]["fly_release_version"] for machine in status["Machines"]} == {"1"}
    assert secrets_json(flyctl)["JWT_SECRET"]["status"] == "Staged"


def test_dns_warning(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "dns_warning")
    result = flyctl("secrets", "set", "A=1", "-a", APP)

    assert result.returncode == 0
    assert "WARNING: DNS verification failed: " in result.stderr
    assert "Your app is deployed but DNS may take a few minutes to propagate globally" in result.stderr


def test_injection_fires_once(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "exit1_before_store")

    assert flyctl("secrets", "set", "A=1", "-a", APP).returncode == 1
    assert flyctl("secrets", "set", "A=1", "-a", APP).returncode == 0


def test_injection_always(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "set", "exit1_before_store", once=False)

    assert flyctl("secrets", "set", "A=1", "-a", APP).returncode == 1
    assert flyctl("secrets", "set", "A=1", "-a", APP).returncode == 1


def test_injection_skips_other_commands(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.inject(APP, "import", "exit1_before_store")

    assert flyctl("secrets", "set", "A=1", "-a", APP).returncode == 0
    assert len(state.pending_injections()) == 1


def test_inject_rejects_unknown_failure(state: FlyState) -> None:
    with pytest.raises(ValueError, match="unknown"):
        state.inject(APP, "set", "meteor_strike")


def test_inject_rejects_inapplicable_failure(state: FlyState) -> None:
    with pytest.raises(ValueError, match="no effect"):
        state.inject(APP, "set", "garbage_json")


# --- invocation log and concurrency ----------------------------------------------------------

def test_invocation_log_never_holds_values(flyctl: FlyctlRunner) -> None:
    secret_import = "IMPORTED-9f8e7d6c5b4a"
    secret_stdin = "PIPED-0a1b2c3d4e5f"
    flyctl("secrets", "import", "-a", APP, stdin=f"JWT_SECRET={secret_import}\n".encode())
    flyctl("secrets", "set", "OTHER=-", "-a", APP, stdin=secret_stdin.encode())
    log_text = flyctl.log_path.read_text()

    assert secret_import not in log_text
    assert secret_stdin not in log_text
    assert TOKEN not in log_text


def test_invocation_log_record(flyctl: FlyctlRunner) -> None:
    payload = b"JWT_SECRET=new-value\n"
    flyctl("secrets", "import", "-a", APP, stdin=payload)
    record = flyctl.invocations()[-1]

    assert record["argv"] == ["secrets", "import", "-a", APP]
    assert record["cwd"] == str(flyctl.workdir)
    assert record["env_keys"] == sorted(flyctl.env)
    assert record["stdin_bytes"] == len(payload)
    assert record["exit_code"] == 0
    assert record["started"] <= record["ended"]


def test_invocation_log_on_error(flyctl: FlyctlRunner) -> None:
    flyctl("frobnicate")

    assert flyctl.invocations()[-1]["exit_code"] == 1


def test_success_output_holds_no_value(flyctl: FlyctlRunner) -> None:
    secret = "QUIET-5e6f7a8b9c0d"
    result = flyctl("secrets", "import", "-a", APP, stdin=f"JWT_SECRET={secret}\n".encode())

    assert secret not in result.stdout
    assert secret not in result.stderr


def test_parallel_rollouts_collide_on_leases(flyctl: FlyctlRunner, state: FlyState) -> None:
    state.set_delay(1.0)
    state.set_lease_wait(0.1)
    first = flyctl.start("secrets", "set", "FIRST=1", "-a", APP)
    wait_until(lambda: any(machine["lease"] for machine in state.machines(APP)))
    second = flyctl.start("secrets", "set", "SECOND=2", "-a", APP)
    second_output, second_errors = second.communicate(timeout=RUN_TIMEOUT)
    first.communicate(timeout=RUN_TIMEOUT)

    assert first.returncode == 0
    assert second.returncode == 1
    assert b"failed to get lease on VM" in second_errors
    assert state.secret_value(APP, "FIRST") == "1"
    assert state.secret_value(APP, "SECOND") == "2"


def test_parallel_writes_all_kept(flyctl: FlyctlRunner, state: FlyState) -> None:
    processes = [flyctl.start("secrets", "set", f"KEY_{index}=value", "-a", APP, "--stage") for index in range(8)]
    for process in processes:
        process.communicate(timeout=RUN_TIMEOUT)

    assert all(process.returncode == 0 for process in processes)
    assert state.secret_names(APP) == sorted(["JWT_SECRET"] + [f"KEY_{index}" for index in range(8)])
    assert len(flyctl.invocations()) == 8


def test_runs_with_system_python(flyctl: FlyctlRunner) -> None:
    # The bot's PATH may reach only the system interpreter, never this venv.
    result = subprocess.run(
        ["/usr/bin/env", "python3", str(STANDIN_PATH), "version"],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", **flyctl.state.env()},
        cwd=flyctl.workdir,
        timeout=RUN_TIMEOUT,
    )

    assert result.returncode == 0, result.stderr
