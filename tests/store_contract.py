"""The store contract (docs/store.md) as tests every backend must pass.

Shaped like the eventsourcing library's recorder tests: :class:`StoreContract` holds the tests
and is not collected itself (no ``Test`` prefix); each backend's module subclasses it as
``TestSQLiteStore`` / ``TestPostgresStore`` and provides the hooks below. The tests go through
the public API (``Ledger.open`` on a path or URL) and real processes, and check a backend
only through what it stores; the hooks are the backend's raw sessions, the way a user of
``sqlite3`` or ``psql`` (or an attacker) would reach the data.
"""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from studyledger import EventConflictError, Ledger, LedgerReadOnlyError, StudyLedgerError
from studyledger import query
from studyledger.audit import checkpoint as checkpoints
from studyledger.audit.replay import replay, state_as_of
from studyledger.audit.snapshot_read import read_snapshot
from studyledger.audit.verify import verify
from studyledger.events import EventKind, NewEvent, make_event, run_status_changed
from studyledger.schema import RunStatus
from studyledger.store import GENESIS_CHAIN, chain_hash

from .ingest_helpers import STUDYLEDGER, own_line, wait_for
from .test_store import observation_event


def evaluation_event(index: int, value: Any) -> NewEvent:
    body = {"run_id": None, "evaluator_id": "judge", "metric_name": f"m{index}", "metric_value": value,
            "metric_unit": None, "aggregation_level": "run", "notes_json": None}
    return make_event(EventKind.EVALUATION_RECORDED, body, source="test")


def _append_many(target: str, worker: int, count: int) -> None:
    """A writer process: ``count`` events in batches of 7, one run of its own."""
    with Ledger.open(target) as ledger:
        for start in range(0, count, 7):
            ledger.append([observation_event(worker * 10_000 + i, run_id=f"run-{worker}")
                           for i in range(start, min(start + 7, count))])


def _run_writers(target: str, *, workers: int, count: int) -> None:
    """``workers`` processes appending ``count`` events each at the same time."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(target, w, count)) for w in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(180)
        assert p.exitcode == 0


HOLDER = textwrap.dedent("""
    import sys, time
    from studyledger import Ledger
    from tests.test_store import observation_event
    with Ledger.open(sys.argv[1]) as ledger:
        with ledger.store.transaction():
            ledger.append([observation_event(100_000 + i, run_id="doomed") for i in range(500)])
            print("inside", flush=True)
            time.sleep(120)
""")


def _literal(value: Any) -> str:
    """A value as SQL text: NULL, a number, or a quoted string."""
    if value is None:
        return "NULL"
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


class StoreContract:
    """The guarantees of docs/store.md; a backend's test class subclasses this.

    Hooks a subclass provides:

    * the ``target`` fixture: where a fresh ledger goes (a path or a URL), not created yet;
    * :meth:`raw`: run one statement in a raw session as the ledger's owner, as ``sqlite3``
      or ``psql`` would, raising the driver's own errors;
    * :meth:`tamper`: run statements with the immutability triggers out of the way and put
      them back (what an attacker with the owner's rights does);
    * :meth:`drop_trigger`;
    * :meth:`row_literal`: a row as a raw ``INSERT INTO events VALUES (...)`` gives it, and
      :attr:`BODY`: SQL reading a row's body as text (SQLite may keep it compressed).
    """

    BODY = "body"

    REFUSED = ("UPDATE events SET body = '{}' WHERE seq = 1", "UPDATE events SET chain = chain",
               "DELETE FROM events WHERE seq = 1", "DELETE FROM events")

    @pytest.fixture
    def target(self) -> str:
        raise NotImplementedError

    def raw(self, target: str, statement: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def tamper(self, target: str, *statements: str) -> None:
        raise NotImplementedError

    def drop_trigger(self, target: str, name: str) -> None:
        raise NotImplementedError

    def row_literal(self, values: tuple[Any, ...], chain: str) -> str:
        return ", ".join(_literal(v) for v in (*values, chain))

    @pytest.fixture
    def ledger(self, target: str) -> Any:
        with Ledger.open(target) as opened:
            yield opened

    # -- 1. append-only, enforced by the database ---------------------------------------

    def test_raw_session_cannot_change_history(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(1)])
        for statement in self.REFUSED:
            with pytest.raises(Exception, match="append-only"):
                self.raw(target, statement)
        assert verify(ledger).ok
        assert ledger.store.event_count() == 1

    @pytest.mark.parametrize("where", ["zero", "negative", "gap", "stored id"])
    def test_a_raw_insert_off_the_end_of_the_chain_is_refused(self, ledger: Ledger, target: str,
                                                              where: str) -> None:
        ledger.append([observation_event(1), observation_event(2)])
        stored = ledger.events()
        seq, event = {"zero": (0, observation_event(7)), "negative": (-5, observation_event(7)),
                      "gap": (4, observation_event(7)), "stored id": (3, observation_event(1))}[where]
        values = (seq, event.event_id, event.kind, event.study_id, event.run_id, event.occurred_at,
                  "2026-01-01T00:00:00+00:00", "raw", event.body)
        literal = self.row_literal(values, chain_hash(stored[-1].chain, values))
        # PostgreSQL keeps ids unique by a constraint, SQLite by the insert trigger.
        with pytest.raises(Exception, match="append-only|duplicate key"):
            self.raw(target, f"INSERT INTO events VALUES ({literal})")
        assert ledger.events() == stored
        assert verify(ledger).ok

    def test_missing_trigger_is_reported(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(1)])
        assert ledger.store.missing_triggers() == []
        self.drop_trigger(target, "events_refuse_delete")
        report = verify(ledger)
        assert [p.check for p in report.problems] == ["triggers"]
        assert "events_refuse_delete" in report.problems[0].message

    # -- 2, 3, 4. order, idempotence, chain ---------------------------------------------

    def test_sequence_is_contiguous_and_chain_links_rows(self, ledger: Ledger) -> None:
        ledger.append([observation_event(i) for i in range(5)])
        ledger.append([observation_event(i) for i in range(5, 8)])
        events = ledger.events()
        assert [e.seq for e in events] == list(range(1, 9))
        previous = GENESIS_CHAIN
        for e in events:
            values = (e.seq, e.event_id, e.kind, e.study_id, e.run_id, e.occurred_at, e.recorded_at, e.source,
                      e.body)
            assert e.chain == chain_hash(previous, values)
            previous = e.chain
        assert ledger.head() == (8, previous)

    def test_append_is_idempotent(self, ledger: Ledger) -> None:
        first = ledger.append([observation_event(1), observation_event(2)])
        again = ledger.append([observation_event(2), observation_event(1), observation_event(2)])
        assert (len(first.appended), first.duplicates) == (2, 0)
        assert (len(again.appended), again.duplicates) == (0, 3)
        assert ledger.store.event_count() == 2
        assert ledger.stats()["observations"] == 2

    def test_same_id_different_body_conflicts(self, ledger: Ledger) -> None:
        event = observation_event(1)
        ledger.append([event])
        forged = replace(event, body=event.body.replace('"t"', '"changed"'))
        with pytest.raises(EventConflictError, match="different body"):
            ledger.append([forged])
        fresh = observation_event(5)
        with pytest.raises(EventConflictError, match="twice"):
            ledger.append([observation_event(4), fresh, replace(fresh, body="{}")])
        assert ledger.store.event_count() == 1

    def test_append_outside_a_transaction_is_refused(self, ledger: Ledger) -> None:
        with pytest.raises(RuntimeError):
            ledger.store.append([observation_event(1)])

    def test_a_failed_transaction_leaves_nothing(self, ledger: Ledger) -> None:
        with pytest.raises(ZeroDivisionError), ledger.store.transaction():
            ledger.append([observation_event(1)])
            raise ZeroDivisionError
        assert ledger.store.event_count() == 0
        assert ledger.stats()["observations"] == 0
        ledger.append([observation_event(2)])
        assert [e.seq for e in ledger.events()] == [1]

    # -- 5. killed writers ----------------------------------------------------------------

    def test_killed_writer_leaves_nothing_half_done(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(1)])
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, target], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "inside", holder.stderr
            holder.send_signal(signal.SIGKILL)
            holder.wait(30)
        finally:
            holder.kill()
        # The lock died with the writer: this append goes through, and nothing of its batch is there.
        ledger.append([observation_event(2)])
        assert [e.seq for e in ledger.events()] == [1, 2]
        assert ledger.run("run-x")["observation_count"] == 2
        assert all(row["run_id"] != "doomed" for row in ledger.runs())
        assert verify(ledger).ok
        assert replay(ledger, in_memory=True).identical is True

    def test_ingest_killed_mid_file_resumes_from_its_committed_offset(self, target: str, tmp_path: Path) -> None:
        source = tmp_path / "big.jsonl"
        lines = 12_000
        with open(source, "w") as out:
            out.writelines(own_line(i, tag="kill") for i in range(lines))
            out.write("not json\n")
        Ledger.open(target).close()
        process = subprocess.Popen([*STUDYLEDGER, "--db", target, "ingest", str(source)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: _count(target) > 0 or process.poll() is not None, timeout=60, what="a first commit")
            process.kill()
            process.wait(30)
        finally:
            process.kill()
        assert process.returncode == -9, "the ingest finished before it could be killed"
        assert 0 < _count(target) < lines + 1
        done = subprocess.run([*STUDYLEDGER, "--db", target, "ingest", str(source), "--json"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        with Ledger.open(target, readonly=True) as ledger:
            assert ledger.store.event_count() == lines + 1
            assert len({e.event_id for e in ledger.store.iter_events()}) == lines + 1
            files = query.ingest_files(ledger.conn)
            assert [(f["lines_accepted"], f["lines_rejected"]) for f in files] == [(lines, 1)]
            assert verify(ledger).ok

    # -- 6. many writers ------------------------------------------------------------------

    def test_a_second_writer_waits(self, ledger: Ledger, target: str) -> None:
        other = Ledger.open(target)
        done = threading.Event()

        def write_later() -> None:
            other.append([observation_event(2)])
            done.set()

        with ledger.store.transaction():
            ledger.append([observation_event(1)])
            thread = threading.Thread(target=write_later)
            thread.start()
            assert not done.wait(0.3)  # blocked on the lock, not failed
        thread.join(30)
        assert done.is_set()
        assert [e.seq for e in ledger.events()] == [1, 2]
        assert verify(ledger).ok
        other.close()

    def test_concurrent_writer_processes_make_one_order(self, target: str) -> None:
        Ledger.open(target).close()
        _run_writers(target, workers=4, count=150)
        with Ledger.open(target, readonly=True) as ledger:
            report = verify(ledger)
            assert report.ok, report.problems
            assert (report.events, report.head_seq) == (600, 600)
            assert {r["run_id"]: r["observation_count"] for r in ledger.runs()} == {f"run-{w}": 150 for w in range(4)}
            assert replay(ledger, in_memory=True).identical is True

    def test_processes_creating_the_same_ledger_at_once(self, target: str) -> None:
        _run_writers(target, workers=3, count=20)
        with Ledger.open(target, readonly=True) as ledger:
            assert ledger.store.event_count() == 60
            assert verify(ledger).ok

    # -- 7. readers ---------------------------------------------------------------------

    def test_readers_are_not_blocked_by_a_writer(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(1)])
        with Ledger.open(target, readonly=True) as reader:
            with ledger.store.transaction():
                ledger.append([observation_event(2)])
                assert reader.stats()["events"] == 1  # the write is not committed yet
            assert reader.stats()["events"] == 2

    def test_readonly_store_never_writes(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(1)])
        with Ledger.open(target, readonly=True) as reader:
            with pytest.raises(LedgerReadOnlyError):
                reader.append([observation_event(2)])
            with pytest.raises(Exception):  # noqa: B017 - each backend refuses in its own words
                reader.conn.execute("DELETE FROM projection_state")
        assert ledger.store.event_count() == 1
        assert ledger.stats()["observations"] == 1

    def test_read_snapshot_is_stable(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(1)])
        with Ledger.open(target, readonly=True) as reader, read_snapshot(reader.conn):
            assert reader.store.event_count() == 1
            ledger.append([observation_event(2)])
            assert reader.store.event_count() == 1
            assert reader.head().seq == 1
        with Ledger.open(target, readonly=True) as later:
            assert later.store.event_count() == 2

    # -- 9. change signal -----------------------------------------------------------------

    def test_data_version_moves_on_commit(self, ledger: Ledger, target: str) -> None:
        with Ledger.open(target, readonly=True) as reader:
            first = query.data_version(reader.conn)
            assert query.data_version(reader.conn) == first  # nothing happened
            ledger.append([observation_event(1)])
            wait_for(lambda: query.data_version(reader.conn) != first, timeout=10, what="data_version to move")

    # -- 10. values ---------------------------------------------------------------------

    def test_values_round_trip(self, ledger: Ledger) -> None:
        # Columns hold any text, NUL included (PostgreSQL's text cannot: its connection escapes it).
        odd = ["run \x00 nul", "run \uffff mark", "run \uffff0 mark zero", "run \U0001f600 ünïcode"]
        ledger.append([observation_event(i, run_id=run_id) for i, run_id in enumerate(odd)])
        assert sorted(row["run_id"] for row in ledger.runs()) == sorted(odd)
        assert [e.run_id for e in ledger.events()] == odd
        assert ledger.observations(odd[0])[0]["run_id"] == odd[0]
        # Body fields read through the view (SQLite's json_extract stops at a NUL, so none here).
        texts = ["plain", "mark \uffff and \uffff0", "emoji \U0001f600 ünïcode", ""]
        ledger.append([observation_event(10 + i, text=text) for i, text in enumerate(texts)])
        assert [row["text"] for row in ledger.observations("run-x", limit=50)] == texts
        values: list[Any] = [1, 2.5, "high", True, None, 2**62, -0.0, 1e300]
        ledger.append([evaluation_event(i, value) for i, value in enumerate(values)])
        stored = [row["metric_value"] for row in query.evaluations(ledger.conn)]
        assert stored == [1, 2.5, "high", 1, None, 2**62, -0.0, 1e300]
        assert [type(v) for v in stored] == [int, float, str, int, type(None), int, float, float]
        search = query.observations(ledger.conn, "run-x", search="EMOJI \U0001f600")
        assert [row["text"] for row in search] == [texts[2]]
        with pytest.raises(OverflowError):
            ledger.conn.execute("SELECT ?", (2**64,))
        assert verify(ledger).ok
        assert replay(ledger, in_memory=True).identical is True

    def test_listings_sort_bytewise(self, ledger: Ledger) -> None:
        for study in ["b", "B", "a", "_x", "Ä", "é", "10", "9"]:
            ledger.register_study(study)
        assert [row["study_id"] for row in ledger.studies()] == sorted(["b", "B", "a", "_x", "Ä", "é", "10", "9"])

    # -- audits on every backend ------------------------------------------------------------

    def test_verify_finds_an_edited_body_a_removed_row_and_a_cut_tail(self, ledger: Ledger, target: str,
                                                                       tmp_path: Path) -> None:
        ledger.append([observation_event(i) for i in range(6)])
        pinned = checkpoints.take(ledger.store)
        self.tamper(target, f"UPDATE events SET body = replace({self.BODY}, '\"t\"', '\"T\"') WHERE seq = 3")
        report = verify(ledger)
        assert report.first_failure is not None and report.first_failure.seq == 3
        assert {p.check for p in report.problems if p.seq == 3} == {"event_id", "chain"}
        self.tamper(target, "DELETE FROM events WHERE seq = 5")
        assert {(p.seq, p.check) for p in verify(ledger).problems} >= {(6, "sequence"), (6, "chain")}
        self.tamper(target, "DELETE FROM events WHERE seq >= 4")
        cut = verify(ledger)
        assert [p.seq for p in cut.problems] == [3, 3]  # the chain alone cannot see a cut tail...
        with_checkpoint = verify(ledger, checkpoint=pinned)
        assert "checkpoint" in {p.check for p in with_checkpoint.problems}  # ...a checkpoint kept elsewhere can

    def test_verify_in_worker_processes_agrees_with_one_scan(self, ledger: Ledger, target: str) -> None:
        ledger.append([observation_event(i) for i in range(40)])
        self.tamper(target, f"UPDATE events SET body = replace({self.BODY}, '\"t\"', '\"x\"') WHERE seq IN (7, 31)")
        one, several = verify(ledger, workers=1), verify(ledger, workers=3)  # workers get the address by env
        assert several.problems == one.problems and [p.seq for p in one.problems] == [7, 7, 31, 31]
        assert (several.events, several.head_seq, several.head_chain) == (one.events, one.head_seq, one.head_chain)

    def test_replay_and_as_of(self, ledger: Ledger) -> None:
        ledger.register_study("s1", title="one")
        run = ledger.register_run("s1", "c1")
        ledger.transition(run, "running")
        middle = ledger.head().seq
        ledger.transition(run, "success")
        late = run_status_changed(run, RunStatus.RUNNING, at="2099-01-01T00:00:00+00:00", study_id="s1")
        ledger.append([make_event(EventKind.RUN_STATUS_CHANGED, late, source="test")])  # an anomaly, flagged
        assert replay(ledger, in_memory=True).identical is True
        with state_as_of(ledger, seq=middle) as snapshot:
            assert query.run(snapshot.conn, run)["status"] == "running"
            assert query.head(snapshot.conn).seq == middle
        report = replay(ledger, seq=middle)
        assert report.runs_by_status == {"running": 1}
        assert replay(ledger).anomaly_count == 1

    def test_replay_sees_an_edited_derived_table(self, ledger: Ledger, target: str) -> None:
        ledger.register_study("s1", title="one")
        self.raw(target, "UPDATE studies SET title = 'forged'")
        report = replay(ledger, in_memory=True)
        assert report.identical is False
        assert [d["problem"] for d in report.differences] == ["changed"]


def _count(target: str) -> int:
    try:
        with Ledger.open(target, readonly=True) as ledger:
            return ledger.store.event_count()
    except StudyLedgerError:  # not created yet
        return 0

