"""Checking that an app came back healthy after a secret change.

A machine only gets new secrets when flyctl updates it in place, and a failed rolling
update leaves the values stored but not on every machine. The predicate therefore
reads three sources: `status` (machines, checks, release version), `releases` (the
rollout finished) and `secrets list` (digests changed and the secrets are deployed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from bot.errors import FlyctlError, FlyctlNotFound
from bot.flyctl.shapes import AppStatus, FlySecret, Machine, Release

logger = logging.getLogger(__name__)

# Machines in these states are idle by design when the app lets Fly stop or suspend
# them; flyctl updates them without starting them.
IDLE_STATES = ("stopped", "suspended")

# Upper bound for one health URL request inside a verification poll, in seconds.
HEALTH_URL_TIMEOUT = 10.0


@dataclass
class VerificationReport:
    """Outcome of one verification: `ok` only when `problems` is empty."""

    ok: bool
    problems: list[str]
    digests_after: dict[str, str | None]
    machines: int
    release_version: int | None
    notes: list[str] = field(default_factory=list)


class DeploymentSource(Protocol):
    """The three reads verification needs; FlyctlClient provides them."""

    async def status(self, app: str) -> AppStatus: ...

    async def releases(self, app: str) -> list[Release]: ...

    async def list_secrets(self, app: str) -> list[FlySecret]: ...


def _machine_problems(machine: Machine, version: int, notes: list[str]) -> list[str]:
    problems = []
    label = f"machine {machine.id}"

    if machine.state in IDLE_STATES and machine.auto_stop:
        notes.append(f"{label} is {machine.state} (auto-stop); it gets the new secrets when it next starts")
    elif machine.state != "started":
        problems.append(f"{label} is {machine.state}, expected started")

    if machine.host_status is not None and machine.host_status != "ok":
        problems.append(f"{label} host is {machine.host_status}, expected ok")

    for check in machine.checks:
        if check.status != "passing":
            problems.append(f"{label} check {check.name} is {check.status}, expected passing")

    if machine.release_version != str(version):
        problems.append(f"{label} runs release {machine.release_version or 'unknown'}, expected {version}")
    return problems


def evaluate_deployment(
    *,
    status: AppStatus,
    releases: list[Release],
    secrets: list[FlySecret],
    names: Iterable[str],
    digests_before: Mapping[str, str | None],
) -> VerificationReport:
    """Apply the healthy-after-rotation predicate to one snapshot of the app.

    Every machine must be started (or idle under auto-stop, which is noted), on an
    ok host, with all checks passing and on the current release. The newest release
    must be complete. Every rotated secret must be listed, Deployed when flyctl
    reports a status, and have a digest different from `digests_before`.
    """
    problems: list[str] = []
    notes: list[str] = []

    if not status.machines:
        problems.append(f"app {status.name} has no machines to verify")
    for machine in status.machines:
        problems.extend(_machine_problems(machine, status.version, notes))

    if not releases:
        problems.append("flyctl lists no releases")
    elif releases[0].status != "complete":
        problems.append(f"release v{releases[0].version} is {releases[0].status}, expected complete")

    listed = {secret.name: secret for secret in secrets}
    digests_after: dict[str, str | None] = {}
    for name in names:
        secret = listed.get(name)
        digests_after[name] = secret.digest if secret else None
        if secret is None:
            problems.append(f"secret {name} is not listed")
            continue
        if secret.status is not None and secret.status != "Deployed":
            problems.append(f"secret {name} is {secret.status}, expected Deployed")
        if secret.digest == digests_before.get(name):
            problems.append(f"secret {name} still has its old digest")

    return VerificationReport(
        ok=not problems,
        problems=problems,
        digests_after=digests_after,
        machines=len(status.machines),
        release_version=status.version,
        notes=notes,
    )


async def check_health_url(url: str, timeout: float) -> str | None:
    """GET `url` and return a problem description, or None for a 2xx response.

    Proxy variables are ignored (trust_env=False) so the check reaches the app itself.
    """
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout, trust_env=False) as session:
            async with session.get(url) as response:
                if 200 <= response.status < 300:
                    return None
                return f"health URL {url} returned HTTP {response.status}, expected 2xx"
    except TimeoutError:
        return f"health URL {url} did not answer within {timeout:g}s"
    except aiohttp.ClientError as error:
        return f"health URL {url} failed: {type(error).__name__}: {error}"


async def _snapshot(
    source: DeploymentSource,
    app: str,
    names: list[str],
    digests_before: Mapping[str, str | None],
) -> VerificationReport:
    try:
        status = await source.status(app)
        releases = await source.releases(app)
        secrets = await source.list_secrets(app)
    except FlyctlNotFound:
        raise
    except FlyctlError as error:
        # A read can fail while machines restart; the next poll may succeed.
        logger.warning("verification read failed app=%s error=%s", app, error)
        return VerificationReport(
            ok=False,
            problems=[str(error)],
            digests_after={name: None for name in names},
            machines=0,
            release_version=None,
        )
    return evaluate_deployment(
        status=status, releases=releases, secrets=secrets, names=names, digests_before=digests_before
    )


async def verify_deployment(
    client: DeploymentSource,
    app: str,
    names: Iterable[str],
    digests_before: Mapping[str, str | None],
    timeout: float = 120.0,
    poll_interval: float = 2.0,
    health_url: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VerificationReport:
    """Poll the app until the predicate is true or `timeout` seconds have passed.

    Returns the passing report, or the last failing one. At least one snapshot is
    always taken, and a flyctl command already running may overrun the deadline by
    up to the client's command timeout.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be more than 0 seconds, got {poll_interval}")
    names = list(names)
    deadline = clock() + timeout
    # The deadline alone ends the loop with a real clock; this bound also ends it
    # when an injected clock does not advance.
    max_attempts = int(timeout / poll_interval) + 2
    attempt = 0

    while True:
        attempt += 1
        report = await _snapshot(client, app, names, digests_before)
        if health_url is not None:
            remaining = max(deadline - clock(), 1.0)
            problem = await check_health_url(health_url, min(HEALTH_URL_TIMEOUT, remaining))
            if problem is not None:
                report.problems.append(problem)
                report.ok = False

        if report.ok:
            logger.info("verification passed app=%s attempt=%d machines=%d", app, attempt, report.machines)
            return report

        remaining = deadline - clock()
        if remaining <= 0 or attempt >= max_attempts:
            logger.warning(
                "verification timed out app=%s attempts=%d problems=%d", app, attempt, len(report.problems)
            )
            return report

        logger.info("verification pending app=%s attempt=%d problems=%d", app, attempt, len(report.problems))
        await sleep(min(poll_interval, remaining))
