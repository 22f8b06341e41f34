"""Restore: a ledger again from its JSONL export, with every id, the order and the head chain.

An export line carries what the ledger recorded about each event (when, from where, its
seq and chain). Ingestion ignores those (a drop-folder line never sets the ledger's own
columns); restore is the one path that keeps them, so it trusts nothing first: the whole
export is read and checked before anything is written (each line's id against its kind
and body, its body against its kind's shape, seqs contiguous from 1, and each line's chain
recomputed from the genesis), and, given a checkpoint kept elsewhere, it must extend it.
Then every event is appended in one transaction into an empty ledger, whose head must come
out equal to the export's: a restore is complete or absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, LedgerError, OwnLineError
from ..events import NewEvent
from ..ledger import Ledger
from ..own_lines import restored_event
from ..store import GENESIS_CHAIN, Head, chain_hash
from .checkpoint import Checkpoint
from .export_jsonl import EXPORT_FILE
from .merkle import RootBuilder

BATCH = 5_000
MAX_LINE = 64 * 1024 * 1024
"""Longest export line read (bytes): an export is untrusted until checked, and a line
without end must not take all memory."""


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore did."""

    source: str
    events: int
    head: Head

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


def export_file(path: Path) -> Path:
    """The ``events.jsonl`` of an export: the file itself, or the one in an export folder."""
    return path / EXPORT_FILE if path.is_dir() else path


def _lines(path: Path, handle: IO[bytes]) -> Iterator[tuple[int, NewEvent, Any]]:
    """``(line number, event, stated chain)`` for each line, each checked on its own.

    Raises:
        InputError: a line that is too long, not JSON, or not a valid exported event.
    """
    number = 0
    while data := handle.readline(MAX_LINE + 1):
        number += 1
        where = f"{path}:{number}"
        if not data.endswith(b"\n"):
            raise InputError(f"{where}: line longer than {MAX_LINE} bytes or without its newline")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{where}: not a JSON line ({exc})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: not an exported event")
        try:
            event = restored_event(obj)
        except OwnLineError as exc:
            raise InputError(f"{where}: {exc}") from None
        if obj.get("seq") != number:
            raise InputError(f"{where}: seq {obj.get('seq')!r}, expected {number}: "
                             "an export holds the whole history, in order")
        yield number, event, obj.get("chain")


def _row(seq: int, event: NewEvent) -> tuple[Any, ...]:
    return (seq, event.event_id, event.kind, event.study_id, event.run_id, event.occurred_at,
            event.recorded_at, event.source, event.body)


def check_export(path: Path, checkpoint: Checkpoint | None = None) -> Head:
    """Check a whole export without writing anything; return the head it states.

    Raises:
        InputError: a line is malformed, its chain is not the one its history gives, or
            the export does not extend ``checkpoint``.
    """
    chain, seq, roots = GENESIS_CHAIN, 0, RootBuilder()
    pinned_chain: str | None = None
    with open(path, "rb") as handle:
        for seq, event, stated in _lines(path, handle):
            chain = chain_hash(chain, _row(seq, event))
            if stated is not None and stated != chain:
                raise InputError(f"{path}:{seq}: chain differs from the one its history gives: "
                                 "this line or one before it was changed")
            if checkpoint is not None and seq <= checkpoint.tree_size:
                roots.add(event.event_id)
                if seq == checkpoint.head_seq:
                    pinned_chain = chain
    if checkpoint is not None:
        if seq < checkpoint.tree_size:
            raise InputError(f"{path}: holds {seq} events, the checkpoint saw {checkpoint.tree_size}")
        if checkpoint.head_seq and pinned_chain != checkpoint.head_chain:
            raise InputError(f"{path}: the chain at seq {checkpoint.head_seq} differs from the checkpoint's")
        if roots.root().hex() != checkpoint.merkle_root:
            raise InputError(f"{path}: the Merkle root of the first {checkpoint.tree_size} events differs "
                             "from the checkpoint's")
    return Head(seq, chain)


def restore(ledger: Ledger, path: Path, *, checkpoint: Checkpoint | None = None) -> RestoreReport:
    """Restore an export (``export --format jsonl``) into an empty ledger.

    Args:
        ledger: The ledger to fill, open for writing; it must hold no events.
        path: The export's ``events.jsonl``, or the folder holding it.
        checkpoint: A checkpoint of the exported ledger, kept elsewhere: the export must
            extend it (which catches a history rewritten consistently, chain and all).

    Raises:
        InputError: the export fails a check (nothing is written).
        LedgerError: the ledger holds events already, or the restored head differs.
    """
    source = export_file(path)
    if not source.is_file():
        raise InputError(f"{source}: no export here (`studyledger export DIR --format jsonl` writes DIR/{EXPORT_FILE})")
    expected = check_export(source, checkpoint)
    with ledger.store.transaction():
        if ledger.head().seq:
            raise LedgerError(f"{ledger.path}: holds events already; restore fills an empty ledger "
                              "(use `studyledger merge` to bring a ledger's events into another)")
        batch: list[NewEvent] = []
        with open(source, "rb") as handle:
            for _, event, _ in _lines(source, handle):
                batch.append(event)
                if len(batch) >= BATCH:
                    ledger.append(batch)
                    batch = []
        ledger.append(batch)
        head = ledger.head()
        if head != expected:
            # The file changed since it was checked: the transaction is rolled back.
            raise LedgerError(f"{source}: the restored head (seq {head.seq}) differs from the checked one "
                              f"(seq {expected.seq}); was the export written to meanwhile?")
    return RestoreReport(str(source), head.seq, head)
