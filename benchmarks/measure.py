"""One measurement per process: ``python benchmarks/measure.py NAME '{"arg": ...}'``.

Each measurement runs in its own process so that its peak RSS (``rss.peak_rss_mb``) is its own and
no cache warmed by an earlier measurement flatters a later one. It prints one JSON object:
``seconds`` (the timed part only), ``count`` (items processed), ``rss_mb`` and extras.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rss import peak_rss_mb

Result = dict[str, Any]


def raw_insert(path: str, db: str) -> Result:
    """The raw loader, baseline of ingest: a naive stdlib JSONL -> SQLite loader of one row per
    line (id = sha256 of the canonical line, UNIQUE index), batches of 5,000, WAL, one
    transaction per batch that also records the file offset reached, as the ledger commits
    its offsets with its events.

    It does the minimum any resumable JSONL -> SQLite loader must do for the same rows: parse
    each line, serialise it canonically, hash it for an idempotent id, insert, remember where
    it stopped.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)")
    conn.execute("CREATE TABLE offsets (path TEXT PRIMARY KEY, offset INTEGER NOT NULL)")
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode

    def commit(rows: list[tuple[str, str]], offset: int) -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (id, body) VALUES (?, ?)", rows)
        conn.execute("INSERT OR REPLACE INTO offsets (path, offset) VALUES (?, ?)", (path, offset))
        conn.execute("COMMIT")

    started = time.perf_counter()
    count, offset, batch = 0, 0, []
    with open(path, "rb") as handle:
        for raw in handle:
            offset += len(raw)
            body = dumps(json.loads(raw))
            batch.append((hashlib.sha256(body.encode()).hexdigest()[:36], body))
            if len(batch) == 5000:
                commit(batch, offset)
                count += len(batch)
                batch = []
    if batch:
        commit(batch, offset)
        count += len(batch)
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "count": count, "rss_mb": peak_rss_mb(), "bytes": offset}


def ceiling(source: str, db: str, batch: int = 10_000) -> Result:
    """The prebuilt-rows SQLite ceiling: the very rows a ledger stored (every column of its
    ``events`` table but ``seq``), read into memory before the clock starts, then inserted
    with ``executemany`` into an empty table of the same definition and indexes, with the
    ledger's pragmas (WAL, synchronous=NORMAL, 64 MiB cache), ``batch`` rows per transaction.
    Only the inserts and commits are timed: no parsing, encoding, hashing or chain."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    ddl = [sql for (sql,) in src.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND type IN ('table', 'index') "
        "AND sql IS NOT NULL ORDER BY type = 'index', name")]
    columns = [row[1] for row in src.execute("PRAGMA table_info(events)") if row[1] != "seq"]
    rows = src.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY seq").fetchall()
    src.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    for sql in ddl:
        conn.execute(sql)
    insert = f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany(insert, rows[start : start + batch])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "count": len(rows), "rss_mb": peak_rss_mb()}


def ingest(path: str, db: str, profile: str | None = None) -> Result:
    """studyledger end to end: ``ingest`` of the file into a new ledger (the work of
    ``studyledger ingest FILE``: parse, adapt, canonicalise, hash, append with the chain,
    fold projections, commit offsets)."""
    from studyledger import Ledger, ingest

    profiler = _profiler(profile)
    started = time.perf_counter()
    with Ledger.open(db) as ledger:
        stats = ingest(ledger, [path])
    seconds = time.perf_counter() - started
    _save_profile(profiler, profile)
    # A big file is converted by a forked worker (studyledger.worker): its peak
    # RSS is the largest of this process's children (0 when none ran). A fork starts with
    # the parent's pages, shared until written, and counts them as its own.
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "count": stats.lines_read, "events": stats.events_appended,
            "rejected": stats.lines_rejected, "rss_mb": peak_rss_mb(), "worker_rss_mb": worker}


def raw_scan(db: str) -> Result:
    """Baseline for replay and verify: read every events row in sequence order."""
    conn = sqlite3.connect(db)
    started = time.perf_counter()
    count = 0
    for _row in conn.execute("SELECT * FROM events ORDER BY seq"):
        count += 1
    return {"seconds": time.perf_counter() - started, "count": count, "rss_mb": peak_rss_mb()}


def stream_read(path: str, chunk: int = 1 << 20) -> Result:
    """Baseline for one huge line's peak RSS: a streaming reader that reads the file in
    ``chunk``-byte pieces, hashes it and counts its objects without building any of them
    (what a streaming parser holds: a buffer, not the tree)."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    objects = size = 0
    with open(path, "rb") as handle:
        while piece := handle.read(chunk):
            digest.update(piece)
            objects += piece.count(b"{")
            size += len(piece)
    return {"seconds": time.perf_counter() - started, "count": objects, "bytes": size, "rss_mb": peak_rss_mb()}


def tree_parse(path: str) -> Result:
    """Context for one huge line's peak RSS: stdlib ``json.loads`` of the file alone, the
    floor of any reader that builds the whole value as Python objects."""
    started = time.perf_counter()
    with open(path, "rb") as handle:
        value = json.loads(handle.read())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "count": len(value), "rss_mb": peak_rss_mb()}


def replay(db: str, profile: str | None = None) -> Result:
    """Full projection rebuild: drop every derived table and fold all events again."""
    from studyledger import Ledger

    with Ledger.open(db, create=False) as ledger:
        count = ledger.store.event_count()
        profiler = _profiler(profile)
        started = time.perf_counter()
        ledger.rebuild_projections()
        seconds = time.perf_counter() - started
        _save_profile(profiler, profile)
    return {"seconds": seconds, "count": count, "rss_mb": peak_rss_mb()}


def verify(db: str, profile: str | None = None) -> Result:
    """``verify``: ids, sequence, canonical bodies and the hash chain of every event."""
    from studyledger import Ledger
    from studyledger import verify as verify_ledger

    with Ledger.open(db, readonly=True) as ledger:
        profiler = _profiler(profile)
        started = time.perf_counter()
        report = verify_ledger(ledger)
        seconds = time.perf_counter() - started
        _save_profile(profiler, profile)
    return {"seconds": seconds, "count": report.events, "ok": report.ok, "rss_mb": peak_rss_mb()}


def live(folder: str, db: str, lines: int, rate: float) -> Result:
    """Append ``lines`` observation rows to a file watched by ``studyledger watch`` (a real
    subprocess, native observer) at ``rate`` lines/s; poll the ledger every 2 ms and take
    each line's latency from its write to the first poll that sees its event."""
    watched = Path(folder)
    watched.mkdir(parents=True, exist_ok=True)
    target = watched / "live.jsonl"
    target.touch()
    watcher = subprocess.Popen([sys.executable, "-m", "studyledger", "--db", db, "watch", str(watched)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait until the watcher has created the ledger and registered the empty file.
        deadline = time.monotonic() + 30
        while not Path(db).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        written: list[float] = []
        seen: dict[int, float] = {}
        last_seq = 0
        fd = os.open(target, os.O_WRONLY | os.O_APPEND)
        interval = 1.0 / rate
        start = time.perf_counter()
        while len(seen) < lines and time.perf_counter() - start < lines * interval + 30:
            now = time.perf_counter()
            while len(written) < lines and now >= start + len(written) * interval:
                number = len(written) + 1
                row: dict[str, Any] = {"timestamp": "2026-03-02T10:00:00+00:00", "record_id": f"lat-{number}",
                       "text": f"latency probe {number}", "session_id": "latency", "actor_id": "bench",
                       "event_type": "probe", "meta_json": {}, "level": "step", "run_id": None}
                os.write(fd, (json.dumps(row) + "\n").encode())
                written.append(time.perf_counter())
                now = time.perf_counter()
            for seq, source in conn.execute("SELECT seq, source FROM events_plain WHERE seq > ?", (last_seq,)):
                last_seq = seq
                # source = file:PATH:LINE:OFFSET; the line number names the probe.
                number = int(source.rsplit(":", 2)[1])
                seen.setdefault(number, time.perf_counter())
            time.sleep(0.002)
        os.close(fd)
    finally:
        watcher.terminate()
        watcher.wait(30)
    latencies = sorted((seen[n] - written[n - 1]) * 1000 for n in seen if n <= len(written))
    return {
        "count": len(latencies),
        "missing": lines - len(latencies),
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "rss_mb": peak_rss_mb(),
    }


def dashboard(db: str, run_id: str) -> Result:
    """Time the real dashboard (``App.run_test``, 120x40) on a large ledger: from start to the
    studies table showing its rows, and from ``open_run`` to the run's observation list
    counted and its first page drawn."""
    import asyncio

    from textual.widgets import DataTable

    from studyledger.tui.app import StudyLedgerApp
    from studyledger.tui.observation_list import ObservationList
    from studyledger.tui.screens.studies import StudiesScreen

    async def until(pilot: Any, condition: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > deadline:
                raise TimeoutError("the dashboard did not get there")
            await pilot.pause(0.005)

    def studies_shown(app: StudyLedgerApp) -> bool:
        if not isinstance(app.screen, StudiesScreen):
            return False
        tables = app.screen.query(DataTable)
        return bool(tables) and tables.first().row_count > 0

    def run_shown(app: StudyLedgerApp) -> bool:
        lists = app.screen.query(ObservationList)
        return bool(lists) and lists.first().counted and lists.first().total > 0

    async def measure() -> Result:
        started = time.perf_counter()
        app = StudyLedgerApp(Path(db))
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: studies_shown(app))
            first = time.perf_counter() - started
            opened = time.perf_counter()
            waiting = app.open_run(run_id)
            if waiting is not None:
                await waiting
            await until(pilot, lambda: run_shown(app))
            shown = time.perf_counter() - opened
            total = app.screen.query_one(ObservationList).total
            return {"first_paint_s": first, "open_run_s": shown, "run_observations": total}

    result = asyncio.run(measure())
    return {**result, "rss_mb": peak_rss_mb()}


def _profiler(path: str | None) -> Any:
    if not path:
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.005)
    profiler.start()
    return profiler


def _save_profile(profiler: Any, path: str | None) -> None:
    if profiler is None or path is None:
        return
    profiler.stop()
    Path(path).write_text(profiler.output_text(unicode=False, color=False, show_all=False))


MEASUREMENTS: dict[str, Callable[..., Result]] = {
    "raw_insert": raw_insert, "ceiling": ceiling, "ingest": ingest, "raw_scan": raw_scan,
    "stream_read": stream_read, "tree_parse": tree_parse, "replay": replay, "verify": verify,
    "live": live, "dashboard": dashboard,
}

if __name__ == "__main__":
    print(json.dumps(MEASUREMENTS[sys.argv[1]](**json.loads(sys.argv[2]))))
