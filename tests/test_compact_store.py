"""The SQLite ledger's compact rows (codec.py): read back exactly, trained dictionaries kept for
good, tampering with what only the compact form has reported, and older ledgers upgraded."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from studyledger import Ledger
from studyledger.audit.verify import verify
from studyledger.codec import FIRST_TRAINING, PHYSICAL_COLUMNS, Codec, decode_time, encode_time, prepare
from studyledger.events import EVENT_COLUMNS, StoredEvent
from studyledger.store import EVENTS_DDL, META_DDL, STORE_SCHEMA_VERSION, TRIGGER_DDL

from .audit_helpers import raw
from .test_store import observation_event

MOMENTS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))


@settings(max_examples=300, deadline=None)
@given(MOMENTS, st.booleans())
def test_a_time_of_the_usual_forms_is_a_code_that_reads_back_the_same_in_python_and_sql(
        moment: datetime, whole_seconds: bool) -> None:
    moment = moment.replace(tzinfo=UTC, microsecond=0 if whole_seconds else moment.microsecond)
    text = moment.isoformat(timespec="seconds" if whole_seconds else "microseconds")
    code = encode_time(text)
    assert isinstance(code, int)
    assert decode_time(code) == text
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE events (occurred_at)")
        conn.execute("INSERT INTO events VALUES (?)", (code,))
        from studyledger.codec import _time_sql

        assert conn.execute(f"SELECT {_time_sql('occurred_at')} FROM events").fetchone()[0] == text


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=40),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat(timespec="milliseconds")),
    st.datetimes(max_value=datetime(1969, 12, 31), timezones=st.just(UTC)).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.astimezone(UTC).isoformat().replace("T", " ")),
))
def test_any_other_time_stays_text(text: str) -> None:
    stored = encode_time(text)
    assert decode_time(stored) == text
    assert isinstance(stored, str)


def _trace_events(count: int, start: int = 0) -> list:
    return [observation_event(start + i, run_id=f"run-{(start + i) // 40}", text=f"step {(start + i) % 9} of a long run")
            for i in range(count)]


@pytest.fixture
def grown(ledger_path: Path) -> Ledger:
    """A ledger past its first training: the first batch stored as text, the rest compressed."""
    ledger = Ledger.open(ledger_path)
    ledger.append(_trace_events(FIRST_TRAINING + 100))
    ledger.append(_trace_events(300, start=FIRST_TRAINING + 100))
    yield ledger
    ledger.close()


def test_rows_are_stored_compactly_and_read_back_exactly(grown: Ledger) -> None:
    conn = raw(grown.path)
    kinds = dict(conn.execute("SELECT typeof(body), count(*) FROM events GROUP BY 1").fetchall())
    assert kinds == {"text": FIRST_TRAINING + 100, "blob": 300}
    [(dict_id, data, sha, events)] = conn.execute("SELECT id, data, sha256, events FROM ledger_dictionaries")
    assert (dict_id, events, hashlib.sha256(data).hexdigest()) == (1, FIRST_TRAINING + 100, sha)
    stored = conn.execute("SELECT typeof(event_id), length(event_id), typeof(chain), length(chain), typeof(kind), "
                          "typeof(recorded_at), typeof(occurred_at), typeof(source) FROM events WHERE seq = 5").fetchone()
    assert stored == ("blob", 16, "blob", 32, "integer", "integer", "integer", "text")  # source "test" has no line
    # The view decodes every column exactly as the store reads it, and the store what was appended.
    appended = _trace_events(FIRST_TRAINING + 400)
    events = list(grown.store.iter_events())
    assert [(e.event_id, e.body, e.occurred_at) for e in events] == [
        (a.event_id, a.body, a.occurred_at) for a in appended]
    viewed = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events_json ORDER BY seq").fetchall()
    assert viewed == [tuple(getattr(e, name) for name in EVENT_COLUMNS) for e in events]
    assert verify(grown.store).ok
    conn.close()


def test_a_reader_without_studyledger_reads_every_row(grown: Ledger) -> None:
    """What docs/store.md tells a reader with only sqlite3 and zstandard to do."""
    conn = sqlite3.connect(grown.path)  # no studyledger function registered
    plain = conn.execute("SELECT seq, event_id, kind, occurred_at, body FROM events_plain ORDER BY seq").fetchall()
    with pytest.raises(sqlite3.OperationalError, match="sl_body"):
        conn.execute("SELECT body FROM events_json")
    dictionaries = {i: zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))
                    for i, data in conn.execute("SELECT id, data FROM ledger_dictionaries")}

    def body(stored: str | bytes) -> str:
        if isinstance(stored, str):
            return stored
        return dictionaries[zstandard.get_frame_parameters(stored).dict_id].decompress(stored).decode()

    events = list(grown.store.iter_events())
    assert [(seq, event_id, kind, occurred_at, body(stored)) for seq, event_id, kind, occurred_at, stored in plain] \
        == [(e.seq, e.event_id, e.kind, e.occurred_at, e.body) for e in events]
    conn.close()


def test_tampering_with_compressed_bodies_names_and_dictionaries_is_reported(grown: Ledger) -> None:
    last = grown.head().seq
    conn = raw(grown.path)
    for name in TRIGGER_DDL:
        conn.execute(f"DROP TRIGGER {name}")
    frame = conn.execute("SELECT body FROM events WHERE seq = ?", (last,)).fetchone()[0]
    conn.execute("UPDATE events SET body = ? WHERE seq = ?", (frame[:-3] + bytes(b ^ 0x55 for b in frame[-3:]), last))
    other = conn.execute("SELECT body FROM events WHERE seq = ?", (last - 1,)).fetchone()[0]
    conn.execute("UPDATE events SET body = ? WHERE seq = ?", (other, last - 2))  # another event's body
    conn.close()
    found = {(p.seq, p.check) for p in verify(grown.store).problems}
    assert (last, "body") in found or {(last, "event_id"), (last, "chain")} <= found
    assert {(last - 2, "event_id"), (last - 2, "chain")} <= found
    conn = raw(grown.path)
    conn.execute("DROP TRIGGER ledger_dictionaries_refuse_update")
    conn.execute("DROP TRIGGER ledger_names_refuse_update")
    conn.execute("UPDATE ledger_dictionaries SET data = data || X'00'")
    conn.execute("UPDATE ledger_names SET name = 'run_registered' WHERE name = 'observation_recorded'")
    conn.close()
    report = verify(grown.store)
    checks = {p.check for p in report.problems}
    assert {"dictionary", "triggers", "event_id", "chain"} <= checks
    assert report.first_failure is not None and report.first_failure.seq == 0


@pytest.mark.parametrize("code", [2**62, -(2**62), 2**63 - 1])
def test_a_time_code_out_of_any_calendar_is_reported_not_a_crash(grown: Ledger, code: int) -> None:
    last = grown.head().seq
    conn = raw(grown.path)
    for name in TRIGGER_DDL:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE events SET occurred_at = ?, recorded_at = ? WHERE seq = ?", (code, code, last))
    conn.close()
    assert {(p.seq, p.check) for p in verify(grown.store).problems} >= {(last, "body")}


def test_a_rolled_back_training_leaves_nothing_behind(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.store.transaction():
        ledger.append(_trace_events(FIRST_TRAINING + 10))
        assert ledger.store.codec.latest is not None  # trained inside the transaction
        raise RuntimeError("abandon")
    assert ledger.store.codec.latest is None and ledger.store.codec.names == {}
    ledger.append(_trace_events(FIRST_TRAINING + 10))
    ledger.append(_trace_events(20, start=FIRST_TRAINING + 10))
    conn = raw(ledger.path)
    assert conn.execute("SELECT count(*) FROM ledger_dictionaries").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM events WHERE typeof(body) = 'blob'").fetchone()[0] == 20
    conn.close()
    assert verify(ledger.store).ok


def test_a_second_writer_uses_the_dictionary_the_first_trained(ledger_path: Path) -> None:
    first, second = Ledger.open(ledger_path), Ledger.open(ledger_path)
    try:
        first.append(_trace_events(FIRST_TRAINING + 10))
        second.append(_trace_events(5, start=FIRST_TRAINING + 10))
        second.append(_trace_events(5, start=FIRST_TRAINING + 15))
        first.append(_trace_events(5, start=FIRST_TRAINING + 20))
        conn = raw(ledger_path)
        assert conn.execute("SELECT count(*) FROM ledger_dictionaries").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM events WHERE typeof(body) = 'blob'").fetchone()[0] >= 10
        conn.close()
        assert [e.body for e in second.store.iter_events()] == [e.body for e in _trace_events(FIRST_TRAINING + 25)]
        assert verify(first.store).ok
    finally:
        first.close()
        second.close()


def _as_version_2(compact: Path, target: Path) -> None:
    """The ledger at ``compact`` written as studyledger wrote schema version 2: every column text."""
    with Ledger.open(compact, readonly=True) as ledger:
        rows = [tuple(getattr(e, name) for name in EVENT_COLUMNS) for e in ledger.store.iter_events()]
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for ddl in (META_DDL, EVENTS_DDL, *TRIGGER_DDL.values()):
        conn.execute(ddl)
    conn.executemany("INSERT INTO ledger_meta VALUES (?, ?)", [("application", "studyledger"),
                                                                ("schema_version", "2"), ("created_at", "x")])
    conn.executemany(f"INSERT INTO events VALUES ({', '.join('?' * 10)})", rows)
    conn.close()


def test_a_version_2_ledger_is_read_as_it_is_and_upgraded_by_a_writer(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "new.db") as ledger:
        ledger.append(_trace_events(FIRST_TRAINING + 50))
        expected = list(ledger.store.iter_events())
    _as_version_2(tmp_path / "new.db", tmp_path / "old.db")
    with Ledger.open(tmp_path / "old.db", readonly=True) as reader:
        assert list(reader.store.iter_events()) == expected
        assert reader.conn.execute("SELECT count(*) FROM events_json").fetchone()[0] == len(expected)
        report = verify(reader)
        assert [p.check for p in report.problems] == ["schema"] and "upgrades it" in report.problems[0].message
        assert report.head_chain == expected[-1].chain
    with Ledger.open(tmp_path / "old.db") as writer:
        assert writer.store.meta()["schema_version"] == str(STORE_SCHEMA_VERSION)
        assert list(writer.store.iter_events()) == expected
        assert verify(writer).ok and writer.head().chain == expected[-1].chain
        columns = [row[1] for row in writer.conn.execute("PRAGMA table_info(events)")]
        assert tuple(columns) == PHYSICAL_COLUMNS
        blobs = writer.conn.execute("SELECT count(*) FROM events WHERE typeof(body) = 'blob'").fetchone()[0]
        assert blobs > len(expected) // 2  # a dictionary trained on the old rows compresses them all
        writer.append(_trace_events(3, start=FIRST_TRAINING + 50))
        assert verify(writer).ok


def test_a_row_an_upgrade_cannot_store_stops_it_with_a_message(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "new.db") as ledger:
        ledger.append(_trace_events(3))
    _as_version_2(tmp_path / "new.db", tmp_path / "old.db")
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("DROP TRIGGER events_refuse_update")
    conn.execute("UPDATE events SET event_id = 'evt-EDITED' WHERE seq = 2")
    conn.close()
    with pytest.raises(Exception, match="seq 2.*the ledger was edited"):
        Ledger.open(tmp_path / "old.db")
    with Ledger.open(tmp_path / "old.db", readonly=True) as reader:  # untouched, and still readable
        assert reader.store.meta()["schema_version"] == "2"
        assert {(p.seq, p.check) for p in verify(reader).problems} >= {(2, "event_id")}


def test_recording_times_of_a_batch_are_coded_once(ledger: Ledger) -> None:
    ledger.append(_trace_events(3))
    conn = raw(ledger.path)
    assert len({row[0] for row in conn.execute("SELECT recorded_at FROM events")}) == 1
    recorded = decode_time(conn.execute("SELECT recorded_at FROM events").fetchone()[0])
    assert abs(datetime.fromisoformat(recorded) - datetime.now(UTC)) < timedelta(minutes=5)
    conn.close()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["file:/d/trace.jsonl:12:3400", "file:a:b:0:0", "file:x:01:2", "api", "file:/d/ü:7:9"]),
       st.one_of(st.none(), MOMENTS.map(lambda d: d.replace(tzinfo=UTC).isoformat()), st.text(max_size=32)))
def test_what_a_worker_prepares_is_what_the_writer_would_store(source: str, occurred_at: str | None) -> None:
    """An ingest worker sends :func:`prepare` of each event; the writer stores exactly the
    row it would make itself, and a prepared entry for other times or another source of the
    same id (a line repeated elsewhere) is not used."""
    event = observation_event(3)
    row = StoredEvent(1, event.event_id, event.kind, None, "run-x", occurred_at, "2026-01-01T00:00:00+00:00", source,
                      event.body, "ab" * 32)
    with sqlite3.connect(":memory:") as conn:
        codec = Codec(conn)
        codec.name_ids.update({"observation_recorded": 1, "file:/d/trace.jsonl": 2, "file:a:b": 3, "file:x:01": 4,
                               "file:/d/ü": 5})
        alone = codec.encode(row)
        with codec.preparing({event.event_id: prepare(event.event_id, occurred_at, source)}):
            assert codec.encode(row) == alone
        with codec.preparing({event.event_id: prepare(event.event_id, "2001-01-01T00:00:00+00:00", "file:o:1:1")}):
            assert codec.encode(row) == alone
        assert codec.prepared == {}
