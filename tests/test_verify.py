"""verify names the first sequence number where history was changed, and why."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studyledger import Ledger, Observation, RunStatus
from studyledger.events import NewEvent, event_id_for
from studyledger.store import TRIGGER_DDL, SQLiteStore
from studyledger.audit import verify as verify_module
from studyledger.audit.verify import _check_range, verify

from .audit_helpers import INSERT_STORED, stored_row


@pytest.fixture
def filled(study_ledger: Ledger) -> Ledger:
    run_id = study_ledger.register_run("s1", "c1", replicate=1)
    study_ledger.transition(run_id, RunStatus.RUNNING)
    for i in range(6):
        study_ledger.observe(Observation(timestamp=f"2026-01-01T00:00:0{i}+00:00", record_id=f"r{i}", text=f"t{i}",
                                         session_id=run_id, actor_id="a", event_type="e", run_id=run_id))
    study_ledger.transition(run_id, RunStatus.SUCCESS)
    return study_ledger  # 10 events


def tamper(ledger: Ledger, *statements: str) -> None:
    """Edit history the way an attacker with the file would: drop the triggers first."""
    conn = sqlite3.connect(ledger.path, isolation_level=None)
    for name in TRIGGER_DDL:
        conn.execute(f"DROP TRIGGER {name}")
    for statement in statements:
        conn.execute(statement)
    conn.close()


def checks(ledger: Ledger) -> list[tuple[int, str]]:
    return [(p.seq, p.check) for p in verify(ledger.store).problems if p.seq]


def test_intact_ledger_verifies(filled: Ledger) -> None:
    report = verify(filled.store)
    assert report.ok and report.events == 10 and report.head_seq == 10
    assert report.head_chain == filled.head().chain


CASES: dict[str, tuple[list[str], Callable[[list[tuple[int, str]]], bool]]] = {
    "body edited": (["UPDATE events SET body = replace(body, '\"t3\"', '\"t9\"') WHERE seq = 7"],
                    lambda found: (7, "event_id") in found and (7, "chain") in found),
    "id edited": (["UPDATE events SET event_id = X'00000000000000000000000000000000' WHERE seq = 4"],
                  lambda found: (4, "event_id") in found and (4, "chain") in found),
    "row deleted": (["DELETE FROM events WHERE seq = 5"],
                    lambda found: (6, "sequence") in found and (6, "chain") in found),
    "rows reordered": (["UPDATE events SET seq = -1 WHERE seq = 5", "UPDATE events SET seq = 5 WHERE seq = 6",
                        "UPDATE events SET seq = 6 WHERE seq = -1"],
                       lambda found: (5, "chain") in found),
    "column edited": (["UPDATE events SET run_id = 'run-other' WHERE seq = 6"],
                      lambda found: (6, "columns") in found and (6, "chain") in found),
    "recording time edited": (["UPDATE events SET recorded_at = '2020-01-01T00:00:00+00:00' WHERE seq = 3"],
                              lambda found: found == [(3, "chain")]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampering_is_detected_at_the_right_row(filled: Ledger, case: str) -> None:
    statements, expect = CASES[case]
    tamper(filled, *statements, *_restore_triggers())
    found = checks(filled)
    assert expect(found), found
    assert verify(filled.store).first_failure.seq == min(seq for seq, _ in found)


def _restore_triggers() -> list[str]:
    return list(TRIGGER_DDL.values())


def test_missing_triggers_are_reported(filled: Ledger) -> None:
    tamper(filled)
    report = verify(filled.store)
    assert not report.ok
    assert {p.check for p in report.problems} == {"triggers"}
    assert "events_refuse_update" in report.problems[0].message


def test_a_truncated_tail_needs_an_outside_checkpoint(filled: Ledger) -> None:
    """Documented limit: a chain alone cannot see rows removed from the end."""
    head_before = filled.head()
    tamper(filled, "DELETE FROM events WHERE seq > 8", *_restore_triggers())
    report = verify(filled.store)
    assert report.ok
    assert report.head_seq == 8 and report.head_chain != head_before.chain


@pytest.mark.parametrize("case", ["row deleted", "rows reordered", "body edited"])
def test_parallel_verify_finds_what_one_scan_finds(filled: Ledger, case: str) -> None:
    statements, _ = CASES[case]
    tamper(filled, *statements, *_restore_triggers())
    alone = verify(filled.store, workers=1)
    for workers in (2, 3):
        together = verify(filled.store, workers=workers)
        assert together.problems == alone.problems
        assert (together.events, together.head_seq, together.head_chain) == (
            alone.events, alone.head_seq, alone.head_chain)


def test_a_worker_process_checks_each_range_it_is_handed_as_this_process_does(filled: Ledger) -> None:
    """A parallel verify hands each worker one range at a time, on its stdin; the worker
    answers each with a line of JSON, read back into the same result as checking here."""
    tamper(filled, *CASES["row deleted"][0], *CASES["body edited"][0], *_restore_triggers())
    ranges = [(0, 4), (4, 7), (7, 10)]
    answer = subprocess.run(
        [sys.executable, "-c", "from studyledger.audit.verify import _range_worker; _range_worker()"],
        input="".join(f"{after} {until}\n" for after, until in ranges), capture_output=True, text=True, check=True,
        env={**os.environ, "STUDYLEDGER_VERIFY_URI": filled.store.read_uri}).stdout
    here = [asdict(_check_range(filled.store.conn, after, until)) for after, until in ranges]
    assert answer.splitlines()[0] == "ready"
    assert [json.loads(line) for line in answer.splitlines()[1:]] == here
    assert [(p["seq"], p["check"]) for result in here for p in result["problems"]] == [
        (6, "sequence"), (6, "chain"), (7, "event_id"), (7, "chain")]


def test_ranges_a_worker_process_checked_are_merged_in_ledger_order(filled: Ledger,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """This process waits with its first range until a worker has answered one, so the
    worker's results are merged with its own (on a ledger this small, it would otherwise
    check every range before the worker has started)."""
    tamper(filled, *CASES["row deleted"][0], *CASES["body edited"][0], *_restore_triggers())
    alone = verify(filled.store, workers=1)
    answered = threading.Event()
    check_here = verify_module._check_range

    class AnswersSeen:
        """verify's json module, noting when the feeder reads a worker's answer."""
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(text: str | bytes) -> Any:
            answered.set()
            return json.loads(text)

    def after_a_worker_answered(conn: sqlite3.Connection, after: int, until: int | None) -> Any:
        assert answered.wait(60), "no worker answered"
        return check_here(conn, after, until)

    monkeypatch.setattr(verify_module, "json", AnswersSeen)
    monkeypatch.setattr(verify_module, "_check_range", after_a_worker_answered)
    monkeypatch.setattr(verify_module, "_RANGE_ROWS", 3)
    together = verify(filled.store, workers=2)
    assert answered.is_set()
    assert together.problems == alone.problems and together.problems
    assert (together.events, together.head_seq, together.head_chain) == (
        alone.events, alone.head_seq, alone.head_chain)


def test_a_body_too_deep_for_sqlites_json_functions_is_checked_in_python(filled: Ledger) -> None:
    """A raw writer can store what the API refuses; verify reports it instead of crashing."""
    from studyledger.events import event_id_for

    deep = '{"run_id":"run-deep","x":' + '{"d":' * 2500 + "1" + "}" * 2500 + "}"
    conn = sqlite3.connect(filled.path, isolation_level=None)
    previous = conn.execute("SELECT chain FROM events_plain ORDER BY seq DESC LIMIT 1").fetchone()[0]
    values = (11, event_id_for("observation_recorded", deep), "observation_recorded", None, "run-deep",
              None, "2026-01-01T00:00:00+00:00", "raw", deep)
    from studyledger.store import chain_hash

    conn.execute(INSERT_STORED, stored_row(values, chain_hash(previous, values)))
    conn.close()
    report = verify(filled.store)
    assert [(p.seq, p.check) for p in report.problems] == [(11, "body")]
    assert "nested too deeply" in report.problems[0].message
    assert report.events == 11


def test_same_named_triggers_that_do_nothing_are_reported(filled: Ledger) -> None:
    conn = sqlite3.connect(filled.path, isolation_level=None)
    for name in TRIGGER_DDL:
        conn.execute(f"DROP TRIGGER {name}")
        conn.execute(f"CREATE TRIGGER {name} BEFORE UPDATE ON events BEGIN SELECT 1; END")
    conn.close()
    report = verify(filled.store)
    assert {p.check for p in report.problems} == {"triggers"}
    assert len(report.problems) == len(TRIGGER_DDL)
    assert "not the one studyledger installs" in report.problems[0].message


def test_an_extra_trigger_on_events_is_reported(filled: Ledger) -> None:
    conn = sqlite3.connect(filled.path, isolation_level=None)
    conn.execute("CREATE TRIGGER sneaky AFTER INSERT ON events BEGIN SELECT 1; END")
    conn.close()
    report = verify(filled.store)
    assert [(p.check, "sneaky" in p.message) for p in report.problems] == [("triggers", True)]


def test_a_row_at_seq_zero_is_seen_and_does_not_hide_the_count(filled: Ledger) -> None:
    """A forged row below seq 1 with a genesis-looking chain was invisible to verify."""
    from studyledger.events import make_event
    from studyledger.store import GENESIS_CHAIN

    forged = make_event("observation_recorded", {"record_id": "x", "timestamp": "2026-01-01T00:00:00+00:00",
                                                 "event_type": "e"}, source="raw")
    tamper(filled, f"INSERT INTO events VALUES (0, X'{forged.event_id[4:]}', '{forged.kind}', NULL, NULL, NULL, "
           f"'2026-01-01', 'raw', NULL, NULL, '{forged.body}', X'{GENESIS_CHAIN}')", *_restore_triggers())
    report = verify(filled.store)
    assert not report.ok
    assert report.events == 11
    assert (0, "sequence") in [(p.seq, p.check) for p in report.problems]


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # non-ASCII included; stored text is UTF-8
# Non-empty ones drawn as such, not filtered: filtering lists of them tripped hypothesis's
# health check ("filtering out a lot of inputs") on a busy machine.
_WORD = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
# the exact forms a ledger stores as time codes, with and without a fraction
_STAMP = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31),
                      timezones=st.just(UTC)).map(datetime.isoformat)
_TIME = st.one_of(st.none(), _TEXT, _STAMP)
_SOURCE = st.one_of(
    _WORD,
    # file sources are stored as a name and two numbers, as large as SQLite keeps
    st.builds("file:{}:{}:{}".format, _TEXT, st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_WORD, st.none() | _TEXT, st.none() | _TEXT, _TIME, st.one_of(_WORD, _STAMP),
                          _SOURCE, _TEXT), min_size=1, max_size=8))
def test_verify_computes_the_chain_and_ids_chain_hash_defines(
        drawn: list[tuple[str, str | None, str | None, str | None, str, str, str]]) -> None:
    """verify builds the chained text of a stored row its own way (its parts kept once
    made); over the whole value space it must agree with chain_hash, which the store
    chains with, or an honest ledger would fail."""
    events = []
    for kind, study_id, run_id, occurred_at, recorded_at, source, extra in drawn:
        body = json.dumps({"at": occurred_at, "extra": extra, "run_id": run_id, "study_id": study_id},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        events.append(NewEvent(kind, body, event_id_for(kind, body), study_id, run_id, occurred_at, source,
                               recorded_at))
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "ledger.db")
        try:
            with store.transaction():
                appended = store.append(events).appended
            report = verify(store, workers=1)
        finally:
            store.close()
    assert report.problems == []
    assert (report.head_seq, report.head_chain) == (appended[-1].seq, appended[-1].chain)
