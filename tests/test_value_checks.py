"""The checks every path applies to a value a person supplies, and the value_pattern rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.config import load_policy
from bot.errors import ConfigError
from bot.importing.envfile import check_values, parse_env_text
from bot.policy import Priority, SecretPolicy, Source
from bot.steps.values import check_entered_value
from bot.terminal.driver import typed_value_problem
from bot.value_checks import (
    MATCH_TIMEOUT_SECONDS,
    MAX_MATCHED_LENGTH,
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


# --- every path calls it ---------------------------------------------------------------


def test_value_form_rejects_zero_width_space() -> None:
    problem = check_entered_value(provider(), KEY + "\u200b")
    assert problem is not None
    assert "U+200B ZERO WIDTH SPACE at position 25 of 25" in problem


def test_value_form_rejects_unicode_space() -> None:
    problem = check_entered_value(provider(), KEY + "\u00a0")
    assert problem is not None
    assert "U+00A0 NO-BREAK SPACE" in problem
    assert check_entered_value(provider(allow_whitespace=True), KEY + "\u00a0") is None


def test_value_form_keeps_empty_wording() -> None:
    assert check_entered_value(provider(), "") == "Enter a value."


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


def test_backtracking_match_times_out() -> None:
    # Not caught at load: a repeated alternation whose branches match the same text.
    pattern = "(a|aa)+"
    assert value_pattern_problem(pattern) is None

    # regex counts the limit in CPU time, so a busy test machine stretches the wall-clock time.
    started = time.process_time()
    problem = check_entered_value(provider(value_pattern=pattern), "a" * 60 + "!")
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
