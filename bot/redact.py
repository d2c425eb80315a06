"""Masking of secret material in text that leaves the process.

flyctl echoes input in its error messages (a malformed import line, a token split
into a bogus secret name), and its debug output contains HTTP bodies. Every piece of
flyctl output passes through a `Redactor` before it is stored, logged, shown in Slack
or put into an exception.

Two kinds of material are masked:

* known values, registered with `Redactor.add` (generated secrets, the Fly token);
* anything that looks like key material whether or not it is known: PEM blocks,
  Slack tokens, Fly macaroon tokens, Bearer tokens and long base64 or hex runs.
"""

from __future__ import annotations

import json
import logging
import re
import threading

logger = logging.getLogger(__name__)

MASK = "«redacted»"

# Values shorter than this are not registered: masking "1" or "yes" everywhere would
# make every message unreadable while hiding nothing worth protecting.
MIN_KNOWN_LENGTH = 4

# A base64 or hex run of this many characters is treated as key material.
MIN_KEY_RUN = 32

_PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)",
    re.DOTALL,
)
_SLACK_TOKEN = re.compile(r"\b(?:xox[a-z]|xapp)-[A-Za-z0-9-]+")
# A Fly token is "FlyV1 " followed by one or more comma-separated fm1_/fm2_ macaroons.
_FLY_TOKEN = re.compile(r"\bFlyV1\s+[A-Za-z0-9+/=_,-]+")
_FLY_MACAROON = re.compile(r"\bfm[12]_[A-Za-z0-9+/=_,-]+")
_BEARER_TOKEN = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Provider key shapes that the run rule below can miss because they are short or read as
# words: OpenAI-style "sk-…", GitHub and GitLab tokens, Supabase "sb_secret_…" keys,
# Backblaze B2 application keys ("K00…") and JSON Web Tokens.
_PROVIDER_KEY = re.compile(
    r"\b(?:sk|rk)-[A-Za-z0-9_-]{16,}"
    r"|\b(?:ghp|gho|ghu|ghs|ghr|github_pat|glpat|sb_secret)_[A-Za-z0-9_]{16,}"
    r"|\bK00[0-9][A-Za-z0-9+/]{20,}"
    r"|\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
)
# A run right after "." is the host-and-path part of a URL ("api.machines.dev/v1/apps/…"),
# which flyctl prints in API errors; the lookbehind leaves it alone.
_KEY_RUN = re.compile(r"(?<![A-Za-z0-9+/_.-])[A-Za-z0-9+/_-]{%d,}={0,2}" % MIN_KEY_RUN)
# Runs made only of capital letters and underscores (constant names) or only of
# lowercase letters and dashes (app and host names) are words, not keys: a random
# 32-character base64 string falls in either class with a probability below 1e-7.
_WORD_RUN = re.compile(r"[A-Z_]+|[a-z_-]+")


def _mask_key_run(match: re.Match[str]) -> str:
    if _WORD_RUN.fullmatch(match.group(0)):
        return match.group(0)
    return MASK


class Redactor:
    """Replaces known secret values and key-like material with «redacted».

    Safe to share between tasks and threads: `add` replaces whole tuples under a lock
    and `redact` only reads them, so a value is masked in full once `add` has returned.
    """

    def __init__(self) -> None:
        # Known forms keyed by their first MIN_KNOWN_LENGTH characters, each tuple longest
        # first. A regex alternation of every form was recompiled on each `add`, which
        # took 0.23 s with 3,000 known forms and blocked the event loop for every new run.
        self._by_prefix: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Register a value to be masked wherever it appears, including per line.

        A multi-line value is also registered line by line, because flyctl echoes a
        single offending line of its input, and in its JSON-escaped form, because
        JSON output escapes newlines and quotes.
        """
        forms = {value, value.strip()}
        forms.update(value.splitlines())
        forms.add(json.dumps(value)[1:-1])
        added = {form for form in forms if len(form.strip()) >= MIN_KNOWN_LENGTH}
        if not added:
            logger.debug("redactor ignored a value shorter than %d characters", MIN_KNOWN_LENGTH)
            return

        with self._lock:
            for form in added:
                prefix = form[:MIN_KNOWN_LENGTH]
                # Longest first, so a value that contains another known value is masked whole.
                # The tuple is replaced, never changed, so a concurrent `redact` reads a whole one.
                forms = {*self._by_prefix.get(prefix, ()), form}
                self._by_prefix[prefix] = tuple(sorted(forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """Return `text` with every known value and all key-like material masked."""
        text = self._mask_known(text)
        text = _PEM_BLOCK.sub(MASK, text)
        text = _SLACK_TOKEN.sub(MASK, text)
        text = _FLY_TOKEN.sub("FlyV1 " + MASK, text)
        text = _FLY_MACAROON.sub(MASK, text)
        text = _BEARER_TOKEN.sub(lambda match: f"{match.group(1)} {MASK}", text)
        text = _PROVIDER_KEY.sub(MASK, text)
        return _KEY_RUN.sub(_mask_key_run, text)

    def _mask_known(self, text: str) -> str:
        """Mask known forms left to right; at each position the longest form that starts there wins."""
        by_prefix = self._by_prefix
        if not by_prefix:
            return text
        parts: list[str] = []
        kept_from = 0
        position = 0
        last_start = len(text) - MIN_KNOWN_LENGTH
        while position <= last_start:
            match = next((form for form in by_prefix.get(text[position:position + MIN_KNOWN_LENGTH], ())
                          if text.startswith(form, position)), None)
            if match is None:
                position += 1
                continue
            parts += (text[kept_from:position], MASK)
            position += len(match)
            kept_from = position
        parts.append(text[kept_from:])
        return "".join(parts)
