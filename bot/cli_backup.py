"""`secretbot backup`: list, show and export the encrypted backups on an operator's machine.

Values reach only this terminal, after a confirmation, and every show and export is
written to the audit log with the local user name as the actor.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import audit
from bot.backups import BackupRecord, BackupStore, from_entry, open_ciphertext
from bot.errors import CommandError, ConfigError, SecretbotError, StorageError
from bot.policy import APP_NAME_PATTERN, SECRET_NAME_PATTERN
from bot.sealing import Sealer
from bot.settings import Settings, load_settings
from bot.storage.db import connect_existing, create_session_factory
from bot.storage.models import utcnow

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "secretbot-backup-bundle/1"

T = TypeVar("T")


def _local_actor() -> str:
    return f"local:{getpass.getuser()}"


def _check_target(app: str, name: str | None) -> None:
    if not APP_NAME_PATTERN.match(app):
        raise CommandError(f"{app!r} is not a Fly app name; use lowercase letters, digits and dashes")
    if name is not None and not SECRET_NAME_PATTERN.match(name):
        raise CommandError(f"{name!r} is not a secret name; use letters, digits and underscores")


def _sealer(settings: Settings) -> Sealer:
    if not settings.backup_key:
        raise ConfigError(
            "SECRETBOT_BACKUP_KEY is not set in this shell; set it to the key the bot runs with "
            "(backups are encrypted with it and nothing else opens them)"
        )
    return Sealer.from_setting(settings.backup_key)


@asynccontextmanager
async def _open_store(
    settings: Settings, sealer: Sealer | None
) -> AsyncIterator[tuple[BackupStore, async_sessionmaker[AsyncSession]]]:
    async with connect_existing(settings.database_url) as engine:
        sessions = create_session_factory(engine)
        yield BackupStore(sessions=sessions, sealer=sealer), sessions


def _run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one command's work, printing `secretbot: <message>` and exiting 2 on a SecretbotError."""
    from bot.cli import configure_logging  # bot.cli imports this module to add the group

    try:
        settings = load_settings()
        configure_logging("WARNING")
        return asyncio.run(work(settings))
    except SecretbotError as exc:
        click.echo(f"secretbot: {exc}", err=True)
        sys.exit(2)


@click.group()
def backup() -> None:
    """Encrypted backups of the values secretbot set on Fly, one version per change.

    They are the only way back to a lost value, because Fly never shows one again. Reading
    them needs DATABASE_URL and, for values, SECRETBOT_BACKUP_KEY as the bot has them.
    """


@backup.command("list")
@click.argument("app")
@click.argument("name", required=False)
def list_backups(app: str, name: str | None) -> None:
    """List the backed-up versions of NAME on APP (every secret if NAME is omitted), never values."""

    async def work(settings: Settings) -> list[BackupRecord]:
        _check_target(app, name)
        async with _open_store(settings, None) as (store, _sessions):
            return await store.versions(app, name)

    records = _run(work)
    if not records:
        click.echo(f"no backups for {name + ' on ' if name else ''}{app}")
        return
    for line in _table(records):
        click.echo(line)


def _table(records: list[BackupRecord]) -> list[str]:
    header = ("NAME", "VERSION", "SAVED (UTC)", "BY", "RUN", "FLY DIGEST", "S3", "KEY")
    rows = [
        (
            record.name,
            str(record.version),
            record.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            record.created_by,
            record.run_id or "-",
            record.fly_digest or "not deployed",
            "yes" if record.s3_key else "no",
            record.key_id,
        )
        for record in records
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (header, *rows)]


@backup.command("show")
@click.argument("app")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), help="Version to show; the latest if omitted.")
@click.option("--yes", is_flag=True, help="Print without asking for confirmation.")
@click.option("--no-newline", "-n", is_flag=True, help="Print the value without a newline after it, for a pipe.")
def show_backup(app: str, name: str, version: int | None, yes: bool, no_newline: bool) -> None:
    """Print one backed-up value of NAME on APP to standard output, after confirming.

    The question goes to standard error, so standard output carries the value alone. The
    access is written to the audit log as backup.shown before the value is printed.
    """

    async def work(settings: Settings) -> str:
        _check_target(app, name)
        sealer = _sealer(settings)
        async with _open_store(settings, sealer) as (store, sessions):
            record = await store.get(app, name, version)
            if not yes:
                click.confirm(
                    f"Print the value of {name} on {app}, version {record.version} (saved "
                    f"{record.created_at:%Y-%m-%d %H:%M} UTC by {record.created_by})?",
                    abort=True,
                    err=True,
                )
            value = await store.value(app, name, record.version)
            await audit.append(
                sessions,
                audit.AuditEntry(
                    event="backup.shown",
                    actor=_local_actor(),
                    app=app,
                    secret=name,
                    detail={"version": record.version, "where": "terminal", "backup_run_id": record.run_id},
                ),
            )
            return value

    click.echo(_run(work), nl=not no_newline)


@backup.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--app", help="Export only this app's backups.")
def export_backups(file: Path, app: str | None) -> None:
    """Write every backup to FILE as JSON holding only ciphertext, readable by this user only.

    FILE must not exist. The bundle is useless without SECRETBOT_BACKUP_KEY, so keep the key
    somewhere else. The export is written to the audit log as backup.exported.
    """

    async def work(settings: Settings) -> int:
        if app is not None:
            _check_target(app, None)
        async with _open_store(settings, None) as (store, sessions):
            entries = await store.entries(app)
            bundle = {
                "format": BUNDLE_FORMAT,
                "exported_at": utcnow().isoformat(),
                "exported_by": _local_actor(),
                "backups": entries,
            }
            _write_private(file, json.dumps(bundle, indent=2, sort_keys=True) + "\n")
            try:
                await audit.append(
                    sessions,
                    audit.AuditEntry(
                        event="backup.exported",
                        actor=_local_actor(),
                        app=app,
                        detail={"count": len(entries), "file": str(file.resolve())},
                    ),
                )
            except StorageError:
                # An export that the audit log does not show must not exist.
                file.unlink(missing_ok=True)
                raise
            return len(entries)

    count = _run(work)
    click.echo(f"wrote {count} backup version{'s' if count != 1 else ''} to {file}")


def _write_private(path: Path, text: str) -> None:
    # O_EXCL: never overwrite, and never follow a link planted at the path. Mode 0600 is
    # set at creation, so the file is never readable by others, even for a moment.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CommandError(f"{path} already exists; choose a new file name or remove it first") from exc
    except OSError as exc:
        raise CommandError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(text)


@backup.command("open")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("app")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), help="Version to show; the latest in FILE if omitted.")
@click.option("--yes", is_flag=True, help="Print without asking for confirmation.")
@click.option("--no-newline", "-n", is_flag=True, help="Print the value without a newline after it, for a pipe.")
def open_backup(file: Path, app: str, name: str, version: int | None, yes: bool, no_newline: bool) -> None:
    """Print a value of NAME on APP from FILE: an export bundle or an object copied from the S3 bucket.

    For when the bot's database is lost. The access is still written to the audit log of
    the database in DATABASE_URL, so that database must be reachable and migrated.
    """

    async def work(settings: Settings) -> str:
        _check_target(app, name)
        sealer = _sealer(settings)
        record, ciphertext = _pick_entry(file, app, name, version)
        async with _open_store(settings, sealer) as (_store, sessions):
            if not yes:
                click.confirm(
                    f"Print the value of {name} on {app}, version {record.version}, from {file}?",
                    abort=True,
                    err=True,
                )
            value = open_ciphertext(sealer, record, ciphertext)
            await audit.append(
                sessions,
                audit.AuditEntry(
                    event="backup.shown",
                    actor=_local_actor(),
                    app=app,
                    secret=name,
                    detail={"version": record.version, "where": "terminal", "source": str(file.resolve())},
                ),
            )
            return value

    click.echo(_run(work), nl=not no_newline)


def _pick_entry(file: Path, app: str, name: str, version: int | None) -> tuple[BackupRecord, bytes]:
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"{file} is not a readable JSON file: {exc}") from exc
    raw_entries = document.get("backups") if isinstance(document, dict) and "backups" in document else [document]
    if not isinstance(raw_entries, list):
        raise CommandError(f"{file}: \"backups\" is not a list")

    matches = []
    for raw in raw_entries:
        record, ciphertext = from_entry(raw)
        if record.app == app and record.name == name and (version is None or record.version == version):
            matches.append((record, ciphertext))
    if not matches:
        version_text = "any version" if version is None else f"version {version}"
        raise CommandError(f"{file} contains no backup of {name} ({version_text}) for {app}")
    return max(matches, key=lambda match: match[0].version)
