"""Tamper evidence: recompute everything a stored event claims and report what disagrees.

What a chain alone can and cannot see (docs/audit.md says the same):

* seen: a body, id, column or chain value edited; a row deleted, inserted or two rows
  swapped anywhere but at the end; missing immutability triggers; gaps in ``seq``;
* not seen without an outside checkpoint: rows removed from the tail (the shorter chain is
  still a valid chain), and a history rewritten consistently from some row on (every
  chain value recomputed). Keep a copy of the head elsewhere to catch those.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .events import canonical_body, event_id_for
from .store import GENESIS_CHAIN, STORE_SCHEMA_VERSION, Store, chain_hash

_MAX_PROBLEMS = 1_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing verify found wrong.

    Attributes:
        seq: The first sequence number concerned (0 for ledger-wide problems).
        check: Which check failed: ``body``, ``event_id``, ``columns``, ``sequence``,
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
    for event in store.iter_events():
        report.events += 1
        if event.seq != previous_seq + 1:
            flag(event.seq, "sequence",
                 f"gap in sequence: {previous_seq} is followed by {event.seq}")
        try:
            body = json.loads(event.body)
        except ValueError:
            flag(event.seq, "body", "body is not valid JSON")
        else:
            if canonical_body(body) != event.body:
                flag(event.seq, "body", "body is not in canonical form (edited by hand?)")
            if isinstance(body, dict):
                occurred = body.get("at", body.get("timestamp"))
                expected = (body.get("study_id"), body.get("run_id"), occurred)
                found = (event.study_id, event.run_id, event.occurred_at)
                if tuple(v if isinstance(v, str) else None for v in expected) != found:
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
