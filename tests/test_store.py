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
from studyledger.store import GENESIS_CHAIN, SQLiteStore


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
