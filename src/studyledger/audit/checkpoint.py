"""Checkpoints: a small file, kept somewhere else, that pins the ledger's history so far.

A hash chain only proves that the rows it covers belong together. Someone who can write the
file can cut rows off the tail, or recompute every chain value after rewriting history, and
the shorter or rewritten chain is still a valid chain. A checkpoint taken earlier and stored
out of their reach catches both: the ledger must still hold the checkpoint's chain value at
the checkpoint's sequence number, and the Merkle root over its first ``tree_size`` event ids
must still be the checkpoint's root.

Two checkpoints are checked against each other with an RFC 6962 consistency proof. The
ledger computes the proof (it is the only party with every id) but is not trusted: the
proof is verified against the two roots written in the checkpoint files, so a ledger whose
history no longer matches both cannot produce a proof that passes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..ledger import Ledger
from ..store import Store, utc_now_precise
from . import merkle
from .files import write_atomic
from .snapshot_read import event_ids, read_snapshot, store_of

CHECKPOINT_FORMAT = "studyledger-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of a ledger at one moment.

    Attributes:
        tree_size: How many events the ledger held (the Merkle tree's leaf count).
        head_seq: Sequence number of the last event.
        head_chain: Chain value of the last event.
        merkle_root: Hex RFC 6962 root over the event ids in sequence order.
        created_at: When the checkpoint was taken (UTC, ISO-8601).
        ledger_created_at: When the ledger file was created, to tell ledgers apart; an
            imported copy of a ledger has the same history but a different value, so it is
            informative only and never a reason to fail.
    """

    tree_size: int
    head_seq: int
    head_chain: str
    merkle_root: str
    created_at: str
    ledger_created_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to a checkpoint file."""
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **asdict(self)}


def take(ledger: Ledger | Store) -> Checkpoint:
    """Checkpoint the ledger as it is now (one consistent snapshot); keep it elsewhere."""
    store = store_of(ledger)
    with read_snapshot(store.conn):
        seq, chain = store.head()
        builder = merkle.RootBuilder()
        for event_id in event_ids(store.conn):
            builder.add(event_id)
        created = store.meta().get("created_at")
    return Checkpoint(builder.size, seq, chain, builder.root().hex(), utc_now_precise(), created)


def write(checkpoint: Checkpoint, path: Path) -> None:
    """Write a checkpoint file atomically (a crash never leaves half a file).

    Raises:
        CheckpointError: ``path`` is a folder.
    """
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a file name for the checkpoint")
    write_atomic(path, json.dumps(checkpoint.to_dict(), indent=2) + "\n")


def load(path: Path) -> Checkpoint:
    """Read a checkpoint file.

    Raises:
        CheckpointError: missing, not JSON, or not a studyledger checkpoint.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a studyledger checkpoint ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a studyledger checkpoint (no \"format\": \"{CHECKPOINT_FORMAT}\")")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r} is not supported "
                              f"(this studyledger reads version {CHECKPOINT_VERSION})")
    try:
        checkpoint = Checkpoint(
            tree_size=_int(data["tree_size"]), head_seq=_int(data["head_seq"]),
            head_chain=_hex(data["head_chain"], 64), merkle_root=_hex(data["merkle_root"], 64),
            created_at=str(data["created_at"]),
            ledger_created_at=None if data.get("ledger_created_at") is None else str(data["ledger_created_at"]),
        )
    except KeyError as exc:
        raise CheckpointError(f"{path}: checkpoint lacks {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return checkpoint


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**63 - 1:
        raise ValueError(f"{value!r} is not a non-negative 64-bit integer")
    return value


def _hex(value: Any, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{value!r} is not {length} lowercase hex digits")
    return value


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of checking two checkpoints against each other."""

    consistent: bool
    older: Checkpoint
    newer: Checkpoint
    proof: list[str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"consistent": self.consistent, "older": self.older.to_dict(), "newer": self.newer.to_dict(),
                "proof": self.proof, "reason": self.reason}


def compare(store: Store | None, a: Checkpoint, b: Checkpoint) -> Comparison:
    """Whether the later of two checkpoints extends the earlier one.

    Equal sizes need no ledger (the roots must be equal). Otherwise ``store`` supplies an
    RFC 6962 consistency proof, which is checked against the two checkpoint roots only.

    Raises:
        CheckpointError: sizes differ and no ledger was given, or the ledger is too short
            to prove anything.
    """
    older, newer = (a, b) if a.tree_size <= b.tree_size else (b, a)
    m, n = older.tree_size, newer.tree_size
    first, second = bytes.fromhex(older.merkle_root), bytes.fromhex(newer.merkle_root)
    if m == n:
        same = first == second and older.head_chain == newer.head_chain
        return Comparison(same, older, newer, [], "same size and same root" if same else
                          "same size but different roots or heads: two different histories")
    if m == 0:
        ok = first == merkle.EMPTY_ROOT
        return Comparison(ok, older, newer, [], "an empty ledger is a prefix of every ledger" if ok else
                          "the older checkpoint claims 0 events but not the empty root")
    if store is None:
        raise CheckpointError("checkpoints of different sizes need a ledger to compute the proof (--db)")
    with read_snapshot(store.conn):
        if store.event_count() < n:
            raise CheckpointError(f"{store.path}: holds fewer than {n} events, cannot prove consistency "
                                  "up to the newer checkpoint")
        proof = merkle.consistency_proof(event_ids(store.conn, limit=n), m, n)
    ok = merkle.verify_consistency(m, n, first, second, proof)
    reason = (f"the tree of {n} events extends the tree of {m} events" if ok else
              f"no valid consistency proof from {m} to {n} events: the histories diverge "
              "(or this ledger is not the one both checkpoints were taken from)")
    return Comparison(ok, older, newer, [p.hex() for p in proof], reason)
