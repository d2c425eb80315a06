"""The stand-in's command tree: names, aliases, flags and argument rules of each command.

Flags and argument counts follow flyctl v0.4.87. `secrets keys`, `secrets` flags not
listed here and every other flyctl command are unknown to the stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import cmd_apps, cmd_inspect, cmd_secrets
from .flags import Flag
from .runtime import Invocation

APP = Flag("app", "a", help="Application name")
CONFIG = Flag("config", "c", help="Path to application configuration file")
JSON = Flag("json", "j", boolean=True, help="JSON output")
DETACH = Flag("detach", boolean=True, help="Return immediately instead of monitoring deployment progress")
STAGE = Flag("stage", boolean=True, help="Set secrets but skip deployment for machine apps")
DNS_CHECKS = Flag("dns-checks", boolean=True, default="true", help="Perform DNS checks during deployment")

GLOBAL_FLAGS = (
    Flag("access-token", "t", help="Fly API Access Token"),
    Flag("debug", boolean=True, help="Print additional logs and traces"),
    Flag("help", "h", boolean=True, help="help for this command"),
    Flag("verbose", boolean=True, help="Verbose output"),
)
ROOT_FLAGS = (Flag("version", "v", boolean=True, help="version for flyctl"),)

SECRET_CHANGE_FLAGS = (APP, CONFIG, DETACH, STAGE, DNS_CHECKS)


@dataclass(frozen=True)
class Node:
    """A command or command group of the tree."""

    name: str
    short: str
    usage: str = ""
    flags: tuple[Flag, ...] = ()
    # Positional argument rule as cobra states it: "none", "min1" or "max1".
    arguments: str = "none"
    run: Callable[[Invocation], None] | None = None
    children: tuple["Node", ...] = ()
    aliases: tuple[str, ...] = ()
    # Path used to select injected failures, with aliases resolved, such as "machines list".
    canonical: str = ""
    needs_app: bool = True
    # `apps restart` takes the app as its argument and has no -a flag.
    app_from_argument: bool = False

    def child(self, word: str) -> "Node | None":
        """Return the subcommand called `word` or with that alias."""
        for node in self.children:
            if word == node.name or word in node.aliases:
                return node
        return None


SECRETS = Node(
    "secrets",
    "Manage application secrets with the set and unset commands.",
    children=(
        Node("list", "List application secret names, digests and status", flags=(APP, CONFIG, JSON),
             run=cmd_secrets.run_list, aliases=("ls",), canonical="secrets list"),
        Node("set", "Set one or more encrypted secrets for an application", usage="NAME=VALUE NAME=VALUE ...",
             flags=SECRET_CHANGE_FLAGS, arguments="min1", run=cmd_secrets.run_set, canonical="secrets set"),
        Node("unset", "Unset one or more encrypted secrets for an application", usage="NAME NAME ...",
             flags=SECRET_CHANGE_FLAGS, arguments="min1", run=cmd_secrets.run_unset, canonical="secrets unset"),
        Node("import", "Read secrets in name=value from stdin", flags=SECRET_CHANGE_FLAGS,
             run=cmd_secrets.run_import, canonical="secrets import"),
        Node("deploy", "Deploy staged secrets for an application", flags=(APP, CONFIG, DETACH, DNS_CHECKS),
             run=cmd_secrets.run_deploy, canonical="secrets deploy"),
        Node("sync", "Sync flyctl with the latest versions of app secrets", flags=SECRET_CHANGE_FLAGS,
             run=cmd_secrets.run_sync, canonical="secrets sync"),
    ),
)

ROOT = Node(
    "flyctl",
    "flyctl is a command line interface to the Fly.io platform (test stand-in).",
    flags=ROOT_FLAGS,
    needs_app=False,
    children=(
        Node("version", "Show version information for the flyctl command", run=cmd_apps.run_version,
             canonical="version", needs_app=False),
        SECRETS,
        Node("status", "Show app status", flags=(APP, CONFIG, JSON, Flag("all", boolean=True, help="Show completed machines"),
             Flag("deployment", boolean=True, help="Always show deployment status"),
             Flag("watch", boolean=True, help="Refresh details"), Flag("rate", default="5", value_type="int", help="Refresh rate in seconds")),
             run=cmd_inspect.run_status, canonical="status"),
        Node("releases", "List app releases", flags=(APP, CONFIG, JSON, Flag("image", boolean=True, help="Display the Docker image reference of the release")),
             run=cmd_inspect.run_releases, canonical="releases"),
        Node("checks", "Manage health checks", children=(
            Node("list", "List health checks", flags=(APP, CONFIG, JSON, Flag("check-name", help="Filter checks by name")),
                 run=cmd_inspect.run_checks_list, aliases=("ls",), canonical="checks list"),
        ), aliases=("check",)),
        Node("machine", "Manage Fly Machines.", aliases=("machines", "m"), children=(
            Node("list", "List Fly machines", flags=(APP, CONFIG, JSON, Flag("quiet", "q", boolean=True, help="Only list machine ids")),
                 run=cmd_inspect.run_machines_list, aliases=("ls",), canonical="machines list"),
        )),
        Node("logs", "View app logs", flags=(APP, CONFIG, JSON, Flag("region", "r", help="The region to fetch logs from"),
             Flag("machine", "m", alias="instance", help="Filter by machine ID"),
             Flag("select", "s", boolean=True, help="Select which machine to view logs from"),
             Flag("no-tail", "n", boolean=True, help="Do not continually stream logs")),
             run=cmd_inspect.run_logs, canonical="logs"),
        Node("apps", "Manage apps.", aliases=("app",), children=(
            Node("restart", "Restart an application", usage="<app name>", arguments="max1",
                 flags=(Flag("force-stop", boolean=True, help="Performs a force stop on the machine(s)"),
                        Flag("skip-health-checks", boolean=True, help="Restarts app without waiting for health checks")),
                 run=cmd_apps.run_apps_restart, canonical="apps restart", app_from_argument=True),
            Node("releases", "List app releases", flags=(APP, CONFIG, JSON, Flag("image", boolean=True, help="Display the Docker image reference of the release")),
                 run=cmd_inspect.run_releases, canonical="releases"),
        )),
        Node("deploy", "Deploy Fly applications", usage="[WORKING_DIRECTORY]", arguments="max1",
             flags=(APP, CONFIG, Flag("image", "i", help="The Docker image to deploy"), DETACH,
                    Flag("strategy", help="The strategy for replacing running instances"),
                    Flag("wait-timeout", default="5m0s", value_type="duration", help="Time duration to wait for individual machines"),
                    Flag("smoke-checks", boolean=True, default="true", help="Perform smoke checks during deployment"),
                    DNS_CHECKS, Flag("max-unavailable", default="0.33", value_type="float", help="Fraction or count of machines updated at once"),
                    Flag("yes", "y", boolean=True, help="Accept all confirmations"),
                    Flag("remote-only", boolean=True, help="Perform builds on a remote builder instance")),
             run=cmd_apps.run_deploy, canonical="deploy"),
    ),
)
