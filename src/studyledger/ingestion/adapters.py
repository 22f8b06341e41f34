"""Format adapters: pure functions from one parsed JSON line to ledger events.

INTERFACE (shared by the tailer, the study-folder importer and the JSONL export):

    events_from_line(obj, *, source, adapter=None) -> list[NewEvent]

* ``obj`` is the parsed line (any JSON value; NaN/Infinity already parsed to floats).
* ``source`` is the event source string, ``file:PATH:LINE:OFFSET``.
* ``adapter`` is a user's :data:`LineAdapter` for a format studyledger does not know,
  tried first (``ingest``/``watch --adapter module:function``).
* Returns the events the line states, in order (may be several: a checkpoint line gives a
  run registration, status changes, observations, evaluations, provenance).
* Raises :class:`LineRejected` with a human reason when the line cannot be used (unknown
  shape, invalid values). The caller turns that into a ``line_rejected`` event.

The adapter is chosen by the line's shape (see ``detect_format``). Every mapping is listed
in docs/formats.md. Nothing but :class:`LineRejected` may escape: lines come from files
anyone can write, and one hostile line must not stop the ingestion of the others.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import InputError, LineRejected, OwnLineError, ValidationError
from ..events import (
    INT64,
    EventKind,
    NewEvent,
    canonical,
    canonical_body,
    check_body,
    evaluation_recorded,
    event_from_body,
    make_event,
    observation_recorded,
    provenance_captured,
    run_registered,
    run_status_changed,
)
from ..events import type_name as _type_name
from ..schema import (
    DEFAULT_STATUS_REASONS,
    TERMINAL_STATUSES,
    Observation,
    ObservationLevel,
    RunStatus,
    load_callable,
)
from .. import own_lines

OWN = "studyledger"
AGENTS_TRACE = "agents-trace"
EXPERIMENTS_EVIDENCE = "experiments-run-evidence"
EXPERIMENTS_CHECKPOINT = "experiments-checkpoint"
OBSERVATION_ROW = "observation-row"

RUN_EVIDENCE = "run-evidence"
"""``record_type`` of upstream's ``artifacts/runs/<run_id>/run.json`` (schema 0.1.0)."""

TRACE_KEYS = ("event_type", "run_id", "span_id", "parent_span_id", "timestamp", "timestamp_ms",
              "duration_ms", "attributes", "event_index")
"""The nine keys of a design-research-agents trace event; more are tolerated and kept."""

REASON_LIMIT = 300
"""Longest rejection reason: it is shown on one line; the raw line is kept beside it."""

TEXT_LIMIT = 200
"""Longest human summary built for a trace event: the full attributes stay in meta_json."""

_RUN_LEVEL = frozenset({"RunStarted", "RunFinished"})
_PROVENANCE_KEYS = ("captured_at", "host", "platform", "python_version", "package_versions",
                    "git_sha", "extra")


def detect_format(obj: Any) -> str:
    """Name the format a parsed line is in, from its shape alone.

    Checked in this order, so a line is never claimed by two adapters: the ``studyledger``
    key marks our own lines; ``span_id`` with ``event_type`` a trace event;
    ``record_type: "run-evidence"`` a run.json record; ``run_spec`` a checkpoint line;
    ``record_id`` an observation row.

    Returns:
        One of :data:`OWN`, :data:`AGENTS_TRACE`, :data:`EXPERIMENTS_EVIDENCE`,
        :data:`EXPERIMENTS_CHECKPOINT`, :data:`OBSERVATION_ROW`.

    Raises:
        LineRejected: the line is not an object, or matches none of the shapes.
    """
    if not isinstance(obj, dict):
        raise LineRejected(f"a line must be a JSON object, not {_type_name(obj)}")
    if own_lines.FORMAT_KEY in obj:
        return OWN
    if "span_id" in obj and "event_type" in obj:
        return AGENTS_TRACE
    if obj.get("record_type") == RUN_EVIDENCE:
        return EXPERIMENTS_EVIDENCE
    if "run_spec" in obj:
        return EXPERIMENTS_CHECKPOINT
    if "record_id" in obj:
        return OBSERVATION_ROW
    if "kind" in obj and "body" in obj:
        raise LineRejected(f"looks like a studyledger line without its version key: "
                           f'add "{own_lines.FORMAT_KEY}": {own_lines.FORMAT_VERSION}')
    keys = ", ".join(sorted(str(key)[:40] for key in obj)[:8]) or "no keys"
    raise LineRejected(f"unknown line shape (keys: {keys}): not a studyledger line, trace event, "
                       "run-evidence record, checkpoint line or observation row")


LineAdapter = Callable[[Any], "Iterable[Mapping[str, Any] | Observation] | None"]
"""A user's adapter for a line format studyledger does not know.

It is given each parsed line (any JSON value) and returns None when the line is not
its format (the built-in formats are tried next), or what the line states: each item an
:class:`~studyledger.schema.Observation` or a mapping ``{"kind": KIND, "body": {...}}`` in
studyledger's own line format (docs/own-lines.md), checked exactly as an own line is. It
raises :class:`~studyledger.errors.LineRejected` to reject a line with its own reason; any
other exception it raises rejects the line too, naming the error.
"""


def load_adapter(reference: str) -> LineAdapter:
    """The adapter a ``module:function`` reference names (upstream's way of naming user code).

    Raises:
        ValidationError: the reference is malformed, names nothing callable, or its module
            fails while it is imported (the message names the file and line).
    """
    try:
        return load_callable(reference)
    except Exception as exc:  # importing a user's module runs their code: any error can come
        where = ""
        if isinstance(exc, SyntaxError) and exc.filename:
            where = f" at {exc.filename}:{exc.lineno}"
        elif not isinstance(exc, (ImportError, AttributeError, ValueError)) and exc.__traceback__ is not None:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f" at {frame.filename}:{frame.lineno}"
        raise ValidationError(f"{reference!r} names no line adapter ({type(exc).__name__}: {exc}{where})") from None


def events_from_line(obj: Any, *, source: str, adapter: LineAdapter | None = None,
                     decoded: bool = False) -> list[NewEvent]:
    """Turn one parsed line into events (see the module docstring).

    Args:
        decoded: orjson read the line (:func:`~studyledger.ingestion.lines.decode_line`):
            bodies made of its values are encoded without a read-back check.

    Raises:
        LineRejected: the line cannot be used; nothing else escapes, since lines come from
            files anyone can write and an adapter's failure on one must not stop the others.
    """
    try:
        found = None if adapter is None else _adapted(adapter, obj, source)
        return _events(obj, source, decoded) if found is None else found
    except LineRejected as exc:
        reason = str(exc)
        if len(reason) <= REASON_LIMIT:
            raise
        # A reason quotes values from the line, and the line may be megabytes long.
        raise LineRejected(reason[: REASON_LIMIT - 3] + "...") from None
    except Exception as exc:
        raise LineRejected(f"cannot convert ({type(exc).__name__}: {exc})") from None


def _adapted(adapter: LineAdapter, obj: Any, source: str) -> list[NewEvent] | None:
    """The events a user's adapter makes of a line, each checked as an own line is."""
    name = getattr(adapter, "__qualname__", repr(adapter))
    try:
        produced = adapter(obj)
        items = None if produced is None else list(produced)
    except InputError:
        raise
    except Exception as exc:
        raise LineRejected(f"adapter {name} failed ({type(exc).__name__}: {exc})") from None
    if items is None:
        return None
    events = []
    for item in items:
        if isinstance(item, Observation):
            item = {"kind": EventKind.OBSERVATION_RECORDED.value, "body": observation_recorded(item)}
        if not isinstance(item, Mapping):
            raise LineRejected(f"adapter {name} returned {_type_name(item)}, not an event mapping or Observation")
        # Only kind and body, read as an own line is (shape checked, studyledger's own kinds
        # refused): an adapter states facts, never the ledger's own columns.
        events.extend(_own({own_lines.FORMAT_KEY: own_lines.FORMAT_VERSION, "kind": item.get("kind"),
                            "body": item.get("body")}, source, False))
    return events


def _events(obj: Any, source: str, decoded: bool) -> list[NewEvent]:
    shape = detect_format(obj)
    try:
        events = _ADAPTERS[shape](obj, source, decoded)
        for event in events:
            # Own lines are checked whole against their kind's shape as they are read. The
            # other adapters validate every field they copy, so only text that may hold
            # surrogates and provenance (copied whole) need the table's check too.
            if shape != OWN and ("\\ud" in event.body or event.kind == EventKind.PROVENANCE_CAPTURED):
                _check_storable(event)
    except LineRejected:
        raise
    except RecursionError:
        raise LineRejected("invalid values: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # Values the checks above let through but the canonical encoder refuses (an int
        # too long to print, a key that is not text): a reason, never a crash.
        raise LineRejected(f"invalid values: {exc}") from None
    return events


# -- studyledger's own lines -----------------------------------------------------------


def _own(obj: dict[str, Any], source: str, decoded: bool) -> list[NewEvent]:
    try:
        return [own_lines.event_from_line(obj, source=source, decoded=decoded)]
    except OwnLineError as exc:
        raise LineRejected(str(exc)) from None


# -- design-research-agents trace events -----------------------------------------------


def trace_level(event_type: str) -> str:
    """The observation level of a trace event type.

    Run boundaries are ``run``; tool events (``ToolCall*``, ``Tool*Observed``,
    ``ToolSelectionDecision``) are ``tool-call``; everything else, including event types
    added upstream later, is ``step``: the safest level for an event we cannot place.
    """
    if event_type in _RUN_LEVEL:
        return ObservationLevel.RUN.value
    if event_type.startswith("Tool"):
        return ObservationLevel.TOOL_CALL.value
    return ObservationLevel.STEP.value


def _trace_fields(obj: dict[str, Any]) -> tuple[Any, ...]:
    """A trace event's nine fields, each checked: ``(event_type, run_id, span_id, parent_span_id,
    timestamp, timestamp_ms, duration_ms, event_index, attributes)``.

    The common line, every field of its exact type, is checked in one expression; any other
    goes through the field checks one by one, which word the reason (and accept the same).

    Raises:
        LineRejected: a field is missing or not what it must be.
    """
    get = obj.get
    event_type, run_id, span_id, timestamp, event_index, timestamp_ms, duration_ms = (
        get("event_type"), get("run_id"), get("span_id"), get("timestamp"), get("event_index"),
        get("timestamp_ms"), get("duration_ms"))
    parent, attributes = get("parent_span_id"), get("attributes")
    if (type(event_type) is str and event_type and type(run_id) is str and run_id and type(span_id) is str
            and span_id and type(timestamp) is str and timestamp and (parent is None or type(parent) is str)
            and type(event_index) is int and INT64[0] <= event_index <= INT64[1]
            and (timestamp_ms is None or (type(timestamp_ms) is int and INT64[0] <= timestamp_ms <= INT64[1]))
            and (duration_ms is None or type(duration_ms) is float or type(duration_ms) is int)
            and type(attributes) is dict and "parent_span_id" in obj
            and "timestamp_ms" in obj and "duration_ms" in obj):
        try:
            datetime.fromisoformat(timestamp)
        except ValueError:
            pass  # the field checks word the reason
        else:
            return event_type, run_id, span_id, parent, timestamp, timestamp_ms, duration_ms, event_index, attributes
    return _checked_trace_fields(obj)


def _checked_trace_fields(obj: dict[str, Any]) -> tuple[Any, ...]:
    """:func:`_trace_fields`, each field checked on its own (the reason names the first wrong one)."""
    what = "trace event"
    missing = [key for key in TRACE_KEYS if key not in obj]
    if missing:
        raise LineRejected(f"{what} is missing {', '.join(missing)}")
    fields = (_text(obj, "event_type", what, required=True), _text(obj, "run_id", what, required=True),
              _text(obj, "span_id", what, required=True), _text(obj, "parent_span_id", what),
              _time(obj, "timestamp", what, required=True), _integer(obj, "timestamp_ms", what),
              _number(obj, "duration_ms", what), _integer(obj, "event_index", what, required=True),
              obj["attributes"])
    if not isinstance(fields[-1], dict):
        raise LineRejected(f"{what} 'attributes' must be an object, not {_type_name(fields[-1])}")
    return fields


def _trace(obj: dict[str, Any], source: str, decoded: bool) -> list[NewEvent]:
    event_type, run_id, span_id, parent, timestamp, timestamp_ms, duration_ms, event_index, attributes = (
        _trace_fields(obj))
    meta: dict[str, Any] = {
        "attributes": attributes,
        "span_id": span_id,
        "parent_span_id": parent,
        "duration_ms": duration_ms,
        "event_index": event_index,
        "timestamp_ms": timestamp_ms,
    }
    if len(obj) > len(TRACE_KEYS):  # every trace key is there, so more keys are extra ones
        meta["extra_keys"] = {key: value for key, value in obj.items() if key not in TRACE_KEYS}
    level = trace_level(event_type)
    tool_name = _optional_text(attributes.get("tool_name"))
    step_id = _optional_text(attributes.get("step_id"))
    # hash_identifier("trace", identity, length=24), written out. Its values are exact text
    # and 64-bit integers whichever parser read the line: they read back as themselves.
    identity, _ = canonical({"run_id": run_id, "span_id": span_id, "event_type": event_type,
                             "event_index": event_index, "timestamp": timestamp}, decoded=True)
    record_id = "trace-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]
    # observation_recorded() of these fields, written out: each is already what it makes of
    # it (text checked, the summary and actor never empty, the level one of the levels).
    observation = {
        "timestamp": timestamp,
        "record_id": record_id,
        "text": _trace_summary(event_type, attributes, duration_ms),
        "session_id": run_id,
        "actor_id": _trace_actor(level, event_type, attributes),
        "event_type": event_type,
        "meta_json": meta,
        "level": level,
        "study_id": None,
        "run_id": run_id,
        "condition_id": None,
        "trial_id": None,
        "step_id": step_id,
        "tool_name": tool_name,
        "evaluation_id": None,
    }
    text, plain = canonical(observation, decoded=decoded)
    # Every field is of its type as checked above; text holding an escaped surrogate is
    # checked whole by _events before the event is kept.
    observed = event_from_body(EventKind.OBSERVATION_RECORDED.value, text, observation, source=source,
                               plain=plain, misfits=())
    if event_type == "RunStarted":
        registered = run_registered(run_id, study_id=None, condition_id=None, replicate=None,
                                    agent_id=None, problem_id=None, seed=None)
        running = run_status_changed(run_id, RunStatus.RUNNING, at=timestamp)
        return [make_event(EventKind.RUN_REGISTERED, registered, source=source),
                make_event(EventKind.RUN_STATUS_CHANGED, running, source=source), observed]
    if event_type == "RunFinished":
        success = attributes.get("success")
        if not isinstance(success, bool):
            raise LineRejected(f"RunFinished 'attributes.success' must be true or false, "
                               f"not {_type_name(success)}")
        error = _error_text(attributes.get("error"))
        status = RunStatus.SUCCESS if success else RunStatus.FAILED
        finished = run_status_changed(run_id, status, at=timestamp,
                                      reason=f"agent trace: RunFinished success={str(success).lower()}",
                                      error=error)
        return [observed, make_event(EventKind.RUN_STATUS_CHANGED, finished, source=source)]
    return [observed]


def _trace_actor(level: str, event_type: str, attributes: dict[str, Any]) -> str:
    """Who acted: the tool for tool events, the model for model events, else the agent."""
    candidates: tuple[str, ...]
    if level == ObservationLevel.TOOL_CALL:
        candidates = ("tool_name", "agent")
    elif event_type.startswith("Model"):
        candidates = ("model", "agent")
    else:
        candidates = ("agent",)
    for key in candidates:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return "agent"


def _trace_summary(event_type: str, attributes: dict[str, Any], duration_ms: float | None) -> str:
    """A one-line human text: what happened, to what, how it ended, how long it took."""
    parts = [event_type]
    for key in ("tool_name", "model", "step_id"):
        value = attributes.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
            break
    success = attributes.get("success", attributes.get("ok"))
    if isinstance(success, bool):
        parts.append("ok" if success else "failed")
    error = attributes.get("error")
    if isinstance(error, str) and error:
        parts.append(f"error: {error}")
    usage = attributes.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        parts.append(f"{usage['total_tokens']} tokens")
    if duration_ms is not None:
        parts.append(f"({duration_ms:g} ms)")
    text = " ".join(parts)
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 3] + "..."


# -- design-research-experiments run records: checkpoint lines and run.json ------------


def _checkpoint(obj: dict[str, Any], source: str, decoded: bool) -> list[NewEvent]:
    """A ``runs.jsonl`` line (or ``checkpoints/<run_id>.json``): one finished run."""
    what = "checkpoint line"
    run_id = _text(obj, "run_id", what, required=True)
    spec = obj["run_spec"]
    if not isinstance(spec, dict):
        raise LineRejected(f"{what} 'run_spec' must be an object, not {_type_name(spec)}")
    assert run_id is not None
    spec_run = _text(spec, "run_id", "run_spec")
    if spec_run is not None and spec_run != run_id:
        raise LineRejected(f"{what} run_id {run_id!r} differs from run_spec.run_id {spec_run!r}")
    configured = _object(obj, "configured_execution_metadata", what) or _object(spec, "execution_metadata",
                                                                                "run_spec")
    record = _RunRecord(
        run_id=run_id, spec=spec, status=_status(obj, what), started_at=_time(obj, "started_at", what),
        ended_at=_time(obj, "ended_at", what), reason=_text(obj, "status_reason", what),
        error=_error_text(obj.get("error_info")), observations=_list(obj, "observations", what),
        evaluations=_list(obj, "evaluator_outputs", what), evaluations_key="evaluator_outputs",
        provenance=_provenance_info(obj.get("provenance_info"), what),
        latency=_number(obj, "latency", what), configured=configured,
        observed=_object(obj, "observed_execution_metadata", what),
        metrics=_object(obj, "metrics", what), outputs=obj.get("outputs"),
        trace_refs=_list(obj, "trace_refs", what), artifact_refs=_list(obj, "artifact_refs", what))
    return record.events(source)


def _evidence(obj: dict[str, Any], source: str, decoded: bool) -> list[NewEvent]:
    """A run-evidence record (``artifacts/runs/<run_id>/run.json``): one run in any state.

    Upstream rewrites it at each step (pending before the study starts, running, then the
    outcome), so it holds every planned run even when the process died mid-study. A
    finished one states exactly the events its checkpoint line states.
    """
    what = "run.json"
    run_id = _text(obj, "run_id", what, required=True)
    assert run_id is not None
    configured = _object(obj, "configured", what)
    observed = _object(obj, "observed", what)
    timing = _object(obj, "timing", what)
    spec = {**configured, "study_id": _text(obj, "study_id", what),
            "condition_id": _text(obj, "condition_id", what)}
    record = _RunRecord(
        run_id=run_id, spec=spec, status=_status(obj, what), started_at=_time(timing, "started_at", "timing"),
        ended_at=_time(timing, "ended_at", "timing"), reason=_text(obj, "status_reason", what),
        error=_error_text(obj.get("error")), observations=[],
        evaluations=_list(observed, "evaluations", "observed"), evaluations_key="observed.evaluations",
        provenance=_provenance_info(observed.get("provenance"), "observed"),
        latency=_number(timing, "latency_s", "timing"),
        configured=_object(configured, "execution_metadata", "configured"),
        observed=_object(observed, "execution_metadata", "observed"),
        metrics=_object(observed, "metrics", "observed"), outputs=observed.get("outputs"),
        trace_refs=_list(observed, "trace_refs", "observed"),
        artifact_refs=_list(observed, "artifact_refs", "observed"))
    return record.events(source)


@dataclass(slots=True)
class _RunRecord:
    """What a checkpoint line and a run.json both say about one run, read alike.

    The two files hold the same facts under different keys; building the events from one
    shape makes a finished run's run.json and its checkpoint line the same events (the
    same ids), so reading both adds nothing twice.
    """

    run_id: str
    spec: dict[str, Any]
    status: RunStatus
    started_at: str | None
    ended_at: str | None
    reason: str | None
    error: str | None
    observations: list[Any]
    evaluations: list[Any]
    evaluations_key: str
    provenance: dict[str, Any]
    latency: float | None
    configured: dict[str, Any]
    observed: dict[str, Any]
    metrics: dict[str, Any]
    outputs: Any
    trace_refs: list[Any]
    artifact_refs: list[Any]

    def events(self, source: str) -> list[NewEvent]:
        """Registration, start, observations, evaluations, provenance, outcome, in that order.

        A pending run is only registered. The outcome's reason is upstream's default for
        its status when the line gives none (a checkpoint line's success has null, its
        run.json says ``completed``), and it carries the runner's result.
        """
        run_id, status = self.run_id, self.status
        study_id = _text(self.spec, "study_id", "run_spec")

        def event(kind: EventKind, body: dict[str, Any]) -> NewEvent:
            return make_event(kind, body, source=source)

        events = [event(EventKind.RUN_REGISTERED, run_registration(run_id, self.spec))]
        if self.started_at is not None and status != RunStatus.PENDING:
            running = run_status_changed(run_id, RunStatus.RUNNING, at=self.started_at, study_id=study_id)
            events.append(event(EventKind.RUN_STATUS_CHANGED, running))
        for index, row in enumerate(self.observations):
            events.append(event(EventKind.OBSERVATION_RECORDED, _observation_body(row, f"observations[{index}]")))
        for index, row in enumerate(self.evaluations):
            events.append(event(EventKind.EVALUATION_RECORDED,
                                evaluation_body(row, f"{self.evaluations_key}[{index}]", run_id=run_id,
                                                study_id=study_id)))
        if self.provenance:
            events.append(event(EventKind.PROVENANCE_CAPTURED,
                                provenance_captured(run_id, provenance_shape(self.provenance), study_id=study_id)))
        if status in TERMINAL_STATUSES:
            result = {
                "started_at": self.started_at,
                "latency_s": self.latency,
                "metrics": self.metrics,
                "outputs": self.outputs,
                "configured_execution_metadata": self.configured,
                "observed_execution_metadata": self.observed,
                "trace_refs": self.trace_refs,
                "artifact_refs": self.artifact_refs,
                "provenance": self.provenance,
            }
            final = run_status_changed(run_id, status, at=self.ended_at,
                                       reason=self.reason or DEFAULT_STATUS_REASONS[status], error=self.error,
                                       study_id=study_id, result=result)
            events.append(event(EventKind.RUN_STATUS_CHANGED, final))
        return events


def _provenance_info(value: Any, what: str) -> dict[str, Any]:
    """Upstream's provenance_info with ``execution_metadata`` decoded, as run.json holds it.

    The runner stores that field as a JSON string in the checkpoint line and run.json
    decodes it into an object (``evidence._normalize_provenance``); decoding it here makes
    both sources state one provenance fact.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LineRejected(f"{what} 'provenance_info' must be an object, not {_type_name(value)}")
    metadata = value.get("execution_metadata")
    if isinstance(metadata, str):
        try:
            decoded = json.loads(metadata)
        except ValueError:
            return value
        if isinstance(decoded, dict):
            return {**value, "execution_metadata": decoded}
    return value


def run_registration(run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The ``run_registered`` body an upstream ``run_spec`` states.

    The registration carries no time (``at`` is null) so that every source holding the same
    spec (``runs.jsonl``, a run's ``run.json``) states the same fact, which is one event.
    The agent is ``execution_metadata.agent_id`` (what actually ran) before
    ``agent_spec_ref`` (what was asked for).

    Raises:
        LineRejected: a field has the wrong type.
    """
    what = "run_spec"
    metadata = spec.get("execution_metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise LineRejected(f"run_spec 'execution_metadata' must be an object, not {_type_name(metadata)}")
    metadata = metadata or {}
    agent_id = _text(metadata, "agent_id", "execution_metadata") or _text(spec, "agent_spec_ref", what)
    problem_id = _text(spec, "problem_id", what) or _text(metadata, "problem_id", "execution_metadata")
    return run_registered(
        run_id,
        study_id=_text(spec, "study_id", what),
        condition_id=_text(spec, "condition_id", what),
        replicate=_integer(spec, "replicate", what),
        agent_id=agent_id,
        problem_id=problem_id,
        seed=_integer(spec, "seed", what),
    )


def provenance_shape(info: dict[str, Any]) -> dict[str, Any]:
    """Upstream ``provenance_info`` in ``ProvenanceMetadata``'s shape.

    Keys that ``ProvenanceMetadata`` does not have move into its ``extra`` (beside any
    ``extra`` already there), so the projection's columns show the standard keys and
    nothing stated is dropped.
    """
    shaped = {key: info[key] for key in _PROVENANCE_KEYS if key in info}
    rest = {key: value for key, value in info.items() if key not in _PROVENANCE_KEYS}
    if rest:
        extra = shaped.get("extra")
        if extra is None:
            shaped["extra"] = rest
        elif isinstance(extra, dict):
            shaped["extra"] = {**rest, **extra}
        else:
            shaped["extra"] = {**rest, "extra": extra}
    return shaped


def evaluation_body(
    row: Any, what: str, *, run_id: str | None, study_id: str | None
) -> dict[str, Any]:
    """The ``evaluation_recorded`` body of one evaluator output row.

    ``notes_json`` may be an object or, as in CSV, a JSON string holding one.

    Args:
        row: The row (evaluator_id, metric_name, metric_value, metric_unit,
            aggregation_level, notes_json, optionally run_id).
        what: Where the row is, for reasons (``evaluator_outputs[2]``).
        run_id: The run it belongs to when the row does not say.
        study_id: The study of that run.

    Raises:
        LineRejected: the row is not an object or a field has the wrong type.
    """
    if not isinstance(row, dict):
        raise LineRejected(f"{what} must be an object, not {_type_name(row)}")
    value = row.get("metric_value")
    # Booleans are metric values upstream writes (a feasibility check): kept as they are.
    if not isinstance(value, (int, float, str, type(None))):
        raise LineRejected(f"{what} 'metric_value' must be a number, boolean, text or null, "
                           f"not {_type_name(value)}")
    notes = row.get("notes_json")
    if isinstance(notes, str) and notes.strip():
        try:
            notes = json.loads(notes)
        except ValueError:
            pass  # free text stays text: it is still what the evaluator wrote
    return evaluation_recorded(
        _text(row, "run_id", what) or run_id,
        evaluator_id=_text(row, "evaluator_id", what),
        metric_name=_text(row, "metric_name", what),
        metric_value=value,
        metric_unit=_text(row, "metric_unit", what),
        aggregation_level=_text(row, "aggregation_level", what),
        notes_json=notes,
        study_id=study_id,
    )


# -- observation rows ------------------------------------------------------------------


_OBSERVATION_TEXT = ("timestamp", "record_id", "text", "session_id", "actor_id", "event_type",
                     "level", "study_id", "run_id", "condition_id", "trial_id", "step_id",
                     "tool_name", "evaluation_id")


def _observation_body(row: Any, what: str) -> dict[str, Any]:
    """Validate an observation row and build its body, the same wherever the row came from."""
    if not isinstance(row, dict):
        raise LineRejected(f"{what} must be an object, not {_type_name(row)}")
    for key in _OBSERVATION_TEXT:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise LineRejected(f"{what} '{key}' must be text or null, not {_type_name(value)}")
    _time(row, "timestamp", what)
    meta = row.get("meta_json")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except ValueError as exc:
            raise LineRejected(f"{what} 'meta_json' is a string but not JSON: {exc}") from None
    if meta is not None and not isinstance(meta, dict):
        raise LineRejected(f"{what} 'meta_json' must be an object (or a JSON string of one), "
                           f"not {_type_name(meta)}")
    try:
        return observation_recorded({**row, "meta_json": meta})
    except ValueError as exc:
        raise LineRejected(f"{what}: {exc}") from None


def _observation(obj: dict[str, Any], source: str, decoded: bool) -> list[NewEvent]:
    body = _observation_body(obj, "observation row")
    return [make_event(EventKind.OBSERVATION_RECORDED, body, source=source)]


_ADAPTERS: dict[str, Callable[[dict[str, Any], str, bool], list[NewEvent]]] = {
    OWN: _own,
    AGENTS_TRACE: _trace,
    EXPERIMENTS_EVIDENCE: _evidence,
    EXPERIMENTS_CHECKPOINT: _checkpoint,
    OBSERVATION_ROW: _observation,
}


# -- field checks ----------------------------------------------------------------------


def _text(obj: dict[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None or (required and value == ""):
        if required:
            raise LineRejected(f"{what} '{key}' is required")
        return None
    if not isinstance(value, str):
        raise LineRejected(f"{what} '{key}' must be text, not {_type_name(value)}")
    return value


def _time(obj: dict[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    """An ISO-8601 time, kept as written: ledgers order and filter by these strings."""
    value = _text(obj, key, what, required=required)
    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise LineRejected(f"{what} '{key}' {value[:40]!r} is not an ISO-8601 time") from None
    return value


def _integer(obj: dict[str, Any], key: str, what: str, *, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise LineRejected(f"{what} '{key}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineRejected(f"{what} '{key}' must be an integer, not {_type_name(value)}")
    if not INT64[0] <= value <= INT64[1]:
        raise LineRejected(f"{what} '{key}' is out of the 64-bit integer range")
    return value


def _number(obj: dict[str, Any], key: str, what: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LineRejected(f"{what} '{key}' must be a number, not {_type_name(value)}")
    return value


def _object(obj: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """An object field; null or absent reads as empty."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LineRejected(f"{what} '{key}' must be an object, not {_type_name(value)}")
    return value


def _list(obj: dict[str, Any], key: str, what: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise LineRejected(f"{what} '{key}' must be a list, not {_type_name(value)}")
    return value


def _status(obj: dict[str, Any], what: str) -> RunStatus:
    value = _text(obj, "status", what, required=True) or ""
    try:
        return RunStatus(value)
    except ValueError:
        raise LineRejected(f"{what} status {value!r} is not one of "
                           f"{', '.join(s.value for s in RunStatus)}") from None


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_text(value: Any) -> str | None:
    """An error as text: structured errors (``error_info`` objects) as canonical JSON."""
    if value is None or isinstance(value, str):
        return value
    return canonical_body(value)


def _check_storable(event: NewEvent) -> None:
    """Refuse an event whose body is not what its kind holds (events.BODY_SHAPES)."""
    try:
        check_body(event.kind, json.loads(event.body), event.body)
    except ValidationError as exc:
        raise LineRejected(str(exc)) from None
