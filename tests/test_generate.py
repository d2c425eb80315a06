"""New secret values: formats, lengths, alphabets and uniqueness."""

from __future__ import annotations

import base64
import re
import string

import pytest

from bot.generate import generate_value
from bot.policy import BUILTIN_SECRETS, Priority, SecretPolicy, Source, ValueFormat

DRAWS = 2000
HEX = re.compile(r"^[0-9a-f]+$")
BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
ALPHANUMERIC = re.compile(r"^[A-Za-z0-9]+$")


def policy(value_format: ValueFormat, length: int) -> SecretPolicy:
    return SecretPolicy(
        name="TEST_SECRET", priority=Priority.LOW, source=Source.GENERATED, value_format=value_format, length=length
    )


def unpadded_b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


LENGTHS = [16, 17, 18, 22, 31, 32, 33, 48, 64, 100, 4096]


@pytest.mark.parametrize("length", LENGTHS)
def test_hex_value(length: int) -> None:
    value = generate_value(policy(ValueFormat.HEX, length))
    assert len(value) == 2 * length
    assert HEX.match(value)
    assert len(bytes.fromhex(value)) == length


@pytest.mark.parametrize("length", LENGTHS)
def test_base64_value(length: int) -> None:
    value = generate_value(policy(ValueFormat.BASE64, length))
    assert len(value) == 4 * ((length + 2) // 3)
    assert BASE64.match(value)
    assert len(base64.b64decode(value, validate=True)) == length


@pytest.mark.parametrize("length", LENGTHS)
def test_base64url_value(length: int) -> None:
    value = generate_value(policy(ValueFormat.BASE64URL, length))
    assert len(value) == (4 * length + 2) // 3
    assert BASE64URL.match(value)
    assert "=" not in value
    assert len(unpadded_b64url_decode(value)) == length


@pytest.mark.parametrize("length", LENGTHS)
def test_alphanumeric_value(length: int) -> None:
    value = generate_value(policy(ValueFormat.ALPHANUMERIC, length))
    assert len(value) == length
    assert ALPHANUMERIC.match(value)


@pytest.mark.parametrize(
    ("name", "expected_length", "pattern"),
    [
        ("JWT_SECRET", 86, BASE64URL),
        ("ENCRYPTION_KEY", 64, HEX),
        ("WAHA_WEBHOOK_TOKEN", 43, BASE64URL),
    ],
)
def test_builtin_generated_secrets(name: str, expected_length: int, pattern: re.Pattern[str]) -> None:
    value = generate_value(BUILTIN_SECRETS[name])
    assert len(value) == expected_length
    assert pattern.match(value)


@pytest.mark.parametrize(
    ("value_format", "length"),
    [(ValueFormat.HEX, 16), (ValueFormat.BASE64, 16), (ValueFormat.BASE64URL, 16), (ValueFormat.ALPHANUMERIC, 22)],
)
def test_values_unique_over_many_draws(value_format: ValueFormat, length: int) -> None:
    values = {generate_value(policy(value_format, length)) for _ in range(DRAWS)}
    assert len(values) == DRAWS


def test_alphanumeric_uses_whole_alphabet() -> None:
    seen = set("".join(generate_value(policy(ValueFormat.ALPHANUMERIC, 64)) for _ in range(200)))
    assert seen == set(string.ascii_letters + string.digits)


def test_hex_uses_whole_alphabet() -> None:
    seen = set("".join(generate_value(policy(ValueFormat.HEX, 64)) for _ in range(50)))
    assert seen == set("0123456789abcdef")


def test_base64url_uses_whole_alphabet() -> None:
    seen = set("".join(generate_value(policy(ValueFormat.BASE64URL, 96)) for _ in range(200)))
    assert seen == set(string.ascii_letters + string.digits + "-_")


def test_alphanumeric_roughly_uniform() -> None:
    # 62 symbols over 124,000 draws: each expected 2,000 times. A bound of ±25 % is far
    # outside chance (about 11 standard deviations) but catches a biased alphabet.
    text = "".join(generate_value(policy(ValueFormat.ALPHANUMERIC, 1000)) for _ in range(124))
    counts = {symbol: text.count(symbol) for symbol in string.ascii_letters + string.digits}
    assert min(counts.values()) > 1500
    assert max(counts.values()) < 2500


def test_values_have_no_whitespace() -> None:
    for value_format in ValueFormat:
        for _ in range(200):
            value = generate_value(policy(value_format, 33))
            assert value.strip() == value
            assert not any(character.isspace() for character in value)
