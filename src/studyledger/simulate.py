"""A live study, written into a drop folder over time the way real programs write it.

The demo and the benchmarks need a study that *happens* while they watch: runs start, call
models and tools at a human pace, some fail, one hangs and never finishes. This module
writes exactly what the upstream programs write -- one ``design-research-agents`` trace
file per run (``traces/run_<UTC>_<run_id>.jsonl``) and studyledger's own lines
(``ledger.jsonl``: the study, its conditions and its runs with upstream ids and seeds) --
so the watcher, the adapters and the dashboard are exercised on the real formats, not on a
shortcut.

Every line is one ``os.write`` on an ``O_APPEND`` descriptor: a reader never sees half a
line from us, as with a well-behaved real writer. Content is a pure function of the seed
(and of ``start`` for the timestamps), so a run of the simulator can be reproduced.

The trace builder (:func:`agent_session`) is also used by ``ledger_examples/make_examples.py``
so that the committed examples and the live simulation speak the same dialect.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from . import events as ev
from .events import EventKind
from .own_lines import line_for
from .ledger import run_id_for
from .schema import RunBudget, SeedPolicy, hash_identifier

TRACE_KEYS = (
    "event_type", "run_id", "span_id", "parent_span_id", "timestamp", "timestamp_ms",
    "duration_ms", "attributes", "event_index",
)
STUDY_ID = "live-bracket-study"
_AGENT, _PROBLEM = "tool-agent", "bracket"
_CONDITIONS: tuple[dict[str, str], ...] = (
    {"prompt_style": "baseline", "model": "demo-model-small"},
    {"prompt_style": "baseline", "model": "demo-model-large"},
    {"prompt_style": "scaffolded", "model": "demo-model-large"},
)
OWN_LINES_FILE = "ledger.jsonl"
TRACES_DIR = "traces"

_TOOLS: dict[str, dict[str, Any]] = {
    "lookup_material": {"name": "steel-s275"},
    "beam_deflection": {"load_n": 2000, "thickness_mm": 6},
    "safety_factor": {"yield_mpa": 275, "stress_mpa": 148.2},
    "search_catalog": {"query": "L-bracket 6 mm"},
}


class Outcome(StrEnum):
    """How an agent session ends."""

    SUCCESS = "success"
    #: A tool fails and the agent gives up: ``RunFinished`` with ``success: false`` and
    #: ``error: null`` -- the upstream shape that is a failure without a message.
    TOOL_FAILURE = "tool_failure"
    #: The model provider refuses (rate limit): ``ModelCallFailed`` and an error string.
    MODEL_ERROR = "model_error"
    #: The process dies mid-run: the file ends after a tool call started, no ``RunFinished``.
    CRASH = "crash"
    #: The process is alive but silent (waiting on a model forever): same file shape as a
    #: crash, but the simulator never writes another line for it.
    HANG = "hang"


@dataclass
class _Session:
    """Builds the lines of one agent session: spans, indices and a clock in ms."""

    run_id: str
    rng: random.Random
    clock_ms: int = 0
    index: int = 0
    lines: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def span(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def wait(self, low_ms: int, high_ms: int) -> int:
        step = self.rng.randint(low_ms, high_ms)
        self.clock_ms += step
        return step

    def emit(
        self,
        event_type: str,
        span_id: str,
        parent: str | None,
        attributes: dict[str, Any],
        duration_ms: int | None = None,
    ) -> None:
        line = {
            "event_type": event_type,
            "run_id": self.run_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "timestamp": "",
            "timestamp_ms": 0,
            "duration_ms": duration_ms,
            "attributes": attributes,
            "event_index": self.index,
        }
        self.index += 1
        self.lines.append((self.clock_ms, line))


def agent_session(
    run_id: str,
    *,
    outcome: Outcome,
    rng: random.Random,
    prompt: str = "Size a steel bracket for a 2 kN load",
    model: str = "demo-model-large",
    trace_path: str | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """The trace lines of one agent run, each with its offset in ms from the run's start.

    Lines have the nine upstream keys; ``timestamp`` and ``timestamp_ms`` are filled by
    :func:`stamp` once the caller knows when the run started (fixed for the committed
    examples, the wall clock for the live simulator).
    """
    s = _Session(run_id, rng)
    root, agent = s.span(), s.span()
    start_attrs: dict[str, Any] = {
        "agent": "MultiStepAgent", "dependency_keys": [], "input": {"prompt": prompt},
        "request_id": run_id,
    }
    s.emit("RunStarted", root, None, {**start_attrs, "trace_path": trace_path} if trace_path else start_attrs)
    s.wait(1, 3)
    s.emit("AgentRunStarted", agent, root, start_attrs)
    tools = list(_TOOLS)
    rng.shuffle(tools)
    steps = rng.randint(1, 3)
    tokens = 0
    for number in range(steps + 1):
        final = number == steps
        step_id = "answer" if final else f"step-{number + 1}"
        step, call = s.span(), s.span()
        step_started = s.clock_ms
        s.wait(1, 5)
        s.emit("WorkflowStepStarted", step, agent, {"dependencies": [], "step_id": step_id, "step_type": "ModelStep"})
        s.wait(1, 5)
        messages = [{"role": "system", "content": "You are a design agent."}, {"role": "user", "content": prompt}]
        s.emit("ModelCallStarted", call, step, {
            "agent": "MultiStepAgent", "message_count": len(messages), "message_source": "prompt",
            "messages": messages, "model": model, "params": {"temperature": 0.0}, "phase": step_id,
            "step_id": step_id,
        })
        if outcome is Outcome.HANG:
            return s.lines
        latency = s.wait(180, 1400)
        if outcome is Outcome.MODEL_ERROR and number == steps - 1:
            s.emit("ModelCallFailed", call, step, {"error": "HTTP 429 rate limited", "model": model,
                                                  "provider": "demo"}, latency)
            s.wait(1, 3)
            _finish(s, root, agent, success=False, error="ModelCallError: HTTP 429 rate limited", result=None)
            return s.lines
        usage = {"prompt_tokens": rng.randint(30, 900), "completion_tokens": rng.randint(10, 300)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        tokens += usage["total_tokens"]
        tool = tools[number % len(tools)]
        text = (json.dumps({"answer": f"{rng.choice([5, 6, 8])} mm S275 steel"}) if final
                else json.dumps({"tool_name": tool, "tool_input": _TOOLS[tool]}))
        s.emit("ModelCallFinished", call, step, {
            "finish_reason": "stop", "latency_ms": latency, "model": model, "provider": "demo",
            "response": {"text": text}, "usage": usage,
        }, latency)
        if final:
            s.wait(1, 3)
            s.emit("ContinuationDecision", step, agent, {"continue": False, "reason": "answer complete"})
            s.wait(1, 3)
            s.emit("WorkflowStepFinished", step, agent, {"error": None, "status": "completed", "step_id": step_id},
                   s.clock_ms - step_started)
            break
        s.wait(1, 3)
        s.emit("ToolSelectionDecision", step, agent, {
            "parsed_tool_call": {"tool_name": tool, "tool_input": _TOOLS[tool]}, "reason": "need data",
            "source": "model", "tool_name": tool,
        })
        tool_span = s.span()
        s.wait(1, 3)
        s.emit("ToolCallStarted", tool_span, step, {"dependency_keys": [], "request_id": run_id,
                                                    "tool_input": _TOOLS[tool], "tool_name": tool})
        if outcome is Outcome.CRASH and number == steps - 1:
            return s.lines
        took = s.wait(5, 250)
        if outcome is Outcome.TOOL_FAILURE and number == steps - 1:
            s.emit("ToolCallFailed", tool_span, step, {"error": f"{tool}: upstream service unavailable",
                                                       "ok": False, "tool_name": tool}, took)
            s.wait(1, 3)
            s.emit("WorkflowStepFinished", step, agent, {"error": "tool failed", "status": "failed",
                                                         "step_id": step_id}, s.clock_ms - step_started)
            s.wait(1, 3)
            _finish(s, root, agent, success=False, error=None, result=None)
            return s.lines
        s.emit("ToolCallFinished", tool_span, step, {"ok": True, "result": {"value": round(rng.uniform(0.1, 400), 3)},
                                                     "tool_name": tool}, took)
        s.wait(1, 3)
        s.emit("WorkflowStepFinished", step, agent, {"error": None, "status": "completed", "step_id": step_id},
               s.clock_ms - step_started)
    s.wait(1, 3)
    _finish(s, root, agent, success=True, error=None, result={"text": "bracket sized", "total_tokens": tokens})
    return s.lines


def _finish(s: _Session, root: str, agent: str, *, success: bool, error: str | None,
            result: dict[str, Any] | None) -> None:
    s.emit("AgentRunFinished", agent, root, {"agent": "MultiStepAgent", "error": error, "success": success},
           s.clock_ms)
    s.wait(1, 2)
    s.emit("RunFinished", root, None, {"error": error, "result": result, "success": success}, s.clock_ms)


def stamp(line: dict[str, Any], epoch_ms: int) -> dict[str, Any]:
    """Give a trace line its absolute time (ISO-8601 UTC with microseconds, and epoch ms)."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return {**line, "timestamp": moment.isoformat(timespec="microseconds"), "timestamp_ms": epoch_ms}


def trace_file_name(run_id: str, epoch_ms: int) -> str:
    """Upstream's trace file name: ``run_<UTC yyyymmddTHHMMSSZ>_<request_id>.jsonl``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return f"run_{moment.strftime('%Y%m%dT%H%M%SZ')}_{run_id}.jsonl"


def trace_line_text(line: dict[str, Any]) -> str:
    """One trace line as the upstream JSONL sink writes it (ASCII, newline-terminated)."""
    return json.dumps(line, ensure_ascii=True) + "\n"


@dataclass(frozen=True)
class Write:
    """One line to append to one file at a moment (seconds after the simulation starts)."""

    at_s: float
    path: str
    text: str


@dataclass(frozen=True)
class _PlannedRun:
    run_id: str
    condition_id: str
    replicate: int
    seed: int
    offset_ms: int
    model: str
    outcome: Outcome | None  # None: skipped
    lines: list[tuple[int, dict[str, Any]]]


def plan(
    *, runs: int = 12, seed: int = 0, seconds: float = 60.0, start_ms: int | None = None,
    study_id: str = STUDY_ID,
) -> list[Write]:
    """Every line the simulator will write, in the order and at the moment it writes it.

    The study has three conditions (prompt style x model) and ``runs`` runs spread over
    them. Outcomes are drawn from the seed, but a study of three or more runs always has
    a failed run, a hanging run and a skipped run, so a demo always has something to show.
    Sessions are drawn at a natural pace, then the whole schedule (timestamps and
    durations included) is scaled so that the last line is written at 85% of ``seconds``.
    Several machines of a lab each simulate a study of their own (``study_id``).
    """
    rng = random.Random(seed)
    start = int(time.time() * 1000) if start_ms is None else start_ms
    policy = SeedPolicy(base_seed=seed)
    budget = RunBudget(replicates=max(1, -(-runs // len(_CONDITIONS))), parallelism=4)
    condition_ids = [hash_identifier("cond", {"study_id": study_id, **factors}) for factors in _CONDITIONS]
    planned: list[_PlannedRun] = []
    offset = 0
    for number, outcome in enumerate(_outcomes(runs, rng)):
        index = number % len(_CONDITIONS)
        replicate, condition_id = number // len(_CONDITIONS) + 1, condition_ids[index]
        run_id = run_id_for(study_id, condition_id, replicate, _AGENT, _PROBLEM)
        offset += rng.randint(150, 900)
        model = _CONDITIONS[index]["model"]
        lines = [] if outcome is None else agent_session(run_id, outcome=outcome, rng=rng, model=model)
        planned.append(_PlannedRun(
            run_id, condition_id, replicate,
            policy.derive_seed(study_id, condition_id, replicate, salt=f"{_AGENT}:{_PROBLEM}"),
            offset, model, outcome, lines,
        ))
    last = max([run.offset_ms + (run.lines[-1][0] if run.lines else 1) for run in planned] or [1])
    scale = seconds * 0.85 / (last / 1000)

    def at(natural_ms: int) -> int:
        return start + int(natural_ms * scale)

    writes: list[tuple[int, str, str]] = [(start, OWN_LINES_FILE, line_for(EventKind.STUDY_REGISTERED, ev.study_registered(
        study_id, title="Live bracket study (simulated)",
        description="Written by `studyledger simulate`: prompt framing x model on a bracket-sizing task.",
        seed_policy=policy, run_budget=budget, at=_iso(start))))]
    writes += [(start, OWN_LINES_FILE, line_for(EventKind.CONDITION_REGISTERED, ev.condition_registered(
        study_id, condition_id, factors=dict(factors), admissible=True)))
        for factors, condition_id in zip(_CONDITIONS, condition_ids, strict=True)]
    for run in planned:
        begin = at(run.offset_ms)
        writes.append((begin, OWN_LINES_FILE, line_for(EventKind.RUN_REGISTERED, ev.run_registered(
            run.run_id, study_id=study_id, condition_id=run.condition_id, replicate=run.replicate,
            agent_id=_AGENT, problem_id=_PROBLEM, seed=run.seed, at=_iso(begin)))))
        if run.outcome is None:
            writes.append((begin, OWN_LINES_FILE, line_for(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(
                run.run_id, "skipped", at=_iso(begin), reason="budget: max_runs reached", study_id=study_id))))
            continue
        # The file is named when the run starts: that second is part of the name.
        path = f"{TRACES_DIR}/{trace_file_name(run.run_id, begin)}"
        for line_ms, line in run.lines:
            moment = at(run.offset_ms + line_ms)
            duration = line["duration_ms"]
            scaled = {**line, "duration_ms": None if duration is None else int(duration * scale)}
            if line["event_type"] == "RunStarted":
                scaled["attributes"] = {**line["attributes"], "trace_path": path}
            writes.append((moment, path, trace_line_text(stamp(scaled, moment))))
    # A stable sort keeps each file's lines in the order they were produced.
    writes.sort(key=lambda item: item[0])
    return [Write(at_s=(moment - start) / 1000, path=path, text=text) for moment, path, text in writes]


def _outcomes(runs: int, rng: random.Random) -> list[Outcome | None]:
    """Outcome of each run (``None`` = skipped): mostly successes, a few of each failure."""
    weights = {Outcome.SUCCESS: 7, Outcome.TOOL_FAILURE: 1, Outcome.MODEL_ERROR: 1}
    chosen: list[Outcome | None] = list(rng.choices(list(weights), weights=list(weights.values()), k=runs))
    if runs >= 3:
        # Guarantee the three cases a demo must show, at seeded positions.
        spots = rng.sample(range(runs), 3)
        chosen[spots[0]] = Outcome.HANG
        chosen[spots[1]] = Outcome.TOOL_FAILURE
        chosen[spots[2]] = None
    return chosen


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="microseconds")


@dataclass
class SimulationStats:
    """What a simulation wrote so far (read by the demo for its summary)."""

    lines: int = 0
    files: int = 0


class Simulator:
    """Writes a planned study into ``folder`` in real time until done or told to stop.

    Args:
        folder: The drop folder (created if missing).
        runs: Number of runs in the study.
        seconds: How long the study takes to unfold.
        seed: Everything written is a function of the seed (and the start time).
        stop: Set it to stop writing; :meth:`run` returns promptly.
        start_ms: Epoch ms used for the timestamps in the lines (default: now).
        study_id: The study's id.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        runs: int = 12,
        seconds: float = 60.0,
        seed: int = 0,
        stop: threading.Event | None = None,
        start_ms: int | None = None,
        study_id: str = STUDY_ID,
    ) -> None:
        self.folder = Path(folder)
        self.seconds = seconds
        self.stop = stop or threading.Event()
        self.stats = SimulationStats()
        self.error: OSError | None = None
        self.writes = plan(runs=runs, seed=seed, seconds=seconds, start_ms=start_ms, study_id=study_id)

    def run(self) -> SimulationStats:
        """Write every planned line at its moment; return early when ``stop`` is set."""
        (self.folder / TRACES_DIR).mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        descriptors: dict[str, int] = {}
        try:
            for write in self.writes:
                if self.stop.wait(max(0.0, write.at_s - (time.monotonic() - began))):
                    break
                fd = descriptors.get(write.path)
                if fd is None:
                    fd = os.open(self.folder / write.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    descriptors[write.path] = fd
                    self.stats.files += 1
                # One write per line: readers never see half a line from us.
                os.write(fd, write.text.encode("ascii"))
                self.stats.lines += 1
        finally:
            for fd in descriptors.values():
                os.close(fd)
        return self.stats

    def start(self) -> threading.Thread:
        """Run in a daemon thread (the demo's way); stop it with ``self.stop.set()``.

        A folder it cannot write (missing, a file, a full disk) ends the thread and is kept
        in :attr:`error` for the starter to report, instead of a traceback from the thread.
        """
        thread = threading.Thread(target=self._run_keeping_error, name="studyledger-simulator", daemon=True)
        thread.start()
        return thread

    def _run_keeping_error(self) -> None:
        try:
            self.run()
        except OSError as exc:
            self.error = exc

