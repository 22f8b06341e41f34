"""Merge: bring the events of another ledger (another machine, another node) into this one.

Events are identified by content, so "the events this ledger lacks" is exact: every event of
the other ledger whose id is not stored here is appended, in the other ledger's order. They
get new sequence numbers and chain values here (the chain is this ledger's history), and keep
their ``recorded_at`` and source. Because appending a stored id is a no-op, merging twice or
in the other direction never duplicates anything, and after A<-B and B<-A both ledgers hold
the same set of events (in different orders).

The other ledger is untrusted until verified: it is verified whole before anything is read
from it (``trust_source`` merges one that fails, and records that it did), and every event
is checked against its id and its kind's shape as it is copied, as ingestion checks a line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import EventConflictError, LedgerError, LedgerMissingError, OwnLineError
from ..events import NewEvent, StoredEvent
from ..own_lines import FORMAT_KEY, FORMAT_VERSION, restored_event
from ..ledger import Ledger
from ..backends import open_store
from ..store import Head, Store, Target
from .record import record_audit
from .verify import VerifyReport, verify

BATCH = 5_000


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What a merge did.

    Attributes:
        source_verified: The other ledger passed verify (false only with ``trust_source``).
    """

    other: str
    read: int
    appended: int
    already_present: int
    head: Head
    source_verified: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


def _checked(other: Store, stored: StoredEvent) -> NewEvent:
    """An event of the other ledger, ready to append, after checking it as a line is checked.

    The check goes through the own-line reader, the one place that rebuilds an event from
    its parts: its id must match its kind and body, and its body its kind's shape, so an
    edited row or a body ingestion would refuse is never copied.
    """
    try:
        line = {FORMAT_KEY: FORMAT_VERSION, "kind": stored.kind, "body": json.loads(stored.body),
                "event_id": stored.event_id, "recorded_at": stored.recorded_at, "source": stored.source}
        return restored_event(line)
    except (OwnLineError, ValueError, RecursionError) as exc:
        raise LedgerError(f"{other.path}: event at seq {stored.seq}: {exc}; "
                          f"check it with `studyledger --db {other.path} verify`") from None


def _missing(ledger: Ledger, other: Store, batch: list[StoredEvent]) -> list[NewEvent]:
    """The events of a batch this ledger lacks.

    Stored ids are looked up first, so merging again costs an index lookup per event instead
    of re-encoding every body; a stored id whose body differs is a conflict, never skipped.
    """
    present = ledger.store.existing_bodies([stored.event_id for stored in batch])
    missing = []
    for stored in batch:
        here = present.get(stored.event_id)
        if here is None:
            missing.append(_checked(other, stored))
        elif here != (stored.kind, stored.body):
            raise EventConflictError(f"{other.path}: event {stored.event_id} (seq {stored.seq}) is stored "
                                     f"here with a different body; one of the ledgers was edited")
    return missing


def _refusal(other_path: Target, report: VerifyReport) -> LedgerError:
    first = report.first_failure
    assert first is not None
    return LedgerError(
        f"{other_path}: fails verify (seq {first.seq}: {first.check}: {first.message}); nothing merged. "
        f"See `studyledger --db {other_path} verify`; --trust-source merges it anyway and records that")


def merge(ledger: Ledger, other_path: Target, *, trust_source: bool = False) -> MergeReport:
    """Append the events of ``other_path`` that ``ledger`` lacks, in the other's order.

    ``other_path`` is a ledger file or a server's ``DatabaseURL``: events move between
    backends either way, keeping their ids, ``recorded_at`` and source.

    Each batch of 5,000 is one transaction, so other writers are not locked out for the
    whole merge; an interrupted merge is finished by running it again.

    Args:
        ledger: This ledger, open for writing.
        other_path: The ledger to take events from; opened read-only and never changed.
        trust_source: Merge even when the other ledger fails verify. The merge is then
            recorded here as an ``audit_recorded`` event (check ``merge``), saying so.

    Raises:
        LedgerMissingError: ``other_path`` does not exist.
        NotALedgerError: ``other_path`` is not a studyledger ledger.
        LedgerError: the other ledger fails verify (without ``trust_source``), or one of
            its events does not match its id or its kind's shape.
        EventConflictError: an id is stored here with a different body.
    """
    if isinstance(other_path, Path) and not other_path.exists():
        raise LedgerMissingError(f"{other_path}: no such ledger to merge")
    # Read-only: merging must not change the ledger it reads (not even checkpoint its WAL).
    other = open_store(other_path, readonly=True)
    read = appended = 0
    try:
        checked = verify(other)
        if not checked.ok and not trust_source:
            raise _refusal(other_path, checked)
        batch: list[StoredEvent] = []
        for stored in other.iter_events(batch=BATCH):
            batch.append(stored)
            if len(batch) >= BATCH:
                appended += len(ledger.append(_missing(ledger, other, batch)).appended)
                read, batch = read + len(batch), []
        appended += len(ledger.append(_missing(ledger, other, batch)).appended)
        read += len(batch)
    finally:
        other.close()
    if trust_source:
        first = checked.first_failure
        record_audit(ledger, "merge", checked.ok, {
            "source": str(other_path), "trust_source": True, "problems": len(checked.problems),
            "first_problem": None if first is None else asdict(first), "appended": appended,
        }, head=ledger.head())
    return MergeReport(str(other_path), read, appended, read - appended, ledger.head(), checked.ok)
