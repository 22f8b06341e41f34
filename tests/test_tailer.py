"""The tailer on real files: every failure mode, each on its own."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .ingest_helpers import event_ids, own_line, row_line, write
from studyledger import Ledger, query
from studyledger.events import EventKind
from studyledger.ingestion.lines import raw_bytes
from studyledger import ingest
from studyledger.ingestion.tailer import CHUNK, Tailer, is_jsonl_name
from studyledger.query import ingest_files as file_states

OBS = EventKind.OBSERVATION_RECORDED.value
REJ = EventKind.LINE_REJECTED.value


def lines(start: int, stop: int, tag: str = "t") -> str:
    return "".join(own_line(i, tag=tag) for i in range(start, stop))


def rejections(ledger: Ledger) -> list[dict[str, object]]:
    return [event.data for event in ledger.events() if event.kind == REJ]


def test_own_lines_and_bare_rows_are_accepted(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 5) + row_line(100) + row_line(101))
    stats = Tailer(ledger).ingest_path(path)
    assert (stats.lines_read, stats.lines_accepted, stats.lines_rejected) == (7, 7, 0)
    assert stats.events_appended == 7
    assert stats.offset == path.stat().st_size
    assert ledger.stats()["observations"] == 7


def test_sources_name_file_line_and_offset(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 2))
    Tailer(ledger).ingest_path(path)
    second = ledger.events()[1]
    assert second.source == f"file:{path}:2:{len(own_line(0))}"


def test_reingest_appends_nothing(ledger: Ledger, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "a.jsonl", lines(0, 20))
    write(tmp_path / "sub" / "b.jsonl", lines(20, 30))
    first = ingest(ledger, [tmp_path])
    head = ledger.head()
    again = ingest(ledger, [tmp_path])
    assert (first.files, first.lines_read, first.events_appended) == (2, 30, 30)
    assert (again.lines_read, again.events_appended, again.duplicates) == (0, 0, 0)
    assert ledger.head() == head


def test_reingest_after_forgetting_offsets_still_appends_nothing(ledger_path: Path, tmp_path: Path) -> None:
    # Event ids are content hashes: even a full re-read (new ledger state table, same
    # events) stores every fact once.
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 10) + "broken\n")
    with Ledger.open(ledger_path) as ledger:
        ingest(ledger, [path])
        ledger.conn.execute("DROP TABLE ingest_files")
        again = ingest(ledger, [path])
        assert (again.lines_read, again.events_appended, again.duplicates) == (11, 0, 11)


def test_partial_line_waits_for_its_newline(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    full = own_line(1)
    write(path, own_line(0) + full[:25])
    tailer = Tailer(ledger)
    first = tailer.ingest_path(path)
    assert (first.lines_read, first.lines_rejected, first.pending_bytes) == (1, 0, 25)
    assert tailer.ingest_path(path).lines_read == 0
    write(path, full[25:])
    second = tailer.ingest_path(path)
    assert (second.lines_read, second.lines_accepted, second.pending_bytes) == (1, 1, 0)
    assert len(event_ids(ledger.path, OBS)) == 2
    assert rejections(ledger) == []


def test_copytruncate_restarts_at_zero(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 10))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    shutil.copy(path, tmp_path / "archive.log")  # copytruncate: copy away, truncate in place
    os.truncate(path, 0)
    write(path, lines(10, 13))
    stats = tailer.ingest_path(path)
    assert stats.reset == "truncated"
    assert (stats.lines_read, stats.events_appended) == (3, 3)
    assert len(event_ids(ledger.path, OBS)) == 13


def test_truncated_and_regrown_past_offset_is_detected_by_the_check_hash(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 3))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    inode = path.stat().st_ino
    with open(path, "r+b") as handle:  # same inode, new content longer than the old offset
        handle.truncate(0)
        handle.write(lines(50, 60, tag="new").encode())
    assert path.stat().st_ino == inode
    stats = tailer.ingest_path(path)
    assert stats.reset == "replaced"
    assert (stats.lines_read, stats.events_appended) == (10, 10)
    assert len(event_ids(ledger.path, OBS)) == 13


def test_changed_first_bytes_under_same_inode_are_detected_by_the_fingerprint(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    first = row_line(0, tag="aaaa")
    write(path, first + lines(1, 40))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    # Rewrite only the first line in place (same length), leaving the tail identical.
    with open(path, "r+b") as handle:
        handle.write(row_line(0, tag="bbbb").encode())
    stats = tailer.ingest_path(path)
    assert stats.reset == "replaced"
    assert stats.events_appended == 1  # only the changed first line is a new fact
    assert stats.duplicates == 39


def test_rotation_reads_old_file_to_its_end_and_the_new_from_start(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "app.jsonl"
    write(path, lines(0, 5))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    write(path, lines(5, 8))  # written after the last read, before rotation
    path.rename(tmp_path / "app.jsonl.1")
    write(path, lines(8, 10))
    stats = ingest(ledger, [tmp_path])
    assert (stats.lines_read, stats.events_appended, stats.duplicates) == (5, 5, 0)
    assert len(event_ids(ledger.path, OBS)) == 10
    assert sorted(Path(row["path"]).name for row in file_states(ledger.conn)) == ["app.jsonl", "app.jsonl.1"]


def test_rotated_out_of_the_folder_is_followed_by_inode(ledger: Ledger, tmp_path: Path) -> None:
    folder, archive = tmp_path / "in", tmp_path / "archive"
    folder.mkdir()
    archive.mkdir()
    write(folder / "a.jsonl", lines(0, 3))
    tailer = Tailer(ledger)
    tailer.ingest_path(folder / "a.jsonl")
    write(folder / "a.jsonl", lines(3, 4))
    (folder / "a.jsonl").rename(archive / "old")  # what the watcher follows on a move event
    stats = tailer.ingest_path(archive / "old")
    assert (stats.reset, stats.lines_read) == (None, 1)
    assert len(event_ids(ledger.path, OBS)) == 4


def test_deleted_file_is_missing_not_an_error(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 2))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    path.unlink()
    stats = tailer.ingest_path(path)
    assert stats.missing and stats.lines_read == 0
    assert ingest(ledger, [tmp_path]).errors == []
    assert len(event_ids(ledger.path, OBS)) == 2


def test_bad_utf8_line_is_rejected_with_exact_bytes(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    bad = b'{"text": "\xff\xfe broken"}'
    write(path, own_line(0).encode() + bad + b"\n" + own_line(1).encode())
    stats = Tailer(ledger).ingest_path(path)
    assert (stats.lines_read, stats.lines_accepted, stats.lines_rejected) == (3, 2, 1)
    [body] = rejections(ledger)
    assert raw_bytes(body) == bad
    assert "UTF-8" in str(body["reason"])
    assert (body["line"], body["offset"]) == (2, len(own_line(0)))
    assert body["prefix_sha256"] == hashlib.sha256(own_line(0).encode() + bad + b"\n").hexdigest()
    assert query.rejections(ledger.conn)[0]["file"] == str(path)


def test_a_copied_file_is_not_rejected_again(ledger: Ledger, tmp_path: Path) -> None:
    """The same bad bytes at the same line of the same content are one rejection, wherever
    the file is read from; the same bad line after other content is another."""
    original = tmp_path / "study" / "a.jsonl"
    original.parent.mkdir()
    write(original, own_line(0) + "{broken\n" + own_line(1))
    copy = tmp_path / "copy" / "study" / "a.jsonl"
    copy.parent.mkdir(parents=True)
    shutil.copy(original, copy)
    other = tmp_path / "other.jsonl"
    write(other, own_line(5) + "{broken\n")
    tailer = Tailer(ledger)
    for path in (original, copy, other):
        assert tailer.ingest_path(path).lines_rejected == 1
    rows = query.rejections(ledger.conn)
    assert [(row["file"], row["line"]) for row in rows] == [(str(original), 2), (str(other), 2)]
    assert len(rejections(ledger)) == 2


def test_bad_json_line_is_rejected_with_its_column(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, own_line(0) + '{"a": 1,, "b": 2}\n')
    Tailer(ledger).ingest_path(path)
    [row] = query.rejections(ledger.conn)
    assert row["line"] == 2 and "column 9" in row["reason"]
    assert row["raw"] == '{"a": 1,, "b": 2}'


def test_unknown_shape_is_rejected(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, '[1, 2, 3]\n"just a string"\n{"nothing": "known"}\n')
    stats = Tailer(ledger).ingest_path(path)
    assert (stats.lines_read, stats.lines_rejected) == (3, 3)


def test_own_line_with_wrong_event_id_is_rejected(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, own_line(0).replace('"kind"', '"event_id":"evt-0000","kind"'))
    stats = Tailer(ledger).ingest_path(path)
    assert stats.lines_rejected == 1
    assert "event_id" in str(rejections(ledger)[0]["reason"])


def test_too_long_line_is_skipped_to_its_newline(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    monster = b'{"x": "' + b"z" * 5000 + b'"}'
    write(path, own_line(0).encode() + monster + b"\n" + own_line(1).encode())
    stats = Tailer(ledger, line_limit=1000).ingest_path(path)
    assert (stats.lines_read, stats.lines_accepted, stats.lines_rejected) == (3, 2, 1)
    [body] = rejections(ledger)
    assert body["length"] == len(monster) and body["raw_complete"] is False
    assert body["sha256"] == hashlib.sha256(monster).hexdigest()
    assert "longer than the limit of 1000 bytes" in str(body["reason"])


def test_too_long_line_spanning_many_chunks_streams_past(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    monster = b"q" * (CHUNK * 3 + 17)
    write(path, monster)
    tailer = Tailer(ledger, line_limit=CHUNK // 2)
    waiting = tailer.ingest_path(path)  # no newline yet: the monster waits too
    assert waiting.lines_read == 0 and waiting.pending_bytes == len(monster)
    write(path, b"\n" + own_line(0).encode())
    stats = tailer.ingest_path(path)
    assert (stats.lines_read, stats.lines_rejected, stats.lines_accepted) == (2, 1, 1)
    [body] = rejections(ledger)
    assert body["length"] == len(monster)
    assert body["sha256"] == hashlib.sha256(monster).hexdigest()


def test_blank_lines_are_accepted_as_empty(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, own_line(0) + "\n  \r\n" + own_line(1))
    stats = Tailer(ledger).ingest_path(path)
    assert (stats.lines_read, stats.lines_accepted, stats.events_appended) == (4, 4, 2)


def test_value_the_store_refuses_is_rejected_alone(ledger: Ledger, tmp_path: Path) -> None:
    # An integer beyond SQLite's 64 bits fails inside the projection fold; the rest of
    # its batch must still be stored and the line kept as a rejection.
    from studyledger.own_lines import line_for

    huge = line_for(EventKind.RUN_REGISTERED, {"run_id": "r-huge", "study_id": None, "condition_id": None,
                                               "replicate": 10**30, "agent_id": None, "problem_id": None,
                                               "seed": 10**30, "at": None})
    path = tmp_path / "a.jsonl"
    write(path, own_line(0) + huge + own_line(1))
    stats = Tailer(ledger).ingest_path(path)
    assert (stats.lines_read, stats.lines_accepted, stats.lines_rejected) == (3, 2, 1)
    assert len(event_ids(ledger.path, OBS)) == 2
    assert rejections(ledger)[0]["line"] == 2


def test_batches_commit_offsets_with_events(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 2_500))
    commits: list[int] = []
    stats = Tailer(ledger, batch_lines=1_000, on_progress=commits.append).ingest_path(path)
    assert len(commits) == 3 and sum(commits) == path.stat().st_size
    assert stats.events_appended == 2_500
    [state] = file_states(ledger.conn)
    assert (state["offset"], state["line"]) == (path.stat().st_size, 2_500)


def test_many_files(ledger: Ledger, tmp_path: Path) -> None:
    for index in range(1_500):
        sub = tmp_path / f"d{index % 10}"
        sub.mkdir(exist_ok=True)
        write(sub / f"f{index}.jsonl", own_line(index))
    write(tmp_path / "notes.txt", "not a jsonl file\n")
    stats = ingest(ledger, [tmp_path])
    assert (stats.files, stats.lines_read, stats.events_appended) == (1_500, 1_500, 1_500)
    assert len(file_states(ledger.conn)) == 1_500


def test_two_tailers_racing_on_one_file_count_each_line_once(ledger_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 6_000) + "bad line\n")
    Ledger.open(ledger_path).close()
    results: list[int] = []

    def run() -> None:
        with Ledger.open(ledger_path) as own:
            tailer = Tailer(own, batch_lines=300)
            total = 0
            while True:
                stats = tailer.ingest_path(path)
                total += stats.lines_read
                if not stats.raced:
                    break
            results.append(total)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 6_001
    assert len(event_ids(ledger_path, OBS)) == 6_000
    assert len(event_ids(ledger_path, REJ)) == 1


def test_jsonl_names() -> None:
    assert is_jsonl_name("a.jsonl") and is_jsonl_name("a.jsonl.1") and is_jsonl_name("b.ndjson")
    assert is_jsonl_name("app.jsonl.2026-01-01")
    assert not is_jsonl_name("a.jsonl.gz") and not is_jsonl_name(".a.jsonl.swp")
    assert not is_jsonl_name("ledger.db-wal") and not is_jsonl_name("notes.txt")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([own_line(0).encode(), b"{}", b"[", b"\xff"])),
                max_size=12),
       st.integers(min_value=8, max_value=200))
def test_arbitrary_bytes_every_line_accounted_for(chunks: list[bytes], limit: int) -> None:
    data = b"".join(chunks)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.jsonl"
        path.write_bytes(data)
        with Ledger.open(Path(folder) / "l.db") as ledger:
            stats = Tailer(ledger, line_limit=limit).ingest_path(path)
            assert stats.lines_read == data.count(b"\n")
            assert stats.lines_read == stats.lines_accepted + stats.lines_rejected
            assert stats.pending_bytes == len(data) - (data.rfind(b"\n") + 1)
            assert len(event_ids(ledger.path, REJ)) == stats.lines_rejected
            again = Tailer(ledger, line_limit=limit).ingest_path(path)
            assert (again.lines_read, again.events_appended) == (0, 0)
