"""The second copy of each backup, in an S3-compatible bucket such as Backblaze B2.

An object is `<prefix><app>/<name>/v<version>.json`: the backup entry of
`bot.backups.records`, so it contains ciphertext and metadata and never a value.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.backups.records import BackupError, BackupNotFound, BackupRecord, to_entry
from bot.errors import ConfigError
from bot.policy import BackupS3Settings
from bot.settings import Settings

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 30
MAX_ATTEMPTS = 3


class S3CopyError(BackupError):
    """The bucket did not accept or return a backup copy."""


class S3Copy:
    """Writes and reads backup entries in one bucket under one prefix."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        prefix: str = "secretbot/",
        region: str = "us-east-1",
    ) -> None:
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.prefix = prefix
        # Imported here because boto3 adds about 10 MB of resident memory, which a bot without
        # an S3 copy would carry for nothing. botocore.exceptions alone costs almost nothing.
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            # Path-style requests work on every S3-compatible service, whatever its DNS.
            s3={"addressing_style": "path"},
            # Since botocore 1.36 every upload carries x-amz-checksum-* headers, which
            # Backblaze B2 rejects as unsupported; send them only where S3 requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A client of its own session, so AWS_PROFILE and ~/.aws do not pick other credentials.
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    @classmethod
    def from_settings(cls, s3: BackupS3Settings, settings: Settings) -> S3Copy:
        """Build from [backups.s3] and the key pair in the environment, raising ConfigError if one is missing."""
        missing = [
            variable
            for variable, value in (
                ("SECRETBOT_S3_ACCESS_KEY_ID", settings.s3_access_key_id),
                ("SECRETBOT_S3_SECRET_ACCESS_KEY", settings.s3_secret_access_key),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"[backups.s3] is configured but {' and '.join(missing)} is not set; set it to an application "
                f"key that can write to bucket {s3.bucket!r}, or remove [backups.s3] from the configuration"
            )
        assert settings.s3_access_key_id and settings.s3_secret_access_key
        return cls(
            endpoint_url=s3.endpoint_url,
            bucket=s3.bucket,
            prefix=s3.prefix,
            region=s3.region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )

    def object_key(self, app: str, name: str, version: int) -> str:
        return f"{self.prefix}{app}/{name}/v{version}.json"

    async def put(self, record: BackupRecord, ciphertext: bytes) -> str:
        """Upload the entry of `record` and return its object key; raise S3CopyError on failure."""
        key = self.object_key(record.app, record.name, record.version)
        body = json.dumps(to_entry(record, ciphertext), indent=2, sort_keys=True).encode("utf-8")
        try:
            # boto3 is blocking; one small upload per saved version is fine on a worker thread.
            await asyncio.to_thread(
                self._client.put_object, Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        except (BotoCoreError, ClientError) as exc:
            raise S3CopyError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc
        logger.info("backup copied to S3 bucket=%s key=%s", self.bucket, key)
        return key

    async def get(self, app: str, name: str, version: int) -> dict[str, Any]:
        """Download one entry as parsed JSON; raise BackupNotFound or S3CopyError."""
        key = self.object_key(app, name, version)
        try:
            body = await asyncio.to_thread(self._read, key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BackupNotFound(f"s3://{self.bucket}/{key} does not exist") from exc
            raise S3CopyError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise S3CopyError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        try:
            entry = json.loads(body)
        except ValueError as exc:
            raise S3CopyError(f"s3://{self.bucket}/{key} is not JSON") from exc
        if not isinstance(entry, dict):
            raise S3CopyError(f"s3://{self.bucket}/{key} is not a JSON object")
        return entry

    def _read(self, key: str) -> bytes:
        response = self._client.get_object(Bucket=self.bucket, Key=key)
        with response["Body"] as stream:
            data: bytes = stream.read()
        return data
