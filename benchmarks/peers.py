"""Peers doing the same work, run with the peers' own interpreter (a separate venv).

    /tmp/peers/bin/python benchmarks/peers.py mlflow|eventsourcing JSONL WORKDIR COUNT

Never imports studyledger: the peers live in their own virtualenv so they never become
project dependencies. Each reads the first COUNT lines of the same JSONL file the ingest
benchmark reads and stores one record per line; set-up (schema creation, migrations) is
outside the timed part. Prints one JSON object like ``measure.py``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any


def _lines(path: str, count: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from islice(handle, count)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    return {"seconds": time.perf_counter() - started, "count": stored, "rss_mb": _rss_mb()}


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
    return {"seconds": time.perf_counter() - started, "count": stored, "rss_mb": _rss_mb()}


PEERS = {"mlflow": mlflow_log_batch, "eventsourcing": eventsourcing_recorder}

if __name__ == "__main__":
    name, jsonl, folder, n = sys.argv[1:5]
    Path(folder).mkdir(parents=True, exist_ok=True)
    print(json.dumps(PEERS[name](jsonl, Path(folder), int(n))))
