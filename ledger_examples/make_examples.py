"""Write the committed example inputs in ledger_examples/ (deterministic: run it, diff nothing).

    python ledger_examples/make_examples.py [OUTPUT_ROOT]

Everything here is in the real upstream formats (see the formats notes in the project's
docs and ledger_examples/README.md): a design-research-experiments study output folder with
its agent traces, bare observation rows, studyledger's own lines, and one malformed file.
Run ids and seeds are computed the way upstream computes them, so every source joins on
``run_id``. Timestamps are fixed; nothing depends on the clock or the hash seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from studyledger import RunBudget, SeedPolicy, run_id_for
from studyledger.schema import hash_identifier
from studyledger import events as ev
from studyledger.events import EventKind
from studyledger.own_lines import line_for
from studyledger.simulate import Outcome, agent_session, stamp, trace_file_name, trace_line_text

HERE = Path(__file__).resolve().parent
STUDY_ID = "bracket-study"
BASE_MS = 1772442000000  # 2026-03-02T09:00:00Z
POLICY = SeedPolicy(base_seed=20260302)
BUDGET = RunBudget(replicates=3, parallelism=2)
AGENT, PROBLEM = "tool-agent", "bracket"
FACTORS = {"prompt_style": ["baseline", "scaffolded"], "model": ["demo-model-small", "demo-model-large"]}

# (index among the admissible conditions, replicate) -> what happened to that run. The
# scaffolded prompt on the small model is inadmissible, so it has no runs.
PLAN: dict[tuple[int, int], str] = {
    (0, 1): "success", (0, 2): "success_nan", (0, 3): "failed",
    (1, 1): "success", (1, 2): "crashed", (1, 3): "skipped",
    (2, 1): "success", (2, 2): "disagree", (2, 3): "pending",
}


def upstream_dumps(value: Any) -> str:
    """Upstream's checkpoint encoding: compact, key-sorted, bare NaN/Infinity tokens."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def iso(ms: int) -> str:
    return stamp({}, ms)["timestamp"]


def conditions() -> list[dict[str, Any]]:
    rows = []
    for style in FACTORS["prompt_style"]:
        for model in FACTORS["model"]:
            factors = {"model": model, "prompt_style": style}
            admissible = not (style == "scaffolded" and model == "demo-model-small")
            rows.append({
                "study_id": STUDY_ID,
                "condition_id": hash_identifier("cond", {"study_id": STUDY_ID, **factors}),
                "admissible": admissible,
                "constraint_messages": [] if admissible else
                ["scaffolded prompts exceed the small model's context window"],
                "assignment_meta_json": {"fingerprint": hash_identifier("fp", factors)},
                **factors,
                "block_site": "lab-a",
            })
    return rows


def observations_for(run_id: str, condition_id: str, trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runner's own observation rows for a run: one per tool call and the answer."""
    rows = []
    for line in trace:
        kind = line["event_type"]
        if kind not in ("ToolCallFinished", "ToolCallFailed", "ModelCallFinished"):
            continue
        attrs = line["attributes"]
        is_tool = kind != "ModelCallFinished"
        rows.append({
            "actor_id": "agent", "condition_id": condition_id, "evaluation_id": None,
            "event_type": "tool_call" if is_tool else "assistant_output",
            "level": "tool-call" if is_tool else "step",
            "meta_json": {"ok": attrs.get("ok"), "duration_ms": line["duration_ms"]} if is_tool
            else {"usage": attrs["usage"]},
            "record_id": hash_identifier("evt", {"run_id": run_id, "span": line["span_id"], "kind": kind}),
            "run_id": run_id, "session_id": run_id, "step_id": None, "study_id": STUDY_ID,
            "text": f"{attrs['tool_name']}(...) -> {'ok' if attrs.get('ok') else 'failed'}" if is_tool
            else attrs["response"]["text"],
            "timestamp": line["timestamp"], "tool_name": attrs.get("tool_name") if is_tool else None,
            "trial_id": None,
        })
    return rows


def checkpoint_line(spec: dict[str, Any], status: str, *, trace: list[dict[str, Any]], trace_ref: str | None,
                    started: int | None, ended: int, reason: str, error: str | None,
                    metrics: dict[str, Any], evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "artifact_refs": [], "cost": round(metrics.get("input_tokens", 0) * 2e-6, 6),
        "ended_at": iso(ended), "error_info": error, "evaluator_outputs": evaluations,
        "latency": metrics.get("latency_s", 0.0), "metrics": metrics,
        "observations": observations_for(spec["run_id"], spec["condition_id"], trace),
        "outputs": {"text": "6 mm S275 steel"} if status == "success" else {},
        "provenance_info": {"agent_id": AGENT, "problem_id": PROBLEM, "model_name": spec["execution_metadata"]["model_name"],
                            "trace_path": trace_ref},
        "run_id": spec["run_id"],
        "run_spec": spec,
        "started_at": None if started is None else iso(started),
        "status": status, "status_reason": reason,
        "trace_refs": [trace_ref] if trace_ref else [],
    }


def evaluation(run_id: str, metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"run_id": run_id, "evaluator_id": "bracket_evaluator", "metric_name": metric,
            "metric_value": value, "metric_unit": unit, "aggregation_level": "run", "notes_json": {}}


def write_study(study_dir: Path) -> None:
    rng = random.Random(20260302)
    cond_rows = conditions()
    (study_dir / "artifacts" / "checkpoints").mkdir(parents=True)
    (study_dir / "traces").mkdir()
    study = {
        "schema_version": "0.2.0", "study_id": STUDY_ID,
        "title": "Bracket sizing: prompt framing x model size",
        "description": "Does a scaffolded prompt help an LLM agent size a steel bracket correctly?",
        "hypotheses": [{"hypothesis_id": "h1", "statement": "Scaffolded prompts raise feasibility.",
                        "direction": "positive", "factor_bindings": ["prompt_style"],
                        "outcome_bindings": ["feasibility"]}],
        "factors": [{"name": name, "kind": "manipulated", "levels": [{"name": v, "value": v} for v in levels]}
                    for name, levels in FACTORS.items()],
        "blocks": [{"name": "site", "levels": ["lab-a"]}],
        "outcomes": [{"name": "feasibility", "kind": "continuous", "description": "Evaluator score 0..1"},
                     {"name": "mass_g", "kind": "continuous", "description": "Bracket mass"}],
        "run_budget": {"replicates": BUDGET.replicates, "max_runs": None, "parallelism": BUDGET.parallelism,
                       "fail_fast": False},
        "seed_policy": {"base_seed": POLICY.base_seed, "strategy": POLICY.strategy,
                        "per_run_offset": POLICY.per_run_offset},
        "agent_specs": [AGENT], "problem_ids": [PROBLEM], "output_dir": f"artifacts/{STUDY_ID}",
    }
    (study_dir / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")

    out = io.StringIO()
    fields = ["study_id", "condition_id", "admissible", "constraint_messages", "assignment_meta_json",
              "model", "prompt_style", "block_site"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in cond_rows:
        writer.writerow({**row, "constraint_messages": upstream_dumps(row["constraint_messages"]),
                         "assignment_meta_json": upstream_dumps(row["assignment_meta_json"])})
    (study_dir / "conditions.csv").write_text(out.getvalue(), encoding="utf-8")

    checkpoints: list[str] = []
    evaluations: list[dict[str, Any]] = []
    clock = BASE_MS
    for (index, replicate), what in sorted(PLAN.items(), key=lambda item: (item[0][1], item[0][0])):
        cond = [row for row in cond_rows if row["admissible"]][index]
        run_id = run_id_for(STUDY_ID, cond["condition_id"], replicate, AGENT, PROBLEM)
        spec = {"run_id": run_id, "study_id": STUDY_ID, "condition_id": cond["condition_id"],
                "problem_id": PROBLEM, "replicate": replicate,
                "seed": POLICY.derive_seed(STUDY_ID, cond["condition_id"], replicate, salt=f"{AGENT}:{PROBLEM}"),
                "agent_spec_ref": AGENT, "problem_spec_ref": PROBLEM,
                "execution_metadata": {"agent_id": AGENT, "problem_id": PROBLEM, "model_name": cond["model"],
                                       "condition_fingerprint": cond["assignment_meta_json"]["fingerprint"]}}
        clock += 45_000
        run_dir = study_dir / "artifacts" / "runs" / run_id
        if what in ("pending", "skipped"):
            if what == "pending":
                run_dir.mkdir(parents=True)
                (run_dir / "run.json").write_text(json.dumps(
                    {"run_id": run_id, "status": "pending", "started_at": None, "run_spec": spec},
                    indent=2, sort_keys=True) + "\n", encoding="utf-8")
            else:
                checkpoints.append(upstream_dumps(checkpoint_line(
                    spec, "skipped", trace=[], trace_ref=None, started=None, ended=clock,
                    reason="dependency unavailable: material database offline", error=None,
                    metrics={}, evaluations=[])))
            continue
        outcome = {"failed": Outcome.TOOL_FAILURE, "crashed": Outcome.CRASH}.get(what, Outcome.SUCCESS)
        ref = f"traces/{trace_file_name(run_id, clock)}"
        session = agent_session(run_id, outcome=outcome, rng=rng, model=cond["model"], trace_path=ref)
        if what == "disagree":
            # The agent's trace says the run failed; the runner (below) says success.
            finished = session[-1][1]
            session[-1] = (session[-1][0], {**finished, "attributes": {
                "error": "ContextWindowExceeded: answer truncated", "result": None, "success": False}})
        trace = [stamp(line, clock + offset) for offset, line in session]
        (study_dir / ref).write_text("".join(trace_line_text(line) for line in trace), encoding="ascii")
        ended = clock + session[-1][0]
        if what == "crashed":
            run_dir.mkdir(parents=True)
            (run_dir / "run.json").write_text(json.dumps(
                {"run_id": run_id, "status": "running", "started_at": iso(clock), "run_spec": spec,
                 "trace_refs": [ref]}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            continue
        usage = [line["attributes"]["usage"] for line in trace if line["event_type"] == "ModelCallFinished"]
        metrics: dict[str, Any] = {
            "input_tokens": sum(u["prompt_tokens"] for u in usage),
            "output_tokens": sum(u["completion_tokens"] for u in usage),
            "latency_s": round((ended - clock) / 1000, 3),
        }
        if what == "failed":
            evals = [evaluation(run_id, "feasibility", math.nan, "unitless")]
            line = checkpoint_line(spec, "failed", trace=trace, trace_ref=ref, started=clock, ended=ended,
                                   reason="exception", error="RuntimeError: tool call failed: upstream service unavailable",
                                   metrics=metrics, evaluations=evals)
        else:
            feasible = math.nan if what == "success_nan" else round(rng.uniform(0.55, 0.98), 3)
            mass = math.inf if what == "success_nan" else round(rng.uniform(80, 240), 1)
            metrics["primary_outcome"] = feasible
            evals = [evaluation(run_id, "feasibility", feasible, "unitless"),
                     evaluation(run_id, "mass_g", mass, "g")]
            line = checkpoint_line(spec, "success", trace=trace, trace_ref=ref, started=clock, ended=ended,
                                   reason="completed", error=None, metrics=metrics, evaluations=evals)
            run_dir.mkdir(parents=True)
            (run_dir / "observations.jsonl").write_text(
                "".join(upstream_dumps(row) + "\n" for row in line["observations"]), encoding="utf-8")
        evaluations += evals
        checkpoints.append(upstream_dumps(line))
    # The study was started a second time without --resume: upstream appends the first run again.
    checkpoints.append(checkpoints[0])
    (study_dir / "artifacts" / "checkpoints" / "runs.jsonl").write_text(
        "".join(text + "\n" for text in checkpoints), encoding="utf-8")

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(evaluations[0]), lineterminator="\n")
    writer.writeheader()
    for row in evaluations:
        writer.writerow({**row, "notes_json": upstream_dumps(row["notes_json"])})
    (study_dir / "evaluations.csv").write_text(out.getvalue(), encoding="utf-8")

    # A trace no run of the study refers to: someone tried the agent by hand in the same folder.
    orphan = "adhoc-7f3a9c"
    session = agent_session(orphan, outcome=Outcome.SUCCESS, rng=rng, prompt="Which steel grade for 2 kN?")
    start = BASE_MS + 3_600_000
    (study_dir / "traces" / trace_file_name(orphan, start)).write_text(
        "".join(trace_line_text(stamp(line, start + offset)) for offset, line in session), encoding="ascii")


def write_drop(drop_dir: Path, study_dir: Path) -> None:
    drop_dir.mkdir()
    study_runs = [json.loads(text) for text in
                  (study_dir / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines()]
    rated = [line for line in study_runs if line["status"] == "success"][:2]
    rows = []
    for number, line in enumerate(rated):
        meta = {"rater": "r1", "score": 4 - number, "rubric": "feasibility-v2"}
        rows.append({
            "timestamp": iso(BASE_MS + 7_200_000 + number * 1000),
            "record_id": hash_identifier("evt", {"rating": line["run_id"]}),
            "text": f"Human rating: {4 - number}/5 \u2014 plausible geometry", "session_id": line["run_id"],
            "actor_id": "rater-1", "event_type": "human_rating",
            # Rows copied from a CSV export carry meta_json as a JSON string; both forms are valid.
            "meta_json": meta if number == 0 else json.dumps(meta, sort_keys=True),
            "level": "evaluation", "study_id": STUDY_ID, "run_id": line["run_id"],
            "condition_id": line["run_spec"]["condition_id"], "trial_id": None, "step_id": None,
            "tool_name": None, "evaluation_id": f"rating-{number + 1}",
        })
    (drop_dir / "observations.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")

    smoke = "smoke-tests"
    condition = hash_identifier("cond", {"study_id": smoke, "suite": "nightly"})
    policy = SeedPolicy(base_seed=7)
    run_id = run_id_for(smoke, condition, 1, "echo-agent", "ping")
    at = iso(BASE_MS + 10_800_000)
    own = [
        (EventKind.STUDY_REGISTERED, ev.study_registered(
            smoke, title="Nightly smoke tests", description="Logged with studyledger.DropWriter",
            seed_policy=policy, run_budget=RunBudget(replicates=1), at=at)),
        (EventKind.CONDITION_REGISTERED, ev.condition_registered(smoke, condition, factors={"suite": "nightly"})),
        (EventKind.RUN_REGISTERED, ev.run_registered(
            run_id, study_id=smoke, condition_id=condition, replicate=1, agent_id="echo-agent", problem_id="ping",
            seed=policy.derive_seed(smoke, condition, 1, salt="echo-agent:ping"), at=at)),
        (EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(run_id, "running", at=at, study_id=smoke)),
        (EventKind.OBSERVATION_RECORDED, ev.observation_recorded({
            "timestamp": at, "record_id": hash_identifier("evt", {"smoke": 1}), "text": "ping -> pong",
            "session_id": run_id, "actor_id": "echo-agent", "event_type": "tool_call", "meta_json": {"ms": 3},
            "level": "tool-call", "study_id": smoke, "run_id": run_id, "tool_name": "ping"})),
        (EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(
            run_id, "success", at=iso(BASE_MS + 10_801_000), reason="completed", study_id=smoke)),
    ]
    (drop_dir / "smoke-tests.studyledger.jsonl").write_text(
        "".join(line_for(kind, body) for kind, body in own), encoding="ascii")

    good = json.dumps({**rows[0], "record_id": hash_identifier("evt", {"malformed-file": "ok"}),
                       "text": "a valid row among bad ones"}).encode()
    bad_level = json.dumps({**rows[0], "record_id": hash_identifier("evt", {"malformed-file": "level"}),
                            "level": "galaxy"}).encode()
    (drop_dir / "malformed.jsonl").write_bytes(b"\n".join([
        good,                                               # 1: accepted
        b'{"timestamp": "2026-03-02T12:00:00+00:00", "record_id": "evt-cut',  # 2: invalid JSON (cut off)
        b'{"text": "caf\xe9 au lait"}',                      # 3: invalid UTF-8 (latin-1 byte)
        b'{"hello": "world", "answer": 42}',                 # 4: unknown shape
        bad_level,                                           # 5: invalid value (unknown level)
        b"[1, 2, 3]",                                        # 6: not an object
    ]) + b"\n")


def main(root: Path = HERE) -> None:
    """(Re)write ``bracket-study/`` and ``drop/`` under ``root``."""
    study, drop = root / "bracket-study", root / "drop"
    for folder in (study, drop):
        if folder.exists():
            shutil.rmtree(folder)
    write_study(study)
    write_drop(drop, study)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
