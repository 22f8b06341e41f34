"""Side by side comparison of two runs: provenance, configuration and outcome.

Two runs that should have behaved alike (replicates, or the same condition on two
machines) and did not usually differ in one of three places: what software they ran on,
how they were configured, or what happened. Each section lists every field with both
values and whether they agree, so a reader sees the differences without losing the
context of what matched.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from .. import query
from ..errors import UnknownRunError
from .snapshot_read import Readable, connection_of

CONFIGURATION_FIELDS = ("study_id", "condition_id", "replicate", "seed", "agent_id", "problem_id")
PROVENANCE_FIELDS = ("python_version", "platform", "host", "git_sha")


def _run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    row = query.run(conn, run_id)
    if row is None:
        raise UnknownRunError(f"unknown run {run_id!r}")
    return row


def _row(field: str, a: Any, b: Any) -> dict[str, Any]:
    # Two NaN metrics are the same outcome, though NaN != NaN.
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return {"field": field, "a": a, "b": b, "same": a == b or both_nan}


def _provenance(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """The latest provenance snapshot of a run, as readable fields ({} when none).

    Packages are ``package:NAME``; extra fields are dotted paths with nested JSON text
    decoded (``execution_metadata.agent_id``), so two runs differ field by field rather
    than as two opaque JSON strings.
    """
    latest = query.latest_provenance(conn, run_id).get(run_id)
    if latest is None:
        return {}
    return {name: value for name, value in query.provenance_fields(latest) if name != "captured_at"}


def _counts(conn: sqlite3.Connection, run_id: str, column: str) -> dict[str, int]:
    cursor = conn.execute(
        f"SELECT {column}, count(*) FROM observations WHERE run_id = ? GROUP BY {column} ORDER BY {column}",
        (run_id,))
    return {str(key): int(count) for key, count in cursor}


def _metrics(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """The last value of each ``metric:EVALUATOR/NAME`` of a run, as the evaluator wrote
    it, each of the runner's metrics (``run_metric:NAME``) and each output leaf
    (``output:PATH``)."""
    found = {f"metric:{row['evaluator_id']}/{row['metric_name']}" if row["source"] == "evaluator"
             else f"run_metric:{row['metric_name']}": row["value"]
             for row in query.metric_values(conn, run_id=run_id)}
    result = query.run_result(_run(conn, run_id)) or {}
    found.update((f"output:{name}", value) for name, value in query.flatten(result.get("outputs") or {}))
    return found


def _keyed(prefix: str, a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    return [_row(f"{prefix}{key}", a.get(key), b.get(key)) for key in sorted(set(a) | set(b))]


def diff_runs(source: Readable | sqlite3.Connection, run_a: str, run_b: str) -> dict[str, Any]:
    """Compare two runs field by field.

    Args:
        source: The ledger, or an as-of snapshot of it (:func:`state_as_of`).
        run_a: The first run id.
        run_b: The second run id.

    Returns:
        ``{"a": run_a, "b": run_b, "provenance": [...], "configuration": [...],
        "outcome": [...], "differences": n}``; each section is a list of
        ``{"field", "a", "b", "same"}``. Packages appear as ``package:NAME`` fields, observation
        counts as ``observations.event_type:TYPE`` and ``observations.level:LEVEL``, metrics as
        ``metric:EVALUATOR/NAME`` and ``run_metric:NAME`` (the runner's), outputs as
        ``output:PATH``.

    Raises:
        UnknownRunError: either run is not in the ledger.
    """
    conn = connection_of(source)
    a, b = _run(conn, run_a), _run(conn, run_b)
    prov_a, prov_b = _provenance(conn, run_a), _provenance(conn, run_b)
    provenance = [_row(name, prov_a.get(name), prov_b.get(name)) for name in PROVENANCE_FIELDS]
    provenance += _keyed("", {k: v for k, v in prov_a.items() if k not in PROVENANCE_FIELDS},
                         {k: v for k, v in prov_b.items() if k not in PROVENANCE_FIELDS})
    configuration = [_row(name, a[name], b[name]) for name in CONFIGURATION_FIELDS]
    outcome = [_row(name, a[name], b[name]) for name in ("status", "status_reason", "error")]
    latency_a, latency_b = (query.run_latencies(conn, run_id=run).get(run) for run in (run_a, run_b))
    outcome.append(_row("duration_s", latency_a, latency_b))
    outcome.append(_row("observations", a["observation_count"], b["observation_count"]))
    outcome.append(_row("anomalies", a["anomaly_count"], b["anomaly_count"]))
    outcome += _keyed("observations.event_type:", _counts(conn, run_a, "event_type"),
                      _counts(conn, run_b, "event_type"))
    outcome += _keyed("observations.level:", _counts(conn, run_a, "level"), _counts(conn, run_b, "level"))
    outcome += _keyed("", _metrics(conn, run_a), _metrics(conn, run_b))
    sections = {"provenance": provenance, "configuration": configuration, "outcome": outcome}
    differences = sum(not row["same"] for rows in sections.values() for row in rows)
    return {"a": run_a, "b": run_b, **sections, "differences": differences}
