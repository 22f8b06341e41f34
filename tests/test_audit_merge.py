"""Merge brings two machines' ledgers together without ever duplicating an event."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studyledger import Ledger, NotALedgerError, Observation, RunBudget, RunStatus
from studyledger.audit.merge import merge
from studyledger.audit.verify import verify

from studyledger.codec import id_bytes
from studyledger.events import event_id_for, indexed_columns
from studyledger.store import EVENT_COLUMNS

from .audit_helpers import drop_triggers, invoke, raw, restore_triggers, rewrite


def ids(db: Path) -> list[str]:
    with Ledger.open(db) as ledger:
        return [e.event_id for e in ledger.events()]


def machine(db: Path, name: str, observations: list[int], shared: bool = True) -> None:
    """One machine's ledger: the shared study (same event everywhere) and its own observations."""
    with Ledger.open(db) as ledger:
        ledger.register_study("s1", run_budget=RunBudget(replicates=3))
        run_id = ledger.register_run("s1", "c1", replicate=1)
        if shared:
            ledger.transition(run_id, RunStatus.RUNNING, at="2026-01-01T00:00:00+00:00")
        for i in observations:
            ledger.observe(Observation(timestamp=f"2026-01-01T00:00:{i:02d}+00:00", record_id=f"r{i}",
                                       text=f"{name}?" if i % 2 else "same on both", session_id=run_id,
                                       actor_id="a", event_type="step", run_id=run_id))


@given(st.lists(st.integers(0, 20), max_size=8), st.lists(st.integers(0, 20), max_size=8), st.booleans())
@settings(max_examples=15, deadline=None)
def test_merge_is_idempotent_and_commutative_on_the_set_of_events(
        tmp_path_factory: pytest.TempPathFactory, left: list[int], right: list[int], shared: bool) -> None:
    folder = tmp_path_factory.mktemp("merge")
    a, b = folder / "a.db", folder / "b.db"
    machine(a, "a", left)
    machine(b, "b", right, shared=shared)
    before_a, before_b = ids(a), ids(b)
    with Ledger.open(a) as ledger:
        first = merge(ledger, b)
        again = merge(ledger, b)
    with Ledger.open(b) as ledger:
        merge(ledger, a)
        merge(ledger, a)
    assert again.appended == 0 and again.already_present == again.read
    assert first.appended == len(set(before_b) - set(before_a))
    after_a, after_b = ids(a), ids(b)
    assert len(after_a) == len(set(after_a)) and len(after_b) == len(set(after_b))
    assert set(after_a) == set(after_b) == set(before_a) | set(before_b)
    # This ledger's history comes first, then the other's new events in the other's order.
    assert after_a == before_a + [i for i in before_b if i not in set(before_a)]
    for db in (a, b):
        with Ledger.open(db) as ledger:
            assert verify(ledger.store).ok


def test_merged_events_keep_recorded_at_and_source(tmp_path: Path) -> None:
    machine(tmp_path / "a.db", "a", [1])
    machine(tmp_path / "b.db", "b", [3])
    already = set(ids(tmp_path / "a.db"))
    code, out, err = invoke("--db", str(tmp_path / "a.db"), "merge", str(tmp_path / "b.db"), "--json")
    assert code == 0, err
    assert json.loads(out)["appended"] == 1
    with Ledger.open(tmp_path / "b.db") as other, Ledger.open(tmp_path / "a.db") as here:
        (new,) = [e for e in other.events() if e.event_id not in already]
        (copied,) = [e for e in here.events() if e.event_id == new.event_id]
        assert (copied.recorded_at, copied.source, copied.body) == (new.recorded_at, new.source, new.body)
        assert copied.seq == 5 and new.seq == 4  # a new place in this ledger's history
        assert here.run(here.runs()[0]["run_id"])["observation_count"] == 2  # projections folded the merge


def test_merge_into_a_new_ledger_copies_it(tmp_path: Path) -> None:
    machine(tmp_path / "a.db", "a", [1, 2])
    code, out, _ = invoke("--db", str(tmp_path / "new.db"), "merge", str(tmp_path / "a.db"))
    assert code == 0 and "5 new events" in out
    assert ids(tmp_path / "new.db") == ids(tmp_path / "a.db")


def test_merge_refuses_what_is_not_a_ledger(tmp_path: Path) -> None:
    machine(tmp_path / "a.db", "a", [])
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    other_sqlite = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other_sqlite)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    for path, message in [(text, "not a studyledger ledger"), (other_sqlite, "not a studyledger ledger"),
                          (empty, "not a studyledger ledger"), (tmp_path / "missing.db", "no such ledger"),
                          (tmp_path, "directory")]:
        code, out, err = invoke("--db", str(tmp_path / "a.db"), "merge", str(path))
        assert code != 0 and message in err and str(path) in err, (path, err)
        assert len(err.strip().splitlines()) == 1
    assert empty.stat().st_size == 0  # refused without being turned into a ledger
    with Ledger.open(tmp_path / "a.db") as ledger, pytest.raises(NotALedgerError):
        merge(ledger, other_sqlite)


def test_merge_refuses_an_edited_other_ledger(tmp_path: Path) -> None:
    machine(tmp_path / "a.db", "a", [])
    machine(tmp_path / "b.db", "b", [1])
    conn = raw(tmp_path / "b.db")
    drop_triggers(conn)
    conn.execute("UPDATE events SET body = replace(sl_body(body), 'b?', 'X?') "
                 "WHERE seq IN (SELECT seq FROM events_plain WHERE kind = 'observation_recorded')")
    conn.close()
    before = ids(tmp_path / "a.db")
    code, _, err = invoke("--db", str(tmp_path / "a.db"), "merge", str(tmp_path / "b.db"))
    assert code != 0 and "fails verify" in err
    assert ids(tmp_path / "a.db") == before
    # Trusting the source does not let an event that does not match its id in.
    code, _, err = invoke("--db", str(tmp_path / "a.db"), "merge", "--trust-source", str(tmp_path / "b.db"))
    assert code != 0 and "event at seq 4" in err and "does not match" in err
    assert ids(tmp_path / "a.db") == before


def test_merge_refuses_a_shared_event_with_another_body(tmp_path: Path) -> None:
    machine(tmp_path / "a.db", "a", [])
    machine(tmp_path / "b.db", "b", [])
    conn = raw(tmp_path / "b.db")
    drop_triggers(conn)
    conn.execute("UPDATE events SET body = replace(body, '\"s1\"', '\"s2\"') WHERE seq = 1")
    conn.close()
    code, _, err = invoke("--db", str(tmp_path / "a.db"), "merge", "--trust-source", str(tmp_path / "b.db"))
    assert code != 0 and "(seq 1) is stored here with a different body" in err


def _forge(path: Path, seq: int, body: dict[str, object]) -> None:
    """Rewrite one row with a recomputed id and chain from it on, triggers put back: the
    row passes every per-row check, and only the chain of the rows after it (or verify's
    schema checks, were the triggers left dropped) can tell."""
    conn = raw(path)
    drop_triggers(conn)
    rows = [list(row) for row in conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events_json ORDER BY seq")]
    rows[seq - 1][3:6] = indexed_columns(body)
    rows[seq - 1][8] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    rewrite(conn, rows)
    restore_triggers(conn)
    conn.close()


def test_merge_verifies_its_source_first_and_records_trust(tmp_path: Path) -> None:
    """Issue 11, item 8: a source whose triggers were dropped and a row edited with a
    recomputed id fails verify; it merged cleanly and the target then verified."""
    machine(tmp_path / "a.db", "a", [])
    machine(tmp_path / "b.db", "b", [1])
    conn = raw(tmp_path / "b.db")
    drop_triggers(conn)
    row = conn.execute("SELECT seq, kind, body FROM events_json WHERE kind = 'observation_recorded'").fetchone()
    body = row[2].replace("b?", "X?")
    conn.execute("UPDATE events SET body = ?, event_id = ? WHERE seq = ?",
                 (body, id_bytes(event_id_for(row[1], body)), row[0]))
    conn.close()
    before = ids(tmp_path / "a.db")
    code, _, err = invoke("--db", str(tmp_path / "a.db"), "merge", str(tmp_path / "b.db"))
    assert code != 0 and "fails verify" in err and "--trust-source" in err
    assert ids(tmp_path / "a.db") == before
    code, out, err = invoke("--db", str(tmp_path / "a.db"), "merge", "--trust-source", str(tmp_path / "b.db"), "--json")
    assert code == 0, err
    assert json.loads(out)["source_verified"] is False
    code, out, _ = invoke("--db", str(tmp_path / "a.db"), "audits", "--json")
    [record] = json.loads(out)
    assert (record["check"], record["ok"], record["summary"]["trust_source"]) == ("merge", False, True)
    assert record["summary"]["source"] == str(tmp_path / "b.db") and record["summary"]["appended"] == 1


@pytest.mark.parametrize(("seq", "body", "reason"), [
    (3, {"run_id": "r", "status": "pwned", "at": None}, "status 'pwned' is not a run status"),
    (2, {"run_id": ["list"]}, "'run_id' must be non-empty text, not a list"),
    (1, {"study_id": "s1", "run_budget": "x"}, "study_registered 'run_budget' must be an object or null"),
])
def test_merge_checks_every_body_as_ingest_does(tmp_path: Path, seq: int, body: dict[str, object],
                                                reason: str) -> None:
    machine(tmp_path / "b.db", "b", [1])
    _forge(tmp_path / "b.db", seq, body)
    with Ledger.open(tmp_path / "b.db", readonly=True) as other:
        assert verify(other).ok  # consistently rewritten: the chain cannot tell
    code, _, err = invoke("--db", str(tmp_path / "a.db"), "merge", str(tmp_path / "b.db"))
    assert code != 0 and f"event at seq {seq}" in err and reason in err, err
    assert ids(tmp_path / "a.db") == []
