"""What only the SQLite backend has; every backend's guarantees are tested by the contract
suite (tests/store_contract.py, run on SQLite by tests/test_store_sqlite.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from studyledger import Ledger, NewerLedgerError, NotALedgerError
from studyledger.events import make_event
from studyledger.errors import LedgerMissingError
from studyledger.events import EventKind, NewEvent
from studyledger.audit.verify import verify
from studyledger.store import GENESIS_CHAIN, STORE_SCHEMA_VERSION, SQLiteStore, chain_hash

from .audit_helpers import INSERT_STORED, stored_row


def observation_event(index: int, run_id: str = "run-x", text: str = "t") -> NewEvent:
    body = {
        "timestamp": f"2026-01-01T00:00:{index % 60:02d}+00:00", "record_id": f"r{index}", "text": text,
        "session_id": run_id, "actor_id": "a", "event_type": "e", "meta_json": {"i": index}, "level": "step",
        "study_id": None, "run_id": run_id, "condition_id": None, "trial_id": None, "step_id": None,
        "tool_name": None, "evaluation_id": None,
    }
    return make_event(EventKind.OBSERVATION_RECORDED, body, source="test")


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_a_new_ledger_is_wal_with_triggers(ledger: Ledger) -> None:
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.store.missing_triggers() == []
    assert ledger.store.head() == (0, GENESIS_CHAIN)


def test_not_a_ledger(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello, not sqlite at all " * 100)
    with pytest.raises(NotALedgerError, match="notes.db"):
        Ledger.open(text)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(NotALedgerError, match="things"):
        Ledger.open(other)
    with pytest.raises(NotALedgerError, match="directory"):
        Ledger.open(tmp_path)
    with pytest.raises(LedgerMissingError, match="studyledger init"):
        Ledger.open(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_newer_ledger_is_refused(ledger_path: Path) -> None:
    Ledger.open(ledger_path).close()
    conn = raw(ledger_path)
    conn.execute("UPDATE ledger_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(NewerLedgerError, match="newer studyledger"):
        Ledger.open(ledger_path)


def test_store_without_projections_still_reads(ledger_path: Path) -> None:
    store = SQLiteStore(ledger_path)
    assert store.event_count() == 0
    assert store.meta()["application"] == "studyledger"
    store.close()


def _next_row(conn: sqlite3.Connection, seq: int, event: NewEvent) -> list[object]:
    """A row as an attacker would craft it: valid id and chain, any seq."""
    row = conn.execute("SELECT chain FROM events_plain ORDER BY seq DESC LIMIT 1").fetchone()
    values = (seq, event.event_id, event.kind, event.study_id, event.run_id, event.occurred_at,
              "2026-01-01T00:00:00+00:00", "raw", event.body)
    return stored_row(values, chain_hash(row[0] if row else GENESIS_CHAIN, values))


@pytest.mark.parametrize("conflict", ["REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK"])
@pytest.mark.parametrize("target", ["seq", "event_id"])
def test_no_insert_can_replace_or_skip_a_stored_row(ledger: Ledger, conflict: str, target: str) -> None:
    """REPLACE deletes the conflicting row without firing delete triggers: the insert
    trigger refuses every insert that is not the next seq with a new id, whatever the
    conflict clause."""
    first = observation_event(1)
    ledger.append([first, observation_event(2)])
    conn = raw(ledger.path)
    # A new id at a stored seq, or a stored id at the next seq.
    row = _next_row(conn, 1, observation_event(9)) if target == "seq" else _next_row(conn, 3, first)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(INSERT_STORED.replace("INSERT", f"INSERT OR {conflict}", 1), row)
    assert [e.event_id for e in ledger.events()] == [first.event_id, observation_event(2).event_id]
    assert verify(ledger.store).ok


@pytest.mark.parametrize("seq", [0, -5, 4, 100])
def test_an_insert_off_the_end_of_the_chain_is_refused(ledger: Ledger, seq: int) -> None:
    ledger.append([observation_event(1), observation_event(2)])
    conn = raw(ledger.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(INSERT_STORED, _next_row(conn, seq, observation_event(7)))
    # The honest next row is accepted from a raw session too: the trigger only guards the shape.
    conn.execute(INSERT_STORED, _next_row(conn, 3, observation_event(7)))
    assert ledger.store.event_count() == 3


def test_an_older_ledger_gains_the_insert_trigger_when_a_writer_opens_it(ledger_path: Path) -> None:
    Ledger.open(ledger_path).close()
    conn = raw(ledger_path)
    conn.execute("DROP TRIGGER events_append_only")
    conn.execute("UPDATE ledger_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with Ledger.open(ledger_path, readonly=True) as reader:  # readable as it is, and unchanged
        assert reader.store.missing_triggers() == ["events_append_only"]
        assert not verify(reader).ok
    with Ledger.open(ledger_path) as writer:
        assert writer.store.missing_triggers() == []
        assert writer.store.meta()["schema_version"] == str(STORE_SCHEMA_VERSION)
        assert verify(writer).ok
