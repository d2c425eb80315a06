"""The backup store on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import audit
from bot.backups import BackupError, BackupNotFound, BackupsDisabled, BackupStore
from bot.errors import SecretbotError
from bot.sealing import Sealer
from bot.settings import normalize_database_url
from bot.storage.db import _alembic_config, create_engine, create_session_factory, migrate

APP = "hotel-voice-bot"
OTHER_APP = "hotel-staging"
NAME = "JWT_SECRET"
RUN_ID = "a1b2c3d4e5f6"
APPROVER = "U0BBB"
CONCURRENT_SAVES = 20

EXACT_VALUES = {
    "unicode": "clé-🔑-секрет-鍵",
    "newlines": "line one\nline two\r\nline three\n",
    "quotes": "it's \"quoted\" `back` \\ slash $HOME",
    "64 KiB": "".join(chr(0x21 + (index % 94)) for index in range(64 * 1024)),
    "empty": "",
}


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.from_setting(new_key())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite+aiosqlite:///" + str(tmp_path / "backups.db")
    # A synchronous fixture, because postgres_url runs its own event loop to create the database.
    return normalize_database_url(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession], sealer: Sealer) -> BackupStore:
    return BackupStore(sessions=sessions, sealer=sealer)


async def save(store: BackupStore, value: str, *, app: str = APP, name: str = NAME) -> int:
    record = await store.save(app=app, name=name, value=value, run_id=RUN_ID, created_by=APPROVER)
    return record.version


async def execute(sessions: async_sessionmaker[AsyncSession], statement: str, **params: object) -> None:
    async with sessions.begin() as session:
        await session.execute(text(statement), params)


# --- round trips and versions --------------------------------------------------------------


@pytest.mark.parametrize("value", EXACT_VALUES.values(), ids=EXACT_VALUES.keys())
async def test_value_round_trips_exactly(store: BackupStore, value: str) -> None:
    version = await save(store, value)
    assert await store.value(APP, NAME, version) == value


async def test_versions_count_up(store: BackupStore) -> None:
    versions = [await save(store, f"value-{index}") for index in range(3)]
    assert versions == [1, 2, 3]


async def test_each_version_keeps_its_value(store: BackupStore) -> None:
    for index in range(3):
        await save(store, f"value-{index}")
    assert await store.value(APP, NAME, 1) == "value-0"
    assert await store.value(APP, NAME, 2) == "value-1"
    assert await store.value(APP, NAME) == "value-2"


async def test_versions_are_per_app_and_secret(store: BackupStore) -> None:
    await save(store, "a")
    await save(store, "b")
    assert await save(store, "c", name="ENCRYPTION_KEY") == 1
    assert await save(store, "d", app=OTHER_APP) == 1


async def test_latest_is_highest_version(store: BackupStore) -> None:
    for index in range(3):
        await save(store, f"value-{index}")
    latest = await store.latest(APP, NAME)
    assert latest is not None
    assert latest.version == 3


async def test_latest_of_unknown_secret_is_none(store: BackupStore) -> None:
    assert await store.latest(APP, NAME) is None


async def test_versions_list_oldest_first(store: BackupStore) -> None:
    for index in range(3):
        await save(store, f"value-{index}")
    await save(store, "other", name="ENCRYPTION_KEY")
    assert [record.version for record in await store.versions(APP, NAME)] == [1, 2, 3]


async def test_record_states_who_when_and_run(store: BackupStore, sealer: Sealer) -> None:
    record = await store.save(app=APP, name=NAME, value="v", run_id=RUN_ID, created_by=APPROVER)
    [listed] = await store.versions(APP, NAME)
    assert listed.run_id == RUN_ID
    assert listed.created_by == APPROVER
    assert listed.created_at == record.created_at
    assert listed.created_at.tzinfo is not None
    assert listed.key_id == sealer.key_id
    assert listed.fly_digest is None


async def test_record_repr_hides_value_and_ciphertext(store: BackupStore) -> None:
    record = await store.save(app=APP, name=NAME, value="repr-marker-value", run_id=RUN_ID, created_by=APPROVER)
    assert "repr-marker-value" not in repr(record)
    assert "ciphertext" not in repr(record)


async def test_saves_without_run_id(store: BackupStore) -> None:
    record = await store.save(app=APP, name=NAME, value="v", run_id=None, created_by="local:root")
    assert record.run_id is None


async def test_save_rejects_path_in_names(store: BackupStore) -> None:
    with pytest.raises(ValueError):
        await store.save(app="../etc", name=NAME, value="v", run_id=RUN_ID, created_by=APPROVER)
    with pytest.raises(ValueError):
        await store.save(app=APP, name="A/B", value="v", run_id=RUN_ID, created_by=APPROVER)


# --- concurrency ---------------------------------------------------------------------------


async def test_concurrent_saves_get_distinct_versions(store: BackupStore) -> None:
    records = await asyncio.gather(
        *(
            store.save(app=APP, name=NAME, value=f"value-{index}", run_id=RUN_ID, created_by=APPROVER)
            for index in range(CONCURRENT_SAVES)
        )
    )
    assert sorted(record.version for record in records) == list(range(1, CONCURRENT_SAVES + 1))


async def test_concurrent_saves_keep_their_values(store: BackupStore) -> None:
    records = await asyncio.gather(
        *(
            store.save(app=APP, name=NAME, value=f"value-{index}", run_id=RUN_ID, created_by=APPROVER)
            for index in range(CONCURRENT_SAVES)
        )
    )
    for index, record in enumerate(records):
        assert await store.value(APP, NAME, record.version) == f"value-{index}"


# --- keys and tampering --------------------------------------------------------------------


async def test_wrong_key_names_both_keys(sessions: async_sessionmaker[AsyncSession], store: BackupStore,
                                         sealer: Sealer) -> None:
    await save(store, "value")
    other = Sealer.from_setting(new_key())
    with pytest.raises(BackupError) as info:
        await BackupStore(sessions=sessions, sealer=other).value(APP, NAME)
    message = str(info.value)
    assert "SECRETBOT_BACKUP_KEY" in message
    assert sealer.key_id in message
    assert other.key_id in message


async def test_wrong_key_with_forged_key_id_fails(sessions: async_sessionmaker[AsyncSession],
                                                  store: BackupStore) -> None:
    await save(store, "value")
    other = Sealer.from_setting(new_key())
    await execute(sessions, "UPDATE backups SET key_id = :key_id", key_id=other.key_id)
    with pytest.raises(BackupError, match="cannot be decrypted"):
        await BackupStore(sessions=sessions, sealer=other).value(APP, NAME)


async def test_ciphertext_moved_to_other_version_fails(sessions: async_sessionmaker[AsyncSession],
                                                       store: BackupStore) -> None:
    await save(store, "first")
    await save(store, "second")
    await execute(
        sessions,
        "UPDATE backups SET ciphertext = (SELECT ciphertext FROM backups WHERE version = 1) WHERE version = 2",
    )
    with pytest.raises(BackupError, match="cannot be decrypted"):
        await store.value(APP, NAME, 2)


async def test_ciphertext_moved_to_other_secret_fails(sessions: async_sessionmaker[AsyncSession],
                                                      store: BackupStore) -> None:
    await save(store, "jwt value")
    await save(store, "key value", name="ENCRYPTION_KEY")
    await execute(
        sessions,
        "UPDATE backups SET ciphertext = (SELECT ciphertext FROM backups WHERE name = 'JWT_SECRET') "
        "WHERE name = 'ENCRYPTION_KEY'",
    )
    with pytest.raises(BackupError, match="cannot be decrypted"):
        await store.value(APP, "ENCRYPTION_KEY", 1)


async def test_ciphertext_moved_to_other_app_fails(sessions: async_sessionmaker[AsyncSession],
                                                   store: BackupStore) -> None:
    await save(store, "production value")
    await save(store, "staging value", app=OTHER_APP)
    await execute(
        sessions,
        "UPDATE backups SET ciphertext = (SELECT ciphertext FROM backups WHERE app = :source) WHERE app = :target",
        source=APP,
        target=OTHER_APP,
    )
    with pytest.raises(BackupError, match="cannot be decrypted"):
        await store.value(OTHER_APP, NAME, 1)


async def test_changed_ciphertext_fails(sessions: async_sessionmaker[AsyncSession], store: BackupStore) -> None:
    await save(store, "value")
    async with sessions() as session:
        ciphertext = bytes((await session.execute(text("SELECT ciphertext FROM backups"))).scalar_one())
    changed = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    await execute(sessions, "UPDATE backups SET ciphertext = :changed", changed=changed)
    with pytest.raises(BackupError, match="cannot be decrypted"):
        await store.value(APP, NAME)


# --- disabled, missing, deployed -----------------------------------------------------------


async def test_store_without_sealer_is_disabled(sessions: async_sessionmaker[AsyncSession]) -> None:
    store = BackupStore(sessions=sessions, sealer=None)
    assert store.enabled is False
    with pytest.raises(BackupsDisabled, match="SECRETBOT_BACKUP_KEY"):
        await save(store, "value")


async def test_store_with_process_key_is_disabled(sessions: async_sessionmaker[AsyncSession]) -> None:
    store = BackupStore(sessions=sessions, sealer=Sealer.from_setting(None))
    assert store.enabled is False
    with pytest.raises(BackupsDisabled):
        await save(store, "value")


async def test_store_with_key_is_enabled(store: BackupStore) -> None:
    assert store.enabled is True


async def test_disabled_store_cannot_decrypt(sessions: async_sessionmaker[AsyncSession], store: BackupStore) -> None:
    await save(store, "value")
    with pytest.raises(BackupsDisabled):
        await BackupStore(sessions=sessions, sealer=None).value(APP, NAME)


async def test_disabled_store_still_lists(sessions: async_sessionmaker[AsyncSession], store: BackupStore) -> None:
    await save(store, "value")
    assert len(await BackupStore(sessions=sessions, sealer=None).versions(APP, NAME)) == 1


async def test_missing_version_raises_not_found(store: BackupStore) -> None:
    await save(store, "value")
    with pytest.raises(BackupNotFound, match="version 2"):
        await store.value(APP, NAME, 2)


async def test_missing_secret_raises_not_found(store: BackupStore) -> None:
    with pytest.raises(BackupNotFound):
        await store.value(APP, NAME)


async def test_not_found_is_a_secretbot_error(store: BackupStore) -> None:
    with pytest.raises(SecretbotError):
        await store.get(APP, NAME)


async def test_mark_deployed_records_digest(store: BackupStore) -> None:
    await save(store, "first")
    await save(store, "second")
    marked = await store.mark_deployed(app=APP, name=NAME, version=2, fly_digest="522d6815e668a102")
    first, second = await store.versions(APP, NAME)
    assert marked.fly_digest == "522d6815e668a102"
    assert second.fly_digest == "522d6815e668a102"
    assert second.deployed_at is not None
    assert first.fly_digest is None


async def test_mark_deployed_unknown_version_raises(store: BackupStore) -> None:
    with pytest.raises(BackupNotFound):
        await store.mark_deployed(app=APP, name=NAME, version=1, fly_digest="522d6815e668a102")


async def test_entries_hold_ciphertext_only(store: BackupStore) -> None:
    await save(store, "entry-marker-value")
    [entry] = await store.entries()
    assert "entry-marker-value" not in repr(entry)
    assert base64.b64decode(entry["ciphertext"])


# --- storage -------------------------------------------------------------------------------


async def test_database_file_holds_no_plaintext(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "plain.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    sessions = create_session_factory(engine)
    store = BackupStore(sessions=sessions, sealer=sealer)
    try:
        hidden = "hidden-backup-value-7f3a9c"
        control = "visible-control-marker-2b8e41"
        for _ in range(3):
            await store.save(app=APP, name=NAME, value=hidden, run_id=RUN_ID, created_by=APPROVER)
        # Plain text written next to the backups shows that the scan below can find text.
        await audit.append(sessions, audit.AuditEntry(event="test.control", detail={"marker": control}))
        files = [path, Path(f"{path}-wal")]
        data = b"".join(file.read_bytes() for file in files if file.exists())
    finally:
        await engine.dispose()
    assert Path(f"{path}-wal").exists() or path.exists()
    assert control.encode() in data
    assert hidden.encode() not in data
    assert hidden.encode("utf-16-le") not in data


# --- migration -----------------------------------------------------------------------------


async def test_migration_downgrades_and_upgrades(engine: AsyncEngine) -> None:
    def downgrade(connection: Connection) -> None:
        command.downgrade(_alembic_config(connection), "0001")

    def table_names(connection: Connection) -> set[str]:
        from sqlalchemy import inspect

        return set(inspect(connection).get_table_names())

    async with engine.begin() as connection:
        await connection.run_sync(downgrade)
    async with engine.connect() as connection:
        assert "backups" not in await connection.run_sync(table_names)
    await migrate(engine)
    async with engine.connect() as connection:
        assert "backups" in await connection.run_sync(table_names)
