"""The SQLite files that the bot creates are readable by their owner only, whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.settings import normalize_database_url
from bot.storage.db import create_engine, create_session_factory, migrate
from bot.storage.seen import SeenRequests


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """Use the common umask 022, under which SQLite on its own creates files with mode 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_database_files_private(tmp_path: Path) -> None:
    database = tmp_path / "secretbot.db"
    engine = create_engine(normalize_database_url(f"sqlite:///{database}"))
    try:
        await migrate(engine)
        ledger = SeenRequests(create_session_factory(engine))
        assert await ledger.first_time("signature:one")
        # Checked while the connections are open, because SQLite deletes -wal and -shm at the last close.
        files = [database, *(tmp_path / f"secretbot.db{suffix}" for suffix in ("-wal", "-shm", ".migrate-lock")),
                 tmp_path / "secretbot.seen-requests.db",
                 *(tmp_path / f"secretbot.seen-requests.db{suffix}" for suffix in ("-wal", "-shm"))]
        modes = {path.name: mode(path) for path in files}
    finally:
        await engine.dispose()

    assert modes == {path.name: 0o600 for path in files}


async def test_shared_existing_file_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "secretbot.db"
    database.touch(mode=0o644)
    database.chmod(0o644)
    engine = create_engine(normalize_database_url(f"sqlite:///{database}"))
    try:
        with caplog.at_level(logging.WARNING, logger="bot.storage.db"):
            await migrate(engine)
    finally:
        await engine.dispose()

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(f"SQLite file {database} is readable or writable by other users (mode 644)" in message for message in warnings)
    assert any(f"run `chmod 600 {database}`" in message for message in warnings)
    # The owner chose the mode, so the bot reports it rather than changing it.
    assert mode(database) == 0o644


async def test_private_existing_file_not_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "secretbot.db"
    database.touch(mode=0o600)
    engine = create_engine(normalize_database_url(f"sqlite:///{database}"))
    try:
        with caplog.at_level(logging.WARNING, logger="bot.storage.db"):
            await migrate(engine)
    finally:
        await engine.dispose()

    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert mode(database) == 0o600


async def test_shared_ledger_file_warned_as_ledger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "secretbot.db"
    ledger_file = tmp_path / "secretbot.seen-requests.db"
    ledger_file.touch(mode=0o644)
    ledger_file.chmod(0o644)
    engine = create_engine(normalize_database_url(f"sqlite:///{database}"))
    try:
        await migrate(engine)
        with caplog.at_level(logging.WARNING, logger="bot.storage.db"):
            assert await SeenRequests(create_session_factory(engine)).first_time("signature:one")
    finally:
        await engine.dispose()

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"SQLite file {ledger_file} is readable or writable by other users (mode 644)" in warnings[0]
    assert "the signatures of recent Slack requests" in warnings[0]
    assert "audit records" not in warnings[0]
