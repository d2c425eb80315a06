"""`/secret diagnose`: the troubleshooting checklist for one secret on one app, run by the bot.

Four checks, each from flyctl or the bot's own records:

1. the secret is listed on the app, and deployed, staged or only partly deployed;
2. every machine is started, healthy and on the current release, with the latest
   release complete (the same predicate as after a rotation, `evaluate_deployment`);
3. the app's recent log lines mention the secret's name (messages already redacted);
4. Fly's digest matches the digest recorded with the bot's last verified backup.

A check whose flyctl call fails is reported as not checked, and the others still run.
The result names one fix: deploy the staged secrets, restart the app, or start a
rotation, or none when nothing was found. Nothing here changes the app.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

from bot.backups import BackupStore
from bot.errors import FlyctlError
from bot.flyctl import (
    AppStatus,
    FlyctlClient,
    FlySecret,
    LogLine,
    Release,
    evaluate_deployment,
)
from bot.flyctl.verify import IDLE_STATES

logger = logging.getLogger(__name__)

# Log lines that mention the secret, newest last, shown in the reply.
MAX_LOG_LINES = 3
# The newest log lines searched for the name; flyctl decides how far back `--no-tail` reaches.
LOG_LINES_READ = 200
# Fly's statuses for a value that is stored but not on every machine.
NOT_DEPLOYED = ("Staged", "Partial")


class Fix(str, Enum):
    DEPLOY = "deploy"
    RESTART = "restart"
    ROTATE = "rotate"


@dataclass(frozen=True)
class MachineFinding:
    id: str
    state: str
    problems: tuple[str, ...]
    # A problem a restart may clear (state, host or checks), rather than an old release.
    needs_restart: bool
    on_old_release: bool


@dataclass(frozen=True)
class BackupFinding:
    """The comparison of Fly's digest with the bot's backups of the secret."""

    # "match", "mismatch", "unverified" (no backup was confirmed on Fly), "none" or "unknown" (not listed).
    outcome: str
    version: int | None = None
    backup_digest: str | None = None


@dataclass
class Diagnosis:
    """The findings for one secret; `errors` maps each check that could not run to its error."""

    app: str
    name: str
    secret: FlySecret | None = None
    listing_read: bool = False
    machines: list[MachineFinding] = field(default_factory=list)
    release: Release | None = None
    current_version: int | None = None
    deployment_problems: list[str] = field(default_factory=list)
    log_mentions: list[LogLine] = field(default_factory=list)
    log_mention_count: int = 0
    logs_read: bool = False
    backup: BackupFinding = field(default_factory=lambda: BackupFinding("unknown"))
    errors: dict[str, str] = field(default_factory=dict)
    # Secrets of the app that are Staged or Partial; a deploy rolls out all of them.
    not_deployed: tuple[str, ...] = ()

    @property
    def listed(self) -> bool:
        return self.secret is not None

    @property
    def unhealthy_machines(self) -> list[MachineFinding]:
        return [machine for machine in self.machines if machine.problems]

    def fix(self, *, rotatable: bool) -> Fix | None:
        """Pick the one fix that applies first: a rollout, then a restart, then a new value.

        A staged or partial secret, or a machine on an old release, needs `secrets deploy`
        (a restart keeps each machine's release and is not documented to apply staged
        secrets). An unhealthy machine on the current release needs a restart. A secret
        missing from the app, or whose value is not the one the bot last set, needs a
        rotation, which `rotatable` allows when secretbot.toml describes the secret.
        """
        if self.not_deployed or any(machine.on_old_release for machine in self.machines):
            return Fix.DEPLOY
        if any(machine.needs_restart for machine in self.machines):
            return Fix.RESTART
        value_doubtful = (self.listing_read and not self.listed) or self.backup.outcome == "mismatch"
        if rotatable and (value_doubtful or self.log_mention_count):
            return Fix.ROTATE
        return None


async def diagnose(flyctl: FlyctlClient, backups: BackupStore, *, app: str, name: str) -> Diagnosis:
    """Run the four checks for `name` on `app`; never raises for a failed flyctl call."""
    result = Diagnosis(app=app, name=name)

    listing: list[FlySecret] = []
    try:
        listing = await flyctl.list_secrets(app)
        result.listing_read = True
    except FlyctlError as exc:
        result.errors["listing"] = str(exc)
    result.secret = next((secret for secret in listing if secret.name == name), None)
    result.not_deployed = tuple(sorted(secret.name for secret in listing if secret.status in NOT_DEPLOYED))

    try:
        status = await flyctl.status(app)
        releases = await flyctl.releases(app)
        _read_deployment(result, status, releases, listing)
    except FlyctlError as exc:
        result.errors["machines"] = str(exc)

    try:
        lines = await flyctl.recent_logs(app, limit=LOG_LINES_READ)
        mentions = [line for line in lines if name in line.message]
        result.log_mention_count = len(mentions)
        result.log_mentions = mentions[-MAX_LOG_LINES:]
        result.logs_read = True
    except FlyctlError as exc:
        result.errors["logs"] = str(exc)

    result.backup = await _compare_backup(backups, app, name, result.secret)
    logger.info("diagnosed app=%s secret=%s listed=%s status=%s unhealthy=%d log_mentions=%d backup=%s errors=%s",
                app, name, result.listed, result.secret.status if result.secret else None,
                len(result.unhealthy_machines), result.log_mention_count, result.backup.outcome,
                ",".join(result.errors) or "none")
    return result


def _read_deployment(result: Diagnosis, status: AppStatus, releases: list[Release],
                     listing: list[FlySecret]) -> None:
    """Judge machines and release with the predicate a rotation's verification uses."""
    report = evaluate_deployment(status=status, releases=releases, secrets=listing, names=(), digests_before={})
    result.deployment_problems = report.problems
    result.current_version = status.version
    result.release = releases[0] if releases else None
    for machine in status.machines:
        # evaluate_deployment writes each machine's problems as "machine <id> ...".
        problems = tuple(problem for problem in report.problems if problem.startswith(f"machine {machine.id} "))
        on_old_release = machine.release_version != str(status.version)
        idle = machine.state in IDLE_STATES and machine.auto_stop
        unhealthy = (
            (machine.state != "started" and not idle)
            or (machine.host_status is not None and machine.host_status != "ok")
            or any(check.status != "passing" for check in machine.checks)
        )
        result.machines.append(MachineFinding(id=machine.id, state=machine.state, problems=problems,
                                              needs_restart=unhealthy, on_old_release=on_old_release))


async def _compare_backup(backups: BackupStore, app: str, name: str, secret: FlySecret | None) -> BackupFinding:
    """Compare Fly's digest with the one recorded on the newest backup that was confirmed on Fly."""
    versions = await backups.versions(app, name)
    if not versions:
        return BackupFinding("none")
    verified = [record for record in versions if record.fly_digest]
    if not verified:
        return BackupFinding("unverified", version=versions[-1].version)
    record = verified[-1]
    if secret is None:
        return BackupFinding("unknown", version=record.version, backup_digest=record.fly_digest)
    outcome = "match" if record.fly_digest == secret.digest else "mismatch"
    return BackupFinding(outcome, version=record.version, backup_digest=record.fly_digest)
