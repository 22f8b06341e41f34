"""A worker process converts a big file's lines while this one stores them: same ledger, nothing lost."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studyledger import Ledger, ingest
from studyledger.audit.replay import replay
from studyledger.audit.verify import verify
from studyledger.ingestion.tailer import WORKER_MIN_BYTES, FileStats, Tailer
from studyledger.worker import Worker, WorkerLost
from studyledger.simulate import Outcome, agent_session, stamp, trace_line_text

from .ingest_helpers import STUDYLEDGER, own_line, row_line, wait_for

EVENT_FACTS = "seq, event_id, kind, study_id, run_id, occurred_at, source, body"
FILE_FACTS = "path, offset, line, prefix_sha256, lines_accepted, lines_rejected, resets"


def trace_lines(runs: int, seed: int = 5) -> str:
    """The simulator's agent traces, run after run (some failing), as upstream writes them."""
    rng = random.Random(seed)
    out = []
    for number in range(runs):
        outcome = Outcome.TOOL_FAILURE if number % 4 == 0 else Outcome.SUCCESS
        start = 1772442000000 + number * 5000
        out.extend(trace_line_text(stamp(line, start + offset))
                   for offset, line in agent_session(f"run-{number:05d}", outcome=outcome, rng=rng))
    return "".join(out)


def mixed_file(path: Path, runs: int) -> None:
    """Trace lines with every kind of line mixed in: own lines, bare rows, bad JSON, blank
    lines, non-ASCII text, NaN (read by the standard parser), a line over the limit used."""
    text = trace_lines(runs).splitlines(keepends=True)
    extras = [own_line(1), row_line(2), "not json\n", "\n", row_line(4).replace('"index": 4', '"index": NaN'),
              row_line(3).replace("observation", "obsérvation"), "x" * 3_000 + "\n",
              '{"studyledger": 1, "kind": "line_rejected", "body": {}}\n']
    rng = random.Random(9)
    for extra in extras:
        text.insert(rng.randrange(len(text)), extra)
    path.write_text("".join(text), encoding="utf-8")


def facts(db: Path) -> tuple[list[Any], list[Any]]:
    """What a ledger holds apart from when it recorded it: its events and its file states."""
    with sqlite3.connect(db) as conn:
        return (conn.execute(f"SELECT {EVENT_FACTS} FROM events ORDER BY seq").fetchall(),
                conn.execute(f"SELECT {FILE_FACTS} FROM ingest_files ORDER BY path").fetchall())


def read(db: Path, path: Path, *, batch_lines: int, worker_min_bytes: int | None = None,
         kill_after: int | None = None) -> tuple[FileStats, list[int]]:
    """One pass of a tailer over the file: its stats, and the worker seen at each commit.

    With ``kill_after``, the worker is killed (SIGKILL) after that many commits.
    """
    seen: list[int] = []
    commits = 0

    def committed(_: int) -> None:
        nonlocal commits
        commits += 1
        for child in multiprocessing.active_children():
            assert child.pid is not None
            seen.append(child.pid)
            if commits == kill_after:
                os.kill(child.pid, signal.SIGKILL)

    with Ledger.open(db) as ledger:
        tailer = Tailer(ledger, line_limit=2_000, batch_lines=batch_lines, worker_min_bytes=worker_min_bytes,
                        on_progress=committed)
        stats = tailer.ingest_path(path)
    return stats, seen


def counts(stats: FileStats) -> tuple[int, ...]:
    return (stats.lines_read, stats.lines_accepted, stats.lines_rejected, stats.events_appended, stats.duplicates,
            stats.bytes_read, stats.offset, stats.pending_bytes)


def test_a_worker_commits_what_one_process_commits(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    mixed_file(path, 60)
    with path.open("a") as handle:
        handle.write('{"unfinished": ')  # waits for its newline in both
    alone, seen_alone = read(tmp_path / "alone.db", path, batch_lines=97)
    paired, seen_paired = read(tmp_path / "paired.db", path, batch_lines=97, worker_min_bytes=0)
    assert seen_alone == [] and seen_paired, "the second pass reads with a worker"
    assert counts(paired) == counts(alone) and alone.lines_rejected == 3 and alone.pending_bytes == 15
    assert facts(tmp_path / "paired.db") == facts(tmp_path / "alone.db")
    with Ledger.open(tmp_path / "paired.db", readonly=True) as ledger:
        assert verify(ledger.store).ok
        assert replay(ledger.store).identical


def test_a_server_ledger_is_read_without_a_worker(tmp_path: Path, pg_url: str) -> None:
    """On PostgreSQL the server's round trips bound the rate, not conversion: no fork of a
    process holding a server connection."""
    path = tmp_path / "mixed.jsonl"
    mixed_file(path, 60)
    alone, _ = read(tmp_path / "alone.db", path, batch_lines=97)
    served, seen = read(pg_url, path, batch_lines=97, worker_min_bytes=0)  # type: ignore[arg-type]
    assert seen == [] and counts(served) == counts(alone)


def test_a_worker_killed_mid_file_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    mixed_file(path, 120)
    clean, _ = read(tmp_path / "clean.db", path, batch_lines=50)
    killed, seen = read(tmp_path / "killed.db", path, batch_lines=50, worker_min_bytes=0, kill_after=3)
    assert len(seen) >= 3 and multiprocessing.active_children() == []
    # The batches committed before the kill stay, the rest is read in this process: the
    # same lines, events and offsets.
    assert counts(killed)[:6] == counts(clean)[:6]
    assert facts(tmp_path / "killed.db") == facts(tmp_path / "clean.db")


def test_killing_the_whole_ingest_and_running_it_again_gives_the_clean_ledger(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="ascii") as handle:
        runs = 0
        while handle.tell() < WORKER_MIN_BYTES + (1 << 20):
            handle.write(trace_lines(50, seed=runs).replace("run-0", f"run-{runs}-"))
            runs += 1
    crashed, clean = tmp_path / "crashed.db", tmp_path / "clean.db"
    process = subprocess.Popen([*STUDYLEDGER, "--db", str(crashed), "ingest", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _committed(crashed) > 0, timeout=60, what="a first batch committed")
        workers = _children(process.pid)
        assert workers, "the ingest reads its big file with a worker"
        process.kill()  # the ingest alone: its worker must not outlive it
        process.wait(timeout=30)
        wait_for(lambda: not any(_running(pid) for pid in workers), what="the worker to end with its parent")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever might be left of its session
        except ProcessLookupError:
            pass
    assert 0 < _committed(crashed) < path.stat().st_size
    with Ledger.open(crashed) as ledger:
        resumed = ingest(ledger, [path])
    with Ledger.open(clean) as ledger:
        whole = ingest(ledger, [path])
    assert resumed.lines_read < whole.lines_read and resumed.errors == whole.errors == []
    assert facts(crashed) == facts(clean)
    with Ledger.open(crashed, readonly=True) as ledger:
        assert verify(ledger.store).ok


def _committed(db: Path) -> int:
    """The offset the ingest committed so far (0 before its first commit)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT max(offset) FROM ingest_files").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


def _running(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> list[int]:
    """The processes a process started (Linux's own list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(child) for child in (task / "children").read_text().split())
    return found


# -- the worker itself -----------------------------------------------------------------


def _numbers(stop: int) -> Iterator[int]:
    yield from range(stop)


def test_items_arrive_in_order_with_the_childs_result() -> None:
    with Worker(lambda: _numbers(1_000), lambda n: (n, str(n)), lambda item: item[0], lambda: "done") as worker:
        assert list(worker) == list(range(1_000))
        assert worker.result == "done"


def _failing() -> Iterator[int]:
    yield 1
    raise OSError(5, "Input/output error", "/some/file.jsonl")


def test_what_the_child_raises_is_raised_here() -> None:
    with Worker(_failing, lambda n: n, lambda n: n, lambda: None) as worker:
        items = iter(worker)
        assert next(items) == 1
        with pytest.raises(OSError) as raised:
            next(items)
    assert (raised.value.errno, raised.value.filename) == (5, "/some/file.jsonl")


def _forever() -> Iterator[int]:
    number = 0
    while True:
        yield number
        number += 1


def test_a_killed_child_is_lost_not_finished() -> None:
    with Worker(_forever, lambda n: n, lambda n: n, lambda: None) as worker:
        items = iter(worker)
        assert next(items) == 0
        os.kill(worker.pid or 0, signal.SIGKILL)
        with pytest.raises(WorkerLost):
            while True:
                next(items)
    assert multiprocessing.active_children() == []


def test_leaving_early_stops_the_child() -> None:
    with Worker(_forever, lambda n: n, lambda n: n, lambda: None) as worker:
        pid = worker.pid
        assert next(iter(worker)) == 0
    assert pid is not None and not _running(pid)
