"""The `secrets import` encoder and the model of flyctl's import parser."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.errors import UnsafeValueError
from bot.flyctl.importfile import MAX_VALUE_BYTES, ImportParseError, encode_import, parse_import

# --- the parser model, one case per rule of flyctl's parser ------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=2\n", {"A": "1", "B": "2"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("A=1", {"A": "1"}),
        ("# comment\n\n   \nA=1\n", {"A": "1"}),
        ("A = bar\n", {"A": "bar"}),
        ("A=   bar   \n", {"A": "bar   "}),
        ("A=\tbar\n", {"A": "\tbar"}),
        ("A=abc#def\n", {"A": "abc"}),
        ("A='abc#def'\n", {"A": "'abc"}),
        ('A="abc#def"\n', {"A": "abc#def"}),
        ('A="x" # note\n', {"A": "x"}),
        ('A="x"\n', {"A": "x"}),
        ("A='x'\n", {"A": "x"}),
        ('A=\\n\n', {"A": "\\n"}),
        ('A=$HOME\n', {"A": "$HOME"}),
        ('A=""""""\n', {"A": ""}),
        ('A="""abc"""\n', {"A": "abc"}),
        ('A="""\nline\n"""\n', {"A": "\nline\n"}),
        ('A="""one\n# two\n\nthree"""\n', {"A": "one\n# two\n\nthree"}),
        ('A="""one\r\ntwo"""\r\n', {"A": "one\ntwo"}),
        ('A="""one\ntwo""" \nthree"""\n', {"A": 'one\ntwo""" \nthree'}),
        ('A="""never closed\nB=2\n', {}),
        ("A=1\nA=2\n", {"A": "2"}),
        ("export FOO=bar\n", {"export FOO": "bar"}),
        ("", {}),
    ],
)
def test_parser_model_rules(text: str, expected: dict[str, str]) -> None:
    assert parse_import(text) == expected


def test_parser_rejects_line_without_equals() -> None:
    with pytest.raises(ImportParseError, match="line 2"):
        parse_import("A=1\nnot-a-pair\n")


def test_parser_error_omits_line() -> None:
    with pytest.raises(ImportParseError) as caught:
        parse_import("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")
    assert "MIIEv" not in str(caught.value)


@pytest.mark.parametrize("text", ['A="\n', "A='\n"])
def test_parser_lone_quote_panics(text: str) -> None:
    with pytest.raises(ImportParseError, match="panic"):
        parse_import(text)


def test_parser_indented_comment_is_a_line() -> None:
    with pytest.raises(ImportParseError):
        parse_import("  # indented comment\n")


def test_parser_stops_at_overlong_line() -> None:
    long_line = "B=" + "x" * 70_000
    assert parse_import(f"A=1\n{long_line}\nC=3\n") == {"A": "1"}


# --- encoder: chosen forms ----------------------------------------------------


def test_encode_uses_double_quotes() -> None:
    assert encode_import({"API_KEY": "s3cr#t value"}) == 'API_KEY="s3cr#t value"\n'


def test_encode_multiline_uses_triple_quotes() -> None:
    pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    text = encode_import({"TLS_KEY": pem})
    assert text == f'TLS_KEY="""{pem}"""\n'


def test_encode_falls_back_to_bare_value() -> None:
    # Inside double quotes the '#' would follow two quotes and be cut as a comment.
    text = encode_import({"A": 'a"b#c'})
    assert text == 'A=a"b#c\n'


def test_encode_falls_back_to_triple_quotes() -> None:
    text = encode_import({"A": '""x "'})
    assert parse_import(text) == {"A": '""x "'}


def test_encode_lone_quote_value() -> None:
    assert parse_import(encode_import({"A": '"'})) == {"A": '"'}


def test_encode_keeps_order_and_all_names() -> None:
    values = {"B": "2", "A": "1\n2", "C": ""}
    assert parse_import(encode_import(values)) == values


def test_encode_empty_mapping_rejected() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode_import({})


# --- encoder: values that cannot round-trip ---------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("line\r\nnext", "carriage return"),
        ("has\x00nul", "NUL"),
        ('ends in """\nmore', '"""'),
        ("x" * (MAX_VALUE_BYTES + 1), "bytes"),
        ("\ud800", "surrogate"),
        (' a"b#c', "'#'"),
        ('a"b#c\nsecond', "'#'"),
    ],
)
def test_encode_rejects_unsafe_value(value: str, reason: str) -> None:
    with pytest.raises(UnsafeValueError, match=reason) as caught:
        encode_import({"OK": "fine", "BAD_ONE": value})
    assert "BAD_ONE" in str(caught.value)


def test_encode_reason_never_contains_value() -> None:
    value = 'topsecret"# \nsecond line'
    with pytest.raises(UnsafeValueError) as caught:
        encode_import({"A": value})
    assert "topsecret" not in str(caught.value)


def test_encode_rejects_value_of_wrong_type() -> None:
    with pytest.raises(UnsafeValueError, match="not text"):
        encode_import({"A": b"bytes"})  # type: ignore[dict-item]


@pytest.mark.parametrize("name", ["", "1ABC", "A-B", "A B", "export A", "A=B", "É"])
def test_encode_rejects_invalid_name(name: str) -> None:
    with pytest.raises(UnsafeValueError, match="secret name"):
        encode_import({name: "value"})


def test_encode_accepts_largest_value() -> None:
    value = "x" * (MAX_VALUE_BYTES - 16)
    assert parse_import(encode_import({"BIG": value})) == {"BIG": value}


def test_encode_rejects_line_over_scanner_limit() -> None:
    with pytest.raises(UnsafeValueError, match="longer than"):
        encode_import({"BIG": "x" * MAX_VALUE_BYTES})


# --- property: whatever encode_import accepts, flyctl reads back exactly ----------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
awkward_text = st.text(
    alphabet=st.sampled_from(list(" \t\"'#=\n\r\\$`-_aZ09") + ["é", "☃", "\u2028", "\x85", "\xa0"]),
    max_size=40,
)
any_text = st.text(max_size=60)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, st.one_of(awkward_text, any_text), min_size=1, max_size=5))
@example({"A": ' leading and trailing  '})
@example({"A": '"quoted"'})
@example({"A": "'single'"})
@example({"A": "a=b=c"})
@example({"A": '"""'})
@example({"A": "\n"})
@example({"A": "#"})
def test_round_trip_or_reject(values: dict[str, str]) -> None:
    try:
        text = encode_import(values)
    except UnsafeValueError:
        return
    assert parse_import(text) == values


@settings(max_examples=300)
@given(
    st.dictionaries(
        names,
        st.text(alphabet=st.characters(blacklist_characters='\x00\r"#', blacklist_categories=("Cs",)), max_size=80),
        min_size=1,
        max_size=5,
    )
)
def test_plain_values_always_encode(values: dict[str, str]) -> None:
    # Values without NUL, CR, double quotes or '#' have no reason to be rejected.
    assert parse_import(encode_import(values)) == values
