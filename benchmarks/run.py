"""studyledger's benchmark harness: one command, a table, ``benchmarks/results.md``.

    python benchmarks/run.py [--quick] [--work DIR] [--profile] [--no-peers] [--retry-peers]

Every figure is a ratio to a baseline measured in this run, on this machine, on the same
data (absolute numbers are context). Each measurement runs in its own process
(``measure.py``) so its peak RSS is its own. Baselines: the raw loader (naive stdlib JSONL ->
SQLite), the prebuilt-rows SQLite ceiling (the ledger's own rows, only the inserts timed), a
raw ordered scan of ``events``, the raw JSONL's size, and a streaming reader's peak RSS.

Peers (the eventsourcing library, Aim, MLflow) run ``peers.py`` with the interpreter of their
own virtualenvs, which ``peer_envs.py`` creates on first use and caches in
``~/.cache/studyledger-bench/peers`` (keyed by the pinned versions); they are never project
dependencies. A peer that cannot be installed is a row saying why, not a crash.

``--profile`` re-runs a measurement that misses its target under pyinstrument (install it
next to studyledger, not as a dependency) and writes ``benchmarks/profiles/<name>.txt``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from studyledger import events as ev
from studyledger.events import EventKind
from studyledger.own_lines import line_for
from studyledger.simulate import Outcome, agent_session, stamp, trace_line_text

from peer_envs import PEERS, Peer, cache_root, ensure

HERE = Path(__file__).resolve().parent
BASE_MS = 1772442000000


@dataclass
class Row:
    """One line of the results table."""

    name: str
    figure: str          # the ratio (or the measured value when the target is absolute)
    context: str         # absolute numbers
    target: str = ""
    met: bool | None = None


GIANT_RUN = "run-bench-giant-001"
BENCH_STUDY = "bench-study"


def make_trace_file(path: Path, lines: int, *, giant: int = 0) -> None:
    """``lines`` agent-trace lines (the commonest and heaviest input), cached across runs.

    Runs of 10-40 lines come first; the last ``giant`` lines are one long-running agent
    (run ``run-bench-giant-001`` of study ``bench-study``, registered by two studyledger
    lines: one RunStarted, then model and tool calls, never finished) so the dashboard can
    be timed on a run that size. 200 sessions are built by
    the simulator's trace builder and reused under fresh run ids (a text replace), which
    keeps generation to seconds while every line still states a distinct fact.
    """
    if path.exists():
        return
    rng = random.Random(lines)
    placeholder = "run-bench-template"
    templates = []
    for number in range(200):
        outcome = Outcome.TOOL_FAILURE if number % 9 == 0 else Outcome.SUCCESS
        start = BASE_MS + number * 5000
        templates.append([trace_line_text(stamp(line, start + offset))
                          for offset, line in agent_session(placeholder, outcome=outcome, rng=rng)])
    tmp = path.with_suffix(".tmp")
    written, number = 0, 0
    with tmp.open("w", encoding="ascii") as out:
        if giant:
            # The study the long run belongs to, so the dashboard's first screen lists it.
            out.write(line_for(EventKind.STUDY_REGISTERED, ev.study_registered(
                BENCH_STUDY, title="Benchmark study", at="2026-03-02T09:00:00+00:00")))
            written += 1
        while written < lines - giant:
            chunk = templates[number % len(templates)][: lines - giant - written]
            out.write("".join(chunk).replace(placeholder, f"run-bench{number:09d}"))
            written += len(chunk)
            number += 1
        inner = [[text for text in template if '"RunStarted"' not in text and '"RunFinished"' not in text]
                 for template in templates]
        out.write(line_for(EventKind.RUN_REGISTERED, ev.run_registered(
            GIANT_RUN, study_id=BENCH_STUDY, condition_id="long", replicate=1, agent_id="tool-agent",
            problem_id="bracket", seed=None)))
        out.write(templates[0][0].replace(placeholder, GIANT_RUN))
        written += 2
        span = re.compile(r'(span_id": ")[0-9a-f]{8}')
        while written < lines:
            chunk = inner[number % len(inner)][: lines - written]
            # Fresh span ids per session, so a reused session states new facts.
            fresh = f"\\g<1>{number:08x}"
            out.write(span.sub(fresh, "".join(chunk).replace(placeholder, GIANT_RUN)))
            written += len(chunk)
            number += 1
    tmp.rename(path)


HUGE_LINE_BYTES = 15_000_000


def make_huge_line_file(path: Path, size: int = HUGE_LINE_BYTES) -> None:
    """One observation row of ``size`` bytes (under the 16 MiB line limit) whose ``meta_json``
    is a list of empty objects, ``{"a":[{},{},...]}``: the cheapest bytes to write and the
    dearest to parse into Python objects (one dict per 3 bytes)."""
    if path.exists() and path.stat().st_size == size + 1:
        return
    head = ('{"timestamp":"2026-03-02T10:00:00+00:00","record_id":"huge-1","text":"one huge line",'
            '"session_id":"huge","actor_id":"bench","event_type":"probe","level":"step","run_id":null,'
            '"meta_json":{"a":[')
    tail = "]}}"
    count = (size - len(head) - len(tail) + 1) // 3
    pad = size - len(head) - (3 * count - 1) - len(tail)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="ascii") as out:  # written in pieces: the harness stays small
        out.write(head + "{}")
        for start in range(1, count, 100_000):
            out.write(",{}" * min(100_000, count - start))
        out.write(" " * pad + tail + "\n")
    tmp.rename(path)


def measure(name: str, **args: Any) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON result."""
    done = subprocess.run([sys.executable, str(HERE / "measure.py"), name, json.dumps(args)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def peer(python: Path, name: str, data: Path, work: Path, count: int) -> tuple[dict[str, Any] | None, str]:
    """A peer's measurement with its own interpreter: (result, "") or (None, why it failed)."""
    done = subprocess.run([str(python), str(HERE / "peers.py"), name, str(data), str(work), str(count)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return None, f"the peer failed: {(lines or ['no output'])[-1][:200]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1])), ""


def db_bytes(path: Path) -> int:
    """A SQLite file's size on disk, its WAL included."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def table_share(path: Path, table: str) -> float | None:
    """The share of the file's pages held by ``table`` and its indexes (dbstat), or None."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages = dict(conn.execute(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat AS d "
            "LEFT JOIN sqlite_master AS m ON m.name = d.name GROUP BY 1").fetchall())
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    total = sum(pages.values())
    return pages.get(table, 0) / total if total else None


def median_by_rate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The result with the median rate (the lower middle one of an even count)."""
    return sorted(results, key=rate)[(len(results) - 1) // 2]


def rate(result: dict[str, Any]) -> float:
    return float(result["count"]) / float(result["seconds"])


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, ~1-2 minutes)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/studyledger-bench"),
                        help="scratch folder (data files are cached there)")
    parser.add_argument("--no-peers", action="store_true", help="skip MLflow, eventsourcing and Aim")
    parser.add_argument("--retry-peers", action="store_true",
                        help="retry installing a peer whose install failed before (failures are cached)")
    parser.add_argument("--peers-cache", type=Path, default=None,
                        help="where the peers' venvs are cached (default ~/.cache/studyledger-bench/peers)")
    parser.add_argument("--peer-python", action="append", default=[], metavar="NAME=PYTHON",
                        help="use this interpreter for a peer instead of the cached venv (repeatable)")
    parser.add_argument("--profile", action="store_true", help="profile measurements that miss their target")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each ingest, raw loader and ceiling measurement N times, interleaved, "
                             "and keep the median (for a busy machine)")
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    options = parser.parse_args()
    load_before = os.getloadavg()

    small, large = (20_000, 100_000) if options.quick else (200_000, 1_000_000)
    live_slow = 300 if options.quick else 1000
    live_fast = 5_000 if options.quick else 25_000
    work: Path = options.work
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    rows: list[Row] = []
    misses: list[tuple[str, dict[str, Any]]] = []

    def scratch(name: str) -> Path:
        folder = work / "runs" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def show(row: Row) -> None:
        rows.append(row)
        print(f"  {row.name}: {row.figure} ({row.context})", flush=True)

    big_db = Path()
    for size in (small, large):
        data = work / (f"trace-{size}-giant.jsonl" if size == large else f"trace-{size}.jsonl")
        print(f"generating {size:,} trace lines ..." if not data.exists() else f"data {data}", flush=True)
        # The large file ends with one long run (90% of it) for the dashboard measurement.
        make_trace_file(data, size, giant=size * 9 // 10 if size == large else 0)
        trials: dict[str, list[dict[str, Any]]] = {"raw": [], "ours": [], "top": []}
        for _ in range(max(1, options.repeat)):  # interleaved, so a busy spell hits all three
            raw_db = scratch(f"raw-{size}") / "raw.db"
            trials["raw"].append(measure("raw_insert", path=str(data), db=str(raw_db)))
            db = scratch(f"ingest-{size}") / "ledger.db"
            trials["ours"].append(measure("ingest", path=str(data), db=str(db)))
            if trials["ours"][-1]["rejected"]:
                raise RuntimeError(f"{trials['ours'][-1]['rejected']} benchmark lines were rejected")
            trials["top"].append(measure("ceiling", source=str(db), db=str(scratch(f"ceiling-{size}") / "ceiling.db")))
        raw, ours, top = (median_by_rate(trials[key]) for key in ("raw", "ours", "top"))
        events_rate = ours["events"] / ours["seconds"]
        ratio = rate(ours) / rate(raw)
        show(Row(f"ingest {size:,} trace lines -> ledger", f"{ratio:.2f}x the raw loader",
                 f"{fmt(rate(ours))} lines/s ({fmt(events_rate)} events/s, {ours['events']:,} events) vs "
                 f"naive stdlib JSONL -> SQLite {fmt(rate(raw))} lines/s", ">= 1.0x", ratio >= 1.0))
        if ratio < 1.0 and size == small:  # profiled at the small size: the shape is the same
            misses.append(("ingest", {"path": str(data), "db": str(db) + ".profiled"}))
        ceiling_ratio = events_rate / rate(top)
        show(Row(f"ingest {size:,} trace lines vs the SQLite ceiling", f"{ceiling_ratio:.2f}x the ceiling",
                 f"{fmt(events_rate)} events/s vs the same {top['count']:,} rows prebuilt in memory, "
                 f"executemany in 10k batches: {fmt(rate(top))} rows/s", ">= 0.5x", ceiling_ratio >= 0.5))
        peak = max(ours["rss_mb"], ours.get("worker_rss_mb", 0.0))
        show(Row(f"peak RSS ingesting {size:,} lines", f"{peak:.0f} MB",
                 f"ingest process {ours['rss_mb']:.0f} MB, its worker process {ours.get('worker_rss_mb', 0):.0f} MB; "
                 f"raw loader process {raw['rss_mb']:.0f} MB",
                 "< 200 MB" if size == large else "", peak < 200 if size == large else None))
        if size == large:
            rows.append(size_row(db, raw_db, data, int(ours["events"])))
            print(f"  {rows[-1].name}: {rows[-1].figure} ({rows[-1].context})", flush=True)
        big_db = db

    huge = work / "huge-line.jsonl"
    make_huge_line_file(huge)
    ours = measure("ingest", path=str(huge), db=str(scratch("huge") / "ledger.db"))
    stream = measure("stream_read", path=str(huge))
    tree = measure("tree_parse", path=str(huge))
    outcome = "stored" if not ours["rejected"] else "rejected"
    peak = max(ours["rss_mb"], ours.get("worker_rss_mb", 0.0))
    show(Row(f"peak RSS, one {huge.stat().st_size / 1e6:.0f} MB line of small objects",
             f"{peak:.0f} MB = {peak / stream['rss_mb']:.0f}x a streaming reader",
             f"ingest process {ours['rss_mb']:.0f} MB, its worker {ours.get('worker_rss_mb', 0):.0f} MB ({outcome}, "
             f"{ours['seconds']:.1f} s) vs a streaming reader (1 MiB chunks, no objects built) "
             f"{stream['rss_mb']:.0f} MB; stdlib json.loads of the line alone {tree['rss_mb']:.0f} MB",
             "< 200 MB", peak < 200))

    own = own_format_rows(small)
    for row in own:
        show(row)

    # Replay and verify on the large ledger (the figures are on ~1M events).
    scan = measure("raw_scan", db=str(big_db))
    for name, goal in (("replay", 200_000), ("verify", 300_000)):
        result = measure(name, db=str(big_db))
        ours_rate = rate(result)
        show(Row(f"{name} {result['count']:,} events",
                 f"{fmt(ours_rate)} events/s = {ours_rate / rate(scan):.2f}x a raw scan",
                 f"raw ordered scan of the events table: {fmt(rate(scan))} rows/s",
                 f">= {goal:,} events/s", ours_rate >= goal))
        if ours_rate < goal:
            misses.append((name, {"db": str(big_db)}))

    for lines, per_second, goal in ((live_slow, 100.0, 500), (live_fast, 5000.0, 250)):
        live_dir = scratch(f"live-{per_second:.0f}")
        live = measure("live", folder=str(live_dir / "drop"), db=str(live_dir / "ledger.db"), lines=lines,
                       rate=per_second)
        p95 = live["p95_ms"]
        show(Row(f"live: append -> visible in ledger ({live['count']:,} lines at {per_second:,.0f}/s)",
                 f"p95 {p95:.0f} ms" if p95 is not None else "no line seen",
                 f"p50 {live['p50_ms']:.0f} ms, max {live['max_ms']:.0f} ms, {live['missing']} not seen; "
                 "`studyledger watch` subprocess, inotify" if p95 is not None else "",
                 f"p95 <= {goal} ms", p95 is not None and p95 <= goal and live["missing"] == 0))

    if importlib.util.find_spec("studyledger.tui") is None:
        rows.append(Row("dashboard: first paint / open biggest run", "not available", "studyledger.tui not installed"))
    else:
        rows.extend(dashboard_rows(str(big_db)))

    if not options.no_peers:
        overrides = dict(item.split("=", 1) for item in options.peer_python)
        data = work / f"trace-{small}.jsonl"

        def ours_now() -> float:
            """studyledger on the same lines right before each peer: a pair measured minutes
            apart on a shared machine would compare two different machines."""
            result = measure("ingest", path=str(data), db=str(scratch("peer-studyledger") / "ledger.db"))
            return rate(result)

        for item in PEERS:
            show(peer_row(item, data, scratch(f"peer-{item.name}"), small, ours_now,
                          overrides.get(item.name), options))

    if options.profile and misses:
        profile_misses(misses)

    elapsed = time.perf_counter() - began
    command = "python benchmarks/run.py" + (" --quick" if options.quick else "") + (
        " --profile" if options.profile else "") + (" --no-peers" if options.no_peers else "") + (
        f" --repeat {options.repeat}" if options.repeat > 1 else "")
    load = "load average {:.1f} at the start, {:.1f} at the end (1 min; {} cores)".format(
        load_before[0], os.getloadavg()[0], os.cpu_count())
    table = render(rows)
    print("\n" + table)
    options.output.write_text(
        f"# Benchmark results\n\n`{command}` on {datetime.now(UTC):%Y-%m-%d}, {elapsed:.0f} s.\n\n"
        f"Machine: {machine()}; {load}.\n\n{table}\n\n{NOTES}",
        encoding="utf-8",
    )
    print(f"\nwritten to {options.output} ({elapsed:.0f} s)")


NOTES = """\
Each figure is measured in its own process; every ratio compares with a baseline measured in
the same run on the same data (see benchmarks/README.md and benchmarks/measure.py):

- **raw loader**: a naive stdlib JSONL -> SQLite loader: parse, canonical dump, sha256 id,
  UNIQUE index, batches of 5,000 in one transaction each with the file offset reached, WAL.
- **SQLite ceiling**: the rows the ledger stored (all columns of `events`), prebuilt in memory,
  `executemany` into an empty table of the same definition and indexes, 10,000 per
  transaction; only the inserts are timed.
- **raw scan**: `SELECT * FROM events ORDER BY seq` on the same ledger.
- **size**: the ledger file (WAL included) after ingest, per event, against the JSONL's bytes.
- **streaming reader**: the huge line read in 1 MiB chunks, hashed, its objects counted.
- **peers**: the first N lines of the same trace file, one record per line, each library in
  its own venv (benchmarks/peer_envs.py); studyledger's figure is its lines/s ingesting the
  same N lines, measured right before each peer.
"""


def size_row(db: Path, raw_db: Path, data: Path, events: int) -> Row:
    """Size on disk per event against the JSONL it came from."""
    ledger, jsonl = db_bytes(db), data.stat().st_size
    share = table_share(db, "events")
    events_part = f", events table {share:.0%} of the file" if share is not None else ""
    return Row(f"size on disk, {events:,} events", f"{ledger / jsonl:.2f}x the raw JSONL",
               f"{ledger / events:,.0f} B per event{events_part}; JSONL {jsonl / events:,.0f} B per event; "
               f"raw loader's file {db_bytes(raw_db) / jsonl:.2f}x", "<= 1.0x", ledger <= jsonl)


def peer_row(item: Peer, data: Path, folder: Path, count: int, measure_ours: Callable[[], float],
             override: str | None, options: argparse.Namespace) -> Row:
    """studyledger's ingest rate of ``count`` lines, measured right before the peer, against
    the peer storing the same records."""
    name = f"vs {item.label}, {count:,} records"
    target = f">= {item.target:g}x"
    if override:
        python, note = Path(override), override
    else:
        python, note = ensure(item, root=options.peers_cache or cache_root(), retry=options.retry_peers)
    if python is None:
        return Row(name, "not installed", note, target)
    ours = measure_ours()
    found, why = peer(python, item.name, data, folder, count)
    if found is None:
        return Row(name, "failed", why, target)
    ratio = ours / rate(found)
    return Row(name, f"{ratio:.2f}x the peer",
               f"studyledger {fmt(ours)} lines/s vs {item.name} {found.get('version', '?')} "
               f"{fmt(rate(found))} records/s, peer RSS {found['rss_mb']:.0f} MB", target, ratio >= item.target)


def own_format_rows(lines: int) -> list[Row]:
    """studyledger's own observation lines, measured by the ingest engineer's bench_ingest.py
    in one process: ingest, then its raw loader and its prebuilt-rows ceiling on the same
    lines (same definitions as for trace lines)."""
    script = HERE / "bench_ingest.py"
    if not script.exists():
        return []
    done = subprocess.run([sys.executable, str(script), "--lines", str(lines)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_ingest.py failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    ratio = float(result["ratio_to_raw_loader"])
    ceiling = float(result["ratio_to_raw_rows"])
    return [
        Row(f"ingest {lines:,} own-format observation lines", f"{ratio:.2f}x the raw loader",
            f"{fmt(result['ingest_events_per_s'])} events/s vs raw loader {fmt(result['raw_loader_per_s'])} "
            "rows/s; benchmarks/bench_ingest.py", ">= 1.0x", ratio >= 1.0),
        Row(f"ingest {lines:,} own-format lines vs the SQLite ceiling", f"{ceiling:.2f}x the ceiling",
            f"{fmt(result['ingest_events_per_s'])} events/s vs the same rows prebuilt: "
            f"{fmt(result['raw_rows_per_s'])} rows/s", ">= 0.5x", ceiling >= 0.5),
    ]


def dashboard_rows(db: str) -> list[Row]:
    """Time the real dashboard on the large ledger and its biggest run."""
    conn = sqlite3.connect(db)
    run_id, count = conn.execute(
        "SELECT run_id, count(*) AS n FROM observations GROUP BY run_id ORDER BY n DESC LIMIT 1").fetchone()
    total = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
    conn.close()
    result = measure("dashboard", db=db, run_id=run_id)
    return [
        Row(f"dashboard: first paint, {total:,} observations", f"{result['first_paint_s']:.2f} s",
            f"RSS {result['rss_mb']:.0f} MB"),
        Row(f"dashboard: open biggest run ({count:,} observations)", f"{result['open_run_s']:.2f} s",
            "", "< 1 s", result["open_run_s"] < 1.0),
    ]


def profile_misses(misses: list[tuple[str, dict[str, Any]]]) -> None:
    """Re-run each missed measurement under pyinstrument; the text reports go to profiles/."""
    if importlib.util.find_spec("pyinstrument") is None:
        print("pyinstrument is not installed: no profiles", file=sys.stderr)
        return
    folder = HERE / "profiles"
    folder.mkdir(exist_ok=True)
    for name, args in misses:
        target = folder / f"{name}.txt"
        if name == "ingest":
            Path(args["db"]).unlink(missing_ok=True)  # ingest measures a fresh ledger
        measure(name, **args, profile=str(target))
        print(f"profile of {name}: {target}")


def render(rows: list[Row]) -> str:
    lines = ["| measurement | figure | context | target | met |", "|---|---|---|---|---|"]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        cells = (row.name, row.figure, row.context, row.target, met)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
