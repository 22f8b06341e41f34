"""One raw line of a JSONL file -> a JSON value, or the reason it cannot be read.

Everything the ingester reads passes through here, and no input may crash it: invalid
UTF-8, invalid JSON, numbers too long for ``int``, nesting deep enough to exhaust the
recursion limit and lines longer than the line limit all become a :class:`BadLine` with a
reason a user can act on. A line that cannot be used is then kept as a ``line_rejected``
event (:func:`rejection_event`) holding its exact bytes, so nothing read is lost.

NaN and Infinity tokens are accepted (``json.loads`` does): real upstream files hold them.
A number a float cannot hold (``1e400``, ``1e-400``) is rejected rather than read as
Infinity or 0.0, a leading UTF-8 byte order mark is dropped, and a line may hold at most
:data:`MAX_VALUES` JSON values: what one line costs is bounded by more than its bytes.

The standard library's parser defines what a line means. orjson parses it three times
faster and gives the same value wherever it accepts the line and no number in it could be
read differently (:func:`_risky_numbers`); every other line, and every line orjson refuses
(NaN and Infinity tokens, lone surrogates, errors), goes through the standard parser,
which also words the reason a bad line is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import BadLine
from ..events import EventKind, NewEvent, make_event

DEFAULT_LINE_LIMIT = 16 * 1024 * 1024
"""Longest line (bytes, without its newline) the ingester parses; longer ones are rejected."""

PREVIEW_BYTES = 1024
"""How much of a rejected line is shown as readable text (the exact bytes are kept apart)."""

TOO_LONG_KEEP = 4096
"""Bytes kept of a line over the limit: enough to recognise it, never the whole monster."""

MAX_VALUES = 100_000
"""Most JSON values (numbers, strings, objects, ...) one line may hold. A 16 MiB line of
``{},{},...`` is 5.6 million objects: parsed, encoded and stored it took 888 MB. At this
limit the worst line costs about 60 MB more than a plain one of the same size."""

BOM = b"\xef\xbb\xbf"
# Digits as 0, e and E as e, minus as itself, anything else a space: a line's numbers
# become runs findable with bytes.find, which is many times quicker than a regular
# expression over the line.
_NUMBER_SHAPES = bytes(48 if 48 <= b <= 57 else 101 if b in b"eE" else 45 if b == 45 else 32 for b in range(256))


def _risky_numbers(data: bytes) -> bool:
    """Whether a line may hold a number orjson reads otherwise than the standard parser.

    orjson turns an integer beyond 64 bits (or below -2**63) into a float, and a float
    that underflows (``1e-400``) into 0.0 where the standard parser's hook refuses it; an
    overflowing one it refuses itself. Only a number with a run of 19 digits or more, or an
    exponent of three digits or more after a minus, can be one of those. Such digits inside
    a string only send the line to the standard parser.
    """
    shapes = data.translate(_NUMBER_SHAPES)
    return b"0000000000000000000" in shapes or b"e-000" in shapes
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line over the limit, read past without keeping it.

    Attributes:
        head: Its first :data:`TOO_LONG_KEEP` bytes.
        length: Its length in bytes, without the newline.
        sha256: Hex digest of the whole line, so a copy elsewhere can be matched to it.
    """

    head: bytes
    length: int
    sha256: str


def is_blank(data: bytes) -> bool:
    """Whether a line holds only whitespace: it states nothing, so it is accepted as empty."""
    return not data.strip()


def parse_line(data: bytes) -> Any:
    """Parse one line (without its newline) as UTF-8 JSON.

    Decoding is explicit because ``json.loads(bytes)`` guesses UTF-16/32 from zero bytes,
    which would turn garbage into text instead of rejecting it.

    Raises:
        BadLine: the line is not UTF-8, not JSON, nested too deeply, holds an integer too
            long to convert, a number a float cannot hold, or more than
            :data:`MAX_VALUES` values.
    """
    return decode_line(data)[0]


def decode_line(data: bytes) -> tuple[Any, bool]:
    """:func:`parse_line`, and whether orjson read the line.

    A value orjson read is made of exact dicts, lists, text, integers below 2**63 in size,
    finite floats, booleans and null, which orjson writes back exactly as they read: what
    lets :func:`~studyledger.events.canonical` skip its read-back check (``decoded``).

    Raises:
        BadLine: as :func:`parse_line`.
    """
    if data.startswith(BOM):
        data = data[len(BOM):]
    # Every value takes a byte at least, so only a long line can hold too many.
    if len(data) > MAX_VALUES:
        count = values_in(data)
        if count > MAX_VALUES:
            raise BadLine(f"too many JSON values in one line ({count:,}; at most {MAX_VALUES:,})")
    if not _risky_numbers(data):
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass  # the standard parser reads what orjson refuses, or says why it is not JSON
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from None
    try:
        return _DECODER.decode(text), False
    except BadLine:
        raise
    except json.JSONDecodeError as exc:
        raise BadLine(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise BadLine("invalid JSON: nested too deeply to parse") from None
    except ValueError as exc:
        # int() refuses more than sys.get_int_max_str_digits() digits with a ValueError.
        raise BadLine(f"invalid JSON: {exc}") from None


def values_in(data: bytes) -> int:
    """How many JSON values a line holds, counted from separators and brackets outside strings.

    Each value is the line itself or a child of a container; a container with children
    has one comma fewer than it has children. So the values are 1 + commas + containers
    that are not empty: never fewer than that count (an empty container written with
    space inside is counted as a child). Strings are skipped only when the quick count
    says it might matter.
    """
    def count(text: bytes) -> int:
        containers = text.count(b"[") + text.count(b"{")
        return 1 + text.count(b",") + containers - text.count(b"[]") - text.count(b"{}")

    quick = count(data)
    return quick if quick <= MAX_VALUES else count(_STRING.sub(b'""', data))


def _exact_float(text: str) -> float:
    """A JSON number as a float, refused when the float would not be that number's size."""
    value = float(text)
    mantissa = text.lower().split("e")[0]
    if math.isinf(value) or (value == 0.0 and mantissa.strip("-+0.")):
        raise BadLine(f"number {text[:40]} is out of the range of a 64-bit float "
                      f"({'it would read as Infinity' if math.isinf(value) else 'it would read as 0'})")
    return value


# Built once (json.loads with options builds a decoder per call). The float hook costs
# nothing on a line without floats and doubles the parse of a line of thousands of them.
_DECODER = json.JSONDecoder(parse_float=_exact_float)


def preview(data: bytes, length: int | None = None) -> str:
    """Readable text of raw bytes: undecodable bytes as ``\\xNN``, long text cut with a count.

    Args:
        data: The bytes (possibly only the head of a longer line).
        length: The whole line's length when ``data`` is only its head.
    """
    total = len(data) if length is None else length
    text = data[:PREVIEW_BYTES].decode("utf-8", errors="backslashreplace")
    return text + f"...[{total} bytes]" if total > PREVIEW_BYTES else text


def path_text(path: str) -> str:
    """A file's name as text the ledger can store (in sources and ingest state).

    A name is bytes on POSIX; Python holds the bytes that are not UTF-8 as lone surrogates,
    which no text column can store. Those bytes are written ``\\xNN`` here, so one file
    with such a name is read like any other and never stops the others.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", errors="backslashreplace")
    return path


def rejection_body(
    line: int, offset: int, reason: str, data: bytes | TooLong, *, prefix_sha256: str
) -> dict[str, Any]:
    """Body of a ``line_rejected`` event.

    ``raw`` is the readable preview (what ``studyledger rejects`` and the dashboard show);
    ``raw_base64`` holds the exact bytes, complete unless the line was over the limit, in
    which case ``length`` and ``sha256`` still describe the whole line. ``prefix_sha256``
    names the content the line ends: the file's bytes from its start through this line's
    newline. The body holds no time and no file name (the event's ``source`` says where it
    was read), so the same bad line of the same content is one event, read again or read
    from a copy elsewhere.

    Args:
        line: Its 1-based line number.
        offset: The byte offset where it starts.
        reason: Why it could not be used.
        data: Its bytes without the newline, or a :class:`TooLong` for a line over the limit.
        prefix_sha256: Hex sha256 of the file's bytes up to and including this line.
    """
    if isinstance(data, TooLong):
        kept, length, digest = data.head, data.length, data.sha256
    else:
        kept, length, digest = data, len(data), hashlib.sha256(data).hexdigest()
    return {
        "line": line,
        "offset": offset,
        "reason": reason,
        "raw": preview(kept, length),
        "raw_base64": base64.b64encode(kept).decode("ascii"),
        "raw_complete": len(kept) == length,
        "length": length,
        "sha256": digest,
        "prefix_sha256": prefix_sha256,
    }


def rejection_event(
    file: str, line: int, offset: int, reason: str, data: bytes | TooLong, *, prefix_sha256: str
) -> NewEvent:
    """The ``line_rejected`` event for a line (see :func:`rejection_body`), read from ``file``."""
    return make_event(
        EventKind.LINE_REJECTED,
        rejection_body(line, offset, reason, data, prefix_sha256=prefix_sha256),
        source=source_for(file, line, offset),
    )


def line_end(offset: int, data: bytes | TooLong) -> int:
    """The offset just after a line's newline."""
    return offset + (data.length if isinstance(data, TooLong) else len(data)) + 1


def source_for(file: str, line: int, offset: int) -> str:
    """The ``source`` of events read from a line: ``file:PATH:LINE:OFFSET`` (PATH as text)."""
    return f"{source_prefix(file)}{line}:{offset}"


def source_prefix(file: str) -> str:
    """``file:PATH:``, what the sources of every line of a file begin with (made once a file)."""
    return f"file:{path_text(file)}:"


def raw_bytes(body: dict[str, Any]) -> bytes:
    """The bytes a rejection kept (the whole line when ``raw_complete``)."""
    return base64.b64decode(body.get("raw_base64", ""))
