"""The fast codec (orjson) is the exact codec (the standard library) wherever it is used.

Ids and the chain are defined on the seed's canonical bytes; ingestion parses lines and
writes bodies with orjson where its result is provably the standard library's, and falls
back to the standard library everywhere else. These tests hold both paths to one answer.
"""

from __future__ import annotations

import enum
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studyledger import events
from studyledger.errors import BadLine
from studyledger.events import canonical, canonical_body, make_event
from studyledger.ingestion import lines
from studyledger.ingestion.lines import parse_line
from studyledger.schema import stable_json_dumps


def exact_parse(data: bytes) -> Any:
    """parse_line as it reads without orjson: the standard parser defines a line's value."""
    saved = lines._risky_numbers
    lines._risky_numbers = lambda data: True
    try:
        return parse_line(data)
    finally:
        lines._risky_numbers = saved


def reads_as_the_standard_parser_reads(data: bytes) -> None:
    """parse_line gives the standard parser's value, or refuses the line for the same reason."""
    try:
        expected = exact_parse(data)
    except BadLine as exc:
        with pytest.raises(BadLine) as raised:
            parse_line(data)
        assert str(raised.value) == str(exc)
        return
    assert same(parse_line(data), expected)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 == 1.0 == True are not the same value)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


# Floats of every decimal magnitude, where orjson and repr spell some differently.
any_float = st.floats(allow_nan=True, allow_infinity=True) | st.builds(
    lambda mantissa, exponent: float(f"{mantissa!r}e{exponent}"),
    st.floats(min_value=1, max_value=10, exclude_max=True), st.integers(min_value=-330, max_value=307))
any_text = st.text() | st.text(alphabet=st.characters(max_codepoint=127)) | st.sampled_from(["\x7f", "a\x00b", "\ud800"])
scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62, max_value=2**70) | any_float | any_text
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=500)
@given(values)
def test_canonical_text_is_the_seeds_and_plain_means_it_reads_back_as_the_body(value: Any) -> None:
    text, plain = canonical(value)
    assert text == stable_json_dumps(value)
    if plain:
        assert same(json.loads(text), value)


@pytest.mark.parametrize("exponent", range(-12, 20))
def test_floats_at_each_exponent_keep_reprs_spelling(exponent: int) -> None:
    # orjson writes 0.0000628 and 1e-7 where repr writes 6.28e-05 and 1e-07.
    for mantissa in (1.0, 6.28, -3.5, 9.999999999999998):
        number = mantissa * 10.0 ** exponent
        assert canonical_body({"x": number}) == '{"x":' + repr(number) + "}"


class Colour(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [
    {"nan": math.nan}, {"inf": [math.inf, -math.inf]}, {"t": (1, 2)}, {"e": Colour.RED}, {"u": uuid.UUID(int=7)},
    {"p": Point(1)}, {"big": 2**64}, {1: "int key"}, {"s": {3, 1, 2}}, {"del": "\x7f"}, {"é": "ü"},
])
def test_values_orjson_would_write_otherwise_take_the_exact_encoder(value: Any) -> None:
    text, plain = canonical(value)
    assert text == stable_json_dumps(value)
    assert not plain


def test_an_event_carries_its_body_only_when_the_text_reads_back_as_it() -> None:
    plain = make_event("observation_recorded", {"timestamp": "2026-01-01T00:00:00+00:00", "record_id": "r",
                                                "event_type": "x", "level": 7}, source="api")
    assert plain.data is not None and json.loads(plain.body) == plain.data
    assert plain.misfits == ("level",)
    tagged = make_event("evaluation_recorded", {"metric_value": math.nan}, source="api")
    assert tagged.data is None and tagged.misfits is None


number_literals = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    any_float.filter(math.isfinite).map(repr),
    st.builds(lambda sign, digits, point, exp: f"{sign}{digits}{point}{exp}",
              st.sampled_from(["", "-"]), st.from_regex(r"\A(0|[1-9][0-9]{0,25})\Z"),
              st.sampled_from(["", ".0", ".5", ".000001", "." + "0" * 30 + "1"]),
              st.sampled_from(["", "e5", "E-5", "e+16", "e-07", "e-320", "e-400", "e400", "e-0400", "E+308", "e-99"])),
)


@settings(max_examples=500)
@given(st.lists(number_literals, min_size=1, max_size=6), st.sampled_from(["", "trace-e-123", "x" * 30]))
def test_a_line_reads_as_the_standard_parser_reads_it(numbers: list[str], text: str) -> None:
    data = ('{"t":' + json.dumps(text) + ',"n":[' + ",".join(numbers) + "]}").encode()
    reads_as_the_standard_parser_reads(data)


@settings(max_examples=300)
@given(values)
def test_any_json_text_reads_as_the_standard_parser_reads_it(value: Any) -> None:
    try:
        data = json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    except (ValueError, RecursionError):
        return
    reads_as_the_standard_parser_reads(data)


@settings(max_examples=500)
@given(values, st.integers(min_value=-(2**63), max_value=2**63 - 1), any_text)
def test_what_orjson_read_is_written_without_its_read_back_check(value: Any, number: int, text: str) -> None:
    # A body made of what orjson read of a line and of text and 64-bit integers of the
    # caller's (as the trace adapter builds one) is written as the exact encoder writes it,
    # and reads back as itself: decode_line says when the read-back check may be skipped.
    try:
        data = json.dumps({"line": value}, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
        parsed, decoded = lines.decode_line(data)
    except (ValueError, RecursionError, BadLine):
        return
    if not decoded:
        return
    body = {"read": parsed, "n": number, "t": text, "none": None}
    text_out, plain = canonical(body, decoded=True)
    assert text_out == stable_json_dumps(body)
    if plain:
        assert same(json.loads(text_out), body)
    assert (text_out, plain) == canonical(body)


@pytest.mark.parametrize("data", [
    b'{"a":NaN}', b'[Infinity,-Infinity]', b'"\\ud800"', b'{"a":1,"a":2}', b'\xef\xbb\xbf{"bom":1}', b'"a\x7f"',
    b'[18446744073709551616,-9223372036854775809,9223372036854775808]', b"[1e-400]", b"[1e400]", b"[0.0,-0.0,-0]",
    b'{"a":"\x01"}', b"[1,]", b"\xff", b"[" * 3000, b'"\\u0000"',
])
def test_edge_lines_read_as_the_standard_parser_reads_them(data: bytes) -> None:
    reads_as_the_standard_parser_reads(data)


def test_without_orjson_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"x": [0.0000628, 1e-7, 1e16, "trace-e-1"], "y": {"b": None, "a": True}}
    fast = canonical_body(body)
    monkeypatch.setattr(events, "_fast_canonical", lambda body, decoded: None)
    assert canonical(body) == (fast, False)
