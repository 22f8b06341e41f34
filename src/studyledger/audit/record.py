"""Recorded audits: an ``audit_recorded`` event saying when the ledger was checked and what was found.

An audit that leaves no trace has to be taken on trust; recorded in the ledger it becomes
part of the chain, so a later auditor sees who checked what, when, at which head, and with
what result, and a later edit of that record is itself detectable.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..events import EventKind, make_event, readable_body
from ..ledger import Ledger
from ..schema import to_jsonable
from ..store import Head, utc_now_precise


def record_audit(ledger: Ledger, check: str, ok: bool | None, summary: dict[str, Any], *,
                 head: Head) -> dict[str, Any]:
    """Append an ``audit_recorded`` event and return its body.

    Audits read a ledger opened read-only; the record is written afterwards through a
    writable one, so other events may have arrived in between.

    Args:
        ledger: The audited ledger, open for writing.
        check: What was checked: ``verify``, ``verify+checkpoint``, ``replay``, or ``merge``
            (a merge told to trust a source that was not verified).
        ok: The verdict (None when the audit only reported state, as replay ``--as-of``).
        summary: A small JSON-ready summary of what was found (counts, first problem).
        head: The head the audit looked at (kept in the body).
    """
    body = {
        "check": check,
        "ok": ok,
        "summary": to_jsonable(summary),
        "head": head.to_dict(),
        "at": utc_now_precise(),
    }
    ledger.append([make_event(EventKind.AUDIT_RECORDED, body, source=ledger.source)])
    return body


def audits(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every recorded audit in sequence order: its body plus ``seq`` and ``recorded_at``.

    Bodies are read as stored, which need not be as written (a raw writer can store
    anything): a field of the wrong type reads as null, an unreadable body as ``{}``.
    """
    kind = EventKind.AUDIT_RECORDED.value
    rows = conn.execute("SELECT seq, recorded_at, body FROM events_json WHERE kind = ? ORDER BY seq", (kind,))
    found = []
    for seq, recorded_at, body in rows:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        found.append({"check": None, "ok": None, "at": None, "head": None, "summary": None,
                      **readable_body(kind, data), "seq": seq, "recorded_at": recorded_at})
    return found
