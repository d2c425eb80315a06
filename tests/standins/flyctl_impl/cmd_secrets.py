"""`flyctl secrets list|set|unset|import|deploy|sync` bodies.

Each mutating command follows flyctl's order: look the app up (GraphQL, so a missing app
fails before the arguments are read), parse the input, send one batch update, then run
the deployment step unless `--stage` was given.
"""

from __future__ import annotations

from . import injection, model, rollout, secret_input, session
from .errors import CliError
from .injection import request_id
from .runtime import Invocation
from .store import random_ulid, stable_hex
from .views import relative_time, table

STAGED_MESSAGE = (
    "Secrets have been staged, but not set on VMs. Deploy or update machines in this app for the secrets to take effect."
)
FIRST_DEPLOYMENT_MESSAGE = "Secrets are staged for the first deployment"


def _store(invocation: Invocation, changes: dict[str, str | None]) -> None:
    """Send one batch update: rejected whole when a name is invalid, as the API does."""
    invalid = secret_input.invalid_secret_names(list(changes))
    if invalid:
        raise CliError(
            f'update secrets: failed to update app secrets: "{invalid[0]}" is not a valid secret name',
            request_id=request_id(),
        )
    if invocation.failure == "exit1_before_store":
        raise injection.api_error(invocation.command_path)

    with invocation.transaction() as state:
        app = state["apps"][invocation.app_name]
        version = model.apply_secret_changes(state, app, changes)
    session.save_min_secrets_version(invocation, version)


def _deploy_step(invocation: Invocation) -> None:
    """Run what flyctl runs after storing: the staged message or the rollout."""
    stage = invocation.args.flag("stage")
    app = invocation.snapshot()["apps"][invocation.app_name]
    rolls_out = not stage and (app["deployed"] or model.active_machines(app))

    if invocation.failure == "hang" and not rolls_out:
        invocation.hang()
    if stage:
        invocation.out(STAGED_MESSAGE)
        return
    if not rolls_out:
        invocation.out(FIRST_DEPLOYMENT_MESSAGE)
        return
    rollout.run(
        invocation,
        reason="secrets",
        description="Update secrets",
        detach=invocation.args.flag("detach"),
        dns_checks=invocation.args.flag("dns-checks"),
    )


def run_set(invocation: Invocation) -> None:
    """`secrets set NAME=VALUE...`, where a value `-` reads standard input."""
    session.lookup_app_graphql(invocation)
    pairs = secret_input.parse_set_arguments(invocation.args.positionals)
    values = secret_input.resolve_stdin_values(pairs, invocation.stdin)
    _store(invocation, dict(values))
    _deploy_step(invocation)


def run_unset(invocation: Invocation) -> None:
    """`secrets unset NAME...`; unknown names are not an error and still cause a rollout."""
    session.lookup_app_graphql(invocation)
    _store(invocation, {name: None for name in invocation.args.positionals})
    _deploy_step(invocation)


def run_import(invocation: Invocation) -> None:
    """`secrets import`: NAME=VALUE lines on standard input, read to EOF without a TTY check."""
    session.lookup_app_graphql(invocation)
    pairs = secret_input.parse_import(invocation.stdin.read())
    _store(invocation, dict(pairs))
    _deploy_step(invocation)


def run_deploy(invocation: Invocation) -> None:
    """`secrets deploy`: roll staged secrets out to an app that already has machines."""
    session.lookup_app_graphql(invocation)
    if invocation.failure == "exit1_before_store":
        raise injection.api_error(invocation.command_path)
    app = invocation.snapshot()["apps"][invocation.app_name]
    if not app["deployed"] or not model.active_machines(app):
        raise CliError(
            "no machines available to deploy",
            description="'fly secrets deploy' will only work if the app has been deployed and there are machines available",
            suggestion="Try 'fly deploy' first",
        )
    rollout.run(
        invocation,
        reason="secrets",
        description="Deploy secrets",
        detach=invocation.args.flag("detach"),
        dns_checks=invocation.args.flag("dns-checks"),
    )


def run_sync(invocation: Invocation) -> None:
    """`secrets sync`: unset a random missing name to learn the current secrets version.

    Prints nothing and restarts nothing; --stage and --detach have no effect.
    """
    session.lookup_app_graphql(invocation)
    bogus = "BogusDummySecret_" + stable_hex(invocation.app_name, random_ulid(), length=16)
    _store(invocation, {bogus: None})
    if invocation.failure == "hang":
        invocation.hang()


def _not_deployed_footer(statuses: list[str]) -> list[str]:
    staged = statuses.count("Staged")
    partial = statuses.count("Partial")

    def secrets_word(count: int) -> str:
        return "secret" if count == 1 else "secrets"

    if staged and partial:
        return [
            "Some secrets need to be deployed:",
            f"  * {staged} {secrets_word(staged)} staged (not yet deployed)",
            f"  ! {partial} {secrets_word(partial)} partially deployed (deployed to some machines)",
            "",
            "Deploy with `fly secrets deploy` to sync all machines.",
        ]
    if staged:
        verb = "is" if staged == 1 else "are"
        return [
            f"There {verb} {staged} {secrets_word(staged)} not deployed. "
            "Deploy with `fly secrets deploy` to make them available."
        ]
    if partial:
        verb = "is" if partial == 1 else "are"
        return [
            f"There {verb} {partial} {secrets_word(partial)} partially deployed. "
            "This can happen during rolling deployments or if some machines failed to update. "
            "Deploy with `fly secrets deploy` to ensure all machines have the latest configuration."
        ]
    return []


def run_list(invocation: Invocation) -> None:
    """`secrets list`: names, digests and, in the current format, deployment status.

    The state's per-app `list_format` picks the JSON keys of a flyctl generation:
    `current` (v0.4.6+), `v0.3` (v0.3.178 to v0.4.5) or `legacy` (up to v0.3.177).
    """
    app = session.lookup_app_machines_api(invocation, prefix="failed to list app secrets: ")
    if invocation.failure == "exit1_before_store":
        raise injection.api_error(invocation.command_path)

    list_format = app.get("list_format", "current")
    statuses = model.secret_statuses(app) if list_format == "current" else None
    names = sorted(app["secrets"])

    if invocation.json_output():
        entries: list[dict[str, object]] = []
        for name in names:
            secret = app["secrets"][name]
            if list_format == "legacy":
                entries.append({"Name": name, "Digest": secret["digest"], "CreatedAt": secret["created_at"]})
            elif list_format == "v0.3":
                entries.append(
                    {"name": name, "digest": secret["digest"], "created_at": secret["created_at"], "updated_at": secret["updated_at"]}
                )
            else:
                entry: dict[str, object] = {"name": name, "digest": secret["digest"]}
                if statuses is not None:
                    entry["status"] = statuses[name]
                entries.append(entry)
        invocation.print_json(entries)
        return

    if list_format == "legacy":
        rows = [[name, app["secrets"][name]["digest"], relative_time(app["secrets"][name]["created_at"])] for name in names]
        for line in table(["Name", "Digest", "Created At"], rows, bars=False):
            invocation.out(line)
        return
    if list_format == "v0.3" or statuses is None:
        rows = [[name, app["secrets"][name]["digest"]] for name in names]
        for line in table(["Name", "Digest"], rows, bars=list_format == "current"):
            invocation.out(line)
        invocation.out()
        return

    prefixes = {"Staged": "* ", "Partial": "! "}
    rows = [[prefixes.get(statuses[name], "") + name, app["secrets"][name]["digest"], statuses[name]] for name in names]
    for line in table(["Name", "Digest", "Status"], rows):
        invocation.out(line)
    invocation.out()
    for line in _not_deployed_footer([statuses[name] for name in names]):
        invocation.out(line)

