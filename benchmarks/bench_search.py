"""Search across every run: index build, its cost to ingestion, and query latency.

``python benchmarks/bench_search.py [--observations N] [--folder DIR]``

Builds (and caches in ``--folder``) a ledger of N observations (default 1,000,000) over 2,000
runs of 20 conditions, with trace-like texts: model calls, tool calls, and one tool failure in
500 saying ``unknown material``. Then measures, each timed alone:

* ``build``: :func:`studyledger.search.build` on the whole ledger (first use);
* ``ingest_without`` / ``ingest_with``: appending 100,000 more observations through
  ``Ledger.append`` to a copy of the ledger without, then with, an index: what keeping the
  index current costs ingestion;
* query latency (median of 5 runs, each on a fresh connection after a warm-up) of: a rare
  phrase (``unknown material``), a common word (the newest 100 of ~1M hits), a common word
  filtered by event type and run status, and counting hits of each (capped at 10,000).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studyledger import Ledger, search
from studyledger.events import (
    EventKind,
    NewEvent,
    make_event,
    observation_recorded,
    run_registered,
    run_status_changed,
    study_registered,
)

RUNS = 2_000
CONDITIONS = 20
TOOLS = ("beam_solver", "material_lookup", "mesh", "stress_check")


def _observation(run_id: str, n: int) -> NewEvent:
    tool = TOOLS[n % len(TOOLS)]
    if n % 500 == 7:
        kind, text = "ToolCallFinished", f"ToolCallFinished {tool} failed error: unknown material 'Ti-6Al-{n % 9}V'"
    elif n % 3 == 0:
        kind, text = "ModelCallFinished", f"ModelCallFinished gpt-small ok {100 + n % 900} tokens ({n % 2000} ms)"
    elif n % 3 == 1:
        kind, text = "ToolCallStarted", f"ToolCallStarted {tool} inputs: length {n % 400} mm load {n % 77} kN"
    else:
        kind, text = "ToolCallFinished", f"ToolCallFinished {tool} ok result {n % 1000 / 7:.3f} ({n % 90} ms)"
    level = "tool-call" if kind.startswith("Tool") else "step"
    body = observation_recorded({
        "timestamp": f"2026-03-02T{n // 3_600_000 % 24:02d}:{n // 60_000 % 60:02d}:{n // 1000 % 60:02d}.000+00:00",
        "record_id": f"{run_id}-{n}", "text": text, "event_type": kind, "level": level, "run_id": run_id,
        "tool_name": tool if level == "tool-call" else None, "meta_json": {"i": n}})
    return make_event(EventKind.OBSERVATION_RECORDED, body, source="api", recorded_at="2026-03-02T10:00:00+00:00")


def _run_id(index: int) -> str:
    return f"run-{index:06d}"


def build_ledger(path: Path, observations: int) -> None:
    """The benchmark ledger: one study, RUNS runs, ``observations`` observations spread over them."""
    with Ledger.open(path) as ledger:
        setup = [make_event(EventKind.STUDY_REGISTERED, study_registered("bench", title="Search benchmark"),
                            source="api")]
        for index in range(RUNS):
            run_id = _run_id(index)
            setup.append(make_event(EventKind.RUN_REGISTERED, run_registered(
                run_id, study_id="bench", condition_id=f"cond-{index % CONDITIONS:02d}", replicate=index // CONDITIONS,
                agent_id="agent", problem_id="bracket", seed=index), source="api"))
            status = "failed" if index % 10 == 0 else "success"
            setup.append(make_event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
                run_id, "running", at="2026-03-02T09:00:00+00:00", study_id="bench"), source="api"))
            setup.append(make_event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
                run_id, status, at="2026-03-02T09:30:00+00:00", study_id="bench",
                error="RuntimeError: unknown material" if status == "failed" else None), source="api"))
        ledger.append(setup)
        append_observations(ledger, 0, observations)


def append_observations(ledger: Ledger, start: int, count: int, batch: int = 20_000) -> None:
    for first in range(start, start + count, batch):
        ledger.append([_observation(_run_id(n % RUNS), n) for n in range(first, min(start + count, first + batch))])


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def latency(path: Path, action: Callable[[sqlite3.Connection], Any], repeat: int = 5) -> dict[str, Any]:
    """Median and worst seconds of ``action`` over ``repeat`` fresh read-only connections."""
    times = []
    result: Any = None
    for _ in range(repeat + 1):
        with Ledger.open(path, readonly=True) as ledger:
            seconds, result = timed(lambda: action(ledger.conn))
        times.append(seconds)
    times = times[1:]  # the first warmed the page cache
    size = len(result) if isinstance(result, list) else result
    return {"median_ms": round(statistics.median(times) * 1000, 2), "max_ms": round(max(times) * 1000, 2),
            "result": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "studyledger-bench-search")
    options = parser.parse_args()
    options.folder.mkdir(parents=True, exist_ok=True)
    base = options.folder / f"search-{options.observations}.db"
    if not base.exists():
        building = base.with_suffix(".building")
        building.unlink(missing_ok=True)
        build_ledger(building, options.observations)
        building.rename(base)
    results: dict[str, Any] = {"observations": options.observations}

    indexed = options.folder / "indexed.db"
    shutil.copy(base, indexed)
    with Ledger.open(indexed) as ledger:
        with ledger.store.transaction():
            seconds, rows = timed(lambda: search.build(ledger.conn))
    results["build"] = {"seconds": round(seconds, 2), "rows_indexed": rows,
                        "rows_per_s": round(rows / seconds), "db_mb_before": round(base.stat().st_size / 1e6, 1),
                        "db_mb_after": round(indexed.stat().st_size / 1e6, 1)}

    extra = 100_000
    for name, path in (("ingest_without", options.folder / "plain-copy.db"), ("ingest_with", indexed)):
        if name == "ingest_without":
            shutil.copy(base, path)
        with Ledger.open(path) as ledger:
            seconds, _ = timed(lambda: append_observations(ledger, options.observations, extra))
        results[name] = {"observations": extra, "per_s": round(extra / seconds)}
        if name == "ingest_without":
            path.unlink()
    results["ingest_cost_of_index"] = round(results["ingest_without"]["per_s"] / results["ingest_with"]["per_s"], 3)

    status_failed = search.Filters(event_type="ToolCallFinished", status="failed")
    results["queries"] = {
        "rare phrase 'unknown material', newest 100": latency(
            indexed, lambda c: search.search(c, "unknown material", limit=100)),
        "common word 'ok', newest 100": latency(indexed, lambda c: search.search(c, "ok", limit=100)),
        "'ok' in ToolCallFinished of failed runs, newest 100": latency(
            indexed, lambda c: search.search(c, "ok", filters=status_failed, limit=100)),
        "prefix 'materi', next page before seq 500000": latency(
            indexed, lambda c: search.search(c, "materi", limit=100, before_seq=500_000)),
        "count 'unknown material'": latency(indexed, lambda c: search.count(c, "unknown material")),
        "count 'ok' (capped)": latency(indexed, lambda c: search.count(c, "ok")),
        "no hit 'zirconium'": latency(indexed, lambda c: search.search(c, "zirconium", limit=100)),
    }
    indexed.unlink()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
