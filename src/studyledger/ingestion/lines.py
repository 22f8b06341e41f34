"""One raw line of a JSONL file -> a JSON value, or the reason it cannot be read.

Everything the ingester reads passes through here, and no input may crash it: invalid
UTF-8, invalid JSON, numbers too long for ``int``, nesting deep enough to exhaust the
recursion limit and lines longer than the line limit all become a :class:`BadLine` with a
reason a user can act on. A line that cannot be used is then kept as a ``line_rejected``
event (:func:`rejection_event`) holding its exact bytes, so nothing read is lost.

NaN and Infinity tokens are accepted (``json.loads`` does): real upstream files hold them.
The stdlib parser is used on purpose: orjson refuses those tokens, so it could only be a
fast path with a fallback, and parsing is not where ingestion spends its time (see
``benchmarks/bench_ingest.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import BadLine
from ..events import EventKind, NewEvent, make_event

DEFAULT_LINE_LIMIT = 16 * 1024 * 1024
"""Longest line (bytes, without its newline) the ingester parses; longer ones are rejected."""

PREVIEW_BYTES = 1024
"""How much of a rejected line is shown as readable text (the exact bytes are kept apart)."""

TOO_LONG_KEEP = 4096
"""Bytes kept of a line over the limit: enough to recognise it, never the whole monster."""


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
        BadLine: the line is not UTF-8, not JSON, nested too deeply or holds an integer
            too long to convert.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise BadLine("invalid JSON: nested too deeply to parse") from None
    except ValueError as exc:
        # int() refuses more than sys.get_int_max_str_digits() digits with a ValueError.
        raise BadLine(f"invalid JSON: {exc}") from None


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
    """A file's name as text the ledger can store.

    A name is bytes on POSIX; Python holds the bytes that are not UTF-8 as lone surrogates,
    which no text column can store. Those bytes are written ``\\xNN`` here (the exact name
    is kept beside it where it matters: a rejection's ``file_base64``), so one file with
    such a name never stops the others.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", errors="backslashreplace")
    return path


def rejection_body(
    file: str, line: int, offset: int, reason: str, data: bytes | TooLong
) -> dict[str, Any]:
    """Body of a ``line_rejected`` event.

    ``raw`` is the readable preview (what ``studyledger rejects`` and the dashboard show);
    ``raw_base64`` holds the exact bytes, complete unless the line was over the limit, in
    which case ``length`` and ``sha256`` still describe the whole line. The body holds no
    time, so re-reading the same line at the same place is the same event. ``file`` is the
    name as text (:func:`path_text`); when the name is not UTF-8, ``file_base64`` holds its
    exact bytes.

    Args:
        file: The file the line was read from (as the filesystem names it).
        line: Its 1-based line number.
        offset: The byte offset where it starts.
        reason: Why it could not be used.
        data: Its bytes without the newline, or a :class:`TooLong` for a line over the limit.
    """
    if isinstance(data, TooLong):
        kept, length, digest = data.head, data.length, data.sha256
    else:
        kept, length, digest = data, len(data), hashlib.sha256(data).hexdigest()
    body: dict[str, Any] = {
        "file": path_text(file),
        "line": line,
        "offset": offset,
        "reason": reason,
        "raw": preview(kept, length),
        "raw_base64": base64.b64encode(kept).decode("ascii"),
        "raw_complete": len(kept) == length,
        "length": length,
        "sha256": digest,
    }
    if body["file"] != file:
        body["file_base64"] = base64.b64encode(os.fsencode(file)).decode("ascii")
    return body


def rejection_event(
    file: str, line: int, offset: int, reason: str, data: bytes | TooLong
) -> NewEvent:
    """The ``line_rejected`` event for a line (see :func:`rejection_body`)."""
    return make_event(
        EventKind.LINE_REJECTED,
        rejection_body(file, line, offset, reason, data),
        source=source_for(file, line, offset),
    )


def source_for(file: str, line: int, offset: int) -> str:
    """The ``source`` of events read from a line: ``file:PATH:LINE:OFFSET`` (PATH as text)."""
    return f"file:{path_text(file)}:{line}:{offset}"


def raw_bytes(body: dict[str, Any]) -> bytes:
    """The bytes a rejection kept (the whole line when ``raw_complete``)."""
    return base64.b64decode(body.get("raw_base64", ""))
