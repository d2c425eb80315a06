"""How flyctl turns `secrets set` arguments and `secrets import` input into name/value pairs.

Both follow flyctl v0.4.87. Values are Python strings decoded from UTF-8 with
surrogateescape, so bytes that are not UTF-8 still reach the state file unchanged.
"""

from __future__ import annotations

import re

from .errors import CliError, Panic
from .runtime import StdinReader

# helpers/stdin.go reads at most this many bytes for a `NAME=-` value.
MAX_STDIN_VALUE_BYTES = 65536
# bufio.Scanner's default maximum token size: a longer import line ends the scan.
MAX_IMPORT_LINE_BYTES = 64 * 1024

# The characters Go's strings.TrimSpace removes (unicode.IsSpace), which differ from
# Python's str.strip(): Go keeps \x1c-\x1f.
GO_WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

# Server-side rule for secret names.
# NOTE: the Machines API does not publish its rule. Letters, digits and underscores is an
# assumption that matches the names Fly accepts and rejects in public reports.
SECRET_NAME = re.compile(r"[A-Za-z0-9_]+")

TRIPLE_QUOTE = '"""'


def decode(data: bytes) -> str:
    """Decode bytes as UTF-8, keeping invalid bytes as surrogate escapes."""
    return data.decode("utf-8", "surrogateescape")


def go_trim_space(text: str) -> str:
    """Trim whitespace at both ends as Go's strings.TrimSpace does."""
    return text.strip(GO_WHITESPACE)


def parse_set_arguments(arguments: list[str]) -> dict[str, str]:
    """Split each NAME=VALUE argument at its first `=`; later duplicates win.

    Names and values are kept verbatim: no trimming, no unquoting, empty values allowed.
    The error echoes the whole argument, as flyctl's does.
    """
    pairs: dict[str, str] = {}
    for argument in arguments:
        name, separator, value = argument.partition("=")
        if not separator:
            raise CliError(f"could not parse secrets: '{argument}': must be in the format NAME=VALUE")
        pairs[name] = value
    return pairs


def resolve_stdin_values(pairs: dict[str, str], stdin: StdinReader) -> dict[str, str]:
    """Replace each value `-` with standard input, read to EOF, capped and whitespace-trimmed.

    The first `-` value in argument order takes all of stdin and later ones get empty
    strings. NOTE: flyctl walks a Go map, so which one reads stdin is random there.
    """
    resolved = dict(pairs)
    consumed = False
    for name, value in pairs.items():
        if value != "-":
            continue
        if stdin.is_char_device():
            raise CliError(f"secret `{name}` expects standard input but none provided")
        if consumed:
            resolved[name] = ""
            continue
        data = stdin.read(MAX_STDIN_VALUE_BYTES)
        consumed = True
        if len(data) > MAX_STDIN_VALUE_BYTES:
            raise CliError(
                f"error reading stdin for '{name}': Input exceeded max length of {MAX_STDIN_VALUE_BYTES} bytes"
            )
        resolved[name] = go_trim_space(decode(data))
    return resolved


def invalid_secret_names(names: list[str]) -> list[str]:
    """Return the names the server would reject, in the order given."""
    return [name for name in names if not SECRET_NAME.fullmatch(name)]


def _scanner_lines(data: bytes) -> list[bytes]:
    """Split input into lines the way bufio.Scanner with ScanLines does.

    A trailing `\\r` is dropped from each line. A line of 64 KiB or more stops the scan
    with an error that flyctl's parser never checks, so that line and everything after it
    is silently ignored.
    """
    lines: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        line_end = len(data) if end < 0 else end
        if line_end - start >= MAX_IMPORT_LINE_BYTES:
            break
        line = data[start:line_end]
        if line.endswith(b"\r"):
            line = line[:-1]
        lines.append(line)
        if end < 0:
            break
        start = end + 1
    return lines


def _strip_inline_comment(value: str) -> str:
    """Cut the value at its first `#` when an even number of `"` comes before it.

    This is flyctl's inline-comment rule: `abc#def` becomes `abc` and `'abc#def'`
    becomes `'abc`, while `"abc#def"` is kept because the `#` is inside double quotes.
    """
    position = value.find("#")
    if position < 0:
        return value
    before = value[:position]
    if before.count('"') % 2 == 0:
        return before.rstrip(" ")
    return value


def _unquote(value: str) -> str:
    """Strip one pair of surrounding double quotes, else single quotes; no escapes.

    A value that is a single quote character makes flyctl index past the end of the
    string, which panics.
    """
    for quote in ('"', "'"):
        if value.startswith(quote) and value.endswith(quote):
            if len(value) == 1:
                raise Panic("runtime error: slice bounds out of range [1:0]")
            return value[1:-1]
    return value


def parse_import(data: bytes) -> dict[str, str]:
    """Parse `secrets import` input: NAME=VALUE lines, comments and \"\"\" blocks.

    Outside a block, lines starting with `#` and blank lines are skipped, the name is
    trimmed, leading spaces (not tabs) of the value are removed, the inline-comment rule
    applies, and one pair of quotes is stripped. A value starting with \"\"\" that does not
    also end with it on that line opens a block, which takes every later line verbatim
    until a line that ends with \"\"\". A block still open at the end is dropped silently.
    """
    pairs: dict[str, str] = {}
    block_name: str | None = None
    block_value = ""

    for raw_line in _scanner_lines(data):
        line = decode(raw_line)

        if block_name is not None:
            if line.endswith(TRIPLE_QUOTE):
                pairs[block_name] = block_value + line[: -len(TRIPLE_QUOTE)]
                block_name = None
            else:
                block_value += line + "\n"
            continue

        if line.startswith("#") or go_trim_space(line) == "":
            continue

        name, separator, value = line.partition("=")
        if not separator:
            raise CliError(
                f"Failed to parse secrets from stdin: Secrets must be provided as NAME=VALUE pairs ({line} is invalid)"
            )
        name = go_trim_space(name)
        value = _strip_inline_comment(value.lstrip(" "))

        if value.startswith(TRIPLE_QUOTE):
            if len(value) >= 2 * len(TRIPLE_QUOTE) and value.endswith(TRIPLE_QUOTE):
                pairs[name] = value[len(TRIPLE_QUOTE) : -len(TRIPLE_QUOTE)]
            else:
                block_name = name
                block_value = value[len(TRIPLE_QUOTE) :] + "\n"
            continue

        pairs[name] = _unquote(value)

    if not pairs:
        raise CliError("requires at least one SECRET=VALUE pair")
    return pairs
