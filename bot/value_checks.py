"""Checks on a secret value that a person supplies, and on the value_pattern it must match.

The Slack value form, `secretbot run` (at its prompt and again in the step validation)
and `secretbot import` all call `value_problem`, so the three paths accept the same values. Messages
name a character by its code point and never quote the value.

A value_pattern comes from secretbot.toml. Python's `re` holds the GIL for the whole match,
so neither a worker thread nor asyncio can interrupt a pattern that backtracks
exponentially (`(a+)+` against `"a" * 34 + "!"` runs for minutes). Two defences:
`value_pattern_problem` rejects at configuration load the nested unbounded repeats that
cause most such patterns, and `pattern_mismatch` matches with the `regex` module, whose
`timeout=` stops the match. The slow shapes the load check misses still cost up to that
timeout per value, so the bot's event loop awaits `pattern_mismatch_in_thread`, which runs
the same match in a worker thread with `concurrent=True` (regex then releases the GIL), and
Slack's acknowledgements and health checks go on meanwhile. A subprocess per match would
also bound it, but would start a process for each submitted form.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor

# The regex parser behind re.compile; private, but the public sre_parse alias is deprecated
# since Python 3.11 and typeshed has stubs for neither path.
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import regex  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

# bot.flyctl.importfile.MAX_VALUE_BYTES, the most flyctl accepts for one value's UTF-8
# encoding. A character is at least one byte, so a longer value can never reach Fly, and
# the exact check (encode_import, which counts the name and each line too) comes later.
# The Fly API's own limit on a secret is not documented. The Slack form stops at 3000 characters, but an
# env file for `secretbot import` can carry a PEM key or certificate chain longer than that.
# The number is repeated here because importing bot.flyctl would load aiohttp with the configuration.
MAX_VALUE_LENGTH = 64 * 1024
# Values longer than this are rejected before value_pattern runs. The Slack form and the
# terminal already stop at 3000 characters; this bounds the work of any other caller.
MAX_MATCHED_LENGTH = 4096
# A pattern fit for a secret matches 4096 characters in well under a millisecond, so
# hitting this limit means the pattern backtracks. regex counts it in the process's CPU
# time, all threads together (measured with regex 2026.12). So a match ends later in
# wall-clock time when other processes use the CPU, and sooner when the bot's other threads
# use it at the same time. Either way its time is bounded.
MATCH_TIMEOUT_SECONDS = 0.25
# Threads that run value_pattern matches for the event loop. A fitting pattern occupies one
# for well under a millisecond and a backtracking one for at most MATCH_TIMEOUT_SECONDS of
# CPU time. Two keep up with any realistic rate of form submissions, and a burst of
# submissions waits in the queue instead of starting a thread each.
MATCH_THREADS = 2
# Slack shows an error to a person whose form submission is not acknowledged within 3 s,
# and after the match the engine still records the decision before the acknowledgement.
# A value whose match has not finished this long after the check began, because it waited
# behind slow matches, is rejected instead.
MATCH_WAIT_SECONDS = 1.0
# Control characters have no Unicode name, only an alias. These are NUL and the ones that
# count as whitespace (Unicode's White_Space property), which allow_whitespace governs.
_CONTROL_NAMES = {
    "\x00": "NULL",
    "\t": "CHARACTER TABULATION",
    "\n": "LINE FEED",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x85": "NEXT LINE",
}
# Characters no secret contains: control characters other than the whitespace above,
# format characters (Cf), lone surrogates (Cs), and the rest of Unicode's
# Default_Ignorable_Code_Point set, which renders as nothing (Hangul fillers, the combining
# grapheme joiner, variation selectors). The tables are the regex module's, whose Unicode
# version may be newer than unicodedata's.
_REJECTED_CHARACTER = regex.compile(
    r"[\p{Cc}\p{Cf}\p{Cs}\p{Default_Ignorable_Code_Point}--[\t\n\v\f\r\x85]]", regex.VERSION1)
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)
_MATCH_EXECUTOR = ThreadPoolExecutor(max_workers=MATCH_THREADS, thread_name_prefix="value-pattern")


def describe_character(char: str) -> str:
    """Name one character as `U+200B ZERO WIDTH SPACE`, or by its code point alone when it has no name."""
    name = unicodedata.name(char, None) or _CONTROL_NAMES.get(char)
    code_point = f"U+{ord(char):04X}"
    return f"{code_point} {name}" if name else code_point


def value_problem(value: str, *, allow_whitespace: bool, subject: str = "The value") -> str | None:
    """Return why a value a person supplied is rejected, as a sentence starting with `subject`, or None.

    Rejected: an empty value, one longer than MAX_VALUE_LENGTH characters, one with a
    character no secret contains (see `_REJECTED_CHARACTER`: control characters other than
    whitespace, format characters such as zero-width spaces, U+FEFF and bidi marks, lone
    surrogates, Hangul fillers, variation selectors), and, unless `allow_whitespace`,
    whitespace at either end, Unicode spaces (category Zs) included. Whitespace inside
    the value, such as the line feeds of a PEM key, is accepted.
    """
    if value == "":
        return f"{subject} is empty; give the secret a value."

    # Checked first, so the search below never scans a value that cannot be sent anyway.
    if len(value) > MAX_VALUE_LENGTH:
        return (f"{subject} is {len(value)} characters long, more than flyctl accepts ({MAX_VALUE_LENGTH} bytes "
                "at most); check that it contains only the secret.")

    # These characters are invisible or not text at all, so a person cannot see that a
    # pasted value carries one, and no provider issues a secret that contains one.
    found = _REJECTED_CHARACTER.search(value)
    if found is not None:
        return _character_problem(found.group(), position=found.start() + 1, length=len(value), subject=subject)

    if allow_whitespace:
        return None
    # str.isspace covers category Zs (U+00A0, U+3000, ...) as well as ASCII whitespace.
    for end, char in (("starts", value[0]), ("ends", value[-1])):
        if char.isspace():
            return (f"{subject} {end} with {describe_character(char)}, which is usually a copy-and-paste slip; "
                    "remove it, or set allow_whitespace = true for this secret in secretbot.toml "
                    "if it belongs to the value.")
    return None


def _character_problem(char: str, *, position: int, length: int, subject: str) -> str:
    """Say which rejected character a value contains, and where, in the words for its kind."""
    found = f"{subject} contains {describe_character(char)} at position {position} of {length}"
    category = unicodedata.category(char)
    if category == "Cs":
        return (f"{found}, a lone surrogate, which is not a character and cannot be encoded as UTF-8; "
                "copy the value again from its source.")
    if category == "Cc":
        return f"{found}, a control character, which no secret contains; remove it and supply the value again."
    if category == "Cf":
        return (f"{found}, an invisible format character that copying from a web page, chat or document can add; "
                "remove it and supply the value again.")
    return (f"{found}, a character that renders as nothing, so it cannot be seen in the value; "
            "remove it and supply the value again.")


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

    `name` is the secret's name, logged when the match times out. This blocks the calling
    thread for up to MATCH_TIMEOUT_SECONDS of CPU time; code on the event loop awaits
    `pattern_mismatch_in_thread` instead.
    """
    if len(value) > MAX_MATCHED_LENGTH:
        return (f"The value is {len(value)} characters long, more than the {MAX_MATCHED_LENGTH} "
                "that value_pattern is checked against.")
    try:
        # concurrent=True releases the GIL during the match, so other threads run meanwhile.
        matched = regex.fullmatch(pattern, value, timeout=MATCH_TIMEOUT_SECONDS, concurrent=True)
    except TimeoutError:
        logger.warning("value_pattern match timed out secret=%s pattern=%r seconds=%s", name, pattern,
                       MATCH_TIMEOUT_SECONDS)
        return (f"Checking the value against value_pattern ({pattern}) took longer than "
                f"{MATCH_TIMEOUT_SECONDS} s of CPU time, so the value is rejected. The pattern backtracks too "
                f"much. Ask the maintainer of secretbot.toml to simplify value_pattern of {name}.")
    if matched is None:
        return f"The value does not have the expected format ({pattern})."
    return None


async def pattern_mismatch_in_thread(pattern: str, value: str, *, name: str) -> str | None:
    """Run `pattern_mismatch` in one of MATCH_THREADS worker threads and return its result.

    The event loop goes on while the match runs. The value is also rejected when the match
    has not finished MATCH_WAIT_SECONDS after the call, which happens when it waited behind
    other slow matches. A match that has started then runs on until regex's own timeout.
    """
    loop = asyncio.get_running_loop()
    match = functools.partial(pattern_mismatch, pattern, value, name=name)
    try:
        return await asyncio.wait_for(loop.run_in_executor(_MATCH_EXECUTOR, match), MATCH_WAIT_SECONDS)
    except TimeoutError:
        # pattern_mismatch returns regex's own timeout as a message, so this is the wall-clock limit.
        logger.warning("value_pattern match timed out secret=%s pattern=%r wall_clock_seconds=%s", name, pattern,
                       MATCH_WAIT_SECONDS)
        return (f"Checking the value against value_pattern ({pattern}) did not finish within "
                f"{MATCH_WAIT_SECONDS} s, so the value is rejected. Either other values were being checked "
                "at the same time or the pattern backtracks too much. Submit the value again, and if this repeats, "
                f"ask the maintainer of secretbot.toml to simplify value_pattern of {name}.")


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
