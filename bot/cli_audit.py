"""`secretbot audit verify` and `secretbot audit export`: the audit log from the command line.

`export` only reads the database. It writes every record in id order with its hash
fields, so a reader can check the chain without secretbot. Each `hash` is the SHA-256 of
the previous record's hash followed by the record's fields as sorted, compact JSON (see
`bot.audit.record_hash`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import CommandError, SecretbotError
from bot.logs import configure_logging
from bot.settings import Settings, load_settings
from bot.storage.db import connect_existing, create_session_factory
from bot.storage.models import AuditRecord

logger = logging.getLogger(__name__)

EXPORT_COLUMNS = ("id", "at", "event", "actor", "run_id", "app", "secret", "detail", "prev_hash", "hash")
EXPORT_FORMATS = ("jsonl", "csv")
# Rows fetched from the database per round trip; memory stays at about one batch.
EXPORT_BATCH_SIZE = 1000
# Mode of an export file: readable by its owner only, because records name people, apps and secrets.
EXPORT_FILE_MODE = 0o600


@click.group()
def audit() -> None:
    """Inspect the append-only audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 at the first record that does not match."""
    from bot.audit import verify_chain

    async def run() -> tuple[int, int | None]:
        # connect_existing rather than create_engine: a mistyped SQLite path must not
        # leave an empty database file behind and report an empty chain.
        async with connect_existing(settings.database_url) as engine:
            return await verify_chain(create_session_factory(engine))

    try:
        settings = load_settings()
        configure_logging("WARNING")
        checked, bad = asyncio.run(run())
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
    if bad is not None:
        click.echo(f"audit log broken at record {bad}: its hash does not follow from the {checked} records before it",
                   err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {checked} records")


class SinceType(click.ParamType[datetime]):
    """A date (YYYY-MM-DD, midnight UTC) or an ISO 8601 timestamp (UTC when it has no offset)."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            # Python 3.11 parses both forms here, and reads "Z" as UTC.
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp "
                      "(such as 2025-03-01T12:00:00Z)", param, ctx)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            # 9999-12-31T23:59:59-12:00 is past the last datetime once moved to UTC.
            self.fail(f"{value!r} is out of range once converted to UTC; use a date before 9999-12-31", param, ctx)


@audit.command("export")
@click.option("--since", type=SinceType(), default=None,
              help="Export only records written at or after this date (YYYY-MM-DD, midnight UTC) or "
                   "ISO 8601 timestamp (UTC unless it has an offset). Default: every record.")
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), default="jsonl", show_default=True,
              help="jsonl: one JSON object per line. csv: a header row, then one row per record, with the "
                   "detail column as JSON text and empty cells for missing values.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path, allow_dash=False), default=None,
              metavar="FILE", callback=lambda _context, _parameter, value: _nonempty_path(value),
              help="Write to FILE, created with mode 0600; an existing file is never overwritten. "
                   "Default: standard output.")
def audit_export(since: datetime | None, export_format: str, output: Path | None) -> None:
    """Write every audit record in id order, with its hash fields, as JSON lines or CSV.

    Reads DATABASE_URL as the bot does and never changes the database. Rows are read and
    written in batches, so a large log does not have to fit in memory.
    """

    async def run(settings: Settings, out: TextIO) -> int:
        async with connect_existing(settings.database_url) as engine:
            return await write_export(create_session_factory(engine), out, export_format=export_format, since=since)

    try:
        settings = load_settings()
        configure_logging("WARNING")
        with _open_output(output) as out:
            count = asyncio.run(run(settings, out))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        # The reader stopped early (`| head`). Point stdout at /dev/null so the flush at exit does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    where = f" to {output}" if output is not None else ""
    click.echo(f"exported {count} audit record{'s' if count != 1 else ''}{where}", err=True)


def _nonempty_path(value: Path | None) -> Path | None:
    # click turns "" into Path("."), which would be reported as "already exists".
    if value is not None and str(value) in ("", "."):
        raise click.BadParameter("FILE is empty; name the file to write, or leave out --output for standard output")
    return value


@contextmanager
def _open_output(output: Path | None) -> Iterator[TextIO]:
    """Open FILE for writing (never over an existing one), or wrap standard output; newlines pass unchanged."""
    if output is None:
        # csv writes its own "\r\n" line ends, so the stream must not translate newlines.
        stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            yield stdout
            stdout.flush()
        finally:
            # Detach so that closing the wrapper later does not close the process's stdout.
            stdout.detach()
        return

    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, EXPORT_FILE_MODE)
    except FileExistsError:
        raise CommandError(f"{output} already exists; choose another --output file or remove it first") from None
    except OSError as exc:
        raise CommandError(f"cannot create {output}: {exc.strerror}; check that its folder exists "
                           "and is writable") from None
    completed = False
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as stream:
            yield stream
        completed = True
    finally:
        if not completed:
            # A partial file could later be mistaken for a complete export.
            output.unlink(missing_ok=True)


async def write_export(
    sessions: async_sessionmaker[AsyncSession], out: TextIO, *, export_format: str, since: datetime | None
) -> int:
    """Write the records at or after `since` (every record if None) to `out`; return how many."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_format {export_format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    columns = [getattr(AuditRecord, name) for name in EXPORT_COLUMNS]
    statement = select(*columns).order_by(AuditRecord.id)
    if since is not None:
        statement = statement.where(AuditRecord.at >= since)

    csv_writer = csv.writer(out) if export_format == "csv" else None
    if csv_writer is not None:
        csv_writer.writerow(EXPORT_COLUMNS)
    count = 0
    async with sessions() as session:
        # A server-side cursor on PostgreSQL, chunked fetches on SQLite: only one batch is held at a time.
        result = await session.stream(statement.execution_options(yield_per=EXPORT_BATCH_SIZE))
        async for row in result:
            fields = dict(zip(EXPORT_COLUMNS, row, strict=True))
            fields["at"] = fields["at"].isoformat()
            if csv_writer is not None:
                csv_writer.writerow(["" if value is None else value for value in fields.values()])
            else:
                fields["detail"] = _detail_value(fields["id"], fields["detail"])
                # ASCII escapes keep U+2028 and other line separators from splitting a line for readers.
                out.write(json.dumps(fields) + "\n")
            count += 1
    return count


def _detail_value(record_id: int, text: str) -> Any:
    """Parse a record's detail for JSON lines; text that is not JSON is exported as it is stored."""
    try:
        return json.loads(text)
    except ValueError:
        # Only a changed row can hold this; `audit verify` names it, and the export keeps it visible.
        logger.warning("audit record detail is not JSON; exported as text record_id=%d", record_id)
        return text
