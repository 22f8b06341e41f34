"""Event kinds, their canonical bodies, and event identity.

An event is a ``kind`` plus a canonical JSON ``body``. The body holds every fact the event
states, including the ids it concerns and the moment it occurred, so the event id
(``hash_identifier("evt", {"kind": kind, "body": body}, length=32)``) names the fact
itself: the same fact read from two sources, or read twice, is one event.

Recording metadata (when it was recorded, where it came from) lives beside the body in the
store, not in it, so it never changes an id. See ``docs/events.md`` for every body.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .errors import ValidationError
from .schema import (
    Observation,
    ObservationLevel,
    ProvenanceMetadata,
    RunBudget,
    RunStatus,
    SeedPolicy,
    from_canonical,
    stable_json_dumps,
    to_jsonable,
)

EVENT_ID_LENGTH = 32

TEXT_FIELDS = frozenset({
    "study_id", "run_id", "condition_id", "agent_id", "problem_id", "at", "timestamp", "status",
    "reason", "error", "title", "description", "level", "event_type", "tool_name", "step_id",
    "record_id", "evaluator_id", "metric_name", "metric_unit", "aggregation_level", "file",
})
"""Top-level body fields that are text or null in every kind (projections keep them in TEXT columns)."""

INT_FIELDS = frozenset({"replicate", "seed", "line", "offset"})
"""Top-level body fields that are 64-bit integers or null in every kind."""

TIME_FIELDS = frozenset({"at", "timestamp"})
"""Top-level body fields that are ISO-8601 times: ledgers order and compare by them."""

INT64 = (-(2**63), 2**63 - 1)

REQUIRED_TEXT: dict[str, tuple[str, ...]] = {
    "study_registered": ("study_id",),
    "run_registered": ("run_id",),
    "run_status_changed": ("run_id", "status"),
    "provenance_captured": ("run_id",),
    "condition_registered": ("study_id", "condition_id"),
}
"""Fields a kind's body must have as non-empty text: the ids its projection rows are keyed by."""
_TYPED_FIELDS = TEXT_FIELDS | INT_FIELDS


def misfit_fields(body: dict[str, Any]) -> list[str]:
    """Top-level fields whose value has the wrong type for its name (see TEXT/INT_FIELDS), sorted."""
    wrong = []
    for key in _TYPED_FIELDS.intersection(body):
        value = body[key]
        if value is None:
            continue
        if key in TEXT_FIELDS:
            if not isinstance(value, str):
                wrong.append(key)
        elif isinstance(value, bool) or not isinstance(value, int) or not INT64[0] <= value <= INT64[1]:
            wrong.append(key)
    return sorted(wrong)


class EventKind(StrEnum):
    """What an event states. Values are stored in the ``kind`` column."""

    STUDY_REGISTERED = "study_registered"
    RUN_REGISTERED = "run_registered"
    RUN_STATUS_CHANGED = "run_status_changed"
    PROVENANCE_CAPTURED = "provenance_captured"
    OBSERVATION_RECORDED = "observation_recorded"
    EVALUATION_RECORDED = "evaluation_recorded"
    CONDITION_REGISTERED = "condition_registered"
    LINE_REJECTED = "line_rejected"
    AUDIT_RECORDED = "audit_recorded"


# Built once: json.dumps with non-default options builds a new encoder on every call, which
# is measurable at ingest rates.
_CANONICAL_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
).encode


MAX_DEPTH = 500
"""Deepest nesting a body may have. SQLite's JSON functions refuse documents nested deeper
than 2,000 levels (verify and the observation view read bodies with them), and whether
Python's encoder manages a given depth depends on its version: one fixed limit keeps what is
accepted the same everywhere."""


def canonical_body(body: Any) -> str:
    """Return the canonical JSON text of a body.

    Bodies parsed from JSON (string keys, plain values) take the C encoder directly; any
    value it refuses (non-finite floats, sets, paths, enums as keys) goes through the
    seed-compatible :func:`stable_json_dumps`, which produces the same text for every
    value both accept.

    Raises:
        ValidationError: the body is nested deeper than :data:`MAX_DEPTH`.
    """
    try:
        try:
            text = _CANONICAL_ENCODE(body)
        except (TypeError, ValueError):
            text = stable_json_dumps(body)
    except RecursionError:
        raise ValidationError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    # Counting brackets is cheap and never below the depth, so only a body with many of
    # them is walked.
    if text.count("{") + text.count("[") > MAX_DEPTH and depth(body) > MAX_DEPTH:
        raise ValidationError(f"nested too deeply (more than {MAX_DEPTH} levels)")
    return text


def depth(value: Any) -> int:
    """Nesting depth of containers in a value, without recursion (so any depth is measured)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


@functools.lru_cache(maxsize=64)
def _kind_json(kind: str) -> str:
    return json.dumps(kind, ensure_ascii=True)


def event_id_for(kind: str, body_json: str) -> str:
    """Compute the event id of a kind and its canonical body text.

    Equal to ``hash_identifier("evt", {"body": body, "kind": kind}, length=32)``; written
    out so the body is not serialised a second time on the hot path.
    """
    payload = '{"body":' + body_json + ',"kind":' + _kind_json(kind) + "}"
    return "evt-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:EVENT_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended.

    Attributes:
        kind: The event kind.
        body: Canonical JSON text of the body.
        event_id: Content hash of kind and body.
        study_id: Study the event concerns, copied from the body for indexing.
        run_id: Run the event concerns, copied from the body for indexing.
        occurred_at: When it happened according to its source (ISO-8601), if known.
        source: Where it came from: ``api``, ``cli`` or ``file:PATH:LINE:OFFSET``.
        recorded_at: When it was first recorded, kept when an event is re-imported.
    """

    kind: str
    body: str
    event_id: str
    study_id: str | None
    run_id: str | None
    occurred_at: str | None
    source: str
    recorded_at: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the ``events`` table."""

    seq: int
    event_id: str
    kind: str
    study_id: str | None
    run_id: str | None
    occurred_at: str | None
    recorded_at: str
    source: str
    body: str
    chain: str

    @property
    def data(self) -> dict[str, Any]:
        """The body as a mapping, with non-finite float tags left as they are."""
        value: dict[str, Any] = json.loads(self.body)
        return value

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain mapping with the body decoded (NaN tags turned back to floats)."""
        row = {name: getattr(self, name) for name in EVENT_COLUMNS}
        row["body"] = from_canonical(self.data)
        return row


EVENT_COLUMNS = (
    "seq",
    "event_id",
    "kind",
    "study_id",
    "run_id",
    "occurred_at",
    "recorded_at",
    "source",
    "body",
    "chain",
)
"""The columns of the ``events`` table, in order."""


def make_event(
    kind: str, body: dict[str, Any], *, source: str, recorded_at: str | None = None
) -> NewEvent:
    """Build a :class:`NewEvent` from a body mapping."""
    return event_from_body(str(kind), canonical_body(body), body, source=source, recorded_at=recorded_at)


def event_from_body(
    kind: str,
    text: str,
    body: dict[str, Any],
    *,
    source: str,
    recorded_at: str | None = None,
    event_id: str | None = None,
) -> NewEvent:
    """Build a :class:`NewEvent` from a body's canonical text and its decoded mapping.

    The indexed columns are read from the body (``study_id``, ``run_id``, and ``at`` or an
    observation's ``timestamp``), so they can never disagree with it. ``event_id`` may be
    passed when the caller has just computed it from ``kind`` and ``text``.
    """
    study_id, run_id, occurred_at = indexed_columns(body)
    return NewEvent(
        kind=kind,
        body=text,
        event_id=event_id or event_id_for(kind, text),
        study_id=study_id,
        run_id=run_id,
        occurred_at=occurred_at,
        source=source,
        recorded_at=recorded_at,
    )


def parse_instant(text: Any) -> datetime | None:
    """An ISO-8601 time as an aware datetime (a time without offset is UTC), or None when
    absent or unparseable. Every comparison of times in the ledger goes through here, so
    mixed offsets (``Z``, ``+00:00``, none) compare correctly everywhere."""
    if not text or not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def indexed_columns(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(study_id, run_id, occurred_at)`` as the events table stores them for a body.

    Each is the body's text value or null; the time is ``at``, or an observation's
    ``timestamp`` when the body has no ``at``. verify checks stored rows by this rule.
    """
    occurred_at = body.get("at", body.get("timestamp"))
    study_id, run_id = body.get("study_id"), body.get("run_id")
    return (
        study_id if isinstance(study_id, str) else None,
        run_id if isinstance(run_id, str) else None,
        occurred_at if isinstance(occurred_at, str) else None,
    )


def study_registered(
    study_id: str,
    *,
    title: str = "",
    description: str = "",
    seed_policy: SeedPolicy | None = None,
    run_budget: RunBudget | None = None,
    extra: dict[str, Any] | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """Body of a study registration."""
    return {
        "study_id": study_id,
        "title": title,
        "description": description,
        "seed_policy": to_jsonable(seed_policy or SeedPolicy()),
        "run_budget": to_jsonable(run_budget or RunBudget()),
        "extra": to_jsonable(extra or {}),
        "at": at,
    }


def run_registered(
    run_id: str,
    *,
    study_id: str | None,
    condition_id: str | None,
    replicate: int | None,
    agent_id: str | None,
    problem_id: str | None,
    seed: int | None,
    at: str | None = None,
) -> dict[str, Any]:
    """Body of a run registration. Unknown fields are null until another source says."""
    return {
        "run_id": run_id,
        "study_id": study_id,
        "condition_id": condition_id,
        "replicate": replicate,
        "agent_id": agent_id,
        "problem_id": problem_id,
        "seed": seed,
        "at": at,
    }


def run_status_changed(
    run_id: str,
    status: RunStatus | str,
    *,
    at: str | None,
    reason: str | None = None,
    error: str | None = None,
    study_id: str | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Body of a status change.

    The previous status is deliberately not part of the body: it depends on what the ledger
    had seen before, so including it would give the same fact from a source different ids
    depending on ingestion order. Projections derive it when they fold.

    ``result`` is what a runner recorded with an outcome (its latency, metrics, outputs,
    execution metadata and references; see docs/events.md). The key is only present when
    given, so status changes without one keep the ids they always had.
    """
    body: dict[str, Any] = {
        "run_id": run_id,
        "study_id": study_id,
        "status": RunStatus(status).value,
        "reason": reason,
        "error": error,
        "at": at,
    }
    if result is not None:
        body["result"] = result
    return body


def provenance_captured(
    run_id: str, provenance: ProvenanceMetadata | dict[str, Any], *, study_id: str | None = None
) -> dict[str, Any]:
    """Body of a provenance snapshot of one run."""
    data = to_jsonable(provenance)
    return {
        "run_id": run_id,
        "study_id": study_id,
        "provenance": data,
        "at": data.get("captured_at") if isinstance(data, dict) else None,
    }


def observation_recorded(observation: Observation | dict[str, Any]) -> dict[str, Any]:
    """Body of an observation: the seed's row with ``meta_json`` kept as an object.

    Raises:
        ValidationError: when a required field is missing or the level is unknown.
    """
    # A mapping is used as it is: the canonical encoder converts what is not JSON when the
    # body is encoded, so walking it through to_jsonable here would only repeat that work.
    row = observation if isinstance(observation, dict) else to_jsonable(observation)
    if not isinstance(row, dict):
        raise ValidationError("an observation must be an object")
    missing = [name for name in ("timestamp", "record_id", "event_type") if not row.get(name)]
    if missing:
        raise ValidationError(f"observation is missing {', '.join(missing)}")
    meta = row.get("meta_json")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError as exc:
            raise ValidationError(f"observation meta_json is not JSON: {exc}") from None
    level = row.get("level") or ObservationLevel.STEP.value
    try:
        level = ObservationLevel(level).value
    except ValueError:
        raise ValidationError(f"observation level {level!r} is not one of "
                              f"{', '.join(item.value for item in ObservationLevel)}") from None
    body: dict[str, Any] = {
        "timestamp": _text(row.get("timestamp")),
        "record_id": _text(row.get("record_id")),
        "text": _text(row.get("text")) or "",
        "session_id": _text(row.get("session_id")) or "",
        "actor_id": _text(row.get("actor_id")) or "",
        "event_type": _text(row.get("event_type")),
        "meta_json": meta if meta is not None else {},
        "level": level,
    }
    for name in ("study_id", "run_id", "condition_id", "trial_id", "step_id", "tool_name",
                 "evaluation_id"):
        body[name] = _text(row.get(name))
    return body


def condition_registered(
    study_id: str,
    condition_id: str,
    *,
    factors: dict[str, Any] | None = None,
    blocks: dict[str, Any] | None = None,
    admissible: bool = True,
    constraint_messages: list[str] | None = None,
    assignment_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Body of one condition of a study (a row of upstream's conditions.csv)."""
    return {
        "study_id": study_id,
        "condition_id": condition_id,
        "factors": to_jsonable(factors or {}),
        "blocks": to_jsonable(blocks or {}),
        "admissible": bool(admissible),
        "constraint_messages": list(constraint_messages or []),
        "assignment_meta": to_jsonable(assignment_meta or {}),
    }


def evaluation_recorded(
    run_id: str | None,
    *,
    evaluator_id: str | None,
    metric_name: str | None,
    metric_value: Any,
    metric_unit: str | None = None,
    aggregation_level: str | None = None,
    notes_json: Any = None,
    study_id: str | None = None,
) -> dict[str, Any]:
    """Body of one evaluator output row (upstream's evaluations.csv columns)."""
    return {
        "run_id": run_id,
        "study_id": study_id,
        "evaluator_id": evaluator_id,
        "metric_name": metric_name,
        "metric_value": to_jsonable(metric_value),
        "metric_unit": metric_unit,
        "aggregation_level": aggregation_level,
        "notes_json": to_jsonable(notes_json if notes_json is not None else {}),
    }


def _text(value: Any) -> str | None:
    """Coerce an identifier-like value to text, keeping null as null."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
