"""One raw line -> a JSON value or a rejection: no input crashes, no byte is lost."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studyledger.events import EventKind
from studyledger.ingestion.lines import (
    PREVIEW_BYTES,
    TOO_LONG_KEEP,
    BadLine,
    TooLong,
    parse_line,
    raw_bytes,
    rejection_body,
    rejection_event,
)


def test_valid_json_parses() -> None:
    assert parse_line(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}


def test_nan_and_infinity_are_accepted() -> None:
    value = parse_line(b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": null}')
    assert math.isnan(value["a"]) and value["b"] == math.inf and value["c"] == -math.inf
    assert value["d"] is None


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(BadLine, match=r"invalid UTF-8 at byte 7"):
        parse_line(b'{"a": "\xff"}')


def test_utf16_looking_bytes_are_not_guessed_into_text() -> None:
    # json.loads(bytes) would decode this as UTF-16; a JSONL line must be UTF-8.
    with pytest.raises(BadLine):
        parse_line('{"a": 1}'.encode("utf-16-le"))


def test_invalid_json_names_the_column() -> None:
    with pytest.raises(BadLine, match=r"invalid JSON: .* \(column 7\)"):
        parse_line(b'{"a": }')


def test_deep_nesting_is_a_rejection_not_a_crash() -> None:
    with pytest.raises(BadLine, match="nested too deeply"):
        parse_line(b"[" * 200_000 + b"]" * 200_000)


def test_integer_too_long_for_int_is_a_rejection() -> None:
    with pytest.raises(BadLine, match="invalid JSON"):
        parse_line(b"1" * 10_000)


def test_float_overflow_parses_as_infinity() -> None:
    assert parse_line(b"1e99999") == math.inf


def test_rejection_keeps_exact_bytes_and_a_readable_preview() -> None:
    data = b'{"text": "caf\xc3\xa9 \xff\x00 \x1b[31m"}'
    body = rejection_body(3, 120, "invalid UTF-8 at byte 15: invalid start byte", data, prefix_sha256="p")
    assert raw_bytes(body) == data
    assert body["raw_complete"] is True
    assert body["length"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["raw"].startswith('{"text": "café \\xff')
    assert (body["line"], body["offset"], body["prefix_sha256"]) == (3, 120, "p")
    assert "file" not in body  # where it was read is the event's source, not the fact


def test_long_rejected_line_preview_is_bounded_but_bytes_are_complete() -> None:
    data = b"x" * (PREVIEW_BYTES * 10)
    body = rejection_body(1, 0, "r", data, prefix_sha256="p")
    assert len(body["raw"]) < PREVIEW_BYTES + 40
    assert body["raw"].endswith(f"[{len(data)} bytes]")
    assert raw_bytes(body) == data


def test_too_long_line_keeps_head_length_and_whole_hash() -> None:
    whole = b"y" * 100_000
    body = rejection_body(1, 0, "too long", TooLong(whole[:TOO_LONG_KEEP], len(whole), hashlib.sha256(whole).hexdigest()),
                          prefix_sha256="p")
    assert body["raw_complete"] is False
    assert raw_bytes(body) == whole[:TOO_LONG_KEEP]
    assert body["length"] == len(whole)
    assert body["sha256"] == hashlib.sha256(whole).hexdigest()


def test_same_line_at_same_place_of_the_same_content_is_the_same_rejection_event() -> None:
    first = rejection_event("f", 2, 10, "bad", b"{", prefix_sha256="p")
    again = rejection_event("f", 2, 10, "bad", b"{", prefix_sha256="p")
    copied = rejection_event("copy/f", 2, 10, "bad", b"{", prefix_sha256="p")
    elsewhere = rejection_event("f", 3, 12, "bad", b"{", prefix_sha256="q")
    other_content = rejection_event("f", 2, 10, "bad", b"{", prefix_sha256="q")
    assert first.kind == EventKind.LINE_REJECTED
    assert first.event_id == again.event_id == copied.event_id
    assert len({first.event_id, elsewhere.event_id, other_content.event_id}) == 3
    assert (first.source, copied.source) == ("file:f:2:10", "file:copy/f:2:10")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_are_rejected_with_recoverable_bytes(data: bytes) -> None:
    try:
        parse_line(data)
    except BadLine as exc:
        assert str(exc)
        assert raw_bytes(rejection_body(1, 0, str(exc), data, prefix_sha256="p")) == data


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_any_json_value_round_trips(value: object) -> None:
    parsed = parse_line(json.dumps(value).encode())
    assert json.dumps(parsed) == json.dumps(value)
