"""Redaction of known values and key-like material."""

from __future__ import annotations

import json

import pytest

from bot.redact import MASK, Redactor


def test_known_value_masked() -> None:
    redactor = Redactor()
    redactor.add("hunter2-is-the-password")
    assert redactor.redact("Error: bad value hunter2-is-the-password here") == f"Error: bad value {MASK} here"


def test_every_occurrence_masked() -> None:
    redactor = Redactor()
    redactor.add("s3cr3t!!")
    assert redactor.redact("s3cr3t!! and s3cr3t!!") == f"{MASK} and {MASK}"


def test_longer_value_masked_whole() -> None:
    redactor = Redactor()
    redactor.add("abcd")
    redactor.add("abcd-efgh")
    assert redactor.redact("x abcd-efgh y") == f"x {MASK} y"


def test_regex_characters_in_value() -> None:
    redactor = Redactor()
    redactor.add("a.b*c(d)[e]")
    assert redactor.redact("axbbc a.b*c(d)[e]") == f"axbbc {MASK}"


def test_multiline_value_masked_per_line() -> None:
    redactor = Redactor()
    redactor.add("first-line-of-it\nsecond-line-of-it\n")
    text = "Error: ... (second-line-of-it is invalid)"
    assert "second-line-of-it" not in redactor.redact(text)


def test_json_escaped_value_masked() -> None:
    redactor = Redactor()
    value = 'quote"and\nnewline'
    redactor.add(value)
    assert value[:5] not in redactor.redact(json.dumps({"v": value}))


def test_short_value_ignored() -> None:
    redactor = Redactor()
    redactor.add("ab")
    assert redactor.redact("about abc") == "about abc"


def test_plain_text_unchanged() -> None:
    text = (
        "Updating existing machines in 'my-app' with rolling strategy\n"
        "✔ [1/2] Machine 3d8d9017b29e18 [app] update succeeded"
    )
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(
    "secret",
    [
        "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-12345-67890-abcdef",
        "xapp-1-A111-222-abcdef0123",
        "fm2_lJPECAAAAAAAAAbxxyz,fm2_lJPEtheSecondPart",
        "deadbeefdeadbeefdeadbeefdeadbeef01234567",
        "c2VjcmV0LWtleS1tYXRlcmlhbC0xMjM0NTY3ODkwYWJjZA==",
        "Zm9v/YmFy+YmF6_cXV4-cXV1eHh4eHh4eHh4eHg",
    ],
)
def test_key_like_material_masked(secret: str) -> None:
    redacted = Redactor().redact(f"value: {secret} end")
    assert secret not in redacted
    assert MASK in redacted


def test_fly_token_keeps_scheme() -> None:
    redacted = Redactor().redact("Authorization: FlyV1 fm2_lJPECAAAAAAAAA,fm2_lJPE")
    assert redacted == f"Authorization: FlyV1 {MASK}"


def test_bearer_token_keeps_scheme() -> None:
    redacted = Redactor().redact("Authorization: Bearer abc.def.ghi")
    assert redacted == f"Authorization: Bearer {MASK}"


def test_pem_block_masked() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIE\nshort\n-----END PRIVATE KEY-----"
    assert Redactor().redact(f"before\n{pem}\nafter") == f"before\n{MASK}\nafter"


def test_truncated_pem_block_masked() -> None:
    text = "got -----BEGIN RSA PRIVATE KEY-----\nMIIE\nab"
    assert Redactor().redact(text) == f"got {MASK}"


def test_short_hex_ids_kept() -> None:
    text = "digest 522d6815e668a102 machine 3d8d9017b29e18"
    assert Redactor().redact(text) == text


def test_constant_and_app_names_kept() -> None:
    text = "SECRETBOT_VERY_LONG_CONSTANT_NAME_HERE my-very-long-application-name-in-production"
    assert Redactor().redact(text) == text


def test_value_registered_later_applies() -> None:
    redactor = Redactor()
    first = redactor.redact("token=later-added-value")
    redactor.add("later-added-value")
    assert first == "token=later-added-value"
    assert redactor.redact("token=later-added-value") == f"token={MASK}"


def test_url_path_kept() -> None:
    text = 'Get "https://api.machines.dev/v1/apps/my-app/machines/49ff824bfb2ad1": context deadline exceeded'
    assert Redactor().redact(text) == text


def test_url_query_token_masked() -> None:
    token = "c2VjcmV0LWtleS1tYXRlcmlhbC0xMjM0NTY3ODkw"
    redacted = Redactor().redact(f"https://example.test/hook?token={token}")
    assert token not in redacted
