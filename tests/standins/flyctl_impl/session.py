"""Steps flyctl runs before a command body: config load, token, app name, app lookup.

The order matches flyctl's preparers: config directory and app config first, then the
access token, then the app name, so the first failing step decides the error.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tomllib
from typing import Any

from . import model
from .errors import CliError
from .injection import request_id
from .runtime import Invocation

# A token read from config.yml is only trusted this long after `last_login`.
CONFIG_TOKEN_LIFETIME = datetime.timedelta(days=30)

NO_TOKEN_MESSAGE = "no access token available. Please login with 'flyctl auth login'"
MISSING_APP_MESSAGE = (
    "the config for your app is missing an app name, add an app field to the fly.toml file or specify with the -a flag"
)

# The GraphQL query text that fly-go puts into its error ("failed to run <query>: <message>").
# NOTE: the real query text differs; match on the message after it.
_APP_QUERY = """
query GetAppBasic ($appName: String!) {
	app(name: $appName) {
		id
		name
		deployed
		platformVersion
		organization {
			id
			slug
		}
	}
}
"""


def config_dir(env: dict[str, str]) -> str | None:
    """Return FLY_CONFIG_DIR, else ~/.fly, or None when neither can be known."""
    if env.get("FLY_CONFIG_DIR"):
        return env["FLY_CONFIG_DIR"]
    if env.get("HOME"):
        return os.path.join(env["HOME"], ".fly")
    return None


def _read_config_yml(directory: str) -> dict[str, str]:
    """Read the top-level `key: value` lines of config.yml, enough for the token fields."""
    values: dict[str, str] = {}
    try:
        with open(os.path.join(directory, "config.yml"), encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return values
    for line in lines:
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*?)\s*$", line)
        if match:
            values[match.group(1)] = match.group(2).strip("'\"")
    return values


def load_config(invocation: Invocation) -> None:
    """Create the config directory and load the app config file, as flyctl does every run.

    A fly.toml in the working directory is loaded even when -a names the app, so a broken
    one fails the command either way.
    """
    directory = config_dir(invocation.env)
    if directory:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError:
            # flyctl would fail here too, but a read-only HOME should not stop the stand-in.
            pass

    explicit = invocation.args.text("config")
    if explicit:
        path = os.path.join(explicit, "fly.toml") if os.path.isdir(explicit) else explicit
        if not os.path.exists(path):
            raise CliError(f"config file not found at specified path: {explicit}")
        invocation.app_config = _parse_app_config(os.path.abspath(path))
        return

    for name in ("fly.toml", "fly.json", "fly.yaml", "fly.yml"):
        path = os.path.join(os.getcwd(), name)
        if os.path.exists(path):
            invocation.app_config = _parse_app_config(path)
            return


def _parse_app_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            content = file.read()
        if path.endswith(".toml"):
            return tomllib.loads(content.decode("utf-8"))
        if path.endswith(".json"):
            loaded = json.loads(content)
            if not isinstance(loaded, dict):
                raise ValueError("top level is not an object")
            return loaded
        match = re.search(rb"^app:\s*['\"]?([^'\"\s]+)", content, re.MULTILINE)
        return {"app": match.group(1).decode("utf-8")} if match else {}
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CliError(f"failed loading app config from {path}: {error}") from None


def resolve_token(invocation: Invocation) -> None:
    """Pick the access token: config.yml, then FLY_ACCESS_TOKEN or FLY_API_TOKEN, then -t.

    Later sources override earlier ones. A config.yml token counts only if `last_login`
    is less than 30 days old.
    """
    token = ""
    directory = config_dir(invocation.env)
    if directory:
        values = _read_config_yml(directory)
        last_login = values.get("last_login", "")
        try:
            logged_in = datetime.datetime.fromisoformat(last_login.replace("Z", "+00:00"))
        except ValueError:
            logged_in = None
        if values.get("access_token") and logged_in is not None:
            if logged_in.tzinfo is None:
                logged_in = logged_in.replace(tzinfo=datetime.timezone.utc)
            if datetime.datetime.now(datetime.timezone.utc) - logged_in < CONFIG_TOKEN_LIFETIME:
                token = values["access_token"]

    token = invocation.env.get("FLY_ACCESS_TOKEN") or invocation.env.get("FLY_API_TOKEN") or token
    token = invocation.args.text("access-token") or token
    if not token:
        raise CliError(NO_TOKEN_MESSAGE)
    invocation.token = token


def resolve_app_name(invocation: Invocation, *, positional: str = "") -> None:
    """Pick the app: the positional or -a value, then FLY_APP, then the app config's `app`."""
    name = positional or invocation.args.text("app") or invocation.env.get("FLY_APP", "")
    if not name:
        configured = invocation.app_config.get("app")
        name = configured if isinstance(configured, str) else ""
    if not name:
        if invocation.command_path == "apps restart":
            raise CliError("no app name was provided, and none is available from the environment or fly.toml")
        raise CliError(MISSING_APP_MESSAGE)
    invocation.app_name = name


def _failure(invocation: Invocation) -> str:
    return invocation.injection["failure"] if invocation.injection else ""


def check_token_accepted(invocation: Invocation, *, graphql: bool, prefix: str) -> None:
    """Reject a token that the `accepted_tokens` setting does not list, as Fly rejects a revoked one."""
    accepted = invocation.settings.get("accepted_tokens")
    if accepted is None or invocation.token in accepted:
        return
    if graphql:
        raise CliError(f"{prefix}failed to run {_APP_QUERY}: You must be authenticated to view this.")
    raise CliError(f"{prefix}unauthorized", request_id=request_id())


def lookup_app_graphql(invocation: Invocation, *, prefix: str = "") -> model.App:
    """Look the app up as flyctl's GraphQL call does, failing with `Could not find App`."""
    check_token_accepted(invocation, graphql=True, prefix=prefix)
    app = invocation.snapshot()["apps"].get(invocation.app_name)
    if app is None or _failure(invocation) == "app_not_found":
        raise CliError(f'{prefix}failed to run {_APP_QUERY}: Could not find App "{invocation.app_name}"')
    return app


def lookup_app_machines_api(invocation: Invocation, *, prefix: str) -> model.App:
    """Look the app up as a Machines API call does, whose error lacks `Could not find App`.

    NOTE: the API's wording for a missing app is not public, so "app not found" is a guess.
    """
    check_token_accepted(invocation, graphql=False, prefix=prefix)
    app = invocation.snapshot()["apps"].get(invocation.app_name)
    if app is None or _failure(invocation) == "app_not_found":
        raise CliError(f"{prefix}app not found", request_id=request_id())
    return app


def save_min_secrets_version(invocation: Invocation, version: int) -> None:
    """Record the app's new secrets version under `app_secrets_minvers` in config.yml.

    flyctl keeps this per host so later deploys include secrets set from this host.
    The stand-in writes it only when FLY_CONFIG_DIR is set, so that a test run never
    edits the config.yml of a real flyctl installation in ~/.fly.
    """
    directory = invocation.env.get("FLY_CONFIG_DIR")
    if not directory:
        return
    path = os.path.join(directory, "config.yml")
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        lines = []

    versions: dict[str, int] = {}
    kept: list[str] = []
    in_block = False
    for line in lines:
        if line.startswith("app_secrets_minvers:"):
            in_block = True
            continue
        if in_block and line.startswith((" ", "\t")):
            key, _, value = line.strip().partition(":")
            if value.strip().isdigit():
                versions[key.strip()] = int(value.strip())
            continue
        in_block = False
        kept.append(line)

    versions[invocation.app_name] = version
    kept.append("app_secrets_minvers:")
    kept.extend(f"    {name}: {number}" for name, number in sorted(versions.items()))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(kept) + "\n")
