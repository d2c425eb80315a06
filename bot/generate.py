"""New secret values from the operating system's CSPRNG (the `secrets` module)."""

from __future__ import annotations

import base64
import secrets
import string

from bot.policy import SecretPolicy, ValueFormat

_ALPHANUMERIC = string.ascii_letters + string.digits


def generate_value(policy: SecretPolicy) -> str:
    """Return a new random value in the format and length the policy sets."""
    if policy.value_format is ValueFormat.ALPHANUMERIC:
        return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(policy.length))
    raw = secrets.token_bytes(policy.length)
    if policy.value_format is ValueFormat.HEX:
        return raw.hex()
    if policy.value_format is ValueFormat.BASE64:
        return base64.b64encode(raw).decode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
