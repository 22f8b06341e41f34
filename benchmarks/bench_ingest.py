"""End-to-end ingestion speed against raw SQLite baselines.

``python benchmarks/bench_ingest.py [--lines N] [--profile]``

Writes N (default 200,000) own-format observation lines to a file, then measures, each on a
fresh database file:

* ``ingest``: ``studyledger.ingest`` end to end (read, parse, adapter,
  event ids, hash chain, projections, offsets committed with each batch);
* ``raw_rows``: stdlib ``sqlite3.executemany`` of the same stored rows (prebuilt, not timed)
  into a table with a UNIQUE id index, batches of 10,000, WAL: the SQLite ceiling;
* ``raw_loader``: the minimum any resumable JSONL loader does for the same rows: parse each
  line, dump it canonically, hash it for an id, insert in batches of 5,000, each committed
  with the file offset it reached.

Prints one JSON object with events/s of each and the ratios of ``ingest`` to each baseline.
``--profile`` prints the top of a cProfile of the ``ingest`` run instead.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from studyledger import Ledger
from studyledger.events import EventKind, observation_recorded
from studyledger import ingest, own_lines

from rss import peak_rss_mb

BATCH = 5_000
CEILING_BATCH = 10_000


def write_lines(path: Path, count: int) -> None:
    """Own-format observation lines of a realistic size (~400 bytes)."""
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(count):
            row = {
                "timestamp": f"2026-03-02T10:{index // 60 % 60:02d}:{index % 60:02d}.{index % 1_000_000:06d}+00:00",
                "record_id": f"rec-{index}",
                "text": f"step {index}: proposed a bracket with margin {index % 97 / 10}",
                "session_id": f"run-{index // 1000}",
                "actor_id": "agent",
                "event_type": "assistant_output",
                "meta_json": {"tokens": index % 500, "ok": True},
                "level": "step",
                "run_id": f"run-{index // 1000}",
                "study_id": "bench",
            }
            handle.write(own_lines.line_for(EventKind.OBSERVATION_RECORDED, observation_recorded(row)))


def _raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, kind TEXT, "
        "study_id TEXT, run_id TEXT, occurred_at TEXT, recorded_at TEXT, source TEXT, body TEXT, chain TEXT)"
    )
    conn.execute("CREATE TABLE offsets (path TEXT PRIMARY KEY, offset INTEGER NOT NULL)")
    return conn


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], offset: tuple[str, int] | None = None) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (event_id, kind, study_id, run_id, occurred_at, recorded_at, source, body, chain) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    if offset is not None:
        conn.execute("INSERT OR REPLACE INTO offsets (path, offset) VALUES (?, ?)", offset)
    conn.execute("COMMIT")


def bench_ingest(lines: Path, db: Path, profile: bool) -> float:
    with Ledger.open(db) as ledger:
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        stats = ingest(ledger, [lines])
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
    assert stats.lines_rejected == 0, stats
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    return stats.events_appended / seconds


def bench_raw_rows(source_db: Path, db: Path) -> float:
    with sqlite3.connect(source_db) as source:
        rows = source.execute(
            "SELECT event_id, kind, study_id, run_id, occurred_at, recorded_at, source, body, chain "
            "FROM events ORDER BY seq"
        ).fetchall()
    conn = _raw_db(db)
    started = time.perf_counter()
    for start in range(0, len(rows), CEILING_BATCH):
        _insert(conn, rows[start : start + CEILING_BATCH])
    seconds = time.perf_counter() - started
    conn.close()
    return len(rows) / seconds


def bench_raw_loader(lines: Path, db: Path) -> float:
    conn = _raw_db(db)
    started = time.perf_counter()
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
    count, offset, batch = 0, 0, []
    with open(lines, "rb") as handle:
        for raw in handle:
            offset += len(raw)
            obj = json.loads(raw)
            body = dumps(obj["body"])
            event_id = hashlib.sha256(body.encode()).hexdigest()[:32]
            batch.append((event_id, obj["kind"], None, None, None, None, "bench", body, "0" * 64))
            if len(batch) == BATCH:
                _insert(conn, batch, (str(lines), offset))
                count, batch = count + len(batch), []
    if batch:
        _insert(conn, batch, (str(lines), offset))
        count += len(batch)
    seconds = time.perf_counter() - started
    conn.close()
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        lines = work / "obs.jsonl"
        write_lines(lines, args.lines)
        ingest = bench_ingest(lines, work / "ingest.db", args.profile)
        rss_mb = peak_rss_mb()
        raw_rows = bench_raw_rows(work / "ingest.db", work / "raw_rows.db")
        raw_loader = bench_raw_loader(lines, work / "raw_loader.db")
    print(json.dumps({
        "lines": args.lines,
        "ingest_events_per_s": round(ingest),
        "raw_rows_per_s": round(raw_rows),
        "raw_loader_per_s": round(raw_loader),
        "ratio_to_raw_rows": round(ingest / raw_rows, 3),
        "ratio_to_raw_loader": round(ingest / raw_loader, 3),
        "peak_rss_mb_after_ingest": round(rss_mb, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
