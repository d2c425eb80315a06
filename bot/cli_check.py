"""`secretbot check`: the pre-flight checks as a table, and an exit status for scripts.

On a terminal the results are a rich table. Otherwise each check is one line that starts
with its status, padded to a fixed width, then `ITEM: DETAIL`; a failure or a warning
adds an indented `fix:` line. The last line counts the results. Scripts can rely on that
layout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.logs import configure_logging
from bot.preflight import CheckResult, Status, run_checks

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
STATUS_WIDTH = max(len(status.value) for status in Status)
STATUS_STYLES = {Status.OK: "green", Status.WARNING: "bold yellow", Status.FAILED: "bold red",
                 Status.SKIPPED: "yellow"}
# Logged failures would repeat the rows, so the command logs nothing unless LOG_LEVEL is set.
QUIET_LEVEL = "CRITICAL"


def summary(results: Sequence[CheckResult]) -> str:
    """Count the results by status, e.g. "6 ok, 1 failed, 1 skipped".

    Warnings are counted only when there are some ("5 ok, 1 warning, 1 failed, 1 skipped"),
    so the line of a run without them keeps the layout it had before warnings existed.
    """
    counts = Counter(result.status for result in results)
    counted = [status for status in Status if status is not Status.WARNING or counts[status]]
    return ", ".join(f"{counts[status]} {status.value}" for status in counted)


def render_plain(results: Sequence[CheckResult]) -> list[str]:
    """Render one line per check for logs and scripts; a failure or warning is followed by its `fix:` line."""
    lines = []
    for result in results:
        lines.append(f"{result.status.value:<{STATUS_WIDTH}}  {result.item}: {result.detail}")
        if result.fix:
            lines.append(f"{'':<{STATUS_WIDTH}}  fix: {result.fix}")
    lines.append(summary(results))
    return lines


def render_table(results: Sequence[CheckResult], console: Console) -> None:
    table = Table(show_lines=False)
    table.add_column("Check", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Detail")
    for result in results:
        # Text objects, not markup strings: details contain brackets such as "[fly] apps".
        detail = Text(result.detail)
        if result.fix:
            detail.append("\nfix: " + result.fix, style="dim")
        table.add_row(Text(result.item), Text(result.status.value, style=STATUS_STYLES[result.status]), detail)
    console.print(table)
    console.print(Text(summary(results)))


def exit_code(results: Sequence[CheckResult]) -> int:
    """Return 0 when every check passed, with or without a warning, else 1."""
    return 0 if all(result.status in (Status.OK, Status.WARNING) for result in results) else 1


@click.command("check")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="Time limit in seconds for each check that waits on the network "
                                      "(database, flyctl, Slack, each app).")
def check(timeout: float) -> None:
    """Check that `secretbot serve` has what it needs, and print what to fix.

    Checks the environment, secretbot.toml, the database and its schema, flyctl, the Slack
    token (auth.test), each configured app through flyctl (read-only) and the backup key.
    Exits 0 when every check passes, warnings included, and 1 when any fails or is skipped. It changes nothing: the database
    is neither created nor migrated.
    """
    # Imported here because bot.server loads the whole Slack app, which only the Slack check needs.
    from bot.server import slack_auth_test

    level = os.environ.get("LOG_LEVEL", "").upper()
    configure_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else QUIET_LEVEL)

    results = asyncio.run(run_checks(os.environ, timeout=timeout, slack_auth_test=slack_auth_test()))
    if sys.stdout.isatty():
        render_table(results, Console())
    else:
        for line in render_plain(results):
            click.echo(line)
    sys.exit(exit_code(results))
