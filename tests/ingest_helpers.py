"""Helpers shared by the ingestion tests: valid lines, ledger read-backs, waiting."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studyledger.events import EventKind, observation_recorded
from studyledger import own_lines

STUDYLEDGER = [sys.executable, "-m", "studyledger"]


def observation_row(index: int, *, tag: str = "t") -> dict[str, Any]:
    """A bare observation row (the seed's ``Observation.to_row`` shape), unique per index."""
    return {
        "timestamp": f"2026-03-02T10:16:{index % 60:02d}.{index:06d}+00:00",
        "record_id": f"rec-{tag}-{index}",
        "text": f"observation {index}",
        "session_id": "sess",
        "actor_id": "agent",
        "event_type": "assistant_output",
        "meta_json": {"index": index},
        "level": "step",
        "study_id": None,
        "run_id": None,
        "condition_id": None,
        "trial_id": None,
        "step_id": None,
        "tool_name": None,
        "evaluation_id": None,
    }


def own_line(index: int, *, tag: str = "t") -> str:
    """studyledger's own line for one observation (ends with a newline)."""
    return own_lines.line_for(EventKind.OBSERVATION_RECORDED, observation_recorded(observation_row(index, tag=tag)))


def row_line(index: int, *, tag: str = "t") -> str:
    """A bare observation row as a JSONL line."""
    return json.dumps(observation_row(index, tag=tag), sort_keys=True) + "\n"


def write(path: Path, text: str | bytes, mode: str = "a") -> None:
    """Append (or write) text or bytes and flush, as a cooperating writer would."""
    data = text.encode() if isinstance(text, str) else text
    with open(path, mode + "b") as handle:
        handle.write(data)
        handle.flush()


def event_ids(db: Path, kind: str | None = None) -> list[str]:
    """Event ids in sequence order, read through a separate connection."""
    with sqlite3.connect(db) as conn:
        if kind is None:
            return [row[0] for row in conn.execute("SELECT event_id FROM events_plain ORDER BY seq")]
        return [row[0] for row in conn.execute("SELECT event_id FROM events_plain WHERE kind = ? ORDER BY seq",
                                               (kind,))]


def count_events(db: Path, kind: str | None = None) -> int:
    """Number of events (of one kind), 0 when the ledger does not exist yet."""
    if not db.exists():
        return 0
    try:
        return len(event_ids(db, kind))
    except sqlite3.OperationalError:
        return 0


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until ``predicate`` holds: eventual consistency, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_watch(db: Path, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``studyledger watch`` as a real subprocess (stdout/stderr piped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*STUDYLEDGER, "--db", str(db), "watch", str(folder), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
