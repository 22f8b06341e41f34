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


@dataclass(frozen=True)
class _Step:
    """One workflow step of a session: a model call, then a call of its tool unless it answers."""

    id: str  # "step-N", or "answer" for the last
    span: str
    call: str  # the model call's span
    started_ms: int
    tool: str


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
    root, agent = _start_run(s, prompt, trace_path)
    tools = list(_TOOLS)
    rng.shuffle(tools)
    steps = rng.randint(1, 3)
    tokens = 0
    for number in range(steps + 1):
        final = number == steps
        # A failing outcome strikes in the last step before the answer.
        failure = outcome if number == steps - 1 else None
        step = _Step("answer" if final else f"step-{number + 1}", s.span(), s.span(), s.clock_ms,
                     tools[number % len(tools)])
        _ask_model(s, step, agent, prompt, model)
        if outcome is Outcome.HANG:
            return s.lines
        latency = s.wait(180, 1400)
        if failure is Outcome.MODEL_ERROR:
            _model_fails(s, step, root, agent, model, latency)
            return s.lines
        tokens += _model_answers(s, step, model, latency, final=final)
        if final:
            _conclude(s, step, agent)
            break
        if not _call_tool(s, step, root, agent, failure):
            return s.lines
    s.wait(1, 3)
    _finish(s, root, agent, success=True, error=None, result={"text": "bracket sized", "total_tokens": tokens})
    return s.lines


def _start_run(s: _Session, prompt: str, trace_path: str | None) -> tuple[str, str]:
    """Emit the run's and its agent's start; return their spans (root, agent)."""
    root, agent = s.span(), s.span()
    start_attrs: dict[str, Any] = {
        "agent": "MultiStepAgent", "dependency_keys": [], "input": {"prompt": prompt},
        "request_id": s.run_id,
    }
    s.emit("RunStarted", root, None, {**start_attrs, "trace_path": trace_path} if trace_path else start_attrs)
    s.wait(1, 3)
    s.emit("AgentRunStarted", agent, root, start_attrs)
    return root, agent


def _ask_model(s: _Session, step: _Step, agent: str, prompt: str, model: str) -> None:
    """Start the step and its model call."""
    s.wait(1, 5)
    s.emit("WorkflowStepStarted", step.span, agent, {"dependencies": [], "step_id": step.id, "step_type": "ModelStep"})
    s.wait(1, 5)
    messages = [{"role": "system", "content": "You are a design agent."}, {"role": "user", "content": prompt}]
    s.emit("ModelCallStarted", step.call, step.span, {
        "agent": "MultiStepAgent", "message_count": len(messages), "message_source": "prompt",
        "messages": messages, "model": model, "params": {"temperature": 0.0}, "phase": step.id,
        "step_id": step.id,
    })


def _model_fails(s: _Session, step: _Step, root: str, agent: str, model: str, latency: int) -> None:
    """The provider refuses the model call, which ends the run with an error."""
    s.emit("ModelCallFailed", step.call, step.span, {"error": "HTTP 429 rate limited", "model": model,
                                                     "provider": "demo"}, latency)
    s.wait(1, 3)
    _finish(s, root, agent, success=False, error="ModelCallError: HTTP 429 rate limited", result=None)


def _model_answers(s: _Session, step: _Step, model: str, latency: int, *, final: bool) -> int:
    """The model call's response: the answer in the final step, else a call of the step's
    tool. Returns the tokens it used."""
    rng = s.rng
    usage = {"prompt_tokens": rng.randint(30, 900), "completion_tokens": rng.randint(10, 300)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    text = (json.dumps({"answer": f"{rng.choice([5, 6, 8])} mm S275 steel"}) if final
            else json.dumps({"tool_name": step.tool, "tool_input": _TOOLS[step.tool]}))
    s.emit("ModelCallFinished", step.call, step.span, {
        "finish_reason": "stop", "latency_ms": latency, "model": model, "provider": "demo",
        "response": {"text": text}, "usage": usage,
    }, latency)
    return usage["total_tokens"]


def _conclude(s: _Session, step: _Step, agent: str) -> None:
    """The agent takes the answer and stops: the final step ends."""
    s.wait(1, 3)
    s.emit("ContinuationDecision", step.span, agent, {"continue": False, "reason": "answer complete"})
    s.wait(1, 3)
    _end_step(s, step, agent)


def _call_tool(s: _Session, step: _Step, root: str, agent: str, failure: Outcome | None) -> bool:
    """Call the step's tool, then end the step; whether the run goes on (a crash stops the
    file mid-call, a failed tool ends the run)."""
    tool = step.tool
    tool_span = _start_tool_call(s, step, agent)
    if failure is Outcome.CRASH:
        return False
    took = s.wait(5, 250)
    if failure is Outcome.TOOL_FAILURE:
        s.emit("ToolCallFailed", tool_span, step.span, {"error": f"{tool}: upstream service unavailable",
                                                        "ok": False, "tool_name": tool}, took)
        s.wait(1, 3)
        _end_step(s, step, agent, error="tool failed", status="failed")
        s.wait(1, 3)
        _finish(s, root, agent, success=False, error=None, result=None)
        return False
    result = {"value": round(s.rng.uniform(0.1, 400), 3)}
    s.emit("ToolCallFinished", tool_span, step.span, {"ok": True, "result": result, "tool_name": tool}, took)
    s.wait(1, 3)
    _end_step(s, step, agent)
    return True


def _start_tool_call(s: _Session, step: _Step, agent: str) -> str:
    """The agent selects the step's tool and calls it; returns the tool call's span."""
    tool = step.tool
    s.wait(1, 3)
    s.emit("ToolSelectionDecision", step.span, agent, {
        "parsed_tool_call": {"tool_name": tool, "tool_input": _TOOLS[tool]}, "reason": "need data",
        "source": "model", "tool_name": tool,
    })
    tool_span = s.span()
    s.wait(1, 3)
    s.emit("ToolCallStarted", tool_span, step.span, {"dependency_keys": [], "request_id": s.run_id,
                                                     "tool_input": _TOOLS[tool], "tool_name": tool})
    return tool_span


def _end_step(s: _Session, step: _Step, agent: str, *, error: str | None = None, status: str = "completed") -> None:
    s.emit("WorkflowStepFinished", step.span, agent, {"error": error, "status": status, "step_id": step.id},
           s.clock_ms - step.started_ms)


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
    condition_ids = [hash_identifier("cond", {"study_id": study_id, **factors}) for factors in _CONDITIONS]
    planned = _draw_runs(runs, rng, study_id, condition_ids, policy)
    timeline = _Timeline(start, _scale(planned, seconds))
    writes = _study_writes(start, runs, study_id, condition_ids, policy)
    for run in planned:
        writes += _run_writes(run, timeline, study_id)
    # A stable sort keeps each file's lines in the order they were produced.
    writes.sort(key=lambda item: item[0])
    return [Write(at_s=(moment - start) / 1000, path=path, text=text) for moment, path, text in writes]


_Timed = tuple[int, str, str]
"""A line to write: (epoch ms, path in the drop folder, text)."""


@dataclass(frozen=True)
class _Timeline:
    """When a moment of the natural-pace schedule (ms after the study starts) is written."""

    start_ms: int
    scale: float

    def at(self, natural_ms: int) -> int:
        return self.start_ms + int(natural_ms * self.scale)


def _draw_runs(runs: int, rng: random.Random, study_id: str, condition_ids: list[str],
               policy: SeedPolicy) -> list[_PlannedRun]:
    """Each run's condition, seed, outcome and session, spread over the conditions in
    turn and started a natural pause after the one before."""
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
    return planned


def _scale(planned: list[_PlannedRun], seconds: float) -> float:
    """The factor that puts the last line of the natural-pace schedule at 85% of ``seconds``."""
    last = max([run.offset_ms + (run.lines[-1][0] if run.lines else 1) for run in planned] or [1])
    return seconds * 0.85 / (last / 1000)


def _study_writes(start: int, runs: int, study_id: str, condition_ids: list[str], policy: SeedPolicy) -> list[_Timed]:
    """The study's and its conditions' own lines, written as the simulation starts."""
    budget = RunBudget(replicates=max(1, -(-runs // len(_CONDITIONS))), parallelism=4)
    writes: list[_Timed] = [(start, OWN_LINES_FILE, line_for(EventKind.STUDY_REGISTERED, ev.study_registered(
        study_id, title="Live bracket study (simulated)",
        description="Written by `studyledger simulate`: prompt framing x model on a bracket-sizing task.",
        seed_policy=policy, run_budget=budget, at=_iso(start))))]
    writes += [(start, OWN_LINES_FILE, line_for(EventKind.CONDITION_REGISTERED, ev.condition_registered(
        study_id, condition_id, factors=dict(factors), admissible=True)))
        for factors, condition_id in zip(_CONDITIONS, condition_ids, strict=True)]
    return writes


def _run_writes(run: _PlannedRun, timeline: _Timeline, study_id: str) -> list[_Timed]:
    """A run's own line as it starts, then its skip or its trace file's lines."""
    begin = timeline.at(run.offset_ms)
    writes: list[_Timed] = [(begin, OWN_LINES_FILE, line_for(EventKind.RUN_REGISTERED, ev.run_registered(
        run.run_id, study_id=study_id, condition_id=run.condition_id, replicate=run.replicate,
        agent_id=_AGENT, problem_id=_PROBLEM, seed=run.seed, at=_iso(begin))))]
    if run.outcome is None:
        writes.append((begin, OWN_LINES_FILE, line_for(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(
            run.run_id, "skipped", at=_iso(begin), reason="budget: max_runs reached", study_id=study_id))))
        return writes
    # The file is named when the run starts: that second is part of the name.
    path = f"{TRACES_DIR}/{trace_file_name(run.run_id, begin)}"
    for line_ms, line in run.lines:
        moment = timeline.at(run.offset_ms + line_ms)
        duration = line["duration_ms"]
        scaled = {**line, "duration_ms": None if duration is None else int(duration * timeline.scale)}
        if line["event_type"] == "RunStarted":
            scaled["attributes"] = {**line["attributes"], "trace_path": path}
        writes.append((moment, path, trace_line_text(stamp(scaled, moment))))
    return writes


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

