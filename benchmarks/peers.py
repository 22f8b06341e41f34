"""Peers doing the same work, run with the peers' own interpreter (a separate venv).

    VENV/bin/python benchmarks/peers.py mlflow|eventsourcing|aim JSONL WORKDIR COUNT

Never imports studyledger: each peer lives in its own virtualenv (made and cached by
``peer_envs.py``) so it never becomes a project dependency. Each reads the first COUNT lines
of the same JSONL file the ingest benchmark reads and stores one record per line; set-up
(imports, schema creation, migrations, opening the run) is outside the timed part, and
whatever makes the records durable (commit, flush, close) is inside it. Prints one JSON
object like ``measure.py``, with the peer's version.
"""

from __future__ import annotations

import json
from importlib.metadata import version
import sys
import time
import uuid
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from rss import peak_rss_mb


def _lines(path: str, count: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from islice(handle, count)


def mlflow_log_batch(path: str, work: Path, count: int) -> dict[str, Any]:
    """MLflow, SQLite backend: each line becomes one metric (key = event type, value = its
    duration or index, step = event index), sent with ``log_batch`` 1,000 at a time (its limit)."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.create_experiment("bench", artifact_location=str(work / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    started = time.perf_counter()
    stored, batch = 0, []
    for raw in _lines(path, count):
        line = json.loads(raw)
        value = line.get("duration_ms") or line.get("event_index") or 0
        batch.append(Metric(line["event_type"], float(value), int(line["timestamp_ms"]), int(line["event_index"])))
        if len(batch) == 1000:
            client.log_batch(run_id, metrics=batch)
            stored += len(batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
        stored += len(batch)
    return {"seconds": time.perf_counter() - started, "count": stored, "rss_mb": peak_rss_mb(),
            "version": version("mlflow")}


def eventsourcing_recorder(path: str, work: Path, count: int) -> dict[str, Any]:
    """The eventsourcing library's SQLite application recorder: each line becomes one stored
    event (originator = the trace's run, version = its position in that run, state = the
    line), inserted 5,000 per ``insert_events`` call (one transaction each)."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    recorder = SQLiteApplicationRecorder(SQLiteDatastore(str(work / "eventsourcing.db")))
    recorder.create_table()
    versions: dict[str, int] = {}
    started = time.perf_counter()
    stored, batch = 0, []
    for raw in _lines(path, count):
        line = json.loads(raw)
        run = line["run_id"]
        versions[run] = versions.get(run, 0) + 1
        originator = uuid.uuid5(uuid.NAMESPACE_URL, run)
        batch.append(StoredEvent(originator, versions[run], line["event_type"], raw))
        if len(batch) == 5000:
            recorder.insert_events(batch)
            stored += len(batch)
            batch = []
    if batch:
        recorder.insert_events(batch)
        stored += len(batch)
    return {"seconds": time.perf_counter() - started, "count": stored, "rss_mb": peak_rss_mb(),
            "version": version("eventsourcing")}


def aim_track(path: str, work: Path, count: int) -> dict[str, Any]:
    """Aim, its own repository (RocksDB): each line becomes one tracked value with
    ``Run.track`` (name = event type, value as for MLflow, step = the line's number, so no
    record overwrites another), one call per record (Aim has no batch call); the timed part
    ends with ``Run.close()``, which flushes what Aim still buffers."""
    import logging

    logging.getLogger("aim").setLevel(logging.ERROR)
    from aim import Repo, Run

    repo = str(work / "aim")
    Repo.from_path(repo, init=True)
    run = Run(repo=repo, experiment="bench", system_tracking_interval=None, log_system_params=False,
              capture_terminal_logs=False)
    started = time.perf_counter()
    stored = 0
    for raw in _lines(path, count):
        line = json.loads(raw)
        value = line.get("duration_ms") or line.get("event_index") or 0
        run.track(float(value), name=line["event_type"], step=stored)
        stored += 1
    run.close()
    return {"seconds": time.perf_counter() - started, "count": stored, "rss_mb": peak_rss_mb(),
            "version": version("aim")}


PEERS = {"mlflow": mlflow_log_batch, "eventsourcing": eventsourcing_recorder, "aim": aim_track}

if __name__ == "__main__":
    name, jsonl, folder, n = sys.argv[1:5]
    Path(folder).mkdir(parents=True, exist_ok=True)
    print(json.dumps(PEERS[name](jsonl, Path(folder), int(n))))
