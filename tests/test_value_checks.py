"""The checks every path applies to a value a person supplies, and the value_pattern rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.config import load_policy
from bot.errors import ConfigError
from bot.flyctl.importfile import MAX_VALUE_BYTES
from bot.importing.envfile import check_values, parse_env_text
from bot.policy import Priority, SecretPolicy, Source
from bot.steps.values import check_entered_value
from bot.terminal.driver import typed_value_problem
from bot.value_checks import (
    MATCH_TIMEOUT_SECONDS,
    MAX_MATCHED_LENGTH,
    MAX_VALUE_LENGTH,
    pattern_mismatch,
    value_pattern_problem,
    value_problem,
)

KEY = "sk-proj-Zq8nR2vX7mK4pL9s"


def provider(*, value_pattern: str | None = None, allow_whitespace: bool = False) -> SecretPolicy:
    return SecretPolicy(name="OPENAI_API_KEY", priority=Priority.HIGH, source=Source.PROVIDER,
                        value_pattern=value_pattern, allow_whitespace=allow_whitespace)


# --- value_problem ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (KEY + "\u200b", "U+200B ZERO WIDTH SPACE at position 25 of 25"),
        ("\u200b" + KEY, "U+200B ZERO WIDTH SPACE at position 1 of 25"),
        ("sk-proj\u200d-Zq8n", "U+200D ZERO WIDTH JOINER at position 8 of 13"),
        ("\ufeff" + KEY, "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"),
        (KEY + "\u200e", "U+200E LEFT-TO-RIGHT MARK"),
        ("sk-\u202eproj", "U+202E RIGHT-TO-LEFT OVERRIDE at position 4"),
        ("sk-\u2060proj", "U+2060 WORD JOINER"),
        ("sk-proj\u00ad-key", "U+00AD SOFT HYPHEN"),
    ],
)
def test_format_character_rejected_by_code_point(value: str, named: str) -> None:
    problem = value_problem(value, allow_whitespace=False)
    assert problem is not None
    assert named in problem
    assert KEY not in problem


def test_format_character_rejected_despite_allow_whitespace() -> None:
    problem = value_problem(KEY + "\u200b", allow_whitespace=True)
    assert problem is not None
    assert "U+200B" in problem


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (" " + KEY, "starts with U+0020 SPACE"),
        (KEY + "\n", "ends with U+000A LINE FEED"),
        (KEY + "\t", "ends with U+0009 CHARACTER TABULATION"),
        ("\u00a0" + KEY, "starts with U+00A0 NO-BREAK SPACE"),
        (KEY + "\u3000", "ends with U+3000 IDEOGRAPHIC SPACE"),
        (KEY + "\u2003", "ends with U+2003 EM SPACE"),
        ("\u202f" + KEY, "starts with U+202F NARROW NO-BREAK SPACE"),
    ],
)
def test_surrounding_whitespace_rejected_by_code_point(value: str, named: str) -> None:
    problem = value_problem(value, allow_whitespace=False)
    assert problem is not None
    assert named in problem
    assert "allow_whitespace = true" in problem
    assert value_problem(value, allow_whitespace=True) is None


def test_inner_space_accepted() -> None:
    assert value_problem("correct horse\u00a0battery staple", allow_whitespace=False) is None


def test_empty_value_rejected() -> None:
    assert value_problem("", allow_whitespace=True) == "The value is empty; give the secret a value."


def test_plain_value_accepted() -> None:
    assert value_problem(KEY, allow_whitespace=False) is None
    assert value_problem("-----BEGIN KEY-----\nabc\n-----END KEY-----", allow_whitespace=False) is None


@pytest.mark.parametrize(
    ("value", "named", "kind"),
    [
        ("sk-proj\x00Zq8n", "U+0000 NULL at position 8 of 12", "a control character"),
        ("\x1b[2Jsk-proj", "U+001B at position 1 of 11", "a control character"),
        ("sk-proj\x7f", "U+007F at position 8 of 8", "a control character"),
        ("sk-\x1cproj", "U+001C at position 4 of 8", "a control character"),
        ("sk-proj\x9b", "U+009B at position 8 of 8", "a control character"),
        ("sk-\u3164proj", "U+3164 HANGUL FILLER at position 4 of 8", "renders as nothing"),
        ("\u115fsk-proj", "U+115F HANGUL CHOSEONG FILLER at position 1 of 8", "renders as nothing"),
        ("sk-proj\u1160", "U+1160 HANGUL JUNGSEONG FILLER at position 8 of 8", "renders as nothing"),
        ("sk-\uffa0proj", "U+FFA0 HALFWIDTH HANGUL FILLER", "renders as nothing"),
        ("sk-p\u034froj", "U+034F COMBINING GRAPHEME JOINER at position 5 of 8", "renders as nothing"),
        ("sk-proj\ufe0f", "U+FE0F VARIATION SELECTOR-16", "renders as nothing"),
        ("sk-\ufe00proj", "U+FE00 VARIATION SELECTOR-1", "renders as nothing"),
        ("sk-proj\U000e0100", "U+E0100 VARIATION SELECTOR-17 at position 8 of 8", "renders as nothing"),
        ("sk-proj\U000e01ef", "U+E01EF VARIATION SELECTOR-256", "renders as nothing"),
        ("sk-\ud800proj", "U+D800 at position 4 of 8", "a lone surrogate"),
        ("sk-proj\udfff", "U+DFFF at position 8 of 8", "a lone surrogate"),
    ],
)
def test_invisible_or_control_character_rejected(value: str, named: str, kind: str) -> None:
    for allow_whitespace in (False, True):
        problem = value_problem(value, allow_whitespace=allow_whitespace)
        assert problem is not None
        assert named in problem
        assert kind in problem
        assert "proj" not in problem


def test_first_rejected_character_named() -> None:
    problem = value_problem("sk\u200b-\x00", allow_whitespace=True)
    assert problem is not None
    assert "U+200B ZERO WIDTH SPACE at position 3 of 5" in problem


@pytest.mark.parametrize(
    "value",
    [
        "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\r\nMIIEvQ\r\n-----END PRIVATE KEY-----",
        "user\tpassword",
        "page one\fpage two",
        "line\x85next",
    ],
)
def test_inner_whitespace_controls_accepted(value: str) -> None:
    assert value_problem(value, allow_whitespace=True) is None
    assert value_problem(value.strip(), allow_whitespace=False) is None


def test_value_at_maximum_length_accepted() -> None:
    assert value_problem("a" * MAX_VALUE_LENGTH, allow_whitespace=False) is None


def test_long_value_rejected_before_scan() -> None:
    value = "a" * 10_000_000

    started = time.perf_counter()
    problem = value_problem(value, allow_whitespace=False)
    elapsed = time.perf_counter() - started

    assert problem == (f"The value is 10000000 characters long, more than flyctl accepts ({MAX_VALUE_LENGTH} bytes "
                       "at most); check that it contains only the secret.")
    # The character scan alone takes about 0.6 s over ten million characters on a 2-core machine;
    # the bound is loose because CI machines are loaded.
    assert elapsed < 0.3


def test_maximum_length_matches_flyctl_limit() -> None:
    assert MAX_VALUE_LENGTH == MAX_VALUE_BYTES


# --- every path calls it ---------------------------------------------------------------


async def test_value_form_rejects_zero_width_space() -> None:
    problem = await check_entered_value(provider(), KEY + "\u200b")
    assert problem is not None
    assert "U+200B ZERO WIDTH SPACE at position 25 of 25" in problem


async def test_value_form_rejects_unicode_space() -> None:
    problem = await check_entered_value(provider(), KEY + "\u00a0")
    assert problem is not None
    assert "U+00A0 NO-BREAK SPACE" in problem
    assert await check_entered_value(provider(allow_whitespace=True), KEY + "\u00a0") is None


async def test_value_form_explains_crlf() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\r\nMIIEvQ\r\n-----END PRIVATE KEY-----\r\n"

    problem = await check_entered_value(provider(allow_whitespace=True), pem)

    assert problem is not None
    assert problem.startswith("The value has Windows line endings")
    assert "Convert the line endings to LF" in problem
    assert "generate" not in problem
    assert ".." not in problem
    assert "MIIEvQ" not in problem


async def test_value_form_keeps_empty_wording() -> None:
    assert await check_entered_value(provider(), "") == "Enter a value."


async def test_form_and_terminal_reject_nul() -> None:
    value = "sk-proj\x00Zq8n"
    form = await check_entered_value(provider(allow_whitespace=True), value)
    assert form is not None
    assert "U+0000 NULL at position 8 of 12" in form
    terminal = typed_value_problem(value, None)
    assert terminal is not None
    assert "U+0000 NULL at position 8 of 12" in terminal


def test_terminal_rejects_empty_and_invisible() -> None:
    empty = typed_value_problem("", r".*")
    assert empty is not None
    assert "empty" in empty
    invisible = typed_value_problem(KEY + "\ufeff", None)
    assert invisible is not None
    assert "U+FEFF" in invisible


def test_import_rejects_empty_value_by_name_and_line() -> None:
    env = parse_env_text("GOOD=fine-value\n# comment\nJWT_SECRET=\n", path=Path("hotel.env"))
    check_values(env, allows_whitespace=lambda name: False)
    assert [problem.line for problem in env.problems] == [3]
    assert env.problems[0].reason == "the value of JWT_SECRET is empty; give the secret a value."


def test_import_rejects_invisible_and_padded_values() -> None:
    text = f'API_KEY={KEY}\u200b\nSPACED=" padded"\nLATER=ok\nLATER=""\n'
    env = parse_env_text(text, path=Path("hotel.env"))
    check_values(env, allows_whitespace=lambda name: False)
    reasons = {problem.line: problem.reason for problem in env.problems}
    assert set(reasons) == {1, 2, 4}
    assert "API_KEY contains U+200B ZERO WIDTH SPACE" in reasons[1]
    assert "SPACED starts with U+0020 SPACE" in reasons[2]
    assert "LATER is empty" in reasons[4]
    for reason in reasons.values():
        assert KEY not in reason
        assert "padded" not in reason


def test_import_rejects_control_and_long_values() -> None:
    # python-dotenv decodes `\\n` inside double quotes, so the certificate spans three lines.
    certificate = "-----BEGIN CERTIFICATE-----\\n" + "A" * 5000 + "\\n-----END CERTIFICATE-----"
    text = (f'NUL_KEY="sk\x00proj"\nCHAIN="{certificate}"\nHUGE={"a" * (MAX_VALUE_LENGTH + 1)}\n'
            'FILLED=sk\u3164proj\n')
    env = parse_env_text(text, path=Path("hotel.env"))
    assert env.values["CHAIN"].count("\n") == 2
    check_values(env, allows_whitespace=lambda name: False)
    reasons = {problem.line: problem.reason for problem in env.problems}
    assert set(reasons) == {1, 3, 4}
    assert "the value of NUL_KEY contains U+0000 NULL at position 3 of 7" in reasons[1]
    assert f"the value of HUGE is {MAX_VALUE_LENGTH + 1} characters long" in reasons[3]
    assert "the value of FILLED contains U+3164 HANGUL FILLER at position 3 of 7" in reasons[4]


def test_import_honours_allow_whitespace() -> None:
    env = parse_env_text('SPACED=" padded"\n', path=Path("hotel.env"))
    check_values(env, allows_whitespace=lambda name: name == "SPACED")
    assert env.problems == []


# --- value_pattern ---------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["(a+)+", r"(?:\w*-?)*", "((ab)*c)*", "(x|y+)*", "(a*)*b", r"(?:\d+-)+\w+"])
def test_nested_unbounded_repeat_rejected(pattern: str) -> None:
    problem = value_pattern_problem(pattern)
    assert problem is not None
    assert "unbounded repeat" in problem


@pytest.mark.parametrize(
    "pattern",
    ["sk-[A-Za-z0-9_-]{20,}", r"(?:\d++-)+\w+", r"(?>a+)+", r"\d{3}-\d{4}", "(ab)+", r"(a+){3}", "[a-z]+(-[a-z])*"],
)
def test_safe_pattern_accepted(pattern: str) -> None:
    assert value_pattern_problem(pattern) is None


def test_invalid_pattern_rejected() -> None:
    assert value_pattern_problem("[") == "invalid regular expression: unterminated character set at position 0"


def test_config_rejects_catastrophic_pattern(tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.write_text('[secrets.OPENAI_API_KEY]\nvalue_pattern = "(a+)+"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert "key 'secrets.OPENAI_API_KEY.value_pattern'" in str(info.value)
    assert "unbounded repeat" in str(info.value)


async def test_backtracking_match_times_out() -> None:
    # Not caught at load: a repeated alternation whose branches match the same text.
    pattern = "(a|aa)+"
    assert value_pattern_problem(pattern) is None

    # regex counts the limit in CPU time, so a busy test machine stretches the wall-clock time.
    started = time.process_time()
    problem = await check_entered_value(provider(value_pattern=pattern), "a" * 60 + "!")
    elapsed = time.process_time() - started

    assert problem is not None
    assert f"took longer than {MATCH_TIMEOUT_SECONDS} s" in problem
    assert elapsed < MATCH_TIMEOUT_SECONDS + 0.5


def test_polynomial_match_times_out() -> None:
    started = time.process_time()
    problem = pattern_mismatch(r"\w*\w*\w*\w*\w*\w*\d", "a" * 3000, name="OPENAI_API_KEY")
    elapsed = time.process_time() - started

    assert problem is not None
    assert "took longer than" in problem
    assert elapsed < MATCH_TIMEOUT_SECONDS + 0.5


def test_long_value_not_matched() -> None:
    problem = pattern_mismatch("a+", "a" * (MAX_MATCHED_LENGTH + 1), name="OPENAI_API_KEY")
    assert problem is not None
    assert f"more than the {MAX_MATCHED_LENGTH}" in problem


def test_pattern_match_and_mismatch() -> None:
    assert pattern_mismatch("sk-[A-Za-z0-9_-]{20,}", "sk-" + "A" * 20, name="OPENAI_API_KEY") is None
    assert pattern_mismatch("sk-[a-z]+", "sk-abc!", name="OPENAI_API_KEY") == (
        "The value does not have the expected format (sk-[a-z]+).")
