"""Prometheus series of one bot instance, and the `GET /metrics` route that serves them.

Each `BotMetrics` has its own registry rather than prometheus_client's global one, so
several bots in one process (as in tests) keep separate counts.

Labels hold only fixed words (runbook and step kinds, outcomes, flyctl subcommands, Slack
method names and error codes) and the names of the configured Fly apps. They never hold
a secret name or value, so a scrape shows nothing about what a run changed.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from bot.inventory.schedule import SecretStatus

logger = logging.getLogger(__name__)

# Seconds. A step can take milliseconds (recording) or a day (an approval that waits for
# a person, up to slack.approval_timeout), so the buckets span both.
STEP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
# Seconds. Reads take seconds at most, but `secrets import` waits for the rolling restart,
# up to fly.deploy_timeout (900 s by default).
FLYCTL_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)

# The outcome of a run stopped on purpose, which is also its stored status.
CANCELLED = "cancelled"

# Why a flyctl call failed, as the `reason` label names it.
FLYCTL_EXIT = "exit_code"
FLYCTL_TIMEOUT = "timeout"
FLYCTL_NOT_STARTED = "not_started"
FLYCTL_CANCELLED = "cancelled"


class BotMetrics:
    """The counters, histograms and gauges of one bot, in a registry of its own."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process:
            # Memory, CPU time and open files of this process, read from /proc at each scrape.
            ProcessCollector(registry=self.registry)
        self.runs_started = Counter(
            "secretbot_runs_started", "Runbook runs created, by runbook kind.",
            ["runbook"], registry=self.registry)
        self.runs_finished = Counter(
            "secretbot_runs_finished",
            "Runbook runs that ended, by runbook kind and outcome (succeeded, failed, denied, expired, cancelled).",
            ["runbook", "outcome"], registry=self.registry)
        self.step_duration = Histogram(
            "secretbot_step_duration_seconds",
            "Time from a step's start to its end, waiting for people included, by step kind.",
            ["step"], buckets=STEP_BUCKETS, registry=self.registry)
        self.flyctl_duration = Histogram(
            "secretbot_flyctl_duration_seconds", "Duration of flyctl commands, by subcommand and app.",
            ["command", "app"], buckets=FLYCTL_BUCKETS, registry=self.registry)
        self.flyctl_failures = Counter(
            "secretbot_flyctl_failures",
            "flyctl commands that failed, by subcommand, app and reason (exit_code, timeout, not_started, cancelled).",
            ["command", "app", "reason"], registry=self.registry)
        self.overdue_secrets = Gauge(
            "secretbot_overdue_secrets",
            "Secrets past their rotation due date, by app; snoozed ones and those being rotated are not counted.",
            ["app"], registry=self.registry)
        self.reminder_posts = Counter(
            "secretbot_reminder_posts", "Daily reminder attempts, by outcome (posted, empty, failed).",
            ["outcome"], registry=self.registry)
        self.slack_api_errors = Counter(
            "secretbot_slack_api_errors",
            "Failed Slack Web API responses, by method and Slack's error code; HTTP 429 counts as ratelimited.",
            ["method", "error"], registry=self.registry)

    def declare_runbooks(self, kinds: Iterable[str], outcomes: Iterable[str]) -> None:
        """Create the run series at zero, so a rate over them works before the first run."""
        outcomes = tuple(outcomes)
        for kind in kinds:
            self.runs_started.labels(runbook=kind)
            for outcome in outcomes:
                self.runs_finished.labels(runbook=kind, outcome=outcome)

    def run_started(self, kind: str) -> None:
        self.runs_started.labels(runbook=kind).inc()

    def run_finished(self, kind: str, outcome: str) -> None:
        self.runs_finished.labels(runbook=kind, outcome=outcome).inc()

    def step_finished(self, step_kind: str, seconds: float) -> None:
        self.step_duration.labels(step=step_kind).observe(max(0.0, seconds))

    def flyctl_finished(self, *, command: str, app: str, seconds: float, failure: str | None = None) -> None:
        """Record one flyctl command. `failure` is one of the FLYCTL_* reasons, or None for exit code 0."""
        self.flyctl_duration.labels(command=command, app=app).observe(seconds)
        if failure is not None:
            self.flyctl_failures.labels(command=command, app=app, reason=failure).inc()

    def reminder_outcome(self, outcome: str) -> None:
        self.reminder_posts.labels(outcome=outcome).inc()

    def slack_api_error(self, method: str, error: str) -> None:
        self.slack_api_errors.labels(method=method, error=error).inc()

    def set_overdue(self, statuses: Iterable[SecretStatus], *, apps: Iterable[str]) -> None:
        """Replace the overdue gauge with counts from `statuses`, and give every app in `apps` a value, 0 included."""
        # Imported here: bot.flyctl imports this module, and bot.inventory imports bot.flyctl.
        from bot.inventory.schedule import State

        counts = Tally(status.app for status in statuses if status.state is State.OVERDUE)
        self.overdue_secrets.clear()
        for app in apps:
            self.overdue_secrets.labels(app=app).set(0)
        for app, count in counts.items():
            self.overdue_secrets.labels(app=app).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_route(
    metrics: BotMetrics, *, read_statuses: Callable[[], Awaitable[list[SecretStatus]]], apps: Iterable[str]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Return the handler of `GET /metrics`, which recounts overdue secrets from the inventory at each scrape.

    Due dates move with the clock, not only with syncs, so the gauge is computed when
    scraped. When the database cannot be read, the last counts are served and a warning
    is logged.
    """
    apps = tuple(apps)

    async def handle(_request: web.Request) -> web.Response:
        try:
            metrics.set_overdue(await read_statuses(), apps=apps)
        except Exception as exc:  # noqa: BLE001 - the other series are still worth serving
            logger.warning("reading the inventory for /metrics failed, so the overdue gauge keeps its last "
                           "counts error=%s", type(exc).__name__)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle
