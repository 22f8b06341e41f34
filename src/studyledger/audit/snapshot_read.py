"""Reading a ledger as one consistent snapshot while other processes keep appending."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from ..codec import canonical_id
from ..ledger import Ledger
from ..store import Store


class Readable(Protocol):
    """Anything holding a ledger connection: a Ledger, a Store, an as-of Snapshot."""

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection to read through."""


def connection_of(source: Readable | sqlite3.Connection) -> sqlite3.Connection:
    """The connection to read a ledger (or an as-of snapshot of one) through."""
    return source if isinstance(source, sqlite3.Connection) else source.conn


def store_of(ledger: Ledger | Store) -> Store:
    """The store under a ledger."""
    return ledger.store if isinstance(ledger, Ledger) else ledger


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Hold one read transaction so every query inside sees the same ledger state.

    In WAL mode a reader's snapshot is fixed by its first read, so an audit that reads
    the head, the ids and the rows in several queries cannot mix two states. Joins an
    enclosing transaction instead of nesting one.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def event_ids(conn: sqlite3.Connection, *, limit: int | None = None, table: str = "events",
              batch: int = 10_000) -> Iterator[str]:
    """Event ids in sequence order, fetched in batches so memory stays flat."""
    last, taken = None, 0
    while limit is None or taken < limit:
        size = batch if limit is None else min(batch, limit - taken)
        if last is None:
            rows = conn.execute(f"SELECT seq, event_id FROM {table} ORDER BY seq LIMIT ?", (size,)).fetchall()
        else:
            rows = conn.execute(f"SELECT seq, event_id FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",
                                (last, size)).fetchall()
        if not rows:
            return
        for _, event_id in rows:
            yield str(canonical_id(event_id))
        taken += len(rows)
        last = rows[-1][0]
