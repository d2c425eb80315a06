"""The S3 copy of backups against a local S3-compatible server, and the [backups.s3] section."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.backups import BackupNotFound, BackupStore, S3Copy, build_backup_store, from_entry, open_ciphertext
from bot.config import load_policy
from bot.errors import ConfigError
from bot.policy import BackupS3Settings
from bot.sealing import Sealer
from bot.settings import Settings, load_settings
from bot.storage.db import create_engine, create_session_factory, migrate

APP = "hotel-voice-bot"
NAME = "JWT_SECRET"
RUN_ID = "a1b2c3d4e5f6"
APPROVER = "U0BBB"
BUCKET = "secretbot-backups"
ACCESS_KEY_ID = "test-access-key-id"
SECRET_ACCESS_KEY = "test-secret-access-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class S3Server:
    """A moto S3 server on 127.0.0.1 with one bucket, and a plain client to inspect it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False

    def start(self) -> None:
        self._server.start()
        self.running = True
        # Every moto server in one process shares its state, so clear what earlier tests left.
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        self.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.running:
            self._server.stop()
            self.running = False

    def client(self) -> object:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def object_bytes(self, key: str) -> bytes:
        response = self.client().get_object(Bucket=BUCKET, Key=key)  # type: ignore[attr-defined]
        data: bytes = response["Body"].read()
        return data

    def keys(self) -> list[str]:
        response = self.client().list_objects_v2(Bucket=BUCKET)  # type: ignore[attr-defined]
        return sorted(item["Key"] for item in response.get("Contents", []))


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_copy(s3_server: S3Server) -> S3Copy:
    return S3Copy(endpoint_url=s3_server.url, bucket=BUCKET, access_key_id=ACCESS_KEY_ID,
                  secret_access_key=SECRET_ACCESS_KEY)


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.from_setting(base64.b64encode(os.urandom(32)).decode("ascii"))


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine("sqlite+aiosqlite:///" + str(tmp_path / "backups.db"))
    await migrate(engine)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession], sealer: Sealer, s3_copy: S3Copy) -> BackupStore:
    return BackupStore(sessions=sessions, sealer=sealer, s3=s3_copy)


async def save(store: BackupStore, value: str) -> int:
    record = await store.save(app=APP, name=NAME, value=value, run_id=RUN_ID, created_by=APPROVER)
    return record.version


# --- the copy --------------------------------------------------------------------------------


async def test_save_writes_object_under_prefix(store: BackupStore, s3_server: S3Server) -> None:
    record = await store.save(app=APP, name=NAME, value="value", run_id=RUN_ID, created_by=APPROVER)
    assert record.s3_key == f"secretbot/{APP}/{NAME}/v1.json"
    assert record.s3_error is None
    assert s3_server.keys() == [f"secretbot/{APP}/{NAME}/v1.json"]


async def test_each_version_gets_own_object(store: BackupStore, s3_server: S3Server) -> None:
    await save(store, "first")
    await save(store, "second")
    assert s3_server.keys() == [f"secretbot/{APP}/{NAME}/v1.json", f"secretbot/{APP}/{NAME}/v2.json"]


async def test_database_records_object_key(store: BackupStore) -> None:
    await save(store, "value")
    latest = await store.latest(APP, NAME)
    assert latest is not None
    assert latest.s3_key == f"secretbot/{APP}/{NAME}/v1.json"


async def test_object_decrypts_to_value(store: BackupStore, s3_copy: S3Copy, sealer: Sealer) -> None:
    value = "s3-round-trip-é-🔑\n\"quoted\""
    await save(store, value)
    record, ciphertext = from_entry(await s3_copy.get(APP, NAME, 1))
    assert open_ciphertext(sealer, record, ciphertext) == value


async def test_object_holds_metadata(store: BackupStore, s3_server: S3Server, sealer: Sealer) -> None:
    await save(store, "value")
    entry = json.loads(s3_server.object_bytes(f"secretbot/{APP}/{NAME}/v1.json"))
    assert entry["app"] == APP
    assert entry["name"] == NAME
    assert entry["version"] == 1
    assert entry["run_id"] == RUN_ID
    assert entry["created_by"] == APPROVER
    assert entry["key_id"] == sealer.key_id


async def test_object_holds_no_plaintext(store: BackupStore, s3_server: S3Server) -> None:
    hidden = "hidden-s3-value-51d0c2"
    await save(store, hidden)
    data = s3_server.object_bytes(f"secretbot/{APP}/{NAME}/v1.json")
    assert hidden.encode() not in data
    assert base64.b64encode(hidden.encode()) not in data
    assert "value" not in json.loads(data)


async def test_prefix_is_configurable(sessions: async_sessionmaker[AsyncSession], sealer: Sealer,
                                      s3_server: S3Server) -> None:
    copy = S3Copy(endpoint_url=s3_server.url, bucket=BUCKET, prefix="ops/secrets/", access_key_id=ACCESS_KEY_ID,
                  secret_access_key=SECRET_ACCESS_KEY)
    await save(BackupStore(sessions=sessions, sealer=sealer, s3=copy), "value")
    assert s3_server.keys() == [f"ops/secrets/{APP}/{NAME}/v1.json"]


async def test_missing_object_raises_not_found(s3_copy: S3Copy) -> None:
    with pytest.raises(BackupNotFound):
        await s3_copy.get(APP, NAME, 7)


# --- the bucket unreachable ------------------------------------------------------------------


async def test_s3_down_keeps_database_copy(store: BackupStore, s3_server: S3Server) -> None:
    s3_server.stop()
    record = await store.save(app=APP, name=NAME, value="kept-value", run_id=RUN_ID, created_by=APPROVER)
    assert record.version == 1
    assert await store.value(APP, NAME, 1) == "kept-value"


async def test_s3_down_reports_error(store: BackupStore, s3_server: S3Server) -> None:
    s3_server.stop()
    record = await store.save(app=APP, name=NAME, value="kept-value", run_id=RUN_ID, created_by=APPROVER)
    assert record.s3_error is not None
    assert "cannot write" in record.s3_error
    assert record.s3_key is None


async def test_s3_down_leaves_key_unset(store: BackupStore, s3_server: S3Server) -> None:
    s3_server.stop()
    await save(store, "kept-value")
    latest = await store.latest(APP, NAME)
    assert latest is not None
    assert latest.s3_key is None


async def test_s3_down_is_logged_without_value(store: BackupStore, s3_server: S3Server,
                                               caplog: pytest.LogCaptureFixture) -> None:
    s3_server.stop()
    with caplog.at_level(logging.INFO, logger="bot.backups"):
        await save(store, "logged-never-value")
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any("S3 failed" in record.getMessage() for record in warnings)
    assert all("logged-never-value" not in record.getMessage() for record in caplog.records)


async def test_missing_bucket_reports_error(sessions: async_sessionmaker[AsyncSession], sealer: Sealer,
                                            s3_server: S3Server) -> None:
    copy = S3Copy(endpoint_url=s3_server.url, bucket="no-such-bucket", access_key_id=ACCESS_KEY_ID,
                  secret_access_key=SECRET_ACCESS_KEY)
    record = await BackupStore(sessions=sessions, sealer=sealer, s3=copy).save(
        app=APP, name=NAME, value="value", run_id=RUN_ID, created_by=APPROVER
    )
    assert record.s3_error is not None
    assert "NoSuchBucket" in record.s3_error


# --- configuration ---------------------------------------------------------------------------


def write_config(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "secretbot.toml"
    path.write_text(content, encoding="utf-8")
    return path


def config_error(tmp_path: Path, content: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_policy(write_config(tmp_path, content))
    return str(info.value)


B2_SECTION = """
[backups.s3]
endpoint_url = "https://s3.us-west-004.backblazeb2.com"
bucket = "hotel-secret-backups"
"""


def test_config_reads_s3_section(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, B2_SECTION + 'prefix = "ops/"\nregion = "us-west-004"\n'))
    assert policy.backups.s3 == BackupS3Settings(
        endpoint_url="https://s3.us-west-004.backblazeb2.com", bucket="hotel-secret-backups", prefix="ops/",
        region="us-west-004",
    )


def test_config_s3_defaults(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, B2_SECTION))
    assert policy.backups.s3 is not None
    assert policy.backups.s3.prefix == "secretbot/"
    assert policy.backups.s3.region == "us-east-1"


def test_config_without_section_has_no_s3(tmp_path: Path) -> None:
    assert load_policy(write_config(tmp_path, "[fly]\napps = [\"hotel-voice-bot\"]\n")).backups.s3 is None


def test_builtin_policy_has_no_s3(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.toml").backups.s3 is None


def test_config_allows_empty_prefix(tmp_path: Path) -> None:
    policy = load_policy(write_config(tmp_path, B2_SECTION + 'prefix = ""\n'))
    assert policy.backups.s3 is not None
    assert policy.backups.s3.prefix == ""


@pytest.mark.parametrize(
    ("content", "key", "reason"),
    [
        ('[backups.s3]\nbucket = "hotel-secret-backups"\n', "backups.s3.endpoint_url", "missing"),
        ('[backups.s3]\nendpoint_url = "https://s3.example.com"\n', "backups.s3.bucket", "missing"),
        (B2_SECTION.replace("https://s3.us-west-004.backblazeb2.com", "s3.us-west-004.backblazeb2.com"),
         "backups.s3.endpoint_url", "not an http or https URL"),
        (B2_SECTION.replace("hotel-secret-backups", "Hotel_Backups"), "backups.s3.bucket", "not a valid bucket name"),
        (B2_SECTION.replace("hotel-secret-backups", "ab"), "backups.s3.bucket", "not a valid bucket name"),
        (B2_SECTION + 'prefix = "ops"\n', "backups.s3.prefix", "must end with '/'"),
        (B2_SECTION + 'prefix = "/ops/"\n', "backups.s3.prefix", "must not start with '/'"),
        (B2_SECTION + "prefix = 3\n", "backups.s3.prefix", "expected a string"),
        (B2_SECTION + 'region = "US East"\n', "backups.s3.region", "not a region name"),
        (B2_SECTION + 'regoin = "us-east-1"\n', "backups.s3.regoin", "unknown key"),
        ("[backups]\ns4 = {}\n", "backups.s4", "unknown key"),
        ("backups = 3\n", "backups", "expected a table"),
        ("[backups]\ns3 = 3\n", "backups.s3", "expected a table"),
    ],
)
def test_config_rejects_bad_s3_section(tmp_path: Path, content: str, key: str, reason: str) -> None:
    message = config_error(tmp_path, content)
    assert str(tmp_path / "secretbot.toml") in message
    assert f"key '{key}'" in message
    assert reason in message


@pytest.mark.parametrize("name", ["access_key_id", "secret_access_key", "aws_secret_access_key"])
def test_config_rejects_credentials_in_file(tmp_path: Path, name: str) -> None:
    message = config_error(tmp_path, B2_SECTION + f'{name} = "K004abc"\n')
    assert f"key 'backups.s3.{name}'" in message
    assert "SECRETBOT_S3_SECRET_ACCESS_KEY" in message
    assert "K004abc" not in message


def test_settings_read_s3_credentials() -> None:
    settings = load_settings(
        {"SECRETBOT_S3_ACCESS_KEY_ID": "004abcdef", "SECRETBOT_S3_SECRET_ACCESS_KEY": "K004-secret-part"}
    )
    assert settings.s3_access_key_id == "004abcdef"
    assert settings.s3_secret_access_key == "K004-secret-part"


def test_settings_repr_hides_s3_credentials() -> None:
    settings = load_settings(
        {"SECRETBOT_S3_ACCESS_KEY_ID": "004abcdef", "SECRETBOT_S3_SECRET_ACCESS_KEY": "K004-secret-part"}
    )
    assert "004abcdef" not in repr(settings)
    assert "K004-secret-part" not in repr(settings)


def test_s3_copy_needs_both_credentials() -> None:
    section = BackupS3Settings(endpoint_url="https://s3.example.com", bucket="hotel-secret-backups")
    with pytest.raises(ConfigError, match="SECRETBOT_S3_SECRET_ACCESS_KEY is not set"):
        S3Copy.from_settings(section, Settings(s3_access_key_id="004abcdef"))


async def test_built_store_copies_to_configured_bucket(tmp_path: Path, sessions: async_sessionmaker[AsyncSession],
                                                       sealer: Sealer, s3_server: S3Server) -> None:
    config = f'[backups.s3]\nendpoint_url = "{s3_server.url}"\nbucket = "{BUCKET}"\nprefix = "built/"\n'
    policy = load_policy(write_config(tmp_path, config))
    settings = Settings(s3_access_key_id=ACCESS_KEY_ID, s3_secret_access_key=SECRET_ACCESS_KEY)
    store = build_backup_store(settings=settings, policy=policy, sessions=sessions, sealer=sealer)
    await save(store, "value")
    assert s3_server.keys() == [f"built/{APP}/{NAME}/v1.json"]
