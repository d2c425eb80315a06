"""Structural checks of the deployment files: Dockerfile, fly.toml, Procfile,
.dockerignore, slack-manifest.yml and secretbot.example.toml.

No Docker engine or Fly account is needed. The files are parsed with the standard
library: tomllib, json, a Dockerfile line reader and a reader for the block-style YAML
subset the manifest uses. When the tests run as root, the entrypoint's shell script runs
for real under sh and setpriv.
"""

from __future__ import annotations

import ast
import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_policy
from bot.settings import normalize_database_url

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
FLY_TOML = ROOT / "fly.toml"
PROCFILE = ROOT / "Procfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MANIFEST = ROOT / "slack-manifest.yml"
EXAMPLE_CONFIG = ROOT / "secretbot.example.toml"
PYPROJECT = ROOT / "pyproject.toml"
SERVER_MODULE = ROOT / "bot" / "server.py"

BOT_USER = "secretbot"
SERVE_COMMAND = ["secretbot", "serve"]
CREDENTIAL_VARIABLES = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "FLY_API_TOKEN", "SECRETBOT_BACKUP_KEY", "SLACK_APP_TOKEN"}
BOT_SCOPES = {"commands", "chat:write", "chat:write.public", "users:read", "usergroups:read"}
# Fly's maximum kill_timeout (fly.io/docs/reference/configuration, kill_timeout option).
MAX_KILL_TIMEOUT_SECONDS = 300


# --- Dockerfile reading -----------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def read_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions the way Docker joins them.

    A line ending in a backslash continues on the next line, and comment lines are
    dropped even inside a continuation.
    """
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        logical = (pending + stripped).strip()
        pending = ""
        if not logical:
            continue
        keyword, _, arguments = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def split_stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Group instructions by build stage. Each group starts with its FROM."""
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def json_form(instruction: Instruction) -> list[str]:
    """Parse an exec-form (JSON array) argument list.

    Docker silently falls back to shell form when the JSON is invalid, so a typo would
    change how the process starts without any build error.
    """
    value = json.loads(instruction.arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def only(stage: list[Instruction], keyword: str) -> Instruction:
    matches = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(matches) == 1, f"expected one {keyword} in the stage, found {len(matches)}"
    return matches[0]


def env_settings(stage: list[Instruction]) -> dict[str, str]:
    """Collect KEY=VALUE pairs from the stage's ENV instructions.

    Pairs are split on whitespace, which is enough because the Dockerfile quotes no ENV value.
    """
    settings: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in instruction.arguments.split():
                name, _, value = pair.partition("=")
                settings[name] = value
    return settings


def build_args(instructions: list[Instruction]) -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default.strip('"')
    return args


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return read_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    return split_stages(dockerfile)[-1]


@pytest.fixture(scope="module")
def fly() -> dict[str, Any]:
    return tomllib.loads(FLY_TOML.read_text(encoding="utf-8"))


# --- .dockerignore matching -------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + r"\Z")


def dockerignore_excludes(rules_text: str, path: str) -> bool:
    """Apply .dockerignore rules to a context-relative path: the last matching rule
    wins, and a rule that matches a parent directory applies to everything inside it.
    """
    parents = path.split("/")
    candidates = ["/".join(parents[: depth + 1]) for depth in range(len(parents))]
    excluded = False
    for raw in rules_text.splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        regex = _pattern_regex(pattern)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# --- YAML subset reading ----------------------------------------------------------

_KEY_LINE = re.compile(r"^([A-Za-z0-9_.\-]+):(?:\s+(.*))?$")
_INTEGER = re.compile(r"^-?[0-9]+$")


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    text: str


def read_yaml_subset(text: str) -> Any:
    """Parse block-style YAML made of mappings, "- " lists and one-line scalars.

    Anything outside that subset (flow collections, anchors, multi-line or
    single-quoted strings, inline comments) raises ValueError naming the line, so the
    manifest has to stay simple enough for this reader and for Slack's.
    """
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw:
            raise ValueError(f"line {number}: invalid tab character, indent with spaces")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        lines.append(_Line(number, len(raw) - len(raw.lstrip(" ")), stripped))
    if not lines:
        raise ValueError("the document is empty")

    value, end = _read_block(lines, 0, lines[0].indent)
    if end != len(lines):
        raise ValueError(f"line {lines[end].number}: unexpected indentation")
    return value


def _read_block(lines: list[_Line], index: int, indent: int) -> tuple[Any, int]:
    if lines[index].text == "-" or lines[index].text.startswith("- "):
        return _read_list(lines, index, indent)
    return _read_mapping(lines, index, indent)


def _read_mapping(lines: list[_Line], index: int, indent: int) -> tuple[dict[str, Any], int]:
    mapping: dict[str, Any] = {}
    while index < len(lines) and lines[index].indent == indent:
        line = lines[index]
        match = _KEY_LINE.match(line.text)
        if match is None:
            raise ValueError(f"line {line.number}: expected 'key: value', got {line.text!r}")
        key, rest = match.group(1), match.group(2)
        if key in mapping:
            raise ValueError(f"line {line.number}: duplicate key {key!r}")
        index += 1

        if rest:
            mapping[key] = _read_scalar(rest, line.number)
            continue
        if index >= len(lines) or lines[index].indent <= indent:
            raise ValueError(f"line {line.number}: key {key!r} has no value")
        mapping[key], index = _read_block(lines, index, lines[index].indent)

    if index < len(lines) and lines[index].indent > indent:
        raise ValueError(f"line {lines[index].number}: unexpected indentation")
    return mapping, index


def _read_list(lines: list[_Line], index: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while index < len(lines) and lines[index].indent == indent and lines[index].text.startswith("- "):
        line = lines[index]
        item_text = line.text[2:].strip()
        if _KEY_LINE.match(item_text):
            # "- key: value" opens a mapping whose other keys sit two columns deeper.
            nested = [_Line(line.number, indent + 2, item_text)] + lines[index + 1 :]
            item, consumed = _read_mapping(nested, 0, indent + 2)
            items.append(item)
            index += consumed
        else:
            items.append(_read_scalar(item_text, line.number))
            index += 1
    return items, index


def _read_scalar(text: str, number: int) -> Any:
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: invalid double-quoted string: {exc}") from exc
        if not isinstance(value, str):
            raise ValueError(f"line {number}: expected one double-quoted string")
        return value
    if text[0] in "'[]{}&*!|>%@`" or " #" in text:
        raise ValueError(f"line {number}: {text!r} is outside the YAML subset; use a double-quoted string")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~", "yes", "no", "on", "off"):
        raise ValueError(f"line {number}: ambiguous scalar {text!r}, write it in double quotes")
    if _INTEGER.match(text):
        return int(text)
    return text


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    value = read_yaml_subset(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


# --- the YAML reader itself -------------------------------------------------------


def test_yaml_reader_parses_nested_lists() -> None:
    text = 'a:\n  b: 1\n  c:\n    - x\n    - k: "v # w"\n      m: true\n'

    assert read_yaml_subset(text) == {"a": {"b": 1, "c": ["x", {"k": "v # w", "m": True}]}}


@pytest.mark.parametrize(
    "text",
    [
        "a: [1, 2]\n",
        "a: 'single'\n",
        "a: b # comment\n",
        "a: 1\na: 2\n",
        "a:\n  b: 1\n    c: 2\n",
        "a: yes\n",
        "a:\n\tb: 1\n",
    ],
)
def test_yaml_reader_rejects_outside_subset(text: str) -> None:
    with pytest.raises(ValueError):
        read_yaml_subset(text)


# --- Dockerfile -------------------------------------------------------------------


def test_dockerfile_stages_use_python_311_slim(dockerfile: list[Instruction]) -> None:
    first_from = next(index for index, i in enumerate(dockerfile) if i.keyword == "FROM")
    global_args = build_args(dockerfile[:first_from])

    assert global_args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    for stage in split_stages(dockerfile):
        assert stage[0].arguments.startswith("${PYTHON_IMAGE}"), stage[0].arguments


def test_dockerfile_pins_flyctl_version(dockerfile: list[Instruction]) -> None:
    args = build_args(dockerfile)
    download = " ".join(i.arguments for i in dockerfile if i.keyword == "RUN" and "flyctl" in i.arguments)

    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", args["FLYCTL_VERSION"])
    assert "releases/download/v${FLYCTL_VERSION}/flyctl_${FLYCTL_VERSION}_Linux_" in download
    assert "latest" not in download
    assert "sha256sum -c" in download


def test_dockerfile_runs_serve_command(final_stage: list[Instruction]) -> None:
    assert json_form(only(final_stage, "CMD")) == SERVE_COMMAND


def test_serve_command_is_declared_script() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]

    assert SERVE_COMMAND[0] in scripts


def test_dockerfile_exposes_port_8080(final_stage: list[Instruction]) -> None:
    assert only(final_stage, "EXPOSE").arguments == "8080"


def test_dockerfile_creates_non_root_user(final_stage: list[Instruction]) -> None:
    commands = " ".join(i.arguments for i in final_stage if i.keyword == "RUN")
    match = re.search(r"useradd [^&]*--uid (\d+)[^&]* " + BOT_USER + r"\b", commands)

    assert match is not None
    assert int(match.group(1)) != 0
    assert not any(i.keyword == "USER" and i.arguments in ("root", "0") for i in final_stage)


def test_entrypoint_drops_to_bot_user(final_stage: list[Instruction]) -> None:
    entrypoint = json_form(only(final_stage, "ENTRYPOINT"))

    assert entrypoint[:2] == ["/bin/sh", "-c"]
    assert f"setpriv --reuid={BOT_USER} --regid={BOT_USER}" in entrypoint[2]
    assert 'exec "$@"' in entrypoint[2]


def test_dockerfile_workdir_is_volume(final_stage: list[Instruction], fly: dict[str, Any]) -> None:
    workdirs = [i.arguments for i in final_stage if i.keyword == "WORKDIR"]

    assert workdirs[-1] == fly["mounts"]["destination"]


def test_dockerfile_copy_sources_exist(dockerfile: list[Instruction]) -> None:
    rules = DOCKERIGNORE.read_text(encoding="utf-8")
    sources = [
        source
        for instruction in dockerfile
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from=")
        for source in instruction.arguments.split()[:-1]
    ]

    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} is missing from the repository"
        assert not dockerignore_excludes(rules, source), f"COPY source {source} is excluded by .dockerignore"


# --- the entrypoint script, run for real ------------------------------------------


def _entrypoint_as_nobody(final_stage: list[Instruction]) -> list[str]:
    """Return the entrypoint with the bot user swapped for Debian's nobody:nogroup.

    An assert fails if the script no longer contains a string the swap expects.
    """
    entrypoint = json_form(only(final_stage, "ENTRYPOINT"))
    script = entrypoint[2]
    replacements = {
        f"{BOT_USER}:{BOT_USER}": "nobody:nogroup",
        f"--reuid={BOT_USER}": "--reuid=nobody",
        f"--regid={BOT_USER}": "--regid=nogroup",
    }
    for old, new in replacements.items():
        assert old in script, f"entrypoint script no longer contains {old!r}"
        script = script.replace(old, new)
    return [*entrypoint[:2], script, *entrypoint[3:]]


def _require_root_and_nobody() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the entrypoint changes ownership and drops privileges")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("the nobody user or nogroup group does not exist on this machine")


PROBE = ["/bin/sh", "-c", 'id -u; id -g; printf "%s\\n" "$HOME"']


def test_entrypoint_drops_root_privileges(final_stage: list[Instruction], tmp_path: Path) -> None:
    uid, gid = _require_root_and_nobody()
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    result = subprocess.run(
        [*_entrypoint_as_nobody(final_stage), *PROBE],
        cwd=data_dir,
        env={"PATH": os.environ["PATH"], "HOME": "/root"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(uid), str(gid), f"/home/{BOT_USER}"]
    assert data_dir.stat().st_uid == uid
    assert data_dir.stat().st_gid == gid


def test_entrypoint_keeps_non_root_user(final_stage: list[Instruction], tmp_path: Path) -> None:
    uid, gid = _require_root_and_nobody()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    as_nobody = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]

    result = subprocess.run(
        [*as_nobody, *_entrypoint_as_nobody(final_stage), *PROBE],
        cwd=data_dir,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp/caller-home"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(uid), str(gid), "/tmp/caller-home"]
    assert data_dir.stat().st_uid == 0


# --- .dockerignore ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/config", "tests/test_deploy_files.py", "secretbot.db", "fly.toml",
     "secretbot.toml", "bot/__pycache__/config.cpython-311.pyc", "handlers/__pycache__/x.pyc"],
)
def test_dockerignore_excludes_local_files(path: str) -> None:
    assert dockerignore_excludes(DOCKERIGNORE.read_text(encoding="utf-8"), path)


@pytest.mark.parametrize("path", ["Dockerfile", "pyproject.toml", "README.md", "bot/config.py", "handlers/__init__.py"])
def test_dockerignore_keeps_build_inputs(path: str) -> None:
    assert not dockerignore_excludes(DOCKERIGNORE.read_text(encoding="utf-8"), path)


# --- fly.toml ---------------------------------------------------------------------


def _seconds(duration: str | int) -> float:
    if isinstance(duration, int):
        return float(duration)
    match = re.fullmatch(r"([0-9]+)(ms|s|m)", duration)
    assert match is not None, f"unexpected duration {duration!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_fly_port_matches_image(fly: dict[str, Any], final_stage: list[Instruction]) -> None:
    assert fly["http_service"]["internal_port"] == 8080
    assert fly["env"]["PORT"] == "8080"
    assert only(final_stage, "EXPOSE").arguments == str(fly["http_service"]["internal_port"])


def test_fly_machine_never_autostops(fly: dict[str, Any]) -> None:
    service = fly["http_service"]

    assert service["auto_stop_machines"] == "off"
    assert service["min_machines_running"] >= 1
    assert service["force_https"] is True


def test_fly_checks_healthz(fly: dict[str, Any]) -> None:
    checks = fly["http_service"]["checks"]

    assert [check["path"] for check in checks] == ["/healthz"]
    assert checks[0]["method"] == "GET"


def test_fly_stops_with_sigterm(fly: dict[str, Any]) -> None:
    assert fly["kill_signal"] == "SIGTERM"
    assert 5 < _seconds(fly["kill_timeout"]) <= MAX_KILL_TIMEOUT_SECONDS


def test_fly_env_holds_no_credentials(fly: dict[str, Any]) -> None:
    env = fly["env"]

    assert not CREDENTIAL_VARIABLES & env.keys()
    assert all(isinstance(value, str) for value in env.values())
    # Fly reserves names starting with FLY_ for its runtime variables and rejects them in [env].
    assert not [name for name in env if name.startswith("FLY_")]


def test_fly_database_on_volume(fly: dict[str, Any]) -> None:
    url = fly["env"]["DATABASE_URL"]
    prefix = "sqlite+aiosqlite:///"

    assert normalize_database_url(url) == url
    assert url.startswith(prefix)
    assert Path(url[len(prefix) :]).parent == Path(fly["mounts"]["destination"])


def test_fly_config_file_path_agrees(fly: dict[str, Any], final_stage: list[Instruction]) -> None:
    guest_paths = [entry["guest_path"] for entry in fly["files"]]
    config_path = fly["env"]["SECRETBOT_CONFIG"]

    assert guest_paths == [config_path]
    assert env_settings(final_stage)["SECRETBOT_CONFIG"] == config_path
    # A file under the mount point would be hidden by the volume.
    assert not Path(config_path).is_relative_to(fly["mounts"]["destination"])


def test_fly_builds_this_dockerfile(fly: dict[str, Any]) -> None:
    assert (ROOT / fly["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_fly_sizes_one_small_vm(fly: dict[str, Any]) -> None:
    assert len(fly["vm"]) == 1
    assert fly["vm"][0]["size"].startswith("shared-cpu-")


def _server_source() -> ast.Module:
    # Parsed rather than imported, so these checks do not depend on the Slack handlers.
    return ast.parse(SERVER_MODULE.read_text(encoding="utf-8"))


def _server_routes() -> dict[str, set[str]]:
    """Collect the paths bot/server.py registers with router.add_get/add_post."""
    routes: dict[str, set[str]] = {"add_get": set(), "add_post": set()}
    for node in ast.walk(_server_source()):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in routes
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            routes[node.func.attr].add(node.args[0].value)
    return routes


def test_fly_kill_timeout_exceeds_shutdown_grace(fly: dict[str, Any]) -> None:
    grace = next(
        node.value.value
        for node in ast.walk(_server_source())
        if isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "SHUTDOWN_GRACE_SECONDS" for target in node.targets)
        and isinstance(node.value, ast.Constant)
    )

    assert _seconds(fly["kill_timeout"]) > grace


def test_fly_check_path_is_served(fly: dict[str, Any]) -> None:
    assert fly["http_service"]["checks"][0]["path"] in _server_routes()["add_get"]


# --- Procfile ---------------------------------------------------------------------


def test_procfile_runs_serve_command(final_stage: list[Instruction]) -> None:
    lines = PROCFILE.read_text(encoding="utf-8").splitlines()

    assert lines == ["web: " + " ".join(SERVE_COMMAND)]
    assert json_form(only(final_stage, "CMD")) == lines[0].removeprefix("web: ").split()


# --- Slack manifest ---------------------------------------------------------------


def test_manifest_urls_point_at_bot(manifest: dict[str, Any], fly: dict[str, Any]) -> None:
    expected = f"https://{fly['app']}.fly.dev/slack/events"
    settings = manifest["settings"]

    assert [command["url"] for command in manifest["features"]["slash_commands"]] == [expected]
    assert settings["interactivity"]["request_url"] == expected
    assert settings["event_subscriptions"]["request_url"] == expected


def test_manifest_path_is_served(manifest: dict[str, Any]) -> None:
    path = "/" + manifest["settings"]["interactivity"]["request_url"].split("/", 3)[3]

    assert path in _server_routes()["add_post"]


def test_manifest_declares_secret_command(manifest: dict[str, Any]) -> None:
    (command,) = manifest["features"]["slash_commands"]

    assert command["command"] == "/secret"
    assert command["usage_hint"] == "rotate NAME [NAME ...] [--app APP] [reason] | help"
    assert command["should_escape"] is False
    assert 1 <= len(command["description"]) <= 2000


def test_manifest_bot_scopes(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]["bot"]

    assert set(scopes) == BOT_SCOPES
    assert len(scopes) == len(BOT_SCOPES)


def test_manifest_enables_home_and_interactivity(manifest: dict[str, Any]) -> None:
    settings = manifest["settings"]

    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is False
    assert settings["token_rotation_enabled"] is False


def test_manifest_display_limits(manifest: dict[str, Any]) -> None:
    display = manifest["display_information"]

    assert 1 <= len(display["name"]) <= 35
    assert 1 <= len(display["description"]) <= 140
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", display["background_color"])
    assert 1 <= len(manifest["features"]["bot_user"]["display_name"]) <= 80


# --- secretbot.example.toml -------------------------------------------------------


def test_example_config_sets_every_key() -> None:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    secret_keys = set().union(*(entry.keys() for entry in data["secrets"].values()))

    assert set(data) == {"slack", "fly", "secrets", "reminders", "inventory"}
    assert set(data["slack"]) == {"channel", "approvers"}
    assert set(data["reminders"]) == {
        "time", "timezone", "window_days", "all_clear", "max_snooze_days", "snooze_reason_required",
    }
    assert set(data["inventory"]) == {"sync_interval", "sync_concurrency", "default_priority"}
    assert set(data["fly"]) == {
        "apps", "command_timeout", "deploy_timeout", "verify_timeout", "verify_interval", "health_urls",
    }
    assert secret_keys == {
        "priority", "source", "format", "length", "external", "instructions", "value_pattern", "revoke_instructions",
    }


def test_example_config_loads() -> None:
    policy = load_policy(EXAMPLE_CONFIG)

    assert policy.source_path == str(EXAMPLE_CONFIG)
    assert policy.slack.channel == "C0123OPS"
    assert policy.fly.default_app == "hotel-voice-bot"
    assert set(policy.fly.health_urls) <= set(policy.fly.apps)
    assert policy.secret("JWT_SECRET") is not None
