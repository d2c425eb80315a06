"""`GET /metrics` of the real `secretbot serve` process after rotations, syncs and Slack failures."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.inventory import SecretStatus, State
from bot.metrics import BotMetrics
from runbooks.rotate import ROTATE
from tests.botprocess import BOT_TOKEN, DEFAULT_CONFIG, FLY_TOKEN, SIGNING_SECRET, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import CHANNEL, bot_messages, is_reminder, query, wait_for_buttons, wait_for_parent, wait_for_status
from tests.inventory_flow import day, next_ephemeral, overdue_status, wait_for_inventory
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

STAGING = "hotel-staging"
# The fly fixture puts four secrets on APP and one on hotel-staging.
SYNCED_ROWS = 5
OLD_VALUES = ("old-jwt-secret-value", "00" * 32, "old-webhook-token", "sk-old-openai-key", "staging-jwt-secret")
SECRET_NAMES = ("JWT_SECRET", "ENCRYPTION_KEY", "WAHA_WEBHOOK_TOKEN", "OPENAI_API_KEY")
# A reminder at midnight UTC is due whenever the bot starts, and all_clear makes it post
# even with nothing due, so every start posts one.
REMINDER_CONFIG = DEFAULT_CONFIG + '\n[reminders]\ntime = "00:00"\nall_clear = true\n'

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bot: BotProcess) -> tuple[str, Samples]:
    """Return the text of GET /metrics and its samples keyed by name and labels."""
    async with aiohttp.ClientSession(trust_env=False) as session, session.get(f"{bot.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
async def reminding_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path) -> AsyncIterator[BotProcess]:
    """The bot process with a reminder that posts as soon as it starts."""
    process = BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper, config=REMINDER_CONFIG)
    await process.start()
    try:
        yield process
    finally:
        await process.stop_async()


async def test_rotation_shows_in_metrics(
    reminding_bot: BotProcess, slack: SlackStandin, fly: FlyState, flyctl_log: Path
) -> None:
    bot = reminding_bot
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=slack)
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    await slack.wait_for(lambda: any(is_reminder(message) for message in bot_messages(slack)),
                         description="start-up reminder posted")

    _, before = await scrape(bot)
    assert value(before, "secretbot_overdue_secrets", app=APP) == 0
    assert value(before, "secretbot_overdue_secrets", app=STAGING) == 0
    assert value(before, "secretbot_runs_started_total", runbook="rotate") == 0
    assert value(before, "secretbot_runs_finished_total", runbook="rotate", outcome="succeeded") == 0

    # Two secrets on APP become overdue: ENCRYPTION_KEY is high priority (30 days) and
    # WAHA_WEBHOOK_TOKEN low priority (180 days). hotel-staging keeps none.
    await driver.slash_command(f"rotated ENCRYPTION_KEY {day(45)}", user_id=APPROVER, channel_id=CHANNEL)
    await next_ephemeral(slack, APPROVER, after=0)
    await driver.slash_command(f"rotated WAHA_WEBHOOK_TOKEN {day(200)}", user_id=APPROVER, channel_id=CHANNEL)
    await next_ephemeral(slack, APPROVER, after=1)
    fly.inject(STAGING, "secrets list", "exit1_before_store")
    await driver.slash_command(f"sync --app {STAGING}", user_id=APPROVER, channel_id=CHANNEL)
    await next_ephemeral(slack, APPROVER, after=2)

    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    await wait_for_status(slack, parent, "done", timeout=60)

    text, samples = await scrape(bot)

    # Runs.
    assert value(samples, "secretbot_runs_started_total", runbook="rotate") == 1
    assert value(samples, "secretbot_runs_finished_total", runbook="rotate", outcome="succeeded") == 1
    assert value(samples, "secretbot_runs_finished_total", runbook="rotate", outcome="failed") == 0
    assert value(samples, "secretbot_runs_started_total", runbook="compromised") == 0

    # One duration per step of the runbook, the skipped external update included.
    for step in ROTATE.steps:
        assert value(samples, "secretbot_step_duration_seconds_count", step=step.kind) == 1, step.kind
        duration = value(samples, "secretbot_step_duration_seconds_sum", step=step.kind)
        assert duration is not None and duration >= 0, step.kind
    # The approval step lasted from its request to the click.
    assert (value(samples, "secretbot_step_duration_seconds_sum", step="approval") or 0) > 0

    # flyctl: one duration per invocation the stand-in logged, by command and app.
    invocations = fly.invocations(flyctl_log)
    for command in ("secrets list", "secrets import", "status", "releases"):
        for app in (APP, STAGING):
            logged = [call for call in invocations if " ".join(call["argv"][:len(command.split())]) == command
                      and app in call["argv"]]
            counted = value(samples, "secretbot_flyctl_duration_seconds_count", command=command, app=app) or 0
            assert counted == len(logged), f"{command} {app}"
    assert value(samples, "secretbot_flyctl_duration_seconds_count", command="secrets import", app=APP) == 1
    staging_failures = [call for call in invocations if call["argv"][:2] == ["secrets", "list"]
                        and STAGING in call["argv"] and call["exit_code"] != 0]
    assert len(staging_failures) == 1
    assert value(samples, "secretbot_flyctl_failures_total", command="secrets list", app=STAGING,
                 reason="exit_code") == 1
    assert value(samples, "secretbot_flyctl_failures_total", command="secrets import", app=APP,
                 reason="exit_code") is None

    # The overdue gauge, counted from the inventory when scraped.
    assert value(samples, "secretbot_overdue_secrets", app=APP) == 2
    assert value(samples, "secretbot_overdue_secrets", app=STAGING) == 0

    # The start-up reminder.
    assert value(samples, "secretbot_reminder_posts_total", outcome="posted") == 1

    # No value, credential or secret name in the scrape.
    new_value = fly.secret_value(APP, "JWT_SECRET")
    assert new_value is not None
    for forbidden in (new_value, *OLD_VALUES, BOT_TOKEN, FLY_TOKEN, SIGNING_SECRET, "fm2_", *SECRET_NAMES):
        assert forbidden not in text, forbidden


async def test_slack_errors_counted_by_code(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    # The run's parent message is rate limited once, which slack_sdk retries after
    # Retry-After, and then rejected, which stops the run before any change.
    slack.rate_limit_next("chat.postMessage", retry_after=1)
    slack.fail_next("chat.postMessage", error="channel_not_found")

    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)

    async def run_failed() -> bool:
        _, samples = await scrape(bot)
        return value(samples, "secretbot_runs_finished_total", runbook="rotate", outcome="failed") == 1

    await slack.wait_for(run_failed, timeout=30, interval=0.2, description="run counted as failed")
    _, samples = await scrape(bot)
    assert value(samples, "secretbot_slack_api_errors_total", method="chat.postMessage", error="ratelimited") == 1
    assert value(samples, "secretbot_slack_api_errors_total", method="chat.postMessage",
                 error="channel_not_found") == 1
    assert value(samples, "secretbot_runs_started_total", runbook="rotate") == 1
    assert value(samples, "secretbot_runs_finished_total", runbook="rotate", outcome="succeeded") == 0
    # Every rate-limited Slack call is logged as a retry.
    assert "Slack API rate limited method=chat.postMessage retry_after=1" in bot.log()


async def test_cancelled_run_counted_apart(bot: BotProcess, driver: SlackDriver, slack: SlackStandin) -> None:
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    run_id = query(bot.database, "SELECT id FROM runs")[0]["id"]

    await driver.slash_command(f"cancel {run_id} wrong secret", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_status(slack, parent, "cancelled", timeout=30)

    _, samples = await scrape(bot)
    assert value(samples, "secretbot_runs_finished_total", runbook="rotate", outcome="cancelled") == 1
    assert value(samples, "secretbot_runs_finished_total", runbook="rotate", outcome="failed") == 0
    assert value(samples, "secretbot_step_duration_seconds_count", step="approval") == 1
    assert value(samples, "secretbot_step_duration_seconds_count", step="fly_update") is None


def test_overdue_gauge_counts_overdue_state_only() -> None:
    metrics = BotMetrics(process=False)
    overdue = overdue_status(APP, "JWT_SECRET")
    statuses: list[SecretStatus] = [
        overdue,
        overdue_status(APP, "ENCRYPTION_KEY"),
        # Snoozed and running secrets are past due too, but someone already handles them.
        _with_state(overdue, "OPENAI_API_KEY", State.SNOOZED),
        _with_state(overdue, "WAHA_TOKEN", State.RUNNING),
        overdue_status("other-app", "JWT_SECRET"),
    ]

    metrics.set_overdue(statuses, apps=[APP, STAGING])
    samples = _samples(metrics)

    assert value(samples, "secretbot_overdue_secrets", app=APP) == 2
    assert value(samples, "secretbot_overdue_secrets", app=STAGING) == 0
    assert value(samples, "secretbot_overdue_secrets", app="other-app") == 1

    metrics.set_overdue([], apps=[APP])
    samples = _samples(metrics)
    assert value(samples, "secretbot_overdue_secrets", app=APP) == 0
    # An app neither configured nor overdue any more leaves the gauge.
    assert value(samples, "secretbot_overdue_secrets", app="other-app") is None


def test_metrics_instances_keep_separate_counts() -> None:
    first = BotMetrics(process=False)
    second = BotMetrics(process=False)

    first.run_started("rotate")
    first.flyctl_finished(command="status", app=APP, seconds=0.5, failure="timeout")

    assert value(_samples(first), "secretbot_runs_started_total", runbook="rotate") == 1
    assert value(_samples(second), "secretbot_runs_started_total", runbook="rotate") is None
    assert value(_samples(first), "secretbot_flyctl_failures_total", command="status", app=APP,
                 reason="timeout") == 1


def test_fly_toml_scrapes_metrics() -> None:
    fly = tomllib.loads((Path(__file__).resolve().parent.parent / "fly.toml").read_text())

    assert fly["metrics"]["path"] == "/metrics"
    assert fly["metrics"]["port"] == fly["http_service"]["internal_port"]


def _with_state(status: SecretStatus, name: str, state: State) -> SecretStatus:
    return replace(status, name=name, state=state)


def _samples(metrics: BotMetrics) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples
