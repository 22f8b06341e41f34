"""The tailer on real files: every failure mode, each on its own."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
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


def test_rewritten_under_the_same_inode_past_the_offset_is_detected_by_the_prefix_digest(ledger: Ledger, tmp_path: Path) -> None:
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


def test_changed_first_bytes_under_same_inode_are_detected_by_the_prefix_digest(ledger: Ledger, tmp_path: Path) -> None:
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


def same_tail_line(index: int, tag: str) -> bytes:
    """Lines of one writer: the same length and the same last 64+ bytes, as a real
    writer's lines often are (only an id near the start differs)."""
    return f'{{"record_id":"{tag}-{index:06d}","timestamp":"2026-03-02T10:16:00+00:00","event_type":"x",' \
           f'"text":"{"same text for every line of this writer " * 3}"}}\n'.encode()


def test_truncated_to_a_shorter_prefix_and_regrown_past_the_offset_loses_nothing(
        ledger: Ledger, tmp_path: Path) -> None:
    """Issue 11, item 2: the old check compared the first 1 KiB and the 64 bytes before the
    offset; both matched, so the 20 new lines before the old offset were never read."""
    path = tmp_path / "a.jsonl"
    write(path, b"".join(same_tail_line(i, "old") for i in range(30)))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    with open(path, "r+b") as handle:  # same inode: truncate to 10 lines, then regrow
        handle.truncate(len(same_tail_line(0, "old")) * 10)
        handle.seek(0, os.SEEK_END)
        handle.write(b"".join(same_tail_line(i, "new") for i in range(30)))
    stats = tailer.ingest_path(path)
    assert stats.reset == "replaced"
    assert stats.events_appended == 30
    assert len(event_ids(ledger.path, OBS)) == 60


def _file_events(path: Path) -> set[str]:
    """The event ids the complete lines of a file state (every line here is an observation row)."""
    from studyledger.ingestion.adapters import events_from_line
    from studyledger.ingestion.lines import parse_line

    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]
    return {event.event_id for line in lines for event in events_from_line(parse_line(line), source="x")}


_ROUNDS = st.lists(st.tuples(
    st.sampled_from(["none", "truncate", "rewrite", "rotate"]),  # what happens to the file first
    st.integers(0, 12),                                          # lines kept (truncate) or written (rewrite)
    st.integers(0, 25),                                          # lines appended after it
    st.booleans(),                                               # a pass reads the folder then
), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(rounds=_ROUNDS)
@example(rounds=[("none", 0, 10, True), ("truncate", 5, 10, False)])  # issue 11's case
def test_no_sequence_of_truncate_regrow_rotate_append_loses_a_line(rounds: list[tuple[str, int, int, bool]]) -> None:
    """A model of what was written: after a final pass, every line in every file is stored."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path, counter, rotations = root / "app.jsonl", 0, 0
        path.touch()

        def lines(n: int) -> bytes:
            nonlocal counter
            counter += n
            return b"".join(same_tail_line(i, "w") for i in range(counter - n, counter))

        with Ledger.open(root / "ledger.db") as ledger:
            for disturbance, n, appended, read in rounds:
                if disturbance == "truncate":  # in place, to a prefix of whole lines (copytruncate: 0)
                    kept = path.read_bytes().split(b"\n")[:-1][:n]
                    os.truncate(path, sum(len(line) + 1 for line in kept))
                elif disturbance == "rewrite":  # same inode, new content
                    with open(path, "r+b") as handle:
                        handle.truncate(0)
                        handle.write(lines(n))
                elif disturbance == "rotate":
                    rotations += 1
                    path.rename(root / f"app.jsonl.{rotations}")
                    path.touch()
                write(path, lines(appended))
                if read:
                    ingest(ledger, [root])
            ingest(ledger, [root])
            stored = {event.event_id for event in ledger.events()}
            written = set().union(*(_file_events(file) for file in root.glob("app.jsonl*")))
            assert written <= stored


def test_offsets_from_before_prefix_digests_are_doubted_and_reread(ledger_path: Path, tmp_path: Path) -> None:
    """A state table of the older layout (first KiB and 64 bytes checked) is rebuilt with
    every digest unknown: the file is read again from its start, storing nothing twice."""
    path = tmp_path / "a.jsonl"
    write(path, lines(0, 10))
    with Ledger.open(ledger_path) as ledger:
        ingest(ledger, [path])
        size = path.stat().st_size
        ledger.conn.execute("DROP TABLE ingest_files")
        ledger.conn.execute(
            "CREATE TABLE ingest_files (id INTEGER PRIMARY KEY, path TEXT NOT NULL, device INTEGER NOT NULL, "
            "inode INTEGER NOT NULL, fingerprint TEXT NOT NULL, fingerprint_len INTEGER NOT NULL, offset INTEGER "
            "NOT NULL, line INTEGER NOT NULL, check_hash TEXT NOT NULL, lines_accepted INTEGER NOT NULL DEFAULT 0, "
            "lines_rejected INTEGER NOT NULL DEFAULT 0, resets INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL, "
            "UNIQUE (device, inode))")
        info = path.stat()
        ledger.conn.execute("INSERT INTO ingest_files VALUES (1, ?, ?, ?, 'x', 1024, ?, 10, 'y', 10, 0, 0, 't')",
                            (str(path), info.st_dev, info.st_ino, size))
    write(path, lines(10, 12))
    with Ledger.open(ledger_path) as ledger:
        report = ingest(ledger, [path])
        assert (report.lines_read, report.events_appended, report.duplicates) == (12, 2, 10)
        [row] = file_states(ledger.conn)
        assert (row["offset"], row["line"], row["resets"], row["lines_accepted"]) == (path.stat().st_size, 12, 1, 22)
        assert ingest(ledger, [path]).lines_read == 0  # and trusted from then on


def test_a_pass_that_trusts_its_held_digest_is_caught_up_by_the_next_verifying_one(
        ledger: Ledger, tmp_path: Path) -> None:
    """The watcher's hint passes skip hashing the prefix; the digest they commit is of the
    bytes they read, so the next verifying pass finds a change made in between."""
    path = tmp_path / "a.jsonl"
    write(path, b"".join(same_tail_line(i, "old") for i in range(30)))
    tailer = Tailer(ledger)
    tailer.ingest_path(path)
    with open(path, "r+b") as handle:
        handle.truncate(len(same_tail_line(0, "old")) * 10)
        handle.seek(0, os.SEEK_END)
        handle.write(b"".join(same_tail_line(i, "new") for i in range(30)))
    with open(path, "rb") as handle:
        trusting = tailer.ingest_file(handle, str(path), verify=False)
    assert trusting.reset is None and trusting.events_appended == 10  # read on from the old offset
    with open(path, "rb") as handle:
        checking = tailer.ingest_file(handle, str(path))
    assert checking.reset == "replaced" and checking.events_appended == 20
    assert len(event_ids(ledger.path, OBS)) == 60
    # Only the very offset and digest this tailer committed stand in for hashing: once
    # another reader has moved the offset, a trusting pass hashes and finds the change.
    write(path, same_tail_line(100, "new"))
    Tailer(ledger).ingest_path(path)
    with open(path, "r+b") as handle:
        handle.truncate(len(same_tail_line(0, "old")) * 10)
        handle.seek(0, os.SEEK_END)
        handle.write(b"".join(same_tail_line(i, "newer") for i in range(32)))
    with open(path, "rb") as handle:
        assert tailer.ingest_file(handle, str(path), verify=False).reset == "replaced"
    assert len(event_ids(ledger.path, OBS)) == 61 + 32
