"""Encryption of values that wait in the database between runbook steps."""

from __future__ import annotations

import base64
import logging
import os

import pytest

from bot.errors import ConfigError
from bot.sealing import NONCE_BYTES, Sealer, SealError

CONTEXT = "run a1b2c3d4e5f6 JWT_SECRET"
VALUE = "s3cr3t-value-é-🔑"


def encoded_key(length: int = 32) -> str:
    return base64.b64encode(os.urandom(length)).decode("ascii")


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.from_setting(encoded_key())


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [VALUE, "", "x" * 100_000, "line one\nline two\r\n", "\x00binary-ish\x7f"])
def test_round_trip(sealer: Sealer, value: str) -> None:
    assert sealer.open(sealer.seal(value, context=CONTEXT), context=CONTEXT) == value


def test_sealed_bytes_hide_value(sealer: Sealer) -> None:
    sealed = sealer.seal("plain-value-to-hide", context=CONTEXT)
    assert b"plain-value-to-hide" not in sealed


def test_same_value_seals_differently(sealer: Sealer) -> None:
    assert sealer.seal(VALUE, context=CONTEXT) != sealer.seal(VALUE, context=CONTEXT)


def test_sealed_length_is_nonce_value_tag(sealer: Sealer) -> None:
    assert len(sealer.seal("abcd", context=CONTEXT)) == NONCE_BYTES + 4 + 16


def test_same_key_opens_after_restart() -> None:
    key = encoded_key()
    sealed = Sealer.from_setting(key).seal(VALUE, context=CONTEXT)
    assert Sealer.from_setting(key).open(sealed, context=CONTEXT) == VALUE


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["run a1b2c3d4e5f6 ENCRYPTION_KEY", "run ffffffffffff JWT_SECRET", "", CONTEXT + " "])
def test_wrong_context_fails(sealer: Sealer, other: str) -> None:
    sealed = sealer.seal(VALUE, context=CONTEXT)
    with pytest.raises(SealError):
        sealer.open(sealed, context=other)


def test_wrong_key_fails(sealer: Sealer) -> None:
    sealed = sealer.seal(VALUE, context=CONTEXT)
    with pytest.raises(SealError):
        Sealer.from_setting(encoded_key()).open(sealed, context=CONTEXT)


def test_ephemeral_key_does_not_open_other(sealer: Sealer) -> None:
    sealed = sealer.seal(VALUE, context=CONTEXT)
    with pytest.raises(SealError):
        Sealer.from_setting(None).open(sealed, context=CONTEXT)


@pytest.mark.parametrize("index", [0, NONCE_BYTES - 1, NONCE_BYTES, -1])
def test_flipped_byte_fails(sealer: Sealer, index: int) -> None:
    sealed = bytearray(sealer.seal(VALUE, context=CONTEXT))
    sealed[index] ^= 0x01
    with pytest.raises(SealError):
        sealer.open(bytes(sealed), context=CONTEXT)


@pytest.mark.parametrize("length", [0, 1, 7, 8, NONCE_BYTES, NONCE_BYTES + 15])
def test_truncated_data_fails(sealer: Sealer, length: int) -> None:
    sealed = sealer.seal(VALUE, context=CONTEXT)[:length]
    with pytest.raises(SealError):
        sealer.open(sealed, context=CONTEXT)


def test_seal_error_hides_value(sealer: Sealer) -> None:
    sealed = sealer.seal(VALUE, context=CONTEXT)
    with pytest.raises(SealError) as info:
        sealer.open(sealed, context="other")
    assert VALUE not in str(info.value)


# --- the SECRETBOT_BACKUP_KEY setting ------------------------------------------------------------


@pytest.mark.parametrize("setting", [None, ""])
def test_missing_key_is_ephemeral(setting: str | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.sealing"):
        sealer = Sealer.from_setting(setting)
    assert sealer.ephemeral
    assert "SECRETBOT_BACKUP_KEY" in caplog.text


def test_ephemeral_keys_differ() -> None:
    assert Sealer.from_setting(None).key_id != Sealer.from_setting(None).key_id


def test_configured_key_not_ephemeral() -> None:
    assert not Sealer.from_setting(encoded_key()).ephemeral


def test_key_id_stable_for_same_key() -> None:
    key = encoded_key()
    assert Sealer.from_setting(key).key_id == Sealer.from_setting(key).key_id


def test_key_id_differs_between_keys() -> None:
    assert Sealer.from_setting(encoded_key()).key_id != Sealer.from_setting(encoded_key()).key_id


def test_key_id_reveals_no_key_bytes() -> None:
    raw = os.urandom(32)
    key_id = Sealer.from_setting(base64.b64encode(raw).decode("ascii")).key_id
    assert key_id not in raw.hex()
    assert key_id not in base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize(
    "setting",
    [
        "not base64 at all!",
        "c2VjcmV0LWtleS12YWx1ZQ",
        "AAAA*AAA",
        base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode("ascii"),
    ],
)
def test_bad_base64_names_setting(setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        Sealer.from_setting(setting)
    message = str(info.value)
    assert "SECRETBOT_BACKUP_KEY" in message
    assert setting not in message
    assert setting not in str(info.value.__cause__)


@pytest.mark.parametrize("length", [1, 16, 31, 33, 64])
def test_wrong_length_names_setting(length: int) -> None:
    setting = encoded_key(length)
    with pytest.raises(ConfigError) as info:
        Sealer.from_setting(setting)
    message = str(info.value)
    assert "SECRETBOT_BACKUP_KEY" in message
    assert "32 bytes" in message
    assert f"got {length}" in message
    assert setting not in message


def test_short_raw_key_rejected() -> None:
    with pytest.raises(ValueError):
        Sealer(os.urandom(16), ephemeral=False)
