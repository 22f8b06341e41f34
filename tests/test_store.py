"""The event store's guarantees (see the docstring of studyledger.store), one test each."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from studyledger import EventConflictError, Ledger, NewerLedgerError, NotALedgerError
from studyledger.events import make_event
from studyledger.errors import LedgerMissingError
from studyledger.events import EventKind, NewEvent
from studyledger.store import GENESIS_CHAIN, Store, chain_hash
from studyledger.audit.verify import verify


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


@pytest.mark.parametrize("statement", [
    "UPDATE events SET body = '{}' WHERE seq = 1",
    "UPDATE events SET chain = chain",
    "DELETE FROM events WHERE seq = 1",
    "DELETE FROM events",
])
def test_raw_sqlite_cannot_change_history(ledger: Ledger, statement: str) -> None:
    ledger.append([observation_event(1)])
    conn = raw(ledger.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    assert verify(ledger.store).ok
    assert ledger.store.event_count() == 1


def test_sequence_is_contiguous_and_chain_links_rows(ledger: Ledger) -> None:
    ledger.append([observation_event(i) for i in range(5)])
    ledger.append([observation_event(i) for i in range(5, 8)])
    events = ledger.events()
    assert [e.seq for e in events] == list(range(1, 9))
    previous = GENESIS_CHAIN
    for e in events:
        values = (e.seq, e.event_id, e.kind, e.study_id, e.run_id, e.occurred_at, e.recorded_at, e.source, e.body)
        assert e.chain == chain_hash(previous, values)
        previous = e.chain


def test_append_is_idempotent(ledger: Ledger) -> None:
    first = ledger.append([observation_event(1), observation_event(2)])
    again = ledger.append([observation_event(2), observation_event(1), observation_event(2)])
    assert (len(first.appended), first.duplicates) == (2, 0)
    assert (len(again.appended), again.duplicates) == (0, 3)
    assert ledger.store.event_count() == 2
    assert ledger.stats()["observations"] == 2


def test_same_id_with_a_different_body_raises(ledger: Ledger) -> None:
    event = observation_event(1)
    ledger.append([event])
    forged = replace(event, body=event.body.replace('"t"', '"changed"'))
    with pytest.raises(EventConflictError, match="different body"):
        ledger.append([forged])
    # Within one batch too; and nothing of a refused batch is stored.
    fresh = observation_event(5)
    with pytest.raises(EventConflictError, match="twice"):
        ledger.append([observation_event(4), fresh, replace(fresh, body="{}")])
    assert ledger.store.event_count() == 1


def test_append_outside_a_transaction_is_refused(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError):
        ledger.store.append([observation_event(1)])


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


def test_readers_are_not_blocked_by_a_writer(ledger: Ledger) -> None:
    ledger.append([observation_event(1)])
    reader = Ledger.open(ledger.path)
    with ledger.store.transaction():
        ledger.append([observation_event(2)])
        # The write lock is held and uncommitted: a reader still reads, and sees the old state.
        assert reader.stats()["events"] == 1
    assert reader.stats()["events"] == 2
    reader.close()


def test_a_second_writer_waits_instead_of_failing(ledger: Ledger) -> None:
    other = Ledger.open(ledger.path)
    done = threading.Event()

    def write_later() -> None:
        other.append([observation_event(2)])
        done.set()

    with ledger.store.transaction():
        ledger.append([observation_event(1)])
        thread = threading.Thread(target=write_later)
        thread.start()
        assert not done.wait(0.3)  # blocked on the lock, not failed
    thread.join(10)
    assert done.is_set()
    assert [e.seq for e in ledger.events()] == [1, 2]
    assert verify(ledger.store).ok
    other.close()


def _append_many(path: str, worker: int, count: int) -> None:
    with Ledger.open(path) as ledger:
        for start in range(0, count, 7):
            ledger.append([observation_event(worker * 10_000 + i, run_id=f"run-{worker}")
                           for i in range(start, min(start + 7, count))])


def test_four_processes_appending_at_once_lose_nothing(ledger: Ledger) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(ledger.path), w, 200)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    assert ledger.store.event_count() == 800
    report = verify(ledger.store)
    assert report.ok, report.problems
    assert report.head_seq == 800
    assert {row["run_id"]: row["observation_count"] for row in ledger.runs()} == {f"run-{w}": 200 for w in range(4)}


def test_two_processes_creating_the_same_ledger(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), w, 20)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    with Ledger.open(path) as ledger:
        assert ledger.store.event_count() == 60
        assert verify(ledger.store).ok


def test_store_without_projections_still_reads(ledger_path: Path) -> None:
    store = Store(ledger_path)
    assert store.event_count() == 0
    assert store.meta()["application"] == "studyledger"
    store.close()


def _next_row(conn: sqlite3.Connection, seq: int, event: NewEvent) -> tuple[object, ...]:
    """A row as an attacker would craft it: valid id and chain, any seq."""
    row = conn.execute("SELECT chain FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    values = (seq, event.event_id, event.kind, event.study_id, event.run_id, event.occurred_at,
              "2026-01-01T00:00:00+00:00", "raw", event.body)
    return (*values, chain_hash(row[0] if row else GENESIS_CHAIN, values))


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
        conn.execute(f"INSERT OR {conflict} INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", row)
    assert [e.event_id for e in ledger.events()] == [first.event_id, observation_event(2).event_id]
    assert verify(ledger.store).ok


@pytest.mark.parametrize("seq", [0, -5, 4, 100])
def test_an_insert_off_the_end_of_the_chain_is_refused(ledger: Ledger, seq: int) -> None:
    ledger.append([observation_event(1), observation_event(2)])
    conn = raw(ledger.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", _next_row(conn, seq, observation_event(7)))
    # The honest next row is accepted from a raw session too: the trigger only guards the shape.
    conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", _next_row(conn, 3, observation_event(7)))
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
        assert writer.store.meta()["schema_version"] == "2"
        assert verify(writer).ok
