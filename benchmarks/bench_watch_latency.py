"""Latency from a line appended to a watched file to its event in the ledger.

``python benchmarks/bench_watch_latency.py [--lines N] [--poll SECONDS]``

A writer appends N (default 300) own-format lines one at a time, a few milliseconds apart,
each carrying the wall-clock time it was written; a :class:`~studyledger.ingestion.watcher.Watcher`
(native inotify observer by default) tails the folder. Latency is the event's
``recorded_at`` (stamped inside the commit) minus the write time. Prints p50/p95/max in ms.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from studyledger.events import EventKind, observation_recorded
from studyledger import own_lines
from studyledger.ingestion.watcher import Watcher


def line(index: int, written: float) -> str:
    row = {
        "timestamp": "2026-03-02T10:00:00+00:00",
        "record_id": f"lat-{index}",
        "text": "latency probe",
        "session_id": "s",
        "actor_id": "a",
        "event_type": "probe",
        "meta_json": {"written": written},
    }
    return own_lines.line_for(EventKind.OBSERVATION_RECORDED, observation_recorded(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--poll", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        drop = work / "drop"
        drop.mkdir()
        db = work / "l.db"
        with Watcher(db, drop, poll=args.poll), open(drop / "a.jsonl", "a") as handle:
            for index in range(args.lines):
                handle.write(line(index, time.time()))
                handle.flush()
                time.sleep(random.uniform(0.002, 0.02))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with sqlite3.connect(db) as conn:
                    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                if count >= args.lines:
                    break
                time.sleep(0.05)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT recorded_at, body FROM events").fetchall()
    latencies = sorted(
        (datetime.fromisoformat(recorded).timestamp() - json.loads(body)["meta_json"]["written"]) * 1000
        for recorded, body in rows
    )
    cut = statistics.quantiles(latencies, n=100)
    print(json.dumps({
        "lines": len(latencies),
        "observer": "polling" if args.poll else "native",
        "p50_ms": round(cut[49], 1),
        "p95_ms": round(cut[94], 1),
        "max_ms": round(latencies[-1], 1),
    }, indent=2))


if __name__ == "__main__":
    main()
