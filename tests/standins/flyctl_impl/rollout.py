"""The restart-only machine update that follows a secrets change, as flyctl runs it.

flyctl creates a release, leases every machine, then updates machines in ID order with
the new release metadata and secrets version, waiting for each started machine to reach
`started` and pass its health checks. The stdout lines are the non-interactive
transcript, which is what a bot reads through a pipe.

NOTE: machines are updated one at a time. Real rolling updates run the machines after
the first with some concurrency, which interleaves their lines; with a failure there,
machines already in flight would finish instead of printing "update canceled".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from . import model
from .errors import CliError
from .injection import request_id
from .runtime import Invocation
from .store import next_stamp, random_ulid

_LEASE_MESSAGE = "lease currently held by another operation"


@dataclass(frozen=True)
class MachinePlan:
    """What the rollout needs to know about one machine before touching it."""

    machine_id: str
    group: str
    launch: bool
    check_count: int

    @property
    def label(self) -> str:
        return f"{self.machine_id} [{self.group}]"


def _counter(index: int, total: int) -> str:
    """Return the `[i/n] ` prefix, zero-padded to n's width, or nothing for one machine."""
    if total <= 1:
        return ""
    width = len(str(total))
    return f"[{index:0{width}d}/{total}] "


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lease_error(invocation: Invocation, machine_id: str) -> CliError:
    invocation.out(f"WARN failed to acquire lease: {_LEASE_MESSAGE}")
    return CliError(f"failed to get lease on VM {machine_id}: {_LEASE_MESSAGE}", request_id=request_id())


def acquire_leases(invocation: Invocation, machine_ids: list[str]) -> None:
    """Lease every machine for this process, retrying while another live process holds one.

    NOTE: a lease whose holder process has exited counts as free at once; Fly keeps it
    until its 13-second TTL runs out.
    """
    failure = invocation.injection["failure"] if invocation.injection else ""
    if failure == "lease_conflict":
        raise _lease_error(invocation, machine_ids[0])

    me = os.getpid()
    deadline = time.monotonic() + float(invocation.settings["lease_wait"])
    while True:
        with invocation.transaction() as state:
            app = state["apps"][invocation.app_name]
            machines = [model.find_machine(app, machine_id) for machine_id in machine_ids]
            blocked = None
            for machine in machines:
                lease = machine.get("lease")
                if lease and lease["pid"] != me and _pid_alive(lease["pid"]):
                    blocked = machine["id"]
                    break
            if blocked is None:
                for machine in machines:
                    machine["lease"] = {"pid": me}
        if blocked is None:
            invocation.on_cancel(lambda: release_leases(invocation, machine_ids))
            return
        if time.monotonic() >= deadline:
            raise _lease_error(invocation, blocked)
        invocation.sleep(0.05)


def release_leases(invocation: Invocation, machine_ids: list[str]) -> None:
    """Drop this process's leases; leases of other processes stay."""
    me = os.getpid()
    with invocation.transaction() as state:
        app = state["apps"].get(invocation.app_name)
        if app is None:
            return
        for machine in app["machines"]:
            lease = machine.get("lease")
            if machine["id"] in machine_ids and lease and lease["pid"] == me:
                machine["lease"] = None


def finish_release(invocation: Invocation, version: int, status: str) -> None:
    """Move a running release to its final status; a release already finished stays as it is."""
    with invocation.transaction() as state:
        app = state["apps"].get(invocation.app_name)
        release = model.find_release(app, version) if app else None
        if release is not None and release["status"] == "running":
            release["status"] = status


def _failure_target(invocation: Invocation, plans: list[MachinePlan], *, last: bool) -> str | None:
    """Return the ID of the machine an injected failure hits.

    The injection's `machine` may be an index into the ID-sorted machines or an ID; by
    default it is the first started machine (the last one for `unhealthy_after`).
    Start, smoke-check and health-check failures have no effect on a machine that is
    not started, because flyctl runs none of those steps for it.
    """
    if invocation.injection is None:
        return None
    chosen = invocation.injection.get("machine")
    if isinstance(chosen, int) and 0 <= chosen < len(plans):
        return plans[chosen].machine_id
    if isinstance(chosen, str):
        return chosen
    launched = [plan for plan in plans if plan.launch] or plans
    return launched[-1].machine_id if last else launched[0].machine_id


def run(
    invocation: Invocation,
    *,
    reason: str,
    description: str,
    detach: bool,
    dns_checks: bool,
    new_image: dict[str, str] | None = None,
    strategy: str | None = None,
) -> None:
    """Roll the app's machines onto a new release, printing flyctl's transcript.

    Raises CliError for a failed rollout after marking the release failed; secrets stay
    stored, since flyctl has no rollback for rolling updates.
    """
    failure = invocation.injection["failure"] if invocation.injection else ""

    with invocation.transaction() as state:
        app = state["apps"][invocation.app_name]
        if new_image is not None:
            app["image"] = new_image
        release = model.add_release(state, app, status="running", reason=reason, description=description)
        strategy = strategy or app["strategy"]
        release["strategy"] = strategy
        plans = [
            MachinePlan(machine["id"], machine["process_group"], machine["state"] in model.LAUNCH_STATES, len(machine["checks"]))
            for machine in model.active_machines(app)
        ]
        version = release["version"]
        release_id = release["id"]
        secrets_version = app["secrets_version"]
        image = dict(app["image"])
    invocation.on_cancel(lambda: finish_release(invocation, version, "interrupted"))

    if not plans:
        if failure == "hang":
            invocation.hang()
        finish_release(invocation, version, "complete")
        return

    machine_ids = [plan.machine_id for plan in plans]
    try:
        acquire_leases(invocation, machine_ids)
    except CliError:
        finish_release(invocation, version, "failed")
        raise

    invocation.out(f"Updating existing machines in '{invocation.app_name}' with {strategy} strategy")
    target = _failure_target(invocation, plans, last=False)
    update = _MachineUpdate(
        invocation,
        version=version,
        release_id=release_id,
        secrets_version=secrets_version,
        image=image,
        apply=failure != "stale_release",
        detach=detach,
        immediate=strategy == "immediate",
    )

    error: CliError | None = None
    for index, plan in enumerate(plans, start=1):
        counter = _counter(index, len(plans))
        if error is not None:
            invocation.out(f"✖ {counter}Machine {plan.label} update canceled")
            continue
        try:
            update.apply_to(plan, counter, failure=failure if plan.machine_id == target else "")
        except CliError as caught:
            invocation.out(f"✖ {counter}Machine {plan.label} update failed: {caught.message}")
            error = caught

    release_leases(invocation, machine_ids)
    finish_release(invocation, version, "failed" if error else "complete")
    if error is not None:
        raise error

    if failure == "unhealthy_after":
        _turn_unhealthy(invocation, _failure_target(invocation, plans, last=True))
    if not detach and dns_checks:
        _check_dns(invocation, warn=failure == "dns_warning")
    if invocation.env.get("FLY_EMIT_RELEASE_JSON", "") not in ("", "0", "false"):
        record = {"id": release_id, "version": version, "image_ref": model.image_name(image)}
        invocation.out(json.dumps(record, separators=(",", ":")))


class _MachineUpdate:
    """Updates one machine at a time and prints its lines; shared settings live here."""

    def __init__(
        self,
        invocation: Invocation,
        *,
        version: int,
        release_id: str,
        secrets_version: int,
        image: dict[str, str],
        apply: bool,
        detach: bool,
        immediate: bool,
    ) -> None:
        self.invocation = invocation
        self.version = version
        self.release_id = release_id
        self.secrets_version = secrets_version
        self.image = image
        self.apply = apply
        self.detach = detach
        self.immediate = immediate
        self.delay = float(invocation.settings["delay"])

    def apply_to(self, plan: MachinePlan, counter: str, *, failure: str) -> None:
        """Update one machine, raising CliError with flyctl's text when it fails."""
        invocation = self.invocation
        label = plan.label
        invocation.out(f"> {counter}Updating {label}")
        invocation.out(f"> {counter}Updating {label}")

        if failure == "concurrent_update":
            raise CliError(
                f"failed to update VM {plan.machine_id}: machine is replacing: concurrent update in progress",
                request_id=request_id(),
            )
        self._write_update(plan)

        if not plan.launch:
            if failure == "hang":
                invocation.hang()
            invocation.out(f"✔ {counter}Machine {label} update succeeded")
            return
        if self.immediate:
            self._set_running(plan, checks_status="passing")
            invocation.out(f"✔ {counter}Machine {label} update succeeded")
            return

        if not self.detach:
            invocation.out(f"> {counter}Waiting for {label} to have state: started")
            if failure == "hang":
                invocation.hang()
            invocation.sleep(self.delay / 2)
            if failure == "start_timeout":
                self._set_state(plan, "stopped")
                raise CliError(
                    "timeout reached waiting for machine's state to change",
                    description=(
                        "Your machine was created, but never started or exited immediately. "
                        f"Check its logs with 'fly logs -i {plan.machine_id}'."
                    ),
                    suggestion="If your app needs longer to start, try increasing the timeout with the --wait-timeout flag",
                )
        elif failure == "hang":
            invocation.hang()

        pending_checks = plan.check_count > 0 and not self.detach
        self._set_running(plan, checks_status="critical" if pending_checks else "passing")
        if not self.detach:
            invocation.out(f"> {counter}Machine {label} has state: started")
        invocation.out(f"> {counter}Checking that {label} is up and running")

        if failure == "crash_loop":
            raise self._crash(plan)

        if pending_checks:
            invocation.out(f"> {counter}Waiting for {label} to become healthy: 0/{plan.check_count}")
            invocation.out()
            invocation.sleep(self.delay / 2)
            if failure == "health_timeout":
                self._set_checks(plan, "critical", "context deadline exceeded")
                raise CliError(
                    f"timeout reached waiting for health checks to pass for machine {plan.machine_id}: "
                    f"failed to get VM {plan.machine_id}: "
                    f'Get "https://api.machines.dev/v1/apps/{invocation.app_name}/machines/{plan.machine_id}": '
                    "context deadline exceeded"
                )
            self._set_checks(plan, "passing", "200 OK")
            invocation.out(f"> {counter}Waiting for {label} to become healthy: {plan.check_count}/{plan.check_count}")
            invocation.out()
        else:
            invocation.sleep(self.delay / 2)

        invocation.out(f"✔ {counter}Machine {label} update succeeded")

    def _write_update(self, plan: MachinePlan) -> None:
        with self.invocation.transaction() as state:
            app = state["apps"][self.invocation.app_name]
            machine = model.find_machine(app, plan.machine_id)
            if self.apply:
                machine["release_version"] = self.version
                machine["release_id"] = self.release_id
                machine["secrets_version"] = self.secrets_version
                machine["image"] = dict(self.image)
            machine["version"] = random_ulid()
            machine["updated_at"] = next_stamp(state)
            if plan.launch:
                machine["state"] = "replacing"
            model.record_event(state, machine, kind="update", status="replacing" if plan.launch else machine["state"], source="user")

    def _set_running(self, plan: MachinePlan, *, checks_status: str) -> None:
        with self.invocation.transaction() as state:
            app = state["apps"][self.invocation.app_name]
            machine = model.find_machine(app, plan.machine_id)
            machine["state"] = "started"
            machine["instance_id"] = random_ulid()
            machine["updated_at"] = next_stamp(state)
            model.set_checks(state, machine, status=checks_status, output="" if checks_status != "passing" else "200 OK")
            model.record_event(state, machine, kind="start", status="started")
            model.append_log(state, app, machine, f"Machine started, running release v{machine['release_version']}", provider="runner")

    def _set_state(self, plan: MachinePlan, machine_state: str) -> None:
        with self.invocation.transaction() as state:
            app = state["apps"][self.invocation.app_name]
            machine = model.find_machine(app, plan.machine_id)
            machine["state"] = machine_state
            machine["updated_at"] = next_stamp(state)
            model.record_event(state, machine, kind="exit", status=machine_state)

    def _set_checks(self, plan: MachinePlan, status: str, output: str) -> None:
        with self.invocation.transaction() as state:
            app = state["apps"][self.invocation.app_name]
            model.set_checks(state, model.find_machine(app, plan.machine_id), status=status, output=output)

    def _crash(self, plan: MachinePlan) -> CliError:
        """Leave the machine stopped after repeated exits and build the smoke-check error."""
        messages = [
            "Main child exited with code 1",
            "Machine exited, restarting (attempt 2 of 10)",
            "Main child exited with code 1",
        ]
        with self.invocation.transaction() as state:
            app = state["apps"][self.invocation.app_name]
            machine = model.find_machine(app, plan.machine_id)
            for message in messages:
                model.append_log(state, app, machine, message, level="error", provider="app")
            machine["state"] = "stopped"
            machine["updated_at"] = next_stamp(state)
            model.set_checks(state, machine, status="critical", output="connection refused")
            model.record_event(state, machine, kind="exit", status="stopped")

        problem = f"smoke checks for {plan.machine_id} failed: the app appears to be crashing"
        suggestion_lines = [
            f"Smoke checks for {plan.machine_id} failed: the app appears to be crashing",
            f"Check its logs: here's the last lines below, or run 'fly logs -i {plan.machine_id}':",
        ] + [f"  {message}" for message in messages]
        return CliError(problem, suggestion="\n".join(suggestion_lines))


def _turn_unhealthy(invocation: Invocation, machine_id: str | None) -> None:
    """Turn one machine's checks critical after a successful rollout, or stop it if it has none."""
    if machine_id is None:
        return
    with invocation.transaction() as state:
        app = state["apps"][invocation.app_name]
        machine = model.find_machine(app, machine_id)
        if machine["checks"]:
            model.set_checks(state, machine, status="critical", output="HTTP GET /healthz: 503 Service Unavailable")
        else:
            machine["state"] = "stopped"
            model.record_event(state, machine, kind="exit", status="stopped")
        model.append_log(state, app, machine, "health check failed: 503 Service Unavailable", level="error")


def _check_dns(invocation: Invocation, *, warn: bool) -> None:
    """Print the stderr lines of flyctl's post-rollout DNS check, for apps with public IPs."""
    app = invocation.snapshot()["apps"][invocation.app_name]
    if not app["ip"]:
        return
    invocation.err(f"Checking DNS configuration for {invocation.app_name}.fly.dev")
    if warn:
        invocation.err(f"WARNING: DNS verification failed: no A or AAAA records found for {invocation.app_name}.fly.dev")
        invocation.err("Your app is deployed but DNS may take a few minutes to propagate globally")
    else:
        invocation.err("✓ DNS configuration verified")
