"""Encryption of values that must wait in the database between two runbook steps.

AES-256-GCM from the `cryptography` package, with the run ID and secret name as
associated data so a ciphertext cannot be moved to another run or secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.errors import ConfigError

logger = logging.getLogger(__name__)

NONCE_BYTES = 12
# A command that prints a new key. `python3`, because many machines have no `python`.
NEW_KEY_COMMAND = "python3 -c 'import os, base64; print(base64.b64encode(os.urandom(32)).decode())'"
NEW_KEY_HINT = ("set it to the key the bot already uses, or create one with: " + NEW_KEY_COMMAND)


class SealError(Exception):
    """A sealed value cannot be opened: another key, or the data was changed."""


class Sealer:
    """Encrypts and decrypts values with one AES-256-GCM key."""

    def __init__(self, key: bytes, *, ephemeral: bool) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"secretbot-key-id" + key).hexdigest()[:16]
        self.ephemeral = ephemeral

    @classmethod
    def from_setting(cls, encoded_key: str | None) -> Sealer:
        """Build from SECRETBOT_BACKUP_KEY, or from a random key that lives as long as the process."""
        if not encoded_key:
            logger.warning(
                "SECRETBOT_BACKUP_KEY is not set: a new value waiting on a manual step is lost if the bot restarts"
            )
            return cls(AESGCM.generate_key(bit_length=256), ephemeral=True)
        try:
            key = base64.b64decode(encoded_key.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"SECRETBOT_BACKUP_KEY is not valid base64; {NEW_KEY_HINT}") from exc
        if len(key) != 32:
            raise ConfigError(f"SECRETBOT_BACKUP_KEY must decode to 32 bytes, got {len(key)}; {NEW_KEY_HINT}")
        return cls(key, ephemeral=False)

    def seal(self, value: str, *, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode("utf-8"), context.encode("utf-8"))

    def open(self, sealed: bytes, *, context: str) -> str:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        if len(nonce) != NONCE_BYTES or not ciphertext:
            raise SealError(f"the sealed value for {context} is truncated")
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode("utf-8")).decode("utf-8")
        except InvalidTag as exc:
            raise SealError(f"cannot decrypt the value for {context}") from exc
