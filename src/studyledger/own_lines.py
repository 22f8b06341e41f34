"""studyledger's own line format (docs/own-lines.md): one event per JSON line.

The one place that knows the format, used by the JSONL export, the drop-folder writer, the
ingester and restore, so that a written line always reads back as the same event.

A line read from a drop folder is untrusted: it states a fact (kind and body), checked
against the kind's shape, and never sets what the ledger records about the fact (when and
where it was recorded) nor states what studyledger itself did (a rejected line, an audit).
An export read back by restore keeps those, because restore verifies the chain first.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import OwnLineError, ValidationError
from .events import (
    RECORDED_BY_STUDYLEDGER,
    EventKind,
    NewEvent,
    StoredEvent,
    canonical,
    canonical_body,
    check_body,
    event_from_body,
    event_id_for,
    is_time,
)

FORMAT_KEY = "studyledger"
FORMAT_VERSION = 1
_KINDS = frozenset(kind.value for kind in EventKind)


def line_for(kind: str, body: dict[str, Any]) -> str:
    """A minimal line (no recording metadata) for a writer: what DropWriter appends."""
    return _dump({FORMAT_KEY: FORMAT_VERSION, "kind": kind, "body": json.loads(canonical_body(body))})


def line_for_stored(event: StoredEvent) -> str:
    """A full line for export: restoring it reproduces the id, order and chain.

    The stored body is canonical JSON already, so it is spliced in as it is rather than
    decoded and encoded again: the cost of a line stays its length, whatever the body
    holds, and the line is exactly what :func:`canonical_body` would make of it (keys in
    sorted order, ``body`` first).
    """
    rest = canonical_body({
        "chain": event.chain,
        "event_id": event.event_id,
        "kind": event.kind,
        "recorded_at": event.recorded_at,
        "seq": event.seq,
        "source": event.source,
        FORMAT_KEY: FORMAT_VERSION,
    })
    return '{"body":' + event.body + "," + rest[1:] + "\n"


def _dump(obj: dict[str, Any]) -> str:
    return canonical_body(obj) + "\n"


def _fact(obj: dict[str, Any], decoded: bool = False) -> tuple[str, dict[str, Any], str, str, bool]:
    """``(kind, body, canonical text, event id, plain)`` of a line, its shape checked
    (``plain``: decoding the text gives the body back; ``decoded``: orjson read the line;
    see :func:`~studyledger.events.canonical`).

    Raises:
        OwnLineError: wrong version, unknown kind, a body that is not its kind's shape, or
            an ``event_id`` that does not match the kind and body.
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
    text, plain = canonical(body, decoded=decoded)
    try:
        check_body(kind, body, text)
    except ValidationError as exc:
        raise OwnLineError(str(exc)) from None
    event_id = event_id_for(kind, text)
    claimed = obj.get("event_id")
    if claimed is not None and claimed != event_id:
        raise OwnLineError(f"event_id {claimed!r} does not match its kind and body (computed {event_id})")
    return kind, body, text, event_id, plain


def event_from_line(obj: dict[str, Any], *, source: str, decoded: bool = False) -> NewEvent:
    """The event an untrusted line of ours states (a drop folder, a user's adapter).

    ``recorded_at``, ``source``, ``seq`` and ``chain`` keys are ignored: when and where the
    ledger recorded a fact is the ledger's to say.

    Args:
        obj: The parsed line.
        source: Where the line was read.
        decoded: orjson read the line (see :func:`~studyledger.events.canonical`).

    Raises:
        OwnLineError: as :func:`_fact`, or a kind only studyledger itself records.
    """
    kind = obj.get("kind")
    if kind in RECORDED_BY_STUDYLEDGER:
        raise OwnLineError(f"{kind} events are recorded by studyledger itself, not read from files; "
                           "to copy a whole ledger use `studyledger restore` (an export) or `merge`")
    kind, body, text, event_id, plain = _fact(obj, decoded)
    # _fact checked the body whole against its kind's shape: nothing in it misfits.
    return event_from_body(kind, text, body, source=source, event_id=event_id, plain=plain, misfits=())


def restored_event(obj: dict[str, Any]) -> NewEvent:
    """The event an exported line states, with when and where it was first recorded.

    Only for a source already verified (restore checks the whole export's chain first).

    Raises:
        OwnLineError: as :func:`_fact`, or ``recorded_at``/``source`` missing or malformed.
    """
    kind, body, text, event_id, plain = _fact(obj)
    recorded_at, source = obj.get("recorded_at"), obj.get("source")
    if not is_time(recorded_at):
        raise OwnLineError(f"'recorded_at' {str(recorded_at)[:40]!r} is not an ISO-8601 time")
    if not isinstance(source, str) or not source:
        raise OwnLineError("'source' must be non-empty text")
    return event_from_body(kind, text, body, source=source, recorded_at=recorded_at, event_id=event_id,
                           plain=plain)
