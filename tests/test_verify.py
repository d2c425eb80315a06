"""The healthy-after-rotation predicate, polling, and the health URL check."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.errors import FlyctlError, FlyctlNotFound
from bot.flyctl import (
    AppStatus,
    Check,
    FlyctlClient,
    FlySecret,
    Machine,
    Release,
    VerificationReport,
    check_health_url,
    verify_deployment,
)
from bot.flyctl.verify import evaluate_deployment
from tests.standins.fly_state import STANDIN_PATH, FlyState


def machine(**changes: object) -> Machine:
    healthy = Machine(
        id="3d8d9017b29e18",
        state="started",
        release_version="7",
        host_status="ok",
        checks=[Check(name="http", status="passing", output="200 OK")],
    )
    return dataclasses.replace(healthy, **changes)


def app_status(*machines: Machine, version: int = 7) -> AppStatus:
    return AppStatus(name="my-app", version=version, deployed=True, machines=list(machines))


COMPLETE = [Release(version=7, status="complete", created_at="2026-01-01T00:00:00Z")]
ROTATED = [FlySecret(name="JWT_SECRET", digest="new0000000000001", status="Deployed")]
BEFORE = {"JWT_SECRET": "old0000000000001"}


def evaluate(
    status: AppStatus | None = None,
    releases: list[Release] | None = None,
    secrets: list[FlySecret] | None = None,
    names: list[str] | None = None,
    before: dict[str, str | None] | None = None,
):
    return evaluate_deployment(
        status=status if status is not None else app_status(machine(), machine(id="148e272b650e89")),
        releases=releases if releases is not None else COMPLETE,
        secrets=secrets if secrets is not None else ROTATED,
        names=names if names is not None else ["JWT_SECRET"],
        digests_before=before if before is not None else BEFORE,
    )


# --- predicate ----------------------------------------------------------------


def test_healthy_rotation_passes() -> None:
    report = evaluate()
    assert report.ok
    assert report.problems == []
    assert report.machines == 2
    assert report.release_version == 7
    assert report.digests_after == {"JWT_SECRET": "new0000000000001"}


def test_zero_machines_fails() -> None:
    report = evaluate(status=app_status())
    assert not report.ok
    assert report.problems == ["app my-app has no machines to verify"]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"state": "replacing"}, "is replacing, expected started"),
        ({"state": "stopped"}, "is stopped, expected started"),
        ({"host_status": "unreachable"}, "host is unreachable"),
        ({"checks": [Check(name="http", status="critical", output="")]}, "check http is critical"),
        ({"checks": [Check(name="tcp", status="warning", output="")]}, "check tcp is warning"),
        ({"release_version": "6"}, "runs release 6, expected 7"),
        ({"release_version": None}, "runs release unknown, expected 7"),
    ],
)
def test_unhealthy_machine_fails(changes: dict[str, object], problem: str) -> None:
    report = evaluate(status=app_status(machine(), machine(id="148e272b650e89", **changes)))
    assert not report.ok
    assert len(report.problems) == 1
    assert "machine 148e272b650e89" in report.problems[0]
    assert problem in report.problems[0]


def test_missing_host_status_accepted() -> None:
    assert evaluate(status=app_status(machine(host_status=None))).ok


def test_machine_without_checks_accepted() -> None:
    assert evaluate(status=app_status(machine(checks=[]))).ok


@pytest.mark.parametrize("state", ["stopped", "suspended"])
def test_auto_stopped_machine_noted(state: str) -> None:
    report = evaluate(status=app_status(machine(), machine(id="148e272b650e89", state=state, auto_stop=True)))
    assert report.ok
    assert len(report.notes) == 1
    assert f"148e272b650e89 is {state}" in report.notes[0]


@pytest.mark.parametrize("release_status", ["running", "failed", "interrupted", "pending"])
def test_unfinished_release_fails(release_status: str) -> None:
    report = evaluate(releases=[Release(version=7, status=release_status, created_at="x")])
    assert not report.ok
    assert report.problems == [f"release v7 is {release_status}, expected complete"]


def test_no_releases_fails() -> None:
    assert evaluate(releases=[]).problems == ["flyctl lists no releases"]


def test_only_newest_release_counts() -> None:
    releases = [
        Release(version=7, status="complete", created_at="b"),
        Release(version=6, status="failed", created_at="a"),
    ]
    assert evaluate(releases=releases).ok


@pytest.mark.parametrize("secret_status", ["Staged", "Partial", "Unknown"])
def test_undeployed_secret_fails(secret_status: str) -> None:
    secrets = [FlySecret(name="JWT_SECRET", digest="new0000000000001", status=secret_status)]
    report = evaluate(secrets=secrets)
    assert not report.ok
    assert report.problems == [f"secret JWT_SECRET is {secret_status}, expected Deployed"]


def test_secret_without_status_accepted() -> None:
    secrets = [FlySecret(name="JWT_SECRET", digest="new0000000000001", status=None)]
    assert evaluate(secrets=secrets).ok


def test_unchanged_digest_fails() -> None:
    report = evaluate(before={"JWT_SECRET": "new0000000000001"})
    assert report.problems == ["secret JWT_SECRET still has its old digest"]


def test_new_secret_needs_listing() -> None:
    report = evaluate(names=["JWT_SECRET", "NEW_ONE"], before={"JWT_SECRET": "old", "NEW_ONE": None})
    assert report.problems == ["secret NEW_ONE is not listed"]
    assert report.digests_after == {"JWT_SECRET": "new0000000000001", "NEW_ONE": None}


def test_new_secret_listed_passes() -> None:
    secrets = [*ROTATED, FlySecret(name="NEW_ONE", digest="abc0000000000001", status="Deployed")]
    report = evaluate(secrets=secrets, names=["JWT_SECRET", "NEW_ONE"], before={"JWT_SECRET": "old", "NEW_ONE": None})
    assert report.ok


def test_all_problems_listed() -> None:
    report = evaluate(
        status=app_status(machine(state="failed", host_status="unknown")),
        releases=[Release(version=7, status="failed", created_at="x")],
        secrets=[],
    )
    assert len(report.problems) == 4


# --- polling ------------------------------------------------------------------


class ScriptedSource:
    """Returns one scripted snapshot per poll; the last one repeats."""

    def __init__(self, snapshots: list[tuple[AppStatus, list[Release], list[FlySecret]] | Exception]) -> None:
        self.snapshots = snapshots
        self.polls = 0
        self.current: tuple[AppStatus, list[Release], list[FlySecret]] | None = None

    async def status(self, app: str) -> AppStatus:
        # status() is the first read of each poll, so it advances the script.
        snapshot = self.snapshots[min(self.polls, len(self.snapshots) - 1)]
        self.polls += 1
        if isinstance(snapshot, Exception):
            raise snapshot
        self.current = snapshot
        return snapshot[0]

    async def releases(self, app: str) -> list[Release]:
        assert self.current is not None
        return self.current[1]

    async def list_secrets(self, app: str) -> list[FlySecret]:
        assert self.current is not None
        return self.current[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


HEALTHY = (app_status(machine()), COMPLETE, ROTATED)
ROLLING = (app_status(machine(state="replacing")), [Release(version=7, status="running", created_at="x")], ROTATED)


async def test_polls_until_healthy() -> None:
    source = ScriptedSource([ROLLING, ROLLING, HEALTHY])
    clock = FakeClock()
    report = await verify_deployment(
        source, "my-app", ["JWT_SECRET"], BEFORE, timeout=60, poll_interval=2, clock=clock, sleep=clock.sleep
    )
    assert report.ok
    assert clock.sleeps == [2, 2]


async def test_timeout_returns_last_problems() -> None:
    source = ScriptedSource([ROLLING])
    clock = FakeClock()
    report = await verify_deployment(
        source, "my-app", ["JWT_SECRET"], BEFORE, timeout=5, poll_interval=2, clock=clock, sleep=clock.sleep
    )
    assert not report.ok
    assert any("is replacing" in problem for problem in report.problems)
    assert clock.sleeps == [2, 2, 1]


async def test_stuck_clock_still_stops() -> None:
    source = ScriptedSource([ROLLING])

    async def no_sleep(seconds: float) -> None:
        return None

    report = await verify_deployment(
        source, "my-app", ["JWT_SECRET"], BEFORE, timeout=10, poll_interval=2, clock=lambda: 0.0, sleep=no_sleep
    )
    assert not report.ok
    assert source.polls == 7


async def test_flyctl_error_retried() -> None:
    source = ScriptedSource([FlyctlError("flyctl status for app my-app failed: lease held"), HEALTHY])
    clock = FakeClock()
    report = await verify_deployment(
        source, "my-app", ["JWT_SECRET"], BEFORE, timeout=60, poll_interval=1, clock=clock, sleep=clock.sleep
    )
    assert report.ok


async def test_flyctl_error_reported_at_timeout() -> None:
    source = ScriptedSource([FlyctlError("flyctl status for app my-app failed: boom")])
    clock = FakeClock()
    report = await verify_deployment(
        source, "my-app", ["JWT_SECRET"], BEFORE, timeout=2, poll_interval=1, clock=clock, sleep=clock.sleep
    )
    assert report.problems == ["flyctl status for app my-app failed: boom"]
    assert report.digests_after == {"JWT_SECRET": None}


async def test_missing_flyctl_raises() -> None:
    source = ScriptedSource([FlyctlNotFound("flyctl executable 'flyctl' was not found")])
    with pytest.raises(FlyctlNotFound):
        await verify_deployment(source, "my-app", ["JWT_SECRET"], BEFORE, timeout=5, poll_interval=1)


async def test_zero_poll_interval_rejected() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        await verify_deployment(ScriptedSource([HEALTHY]), "my-app", [], {}, poll_interval=0)


# --- health URL ------------------------------------------------------------------


@pytest.fixture
async def health_server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_health_url_ok(health_server: str) -> None:
    assert await check_health_url(f"{health_server}/ok", timeout=5) is None


async def test_health_url_non_2xx(health_server: str) -> None:
    problem = await check_health_url(f"{health_server}/broken", timeout=5)
    assert problem is not None
    assert "HTTP 503" in problem


async def test_health_url_timeout(health_server: str) -> None:
    problem = await check_health_url(f"{health_server}/slow", timeout=0.3)
    assert problem is not None
    assert "did not answer within 0.3s" in problem


async def test_health_url_refused() -> None:
    problem = await check_health_url(f"http://127.0.0.1:{free_port()}/", timeout=5)
    assert problem is not None
    assert "failed" in problem


async def test_health_url_ignores_proxy_env(health_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    assert await check_health_url(f"{health_server}/ok", timeout=5) is None


async def test_health_problem_fails_verification(health_server: str) -> None:
    report = await verify_deployment(
        ScriptedSource([HEALTHY]),
        "my-app",
        ["JWT_SECRET"],
        BEFORE,
        timeout=0.5,
        poll_interval=0.5,
        health_url=f"{health_server}/broken",
    )
    assert not report.ok
    assert report.problems == [f"health URL {health_server}/broken returned HTTP 503, expected 2xx"]


# --- against the flyctl stand-in ---------------------------------------------------


@pytest.fixture
def standin_client(tmp_path: Path) -> tuple[FlyState, FlyctlClient]:
    state = FlyState(tmp_path / "fly-state.json")
    state.add_app("my-app", machines=2)
    state.set_secret("my-app", "JWT_SECRET", "old-value-1234")
    client = FlyctlClient(
        str(STANDIN_PATH),
        api_token="FlyV1 fm2_test-token",
        work_dir=tmp_path / "work",
        config_dir=tmp_path / "home" / ".fly",
        command_timeout=30,
        deploy_timeout=30,
        extra_env=state.env(),
    )
    return state, client


async def rotate(client: FlyctlClient, state: FlyState, *, timeout: float = 3.0) -> VerificationReport:
    before = {"JWT_SECRET": state.secret_digest("my-app", "JWT_SECRET"), "NEW_ONE": None}
    try:
        await client.import_secrets("my-app", {"JWT_SECRET": "rotated-value-5678", "NEW_ONE": "brand-new-9012"})
    except FlyctlError:
        pass
    return await verify_deployment(
        client, "my-app", ["JWT_SECRET", "NEW_ONE"], before, timeout=timeout, poll_interval=0.2
    )


async def test_standin_rotation_verifies(standin_client: tuple[FlyState, FlyctlClient]) -> None:
    state, client = standin_client
    report = await rotate(client, state)
    assert report.ok
    assert report.problems == []
    assert report.machines == 2
    assert report.release_version == 2
    assert report.digests_after == {
        "JWT_SECRET": state.secret_digest("my-app", "JWT_SECRET"),
        "NEW_ONE": state.secret_digest("my-app", "NEW_ONE"),
    }


async def test_standin_failed_rollout_reported(standin_client: tuple[FlyState, FlyctlClient]) -> None:
    state, client = standin_client
    state.inject("my-app", "secrets import", failure="health_timeout")
    report = await rotate(client, state, timeout=0.5)
    assert not report.ok
    assert "release v2 is failed, expected complete" in report.problems
    assert any("check" in problem and "expected passing" in problem for problem in report.problems)
    assert any(problem.startswith("secret JWT_SECRET is Partial") for problem in report.problems)


async def test_standin_unhealthy_after_rollout(standin_client: tuple[FlyState, FlyctlClient]) -> None:
    state, client = standin_client
    state.inject("my-app", "secrets import", failure="unhealthy_after")
    report = await rotate(client, state, timeout=0.5)
    assert not report.ok
    assert any("is critical, expected passing" in problem for problem in report.problems)


async def test_standin_stale_release(standin_client: tuple[FlyState, FlyctlClient]) -> None:
    state, client = standin_client
    state.inject("my-app", "secrets import", failure="stale_release")
    report = await rotate(client, state, timeout=0.5)
    assert not report.ok
    assert any("runs release 1, expected 2" in problem for problem in report.problems)


async def test_standin_app_without_machines(standin_client: tuple[FlyState, FlyctlClient]) -> None:
    state, client = standin_client
    state.add_app("empty-app", machines=0)
    report = await verify_deployment(client, "empty-app", [], {}, timeout=0.2, poll_interval=0.1)
    assert not report.ok
    assert "app empty-app has no machines to verify" in report.problems


async def test_standin_waits_for_machine(standin_client: tuple[FlyState, FlyctlClient]) -> None:
    state, client = standin_client
    await client.import_secrets("my-app", {"JWT_SECRET": "rotated-value-5678"})
    lagging = state.machine_ids("my-app")[0]
    state.set_machine("my-app", lagging, state="replacing")

    async def recover() -> None:
        await asyncio.sleep(0.6)
        state.set_machine("my-app", lagging, state="started")

    recovery = asyncio.create_task(recover())
    report = await verify_deployment(
        client, "my-app", ["JWT_SECRET"], {"JWT_SECRET": "old-digest"}, timeout=10, poll_interval=0.2
    )
    await recovery
    assert report.ok
