"""Run metrics and outputs on real upstream output: every figure the CLI prints is checked
against values read independently from the fixture's own files (runs.jsonl, runs.csv,
study.yaml), never from the ledger."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from studyledger import Ledger, query
from studyledger.cli import cli
from studyledger.schema import from_canonical

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"


@pytest.fixture
def ledgers(upstream_ledgers: dict[str, Path]) -> dict[str, Path]:
    return upstream_ledgers


def checkpoint_lines(case: str) -> dict[str, dict[str, Any]]:
    """The runner's record of each finished run, from upstream's runs.jsonl (the last line
    of a run wins, as a resumed study's would), NaN and Infinity as Python reads them."""
    found = {}
    for line in (UPSTREAM / case / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines():
        record = json.loads(line)
        found[record["run_id"]] = record
    return found


def runs_csv(case: str) -> list[dict[str, str]]:
    with (UPSTREAM / case / "runs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def cli_json(db: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--db", str(db), *args, "--json"])
    assert result.exit_code == 0, result.output
    return from_canonical(json.loads(result.stdout))


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, a boolean never equal to a number."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v))]


def test_conditions_json_has_every_run_metric_as_the_runner_recorded_it(ledgers: dict[str, Path]) -> None:
    lines = checkpoint_lines("metrics_special")
    rows = {row["condition_id"]: row for row in cli_json(ledgers["metrics_special"], "conditions",
                                                          "metrics-special-study")}
    by_condition: dict[str, dict[str, list[Any]]] = {}
    evaluated: dict[str, dict[str, list[Any]]] = {}
    for record in lines.values():
        condition = record["run_spec"]["condition_id"]
        for name, value in record["metrics"].items():
            by_condition.setdefault(condition, {}).setdefault(name, []).append(value)
        for output in record["evaluator_outputs"]:
            evaluated.setdefault(condition, {}).setdefault(output["metric_name"], []).append(output["metric_value"])
    assert set(rows) == set(by_condition) and len(rows) == 4
    for condition, metrics in by_condition.items():
        got = rows[condition]["metrics"]
        for name, values in metrics.items():
            # The agent's is_feasible is named apart from the evaluator's of the same name.
            shown = f"run:{name}" if name in evaluated[condition] else name
            summary = got[shown]
            assert summary["n"] == len(finite(values)), (condition, name)
            if finite(values):
                assert summary["mean"] == pytest.approx(statistics.fmean(finite(values)))
            nans = sum(1 for v in values if isinstance(v, float) and math.isnan(v))
            infinities = sum(1 for v in values if isinstance(v, float) and v == math.inf)
            assert summary["non_finite"].get("NaN", 0) == nans
            assert summary["non_finite"].get("Infinity", 0) == infinities
            if values and all(isinstance(v, bool) for v in values):
                assert summary["kind"] == "proportion"
        for name, values in evaluated[condition].items():
            assert got[name]["n"] == len(finite(values))
            assert got[name]["non_finite"].get("NaN", 0) == sum(1 for v in values if isinstance(v, float)
                                                                 and math.isnan(v))
    # Nothing else: every metric shown is one of the runner's or an evaluator's.
    for condition, row in rows.items():
        names = {f"run:{n}" if n in evaluated[condition] else n for n in by_condition[condition]}
        assert set(row["metrics"]) == names | set(evaluated[condition])


def test_runs_metric_reads_the_runners_values_exactly(ledgers: dict[str, Path]) -> None:
    lines = checkpoint_lines("metrics_special")
    rows = cli_json(ledgers["metrics_special"], "runs", "--metric", "primary_outcome", "--metric", "latency_s",
                    "--metric", "run:is_feasible", "--metric", "is_feasible", "--metric", "max_stress_ratio")
    assert len(rows) == len(lines) == 8
    for row in rows:
        record = lines[row["run_id"]]
        evaluator = {o["metric_name"]: o["metric_value"] for o in record["evaluator_outputs"]}
        metrics = row["metrics"]
        assert same(metrics["primary_outcome"], record["metrics"]["primary_outcome"])  # True stays True
        assert metrics["latency_s"] == record["metrics"]["latency_s"]
        assert same(metrics["run:is_feasible"], record["metrics"]["is_feasible"])
        assert same(metrics["is_feasible"], evaluator["is_feasible"])
        assert same(metrics["max_stress_ratio"], record["metrics"]["max_stress_ratio"])
    text = CliRunner().invoke(cli, ["--db", str(ledgers["metrics_special"]), "runs", "--metric",
                                    "max_stress_ratio"]).stdout
    assert "NaN" in text and "Infinity" in text and "nan" not in text and "None" not in text


def test_the_declared_primary_outcome_is_the_runners_column(ledgers: dict[str, Path]) -> None:
    study = yaml.safe_load((UPSTREAM / "agents_traced" / "study.yaml").read_text())
    declared = next(outcome for outcome in study["outcomes"] if outcome["primary"])
    assert (declared["source_table"], declared["column"]) == ("runs", "primary_outcome")
    with Ledger.open(ledgers["agents_traced"], readonly=True) as ledger:
        assert query.primary_metric(ledger.conn, "agents-traced-study") == "primary_outcome"
        # Not declared: the runner's primary_outcome still comes first, then evaluators'.
        assert query.primary_metric(ledger.conn, "no-such-study") is None
    # Upstream's runs.csv primary_outcome, per condition, is what the conditions figure averages.
    expected: dict[str, list[float]] = {}
    for row in runs_csv("agents_traced"):
        if row["primary_outcome"]:
            expected.setdefault(row["condition_id"], []).append(float(row["primary_outcome"]))
    rows = cli_json(ledgers["agents_traced"], "conditions", "agents-traced-study")
    for row in rows:
        values = expected.get(row["condition_id"], [])
        assert row["metrics"]["primary_outcome"]["n"] == len(values)
        assert row["metrics"]["primary_outcome"]["mean"] == pytest.approx(statistics.fmean(values))


def test_latency_is_the_runners_and_cost_and_tokens_are_counted(ledgers: dict[str, Path]) -> None:
    csv_rows = runs_csv("agents_traced")
    latency: dict[str, list[float]] = {}
    for row in csv_rows:
        latency.setdefault(row["condition_id"], []).append(float(row["latency_s"]))
    for row in cli_json(ledgers["agents_traced"], "conditions", "agents-traced-study"):
        # Upstream's times are whole seconds: end minus start would say 0 or 1 s.
        assert row["duration_s"]["mean"] == pytest.approx(statistics.fmean(latency[row["condition_id"]]))
    with Ledger.open(ledgers["plain"], readonly=True) as ledger:
        resources = query.resource_values(ledger.conn, "plain-study")
    plain = runs_csv("plain")
    assert sorted(resources["cost_usd"]) == sorted(float(row["cost_usd"]) for row in plain)
    assert sorted(resources["tokens"]) == sorted(float(row["input_tokens"]) + float(row["output_tokens"])
                                                 for row in plain)
    assert sorted(resources["latency_s"]) == pytest.approx(sorted(float(row["latency_s"]) for row in plain))


def test_a_killed_study_has_metrics_only_for_the_runs_that_ended(ledgers: dict[str, Path]) -> None:
    lines = checkpoint_lines("crashed")
    values = cli_json(ledgers["crashed"], "runs", "--metric", "latency_s")
    with_metric = {row["run_id"] for row in values if row["metrics"]["latency_s"] is not None}
    assert with_metric == set(lines) and len(with_metric) == 4
    statuses = {row["status"] for row in values if row["run_id"] not in with_metric}
    assert statuses == {"running", "pending"}


def test_show_lists_evaluator_outputs_run_metrics_and_outputs(ledgers: dict[str, Path]) -> None:
    run_id = "run-58e8e56f2eb9"  # the NaN variant
    record = checkpoint_lines("metrics_special")[run_id]
    text = CliRunner().invoke(cli, ["--db", str(ledgers["metrics_special"]), "show", run_id]).stdout
    sections = {title: text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
                for title in ("evaluator outputs", "run metrics (the runner's)", "outputs")}
    assert "problem_evaluator/score        NaN" in sections["evaluator outputs"]
    assert "max_stress_ratio   NaN" in sections["run metrics (the runner's)"]
    assert "run:is_feasible    false" in sections["run metrics (the runner's)"]
    assert "answer.max_stress_ratio NaN" in sections["outputs"]
    assert f"text                    {record['outputs']['text']}" in sections["outputs"]
    shown = cli_json(ledgers["metrics_special"], "show", run_id)
    assert same(shown["metrics"]["max_stress_ratio"], math.nan)
    assert shown["run"]["result"]["outputs"]["answer"]["variant"] == "nan"


def test_diff_marks_run_metrics_and_outputs_that_differ(ledgers: dict[str, Path]) -> None:
    result = cli_json(ledgers["metrics_special"], "diff", "run-58e8e56f2eb9", "run-5925b138b785")
    fields = {row["field"]: row for row in result["outcome"]}
    assert not fields["run_metric:max_stress_ratio"]["same"]
    assert fields["run_metric:converged"]["same"]
    assert not fields["output:answer.variant"]["same"]
    assert fields["output:answer.variant"]["a"] == "nan"
    assert not fields["metric:problem_evaluator/score"]["same"]
