"""studyledger's own line format (docs/own-lines.md): one event per JSON line.

The one place that knows the format, used by the JSONL export, the drop-folder writer and
the ingester, so that a written line always reads back as the same event.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import OwnLineError
from .events import EventKind, NewEvent, StoredEvent, canonical_body, event_from_body, event_id_for

FORMAT_KEY = "studyledger"
FORMAT_VERSION = 1
_KINDS = frozenset(kind.value for kind in EventKind)


def line_for(kind: str, body: dict[str, Any]) -> str:
    """A minimal line (no recording metadata) for a writer: what DropWriter appends."""
    return _dump({FORMAT_KEY: FORMAT_VERSION, "kind": kind, "body": json.loads(canonical_body(body))})


def line_for_stored(event: StoredEvent) -> str:
    """A full line for export: re-importing it reproduces the id, order and chain."""
    return _dump(
        {
            FORMAT_KEY: FORMAT_VERSION,
            "seq": event.seq,
            "event_id": event.event_id,
            "kind": event.kind,
            "body": json.loads(event.body),
            "recorded_at": event.recorded_at,
            "source": event.source,
        }
    )


def _dump(obj: dict[str, Any]) -> str:
    return canonical_body(obj) + "\n"


def event_from_line(obj: dict[str, Any], *, source: str) -> NewEvent:
    """The event a line of ours states.

    Args:
        obj: The parsed line.
        source: Where the line was read (used when the line carries no source of its own).

    Raises:
        OwnLineError: wrong version, unknown kind, body not an object, or an ``event_id``
            that does not match the kind and body.
    """
    version = obj.get(FORMAT_KEY)
    if type(version) is not int or version != FORMAT_VERSION:  # True == 1 in Python
        raise OwnLineError(f"studyledger line format {version!r} is not supported (expected {FORMAT_VERSION})")
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise OwnLineError(f"unknown event kind {kind!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise OwnLineError("'body' must be a JSON object")
    text = canonical_body(body)
    event_id = event_id_for(kind, text)
    claimed = obj.get("event_id")
    if claimed is not None and claimed != event_id:
        raise OwnLineError(f"event_id {claimed!r} does not match its kind and body (computed {event_id})")
    recorded_at, own_source = obj.get("recorded_at"), obj.get("source")
    return event_from_body(
        kind,
        text,
        body,
        source=own_source if isinstance(own_source, str) else source,
        recorded_at=recorded_at if isinstance(recorded_at, str) else None,
        event_id=event_id,
    )
