"""Checks on a secret value that a person supplies, and on the value_pattern it must match.

The Slack value form, `secretbot run` (at its prompt and again in the step validation)
and `secretbot import` all call `value_problem`, so the three paths accept the same values. Messages
name a character by its code point and never quote the value.

A value_pattern comes from secretbot.toml and is matched on the bot's event loop. Python's `re` holds the GIL for the whole match, so neither a worker thread
nor asyncio can interrupt a pattern that backtracks exponentially (`(a+)+` against
`"a" * 34 + "!"` runs for minutes). Two defences: `value_pattern_problem` rejects at
configuration load the nested unbounded repeats that cause most such patterns, and
`pattern_mismatch` matches with the `regex` module, whose `timeout=` stops the match.
A subprocess per match would also bound it, but the step validation that calls this is
synchronous, and the regex module needs no process start for each submitted form.
"""

from __future__ import annotations

import logging
import re
import unicodedata

# The regex parser behind re.compile; private, but the public sre_parse alias is deprecated
# since Python 3.11 and typeshed has stubs for neither path.
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import regex  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

# Values longer than this are rejected before value_pattern runs. The Slack form and the
# terminal already stop at 3000 characters; this bounds the work of any other caller.
MAX_MATCHED_LENGTH = 4096
# A pattern fit for a secret matches 4096 characters in well under a millisecond, so
# hitting this limit means the pattern backtracks. regex counts it in the process's CPU
# time (measured with regex 2026.12), so on a busy host the event loop (health checks,
# every other command) waits longer than this in wall-clock time, but still a bounded time.
MATCH_TIMEOUT_SECONDS = 0.25
# Control characters that count as whitespace have no Unicode name, only an alias.
_CONTROL_NAMES = {
    "\t": "CHARACTER TABULATION",
    "\n": "LINE FEED",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x85": "NEXT LINE",
}
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)


def describe_character(char: str) -> str:
    """Name one character as `U+200B ZERO WIDTH SPACE`, or by its code point alone when it has no name."""
    name = unicodedata.name(char, None) or _CONTROL_NAMES.get(char)
    code_point = f"U+{ord(char):04X}"
    return f"{code_point} {name}" if name else code_point


def value_problem(value: str, *, allow_whitespace: bool, subject: str = "The value") -> str | None:
    """Return why a value a person supplied is rejected, as a sentence starting with `subject`, or None.

    Rejected: an empty value, any Unicode format character (category Cf: zero-width
    spaces and joiners, U+FEFF, bidi marks), and, unless `allow_whitespace`, whitespace
    at either end, Unicode spaces (category Zs) included.
    """
    if value == "":
        return f"{subject} is empty; give the secret a value."

    # A Cf character is invisible, so a person cannot see that a pasted value carries one,
    # and no provider issues a secret that contains one.
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) == "Cf":
            return (f"{subject} contains {describe_character(char)} at position {position} of {len(value)}, "
                    "an invisible format character that copying from a web page, chat or document can add; "
                    "remove it and supply the value again.")

    if allow_whitespace:
        return None
    # str.isspace covers category Zs (U+00A0, U+3000, ...) as well as ASCII whitespace.
    for end, char in (("starts", value[0]), ("ends", value[-1])):
        if char.isspace():
            return (f"{subject} {end} with {describe_character(char)}, which is usually a copy-and-paste slip; "
                    "remove it, or set allow_whitespace = true for this secret in secretbot.toml "
                    "if it belongs to the value.")
    return None


def value_pattern_problem(pattern: str) -> str | None:
    """Return why `pattern` cannot be a value_pattern, or None.

    It must compile with Python's `re` (the documented syntax) and with `regex` (which
    matches it), and it must not repeat without bound a part that itself contains an
    unbounded repeat, such as `(a+)+` or `(?:\\w*-?)*`.
    """
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    try:
        regex.compile(pattern)
    except regex.error as exc:
        return f"the regex module, which matches values, cannot compile it: {exc}"
    if _has_nested_unbounded_repeat(parsed, inside_unbounded=False):
        return ("it repeats without bound a part that itself contains an unbounded repeat, as `(a+)+` does, "
                "which can take exponential time on a value that almost matches; make the inner repeat "
                "possessive (`a++`) or atomic (`(?>a+)`), or bound the outer repeat")
    return None


def pattern_mismatch(pattern: str, value: str, *, name: str) -> str | None:
    """Return None when `value` fully matches `pattern`, or a sentence saying why it is rejected.

    `name` is the secret's name, logged when the match times out.
    """
    if len(value) > MAX_MATCHED_LENGTH:
        return (f"The value is {len(value)} characters long, more than the {MAX_MATCHED_LENGTH} "
                "that value_pattern is checked against.")
    try:
        matched = regex.fullmatch(pattern, value, timeout=MATCH_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning("value_pattern match timed out secret=%s pattern=%r seconds=%s", name, pattern,
                       MATCH_TIMEOUT_SECONDS)
        return (f"Checking the value against value_pattern ({pattern}) took longer than "
                f"{MATCH_TIMEOUT_SECONDS} s of CPU time, so the value is rejected. The pattern backtracks too "
                f"much. Ask the maintainer of secretbot.toml to simplify value_pattern of {name}.")
    if matched is None:
        return f"The value does not have the expected format ({pattern})."
    return None


def _has_nested_unbounded_repeat(pattern: sre_parse.SubPattern, *, inside_unbounded: bool) -> bool:
    """Walk a parsed pattern for an unbounded greedy or lazy repeat inside another one.

    Possessive repeats and atomic groups never give back what they matched, so they cannot
    split a run of characters between iterations in more than one way, and the walk does
    not count them or look inside them.

    NOTE: this misses other slow shapes, such as a repeated alternation whose branches
    match the same text (`(a|aa)+`) and polynomial ones (`\\w*\\w*\\w*\\w*\\d`). The match
    timeout in `pattern_mismatch` bounds those.
    """
    for op, argument in pattern.data:
        if op in (sre_constants.POSSESSIVE_REPEAT, sre_constants.ATOMIC_GROUP):
            continue
        if op in _REPEATS:
            _, high, body = argument
            unbounded = high == sre_constants.MAXREPEAT
            if unbounded and inside_unbounded:
                return True
            if _has_nested_unbounded_repeat(body, inside_unbounded=inside_unbounded or unbounded):
                return True
            continue
        if any(_has_nested_unbounded_repeat(child, inside_unbounded=inside_unbounded)
               for child in _subpatterns(argument)):
            return True
    return False


def _subpatterns(argument: Any) -> list[sre_parse.SubPattern]:
    """Collect the parsed subpatterns inside one item's argument (groups, branches, lookarounds, conditionals)."""
    if isinstance(argument, sre_parse.SubPattern):
        return [argument]
    if isinstance(argument, (tuple, list)):
        return [child for item in argument for child in _subpatterns(item)]
    return []
