"""The dashboard's data layer, without a terminal: paging, spans, stale and durations."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studyledger import Ledger, search, store
from studyledger.errors import LedgerMissingError
from studyledger.query import is_stale, run_duration
from studyledger.tui.data import ObservationFilter, Source, SourceClosed, SpanDepths

from .test_readonly import make_projections_stale
from .tui_helpers import NOW, build, observation


@pytest.fixture
def source(tmp_path: Path) -> Source:
    db = build(tmp_path / "ledger.db")
    with Ledger.open(db) as ledger:  # 250 more rows on run-ok: several pages of every size
        ledger.append([observation("run-ok", 100 + n, level="tool-call" if n % 3 == 0 else "step",
                                   event_type=f"type{n % 4}", text=f"extra {n}", second=n % 60)
                       for n in range(250)])
    return Source(db)


@pytest.mark.parametrize("where", [ObservationFilter(), ObservationFilter(level="tool-call"),
                                   ObservationFilter(event_type="type1"),
                                   ObservationFilter(level="step", event_type="type2")])
@pytest.mark.parametrize("size", [1, 7, 100])
def test_pages_by_offset_and_by_key_give_the_same_rows(source: Source, where: ObservationFilter, size: int) -> None:
    whole = source.page("run-ok", where, 0, 10_000)
    assert (len(whole), whole[-1]["seq"]) == source.tail("run-ok", where, 0)
    assert source.tail("run-ok", where, whole[-3]["seq"]) == (2, whole[-1]["seq"])
    assert source.tail("run-ok", where, whole[-1]["seq"]) == (0, whole[-1]["seq"])
    by_offset, by_key, last = [], [], 0
    for index in range(0, len(whole), size):
        by_offset += source.page("run-ok", where, index, size)
        page = source.page("run-ok", where, index, size, after_seq=last)
        by_key += page
        last = page[-1]["seq"]
    assert [r["seq"] for r in by_offset] == [r["seq"] for r in by_key] == [r["seq"] for r in whole]
    assert all(source.index_of("run-ok", where, r["seq"]) == i for i, r in enumerate(whole[:20]))


def test_find_searches_forwards_and_backwards(source: Source) -> None:
    where = ObservationFilter()
    first = source.find("run-ok", where, "EXTRA 1", from_seq=0)
    assert first is not None and source.observation(first)["text"] == "extra 1"  # type: ignore[index]
    following = source.find("run-ok", where, "extra 1", from_seq=first)
    assert source.observation(following)["text"] == "extra 10"  # type: ignore[arg-type,index]
    assert source.find("run-ok", where, "extra 1", from_seq=following, backwards=True) == first
    assert source.find("run-ok", where, "no such text", from_seq=0) is None


def test_a_closed_source_refuses_reads_instead_of_crashing(source: Source) -> None:
    source.close()
    with pytest.raises(SourceClosed):
        source.studies()
    with pytest.raises(SourceClosed):
        source.data_version()


def test_a_missing_ledger_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(LedgerMissingError):
        Source(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_span_depths_follow_parents() -> None:
    depths = SpanDepths()
    assert depths.depth(None, None) == 0
    assert depths.depth("run", None) == 0
    assert depths.depth("agent", "run") == 1
    assert depths.depth("tool", "agent") == 2
    assert depths.depth("tool", "agent") == 2  # Finished shares its Started's span
    assert depths.depth("orphan", "never-seen") == 1


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.sampled_from("abcdefghz"))))
def test_span_depths_end_on_any_parent_graph_even_cycles(parents: dict[str, str | None]) -> None:
    depths = SpanDepths()
    for span, parent in parents.items():
        depths.add(span, parent)
    for span, parent in parents.items():
        assert 0 <= depths.depth(span, parent) <= len(parents) + 1


def test_stale_and_duration() -> None:
    running = {"status": "running", "started_at": "2026-03-02T10:00:00+00:00",
               "last_activity": "2026-03-02T10:05:00+00:00", "last_recorded": "2026-03-02T10:05:00Z"}
    late = NOW.replace(hour=10, minute=10)
    assert is_stale(running, late, stale_after=60)
    assert not is_stale(running, late, stale_after=600)
    assert not is_stale({**running, "status": "success"}, late, stale_after=60)
    assert run_duration(running, late, 600) == 600  # still running: until now
    assert run_duration(running, late, 60) == 300  # stale: until its last event
    ended = {**running, "status": "success", "ended_at": "2026-03-02T10:00:02.500000+00:00"}
    assert run_duration(ended, late + timedelta(days=1)) == 2.5
    assert run_duration({"status": "pending"}, late) is None


def test_a_replayed_old_trace_is_not_timed_as_if_running_since_its_start() -> None:
    # A trace of a run killed two days ago, ingested a minute ago: its last event (on its own
    # clock) came 3 s after its start, and nothing has been heard from it since it arrived.
    replayed = {"status": "running", "started_at": "2026-02-28T10:00:00+00:00",
                "last_activity": "2026-02-28T10:00:03+00:00", "last_recorded": "2026-03-02T10:09:00+00:00"}
    late = NOW.replace(hour=10, minute=10)
    assert run_duration(replayed, late, 300) == 63  # 3 s of trace + 60 s since it arrived
    # A clock running 2 h behind does not change a live run's duration.
    behind = {"status": "running", "started_at": "2026-03-02T08:00:00+00:00",
              "last_activity": "2026-03-02T08:09:00+00:00", "last_recorded": "2026-03-02T10:09:00+00:00"}
    assert run_duration(behind, late, 300) == 600


# -- what the dashboard writes (review item 6) --------------------------------------------


def test_the_dashboard_writes_derived_tables_and_the_search_index_never_an_event(tmp_path: Path) -> None:
    """It rebuilds derived tables another version left and builds the search index: derived
    state, which a writer's open and a first search write too. The events and their chain
    stay as they were."""
    db = build(tmp_path / "ledger.db")
    make_projections_stale(db)
    with Ledger.open(db, readonly=True) as ledger:
        events, head = [(e.event_id, e.body) for e in ledger.events()], ledger.store.head()
        assert not ledger.projections_current and not search.exists(ledger.conn)
    source = Source(db)
    try:
        hits, _ = source.search("beam", search.Filters())
        assert hits and not source.temporary_index
    finally:
        source.close()
    with Ledger.open(db, readonly=True) as ledger:
        assert ledger.projections_current and search.is_current(ledger.conn)
        assert [(e.event_id, e.body) for e in ledger.events()] == events and ledger.store.head() == head


def test_a_busy_ledger_is_searched_with_a_temporary_index_until_the_kept_one_can_be_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy lock is a moment, not a property of the ledger: the session searched with a
    temporary index for good after one. The next search tries the kept index again."""
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 50)  # give up on the lock at once
    monkeypatch.setattr(store, "BEGIN_ATTEMPTS", 1)
    db = build(tmp_path / "ledger.db")
    source = Source(db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        hits, count = source.search("beam", search.Filters())
        assert hits and count and source.temporary_index and source.index_note == "the ledger is busy"
        holder.execute("ROLLBACK")
        assert source.search("beam", search.Filters()) == (hits, count)
        assert not source.temporary_index and source.index_note is None
        with Ledger.open(db, readonly=True) as ledger:
            assert search.is_current(ledger.conn)
    finally:
        holder.close()
        source.close()
