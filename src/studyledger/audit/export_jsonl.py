"""JSONL export: every event, in order, in studyledger's own line format.

Each line carries the kind, body, id, ``recorded_at`` and source (docs/own-lines.md), so
importing the file into an empty ledger, by ``ledger.append`` or by the drop-folder
ingester, reproduces every event id, the order and the head chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..own_lines import line_for_stored
from ..ledger import Ledger
from ..store import Store
from .files import atomic_writer
from .snapshot_read import read_snapshot, store_of

EXPORT_FILE = "events.jsonl"


def export_jsonl(ledger: Ledger | Store, directory: Path) -> dict[str, Any]:
    """Write ``directory/events.jsonl`` (created atomically: readers never see half a file).

    Returns:
        ``{"path", "events", "head": {"seq", "chain"}}``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / EXPORT_FILE
    count = 0
    store = store_of(ledger)
    with read_snapshot(store.conn), atomic_writer(target) as out:
        head = store.head()
        for event in store.iter_events(until=head.seq):
            out.write(line_for_stored(event))
            count += 1
    return {"path": str(target), "events": count, "head": head}
