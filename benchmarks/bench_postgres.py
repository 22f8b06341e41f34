"""The same ledger on both backends: ingest, replay and verify on PostgreSQL beside SQLite,
and 4 concurrent writer processes against 1.

    python benchmarks/bench_postgres.py [--lines N] [--writers 4] [--url postgresql://...] [--json]

Without ``--url`` it starts a throwaway PostgreSQL server (the test suite's ``tests/pg_server.py``:
initdb as the ``postgres`` user when run as root) with a lab server's durability settings
(``fsync``, ``full_page_writes`` and ``synchronous_commit`` on) in a folder under ``/tmp``,
on the same disk as the SQLite file, and removes it afterwards. With ``--url`` it uses an
empty database you provide (its contents are dropped between measurements).

Measurements, each on a fresh ledger, each backend with the same data in the same run:

* **ingest**: N design-research-agents trace lines (the commonest and heaviest input) from one
  file into a new ledger with ``studyledger.ingest`` (parse, adapt, hash, chain, fold,
  offsets committed with each batch of 5,000 lines). Goal: PostgreSQL >= 0.5x SQLite.
* **replay**: ``Ledger.rebuild_projections`` (drop every derived table, fold all events).
* **verify**: ``audit.verify.verify`` with one process (ids, columns, sequence, chain).
* **writers**: the N lines split into 4 files, each ingested by its own ``studyledger
  ingest`` process into one ledger at the same time, against one process ingesting all 4
  files; total lines/s from the first start to the last exit. Goal: 4 >= 1 (appends are
  serialised by one lock, so this shows that waiting for it costs nothing, not that it scales).

Prints a table (and ``--json``, one object). Figures vary by +-25% on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.pg_server, the suite's throwaway server

from studyledger import Ledger, ingest  # noqa: E402
from studyledger.audit.verify import verify  # noqa: E402
from studyledger.simulate import Outcome, agent_session, stamp, trace_line_text  # noqa: E402

DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on", "shared_buffers": "256MB",
           "max_wal_size": "2GB"}
START_MS = 1772442000000


def write_traces(folder: Path, lines: int, files: int = 1) -> list[Path]:
    """``lines`` agent-trace lines of runs of 10-40 lines, dealt round-robin into ``files`` files.

    Sessions are built by the simulator once per shape and reused under fresh run ids, so
    generating a million lines takes seconds while every line states a distinct fact.
    """
    rng = random.Random(lines)
    placeholder = "run-bench-template"
    shapes = ["".join(trace_line_text(stamp(line, START_MS + number * 5000 + offset))
                      for offset, line in agent_session(placeholder, rng=rng,
                                                        outcome=Outcome.TOOL_FAILURE if number % 9 == 0
                                                        else Outcome.SUCCESS))
              for number in range(200)]
    paths = [folder / f"traces-{i}.jsonl" for i in range(files)]
    handles = [path.open("w", encoding="ascii") for path in paths]
    try:
        written = number = 0
        while written < lines:
            text = shapes[number % len(shapes)].replace(placeholder, f"run-bench{number:09d}")
            chunk = text.splitlines(keepends=True)[: lines - written]
            handles[number % files].write("".join(chunk))
            written += len(chunk)
            number += 1
    finally:
        for handle in handles:
            handle.close()
    return paths


class Backends:
    """Fresh ledgers on each backend: SQLite files in ``work``, PostgreSQL databases on a server."""

    def __init__(self, work: Path, url: str | None) -> None:
        self.work = work
        self.url = url
        self.server: Any = None
        self.count = 0
        if url is None:
            from tests.pg_server import start_pg_server

            # Under /tmp (a folder the server's user can reach), on the disk the SQLite files use.
            self.server = start_pg_server(parent="/tmp", settings=DURABLE)

    def fresh(self, backend: str) -> str:
        self.count += 1
        if backend == "sqlite":
            return str(self.work / f"ledger-{self.count}.db")
        if self.server is not None:
            return str(self.server.url(self.server.create_database()))
        assert self.url is not None
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        return self.url

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def bench_ingest(target: str, paths: list[Path]) -> tuple[float, int]:
    def run() -> int:
        with Ledger.open(target) as ledger:
            return ingest(ledger, paths).events_appended

    return timed(run)


def bench_replay(target: str) -> float:
    with Ledger.open(target) as ledger:
        seconds, _ = timed(ledger.rebuild_projections)
    return seconds


def bench_verify(target: str) -> tuple[float, bool]:
    with Ledger.open(target, readonly=True) as ledger:
        return timed(lambda: verify(ledger, workers=1).ok)


def bench_writers(target: str, paths: list[Path], processes: int) -> float:
    """Seconds for ``processes`` ``studyledger ingest`` processes to ingest ``paths`` together."""
    Ledger.open(target).close()
    groups = [paths[i::processes] for i in range(processes)]
    env = {**os.environ, "STUDYLEDGER_DB": target}
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-m", "studyledger", "ingest", *map(str, group)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for group in groups]
    for child in children:
        _, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"a writer failed: {err.decode()}")
    seconds = time.perf_counter() - started
    with Ledger.open(target, readonly=True) as ledger:
        report = verify(ledger)
        if not report.ok:
            raise RuntimeError(f"the concurrent ledger does not verify: {report.problems[:3]}")
    return seconds


@contextmanager
def workspace(keep: str | None) -> Iterator[Path]:
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory(prefix="studyledger-bench-pg-", dir="/tmp") as folder:
        yield Path(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--url", help="an empty PostgreSQL database to use instead of a throwaway server")
    parser.add_argument("--work", help="folder for data and SQLite files (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"lines": args.lines, "writers": args.writers}
    with workspace(args.work) as work:
        one = write_traces(work, args.lines)
        (work / "split").mkdir(exist_ok=True)
        split = write_traces(work / "split", args.lines, files=args.writers)
        backends = Backends(work, args.url)
        try:
            for backend in ("sqlite", "postgresql"):
                target = backends.fresh(backend)
                seconds, events = bench_ingest(target, one)
                row = {"ingest_lines_per_s": args.lines / seconds, "events": events}
                seconds = bench_replay(target)
                row["replay_events_per_s"] = events / seconds
                seconds, ok = bench_verify(target)
                row["verify_events_per_s"] = events / seconds
                row["verify_ok"] = ok
                single = bench_writers(backends.fresh(backend), split, 1)
                many = bench_writers(backends.fresh(backend), split, args.writers)
                row["writers_1_lines_per_s"] = args.lines / single
                row[f"writers_{args.writers}_lines_per_s"] = args.lines / many
                results[backend] = row
        finally:
            backends.close()
    pg, lite = results["postgresql"], results["sqlite"]
    results["ratios"] = {
        "ingest_pg_vs_sqlite": pg["ingest_lines_per_s"] / lite["ingest_lines_per_s"],
        "replay_pg_vs_sqlite": pg["replay_events_per_s"] / lite["replay_events_per_s"],
        "verify_pg_vs_sqlite": pg["verify_events_per_s"] / lite["verify_events_per_s"],
        f"pg_{args.writers}_writers_vs_1": pg[f"writers_{args.writers}_lines_per_s"] / pg["writers_1_lines_per_s"],
        f"sqlite_{args.writers}_writers_vs_1":
            lite[f"writers_{args.writers}_lines_per_s"] / lite["writers_1_lines_per_s"],
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.lines:,} trace lines; figures in lines/s (ingest, writers) or events/s (replay, verify)")
    print(f"{'measurement':<22} {'SQLite':>10} {'PostgreSQL':>11} {'PG / SQLite':>12}")
    for name, key in (("ingest", "ingest_lines_per_s"), ("replay", "replay_events_per_s"),
                      ("verify (1 process)", "verify_events_per_s"), ("1 writer process", "writers_1_lines_per_s"),
                      (f"{args.writers} writer processes", f"writers_{args.writers}_lines_per_s")):
        print(f"{name:<22} {lite[key]:>10,.0f} {pg[key]:>11,.0f} {pg[key] / lite[key]:>11.2f}x")
    print(f"{args.writers} writers vs 1: PostgreSQL {results['ratios'][f'pg_{args.writers}_writers_vs_1']:.2f}x, "
          f"SQLite {results['ratios'][f'sqlite_{args.writers}_writers_vs_1']:.2f}x")


if __name__ == "__main__":
    main()
