"""Standard-input text for `flyctl secrets import`, and a model of flyctl's parser.

secretbot hands values to flyctl on standard input so that they never appear in a
process listing. flyctl reads that input with its own line-based parser, which has no
escape sequences, so some values cannot pass through it unchanged. `encode_import`
picks, for each value, a form that the parser reads back exactly, checks the whole
text against `parse_import`, and raises `UnsafeValueError` before anything runs when no
form works.

`parse_import` models `parseSecrets` in flyctl's internal/command/secrets/parser.go as
of flyctl v0.4.14 and later (single quotes stripped, inline `#` comments, single-line
triple quotes). Older flyctl releases read some of these forms differently, see
`ENCODING_FORMS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

from bot.errors import UnsafeValueError

logger = logging.getLogger(__name__)

# Fly secret names: letters, digits and underscores, not starting with a digit, so
# the name is also a valid environment variable name on the machines.
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# flyctl reads stdin with Go's bufio.Scanner, whose buffer is limited to 64 KiB by
# default. A longer line stops the scan without an error and the rest is dropped.
MAX_LINE_BYTES = 64 * 1024 - 1
MAX_VALUE_BYTES = 64 * 1024
# The reason an UnsafeValueError gives for Windows line endings, which callers may word advice for.
CARRIAGE_RETURN_REASON = "a line of the value ends in a carriage return, which flyctl drops"

TRIPLE_QUOTE = '"""'

# Characters Go's strings.TrimSpace removes (the Unicode White_Space property).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


class ImportParseError(ValueError):
    """flyctl's import parser would reject the text (flyctl exits 1, or 3 on a panic)."""


def _scan_lines(text: str) -> list[str]:
    """Split like bufio.Scanner with ScanLines: on \\n, dropping one trailing \\r."""
    lines = text.split("\n")
    if lines[-1] == "":
        # A final newline ends the last line; it does not start an empty one.
        lines.pop()

    scanned = []
    for line in lines:
        if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            break
        scanned.append(line[:-1] if line.endswith("\r") else line)
    return scanned


def _unquote(value: str) -> str:
    for quote in ('"', "'"):
        if value.startswith(quote) and value.endswith(quote):
            if len(value) == 1:
                # flyctl slices value[1:0] here and panics (exit code 3).
                raise ImportParseError(f"a value that is a lone {quote} makes flyctl panic")
            return value[1:-1]
    return value


def parse_import(text: str) -> dict[str, str]:
    """Return the name/value pairs flyctl's `secrets import` reads from `text`.

    Later duplicates replace earlier ones, and a multi-line value still open at the
    end of the input is dropped silently, as flyctl does. Raises `ImportParseError`
    where flyctl would fail; the message never contains the offending line.
    """
    secrets: dict[str, str] = {}
    open_name: str | None = None
    open_parts: list[str] = []

    for number, line in enumerate(_scan_lines(text), start=1):
        if open_name is not None:
            if line.endswith(TRIPLE_QUOTE):
                open_parts.append(line[: -len(TRIPLE_QUOTE)])
                secrets[open_name] = "".join(open_parts)
                open_name, open_parts = None, []
            else:
                open_parts.append(line + "\n")
            continue

        # Only a "#" in the first column starts a comment line.
        if line.startswith("#") or not line.strip(_GO_SPACE):
            continue

        name, separator, value = line.partition("=")
        if not separator:
            raise ImportParseError(f"line {number} has no '=' between a name and a value")
        name = name.strip(_GO_SPACE)
        value = value.lstrip(" ")

        # Inline comment: cut at the first "#" unless it sits inside double quotes,
        # judged only by counting the double quotes before it.
        before_hash, hash_mark, _ = value.partition("#")
        if hash_mark and before_hash.count('"') % 2 == 0:
            value = before_hash.rstrip(" ")

        if value.startswith(TRIPLE_QUOTE) and value.endswith(TRIPLE_QUOTE) and len(value) >= 6:
            secrets[name] = value[3:-3]
        elif value.startswith(TRIPLE_QUOTE):
            open_name, open_parts = name, [value[3:], "\n"]
        else:
            secrets[name] = _unquote(value)

    return secrets


def _double_quoted(name: str, value: str) -> str | None:
    if "\n" in value:
        return None
    return f'{name}="{value}"\n'


def _bare(name: str, value: str) -> str | None:
    if "\n" in value:
        return None
    return f"{name}={value}\n"


def _triple_quoted(name: str, value: str) -> str | None:
    if "\n" in value:
        return None
    return f"{name}={TRIPLE_QUOTE}{value}{TRIPLE_QUOTE}\n"


def _multi_line(name: str, value: str) -> str | None:
    if "\n" not in value:
        return None
    return f"{name}={TRIPLE_QUOTE}{value}{TRIPLE_QUOTE}\n"


# Tried in this order; the first form that parse_import reads back unchanged wins.
# Plain double quotes and bare values are read the same way by every flyctl release
# since the parser gained quote stripping. Single-line triple quotes need flyctl
# v0.3.226 or later, so they come after them.
ENCODING_FORMS: tuple[Callable[[str, str], str | None], ...] = (
    _double_quoted,
    _bare,
    _triple_quoted,
    _multi_line,
)


def _reject(name: str, reason: str) -> UnsafeValueError:
    return UnsafeValueError(
        f"secret {name} cannot be passed to flyctl unchanged: {reason}. "
        "Nothing was sent to Fly; generate a value without these characters or set it by hand.",
        reason=reason,
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise UnsafeValueError(f"secret name {name!r} is empty or not text; use letters, digits and underscores")
    if not SECRET_NAME.fullmatch(name):
        raise UnsafeValueError(
            f"secret name {name!r} is invalid: use letters, digits and underscores, not starting with a digit"
        )
    return name


def _check_value(name: str, value: object) -> str:
    """Raise for values no form can carry; the reasons never quote the value."""
    if not isinstance(value, str):
        raise _reject(name, f"the value is a {type(value).__name__}, not text")
    if "\x00" in value:
        raise _reject(name, "the value contains a NUL character, which an environment variable cannot hold")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _reject(name, "the value is not valid Unicode (it contains an unpaired surrogate)") from None
    if size > MAX_VALUE_BYTES:
        raise _reject(name, f"the value is {size} bytes, more than the {MAX_VALUE_BYTES} bytes flyctl accepts")
    if "\n" in value:
        lines = value.split("\n")
        if any(line.endswith("\r") for line in lines[:-1]):
            raise _reject(name, CARRIAGE_RETURN_REASON)
        if any(line.endswith(TRIPLE_QUOTE) for line in lines[:-1]):
            raise _reject(name, 'a line of the value ends in """, which flyctl reads as the end of the value')
    return value


def _diagnose(name: str, value: str) -> str:
    longest_line = max(len(line.encode("utf-8")) for line in value.split("\n"))
    if longest_line + len(name) + len("=") > MAX_LINE_BYTES:
        return f"a line of the value plus its name is longer than the {MAX_LINE_BYTES} bytes flyctl reads per line"
    before_hash, hash_mark, _ = value.split("\n", 1)[0].partition("#")
    if hash_mark and before_hash.count('"') % 2 == 1:
        return "a '#' follows an odd number of '\"' characters, so flyctl would cut the value there as a comment"
    return "no quoting form of flyctl's import parser reads it back unchanged"


def _encode_entry(name: str, value: str) -> str:
    for form in ENCODING_FORMS:
        entry = form(name, value)
        if entry is None:
            continue
        try:
            if parse_import(entry) == {name: value}:
                return entry
        except ImportParseError:
            continue
    raise _reject(name, _diagnose(name, value))


def encode_import(values: Mapping[str, str]) -> str:
    """Encode secrets as `flyctl secrets import` input that flyctl reads back exactly.

    Raises `UnsafeValueError`, naming the secret and the reason but never the value,
    when any value cannot pass through flyctl's parser unchanged. Raises `ValueError`
    for an empty mapping, because flyctl rejects input without a single pair.
    """
    if not values:
        raise ValueError("encode_import needs at least one secret; flyctl rejects an import without pairs")

    entries = []
    for name, value in values.items():
        _check_name(name)
        _check_value(name, value)
        entries.append(_encode_entry(name, value))
    text = "".join(entries)

    # Entries were checked one by one; this guards against interactions between
    # them, for example a multi-line value that would swallow the next entry.
    parsed = parse_import(text)
    for name, value in values.items():
        if parsed.get(name) != value:
            raise _reject(name, "the import text as a whole does not read back to the same value")
    if parsed.keys() != values.keys():
        raise UnsafeValueError("the import text reads back with extra names; nothing was sent to Fly")
    return text
