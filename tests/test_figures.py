"""Condition figures and metric values, checked against the ledger's own events (search: test_search.py)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from studyledger import Ledger, query
from studyledger.cli import cli
from studyledger.events import EventKind
from studyledger.schema import from_canonical

from .conftest import copy_ledger
from .study_helpers import build_study

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 conditions x 6 replicates, some scores NaN/Infinity, 2 runs per condition unfinished."""
    return build_study(tmp_path_factory.mktemp("figures") / "special.db", conditions=12, replicates=6,
                       special=True, unfinished=2)


def independent_figures(db: Path) -> dict[str, dict[str, Any]]:
    """Per condition, from the events alone: runs by status and each metric's latest values."""
    condition_of: dict[str, str] = {}
    status_of: dict[str, str] = {}
    latest: dict[tuple[str, str], Any] = {}
    with Ledger.open(db, readonly=True) as ledger:
        for event in ledger.events():
            body = from_canonical(event.data)
            if event.kind == EventKind.RUN_REGISTERED:
                condition_of[body["run_id"]] = body["condition_id"]
                status_of.setdefault(body["run_id"], "pending")
            elif event.kind == EventKind.RUN_STATUS_CHANGED:
                status_of[body["run_id"]] = body["status"]
            elif event.kind == EventKind.EVALUATION_RECORDED:
                latest[(body["run_id"], body["metric_name"])] = body["metric_value"]
    figures: dict[str, dict[str, Any]] = {}
    for run_id, condition in condition_of.items():
        entry = figures.setdefault(condition, {"by_status": {}, "metrics": {}})
        entry["by_status"][status_of[run_id]] = entry["by_status"].get(status_of[run_id], 0) + 1
    for (run_id, name), value in latest.items():
        figures[condition_of[run_id]]["metrics"].setdefault(name, []).append(value)
    return figures


def cli_json(db: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--db", str(db), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_conditions_json_equals_an_independent_count_of_the_events(special: Path) -> None:
    rows = cli_json(special, "conditions", "study")
    expected = independent_figures(special)
    assert [row["condition_id"] for row in rows] == sorted(expected)
    for row in rows:
        want = expected[row["condition_id"]]
        assert set(row) >= {"condition_id", "factors", "runs_by_status", "planned", "metrics"}
        assert row["runs_by_status"] == want["by_status"]
        assert row["planned"] == 6
        assert row["factors"]["prompt"] in ("plain", "scaffold")
        for name, values in want["metrics"].items():
            finite = [float(v) for v in values if isinstance(v, bool) or math.isfinite(v)]
            got = row["metrics"][name]
            assert set(got) >= {"n", "mean", "low", "high"}
            assert got["n"] == len(finite)
            assert got["mean"] == pytest.approx(statistics.fmean(finite))
            nans = sum(1 for v in values if isinstance(v, float) and math.isnan(v))
            assert got["non_finite"].get("NaN", 0) == nans
            if len(finite) >= 2 and name != "feasible":
                half = query.t_quantile(len(finite) - 1) * statistics.stdev(finite) / math.sqrt(len(finite))
                assert got["low"] == pytest.approx(got["mean"] - half)
                assert got["high"] == pytest.approx(got["mean"] + half)
        assert row["metrics"]["feasible"]["kind"] == "proportion"
        assert 0 <= row["metrics"]["feasible"]["low"] <= row["metrics"]["feasible"]["mean"] \
            <= row["metrics"]["feasible"]["high"] <= 1


def test_t_quantiles_are_students() -> None:
    for df, exact in ((1, 12.706), (4, 2.776), (10, 2.228), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)):
        assert query.t_quantile(df) == pytest.approx(exact, abs=0.002)


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf]),
                          st.integers(-1000, 1000), st.booleans(), st.none(), st.text(max_size=3)), max_size=30))
def test_summaries_never_average_what_is_not_a_finite_number(values: list[Any]) -> None:
    summary = query.summarize(values)
    finite = [float(v) for v in values if isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v))]
    assert summary["n"] == len(finite)
    assert summary["n"] + sum(summary["non_finite"].values()) + summary["other"] == len(values)
    if finite:
        assert summary["mean"] == pytest.approx(statistics.fmean(finite), rel=1e-9, abs=1e-9)
        assert math.isfinite(summary["mean"])
    if summary["low"] is not None:
        assert summary["low"] <= summary["mean"] + 1e-9 and summary["mean"] <= summary["high"] + 1e-9


def test_planned_runs_follow_upstreams_plan() -> None:
    study = {"run_budget": json.dumps({"replicates": 3, "max_runs": 10}),
             "extra": json.dumps({"agent_specs": ["a1", "a2"], "problem_ids": []})}
    conditions = [{"condition_id": "c1", "factors": json.dumps({"x": 1}), "admissible": 1},
                  {"condition_id": "c2", "factors": json.dumps({"x": 2}), "admissible": 0},
                  {"condition_id": "c3", "factors": json.dumps({"agent_id": "a9"}), "admissible": 1},
                  {"condition_id": "c4", "factors": json.dumps({"x": 3}), "admissible": 1}]
    # c1: 3 replicates x 2 agents; c2 inadmissible; c3 its own agent: 3; c4 cut at max_runs 10.
    assert query.planned_runs(study, conditions) == {"c1": 6, "c2": 0, "c3": 3, "c4": 1}
    assert query.planned_runs({"run_budget": None}, conditions) is None


def test_runs_metric_column_keeps_nan_and_booleans(special: Path) -> None:
    rows = cli_json(special, "runs", "--study", "study", "--metric", "score", "--metric", "feasible")
    values = {row["run_id"]: row["metrics"] for row in rows}
    assert any(v["score"] == {"$float": "NaN"} for v in values.values())
    assert any(v["score"] == {"$float": "Infinity"} for v in values.values())
    assert {type(v["feasible"]) for v in values.values() if v["feasible"] is not None} == {bool}
    assert any(v["score"] is None for v in values.values())  # unfinished runs have none
    text = CliRunner().invoke(cli, ["--db", str(special), "runs", "--metric", "score"]).stdout
    assert "NaN" in text and "Infinity" in text and "None" not in text


def test_real_agent_study_conditions(tmp_path: Path, upstream_ledgers: dict[str, Path]) -> None:
    db = copy_ledger(upstream_ledgers["agents_traced"], tmp_path)  # a search builds its index
    rows = cli_json(db, "conditions", "agents-traced-study")
    assert len(rows) == 6
    assert all(row["planned"] == 4 and sum(row["runs_by_status"].values()) == 4 for row in rows)
    assert {row["factors"]["agent_id"] for row in rows} == {"direct-echo", "workflow-echo", "strict-echo"}
    assert all(row["metrics"]["score"]["n"] >= 3 for row in rows)
    hits = cli_json(db, "search", "draft rejected", "--status", "failed")
    assert hits and all(set(hit) >= {"run_id", "seq", "kind", "snippet"} for hit in hits)
    assert all("draft rejected" in hit["snippet"] for hit in hits)
    diff = CliRunner().invoke(cli, ["--db", str(db), "diff", rows[0]["condition_id"], rows[1]["condition_id"]])
    assert diff.exit_code != 0  # conditions are not runs: a clear one-line error
    first, second = (row["run_id"] for row in cli_json(db, "runs")[:2])
    text = CliRunner().invoke(cli, ["--db", str(db), "diff", first, second]).stdout
    assert "execution_metadata.request_id" in text  # nested JSON decoded into fields
    assert '{"' not in text


def test_show_of_a_trace_only_run_prints_no_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "traces.db"
    monkeypatch.chdir(UPSTREAM)
    CliRunner().invoke(cli, ["--db", str(db), "ingest", "agents_traced/traces"])
    run_id = cli_json(db, "runs")[0]["run_id"]
    text = CliRunner().invoke(cli, ["--db", str(db), "show", run_id]).stdout
    assert "None" not in text and "study_id           -" in text


def test_difference_of_two_conditions() -> None:
    delta = query.difference([1.0, 2.0, 3.0, math.nan], [3.0, 4.0, 5.0, math.inf])
    assert delta["delta"] == 2.0
    assert delta["low"] < 2.0 < delta["high"]
    assert query.difference([], [1.0]) == {"delta": None, "low": None, "high": None}
