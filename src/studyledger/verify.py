"""Tamper evidence: recompute everything a stored event claims and report what disagrees.

What a chain alone can and cannot see (docs/audit.md says the same):

* seen: a body, id, column or chain value edited; a row deleted, inserted or two rows
  swapped anywhere but at the end; missing immutability triggers; gaps in ``seq``;
* not seen without an outside checkpoint: rows removed from the tail (the shorter chain is
  still a valid chain), and a history rewritten consistently from some row on (every
  chain value recomputed). Keep a copy of the head elsewhere to catch those.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .events import event_id_for
from .store import EVENT_COLUMNS, GENESIS_CHAIN, STORE_SCHEMA_VERSION, Store, StoredEvent, chain_hash

_MAX_PROBLEMS = 1_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing verify found wrong.

    Attributes:
        seq: The first sequence number concerned (0 for ledger-wide problems).
        check: Which check failed: ``body`` (not a JSON object), ``event_id``, ``columns``, ``sequence``,
            ``chain``, ``triggers`` or ``schema``.
        message: What was wrong, in words.
    """

    seq: int
    check: str
    message: str


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify_store`."""

    events: int = 0
    head_seq: int = 0
    head_chain: str = GENESIS_CHAIN
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.problems

    @property
    def first_failure(self) -> Problem | None:
        """The problem with the lowest sequence number, if any."""
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "ok": self.ok,
            "events": self.events,
            "head": {"seq": self.head_seq, "chain": self.head_chain},
            "problems": [asdict(p) for p in self.problems],
            "truncated": self.truncated,
        }


def _text_field(path: str) -> str:
    return f"CASE WHEN json_type(body, '{path}') = 'text' THEN json_extract(body, '{path}') END"


# The body's own study_id, run_id and time (``at``, else an observation's ``timestamp``),
# read by SQLite's JSON functions: the same rule as events.event_from_body, without
# decoding every body in Python.
_CHECK_SQL = f"""SELECT {", ".join(EVENT_COLUMNS)},
    CASE WHEN json_valid(body) THEN json_type(body) = 'object' ELSE 0 END,
    CASE WHEN json_valid(body) THEN {_text_field("$.study_id")} END,
    CASE WHEN json_valid(body) THEN {_text_field("$.run_id")} END,
    CASE WHEN json_valid(body) THEN
        CASE WHEN json_type(body, '$.at') IS NOT NULL THEN {_text_field("$.at")}
        ELSE {_text_field("$.timestamp")} END
    END
FROM events WHERE seq > ? ORDER BY seq LIMIT ?"""


def _rows_with_body_fields(store: Store, batch: int = 5_000) -> Iterator[tuple[Any, ...]]:
    last = 0
    while True:
        rows = store.conn.execute(_CHECK_SQL, (last, batch)).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def verify_store(store: Store) -> VerifyReport:
    """Check every event of a ledger and report every problem found (up to 1,000)."""
    report = VerifyReport()

    def flag(seq: int, check: str, message: str) -> None:
        if len(report.problems) < _MAX_PROBLEMS:
            report.problems.append(Problem(seq, check, message))
        else:
            report.truncated = True

    version = store.meta().get("schema_version")
    if version != str(STORE_SCHEMA_VERSION):
        flag(0, "schema", f"ledger schema version is {version!r}, expected {STORE_SCHEMA_VERSION}")
    for name in store.missing_triggers():
        flag(0, "triggers", f"immutability trigger {name} is missing: rows can be changed")

    previous_seq, previous_chain = 0, GENESIS_CHAIN
    for row in _rows_with_body_fields(store):
        event, body_is_object, expected = StoredEvent(*row[:10]), row[10], row[11:]
        report.events += 1
        if event.seq != previous_seq + 1:
            flag(event.seq, "sequence",
                 f"gap in sequence: {previous_seq} is followed by {event.seq}")
        if not body_is_object:
            flag(event.seq, "body", "body is not a JSON object")
        elif tuple(expected) != (event.study_id, event.run_id, event.occurred_at):
            flag(event.seq, "columns", "study_id, run_id or occurred_at disagree with the body")
        if event_id_for(event.kind, event.body) != event.event_id:
            flag(event.seq, "event_id", "event id does not match its kind and body (body or id edited)")
        values = (event.seq, event.event_id, event.kind, event.study_id, event.run_id,
                  event.occurred_at, event.recorded_at, event.source, event.body)
        if chain_hash(previous_chain, values) != event.chain:
            flag(event.seq, "chain",
                 "chain broken: the row or the one before it was changed, removed, inserted or reordered")
        previous_seq, previous_chain = event.seq, event.chain
    report.head_seq, report.head_chain = previous_seq, previous_chain
    return report
