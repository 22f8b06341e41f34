"""One raw line -> a JSON value or a rejection: no input crashes, no byte is lost."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

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
    values_in,
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
        parse_line(b"[" * 60_000 + b"]" * 60_000)


def test_integer_too_long_for_int_is_a_rejection() -> None:
    with pytest.raises(BadLine, match="invalid JSON"):
        parse_line(b"1" * 10_000)


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


def test_too_many_values_are_refused_before_they_are_built() -> None:
    with pytest.raises(BadLine, match=r"too many JSON values in one line \(200,002; at most 100,000\)"):
        parse_line(b"[" + b"{}," * 200_000 + b"{}]")
    # Separators inside strings are not values.
    assert parse_line(b'["' + b"," * 300_000 + b'"]') == ["," * 300_000]
    assert values_in(b'{"a": [1, 2, {"b": []}]}') == 6


@pytest.mark.parametrize(("number", "reads_as"), [("1e400", "Infinity"), ("-1E+999", "Infinity"),
                                                  ("1e-400", "0"), ("-0.5e-999", "0")])
def test_a_number_a_float_cannot_hold_is_rejected_not_changed(number: str, reads_as: str) -> None:
    """Issue 11, item 16: 1e400 silently became Infinity and 1e-400 became 0.0."""
    with pytest.raises(BadLine, match=f"number {re.escape(number)} is out of the range.*read as {reads_as}"):
        parse_line(f'{{"v": {number}}}'.encode())


@pytest.mark.parametrize("number", ["1e308", "0e-999", "0.0E+400", "1e-300", "123456789e-100", '"1e400"'])
def test_numbers_a_float_holds_are_kept(number: str) -> None:
    assert parse_line(f'{{"v": {number}}}'.encode()) == {"v": json.loads(number)}


def test_a_leading_byte_order_mark_is_dropped() -> None:
    """Issue 11, item 16: a UTF-8 BOM rejected the first line of a file."""
    assert parse_line(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


PEAK = """
import resource
import sys
from pathlib import Path
from studyledger import Ledger, ingest
from studyledger.audit.export_jsonl import export_jsonl
folder = Path(sys.argv[1])
if sys.argv[2] == "ingest":
    with Ledger.open(folder / "l.db") as ledger:
        report = ingest(ledger, [folder / "big.jsonl"])
    print(report.lines_accepted, report.lines_rejected)
else:
    with Ledger.open(folder / "l.db", readonly=True) as ledger:
        print(export_jsonl(ledger, folder / "out")["events"])
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # the ingest worker's, 0 when none ran
"""


def _monsters(path: Path) -> None:
    """Three lines of 16 MiB, within the default line limit, written piece by piece."""
    size = 16 * 1024 * 1024 - 64
    count = size // 3
    with open(path, "wb") as out:
        for head, tail, items in ((b'{"meta_json":{"a":[', b"{}]}}\n", count - 8),
                                  (b'{"record_id":"r","timestamp":"2026-01-01T00:00:00+00:00","event_type":"x",'
                                   b'"meta_json":{"a":[', b"{}]}}\n", count - 40)):
            out.write(head)
            for _ in range(items // 100_000):
                out.write(b"{}," * 100_000)
            out.write(b"{}," * (items % 100_000) + tail)
        out.write(b'{"record_id":"s","timestamp":"2026-01-01T00:00:00+00:00","event_type":"x","text":"')
        for _ in range(16):
            out.write(b"y" * (1024 * 1024 - 16))
        out.write(b'"}\n')


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_one_long_line_costs_a_bounded_amount_of_memory(tmp_path: Path) -> None:
    """Issue 11, item 5: one 16 MiB line of ``{},{},...`` (within the line limit) took 888 MB
    to ingest and as much to export. Now values are counted before they are built, a
    body's id and chain are hashed without joined copies, and export splices the stored
    body: ingesting three such lines, and exporting them, each peaks at a bounded size
    (about 160-210 and 190 MB here, 64 MB of which is SQLite's page cache). The 48 MB file
    is read with a worker process: it peaks at about 170 MB."""
    _monsters(tmp_path / "big.jsonl")
    for step, expected in (("ingest", "1 2"), ("export", "3")):
        result = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path), step], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        output, peak_kib, worker_kib = result.stdout.split("\n")[:3]
        assert output == expected
        assert int(peak_kib) < 250 * 1024, f"{step}: peak RSS {int(peak_kib) // 1024} MB"
        assert int(worker_kib) < 250 * 1024, f"{step}: the worker's peak RSS {int(worker_kib) // 1024} MB"
