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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

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

INT64 = (-(2**63), 2**63 - 1)


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


# -- body shapes ------------------------------------------------------------------------
#
# One table says what every kind's body holds. Ingestion checks the bodies it is given
# whole (own lines, a user's adapter output) and merge and restore check every body
# against it before anything is appended; the fold reads a stored field its type refuses
# as null (and flags it), so what a raw writer stored can never crash a reader.


def type_name(value: Any) -> str:
    """A value's JSON type, as a user who wrote JSON would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_unicode(text: str) -> bool:
    """Whether text can be stored as text: UTF-8 has no lone UTF-16 surrogates."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_time(value: Any) -> bool:
    """An ISO-8601 time as ``datetime.fromisoformat`` reads it (ledgers compare by these)."""
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]


@dataclass(frozen=True, slots=True)
class ValueType:
    """What a body field may hold.

    Attributes:
        name: How a reason says it ("text", "a 64-bit integer").
        accepts: Whether a decoded value is one.
        shape: For an object with fields of its own, their :class:`Shape`.
    """

    name: str
    accepts: Callable[[Any], bool]
    shape: Shape | None = None
    plain: type | None = None
    """Values of exactly this type are accepted without calling ``accepts`` (text: when
    ASCII, and not empty where it must not be): the common case costs no call."""


_ABSENT = object()
_STATUSES = frozenset(status.value for status in RunStatus)
_LEVELS = frozenset(level.value for level in ObservationLevel)

# Each check is one call (every stored event is checked as it is folded): ASCII text, the
# common case, never reaches the Unicode check.
TEXT = ValueType("text", lambda v: isinstance(v, str) and (v.isascii() or is_unicode(v)), plain=str)
ID = ValueType("non-empty text", lambda v: isinstance(v, str) and v != "" and (v.isascii() or is_unicode(v)),
               plain=str)
INT = ValueType("a 64-bit integer", _is_int64)
BOOL = ValueType("true or false", lambda v: isinstance(v, bool), plain=bool)
TIME = ValueType("an ISO-8601 time", is_time)
OBJECT = ValueType("an object", lambda v: isinstance(v, dict), plain=dict)
LIST = ValueType("a list", lambda v: isinstance(v, list), plain=list)
ANY = ValueType("any JSON value", lambda v: True)
VALUE = ValueType("a number, text, true, false, an object or a list",
                  lambda v: _is_int64(v) if isinstance(v, int) and not isinstance(v, bool)
                  else (v.isascii() or is_unicode(v)) if isinstance(v, str) else True)
"""A value a projection keeps in a column as it is (a metric): integers must fit SQLite's."""
STATUS = ValueType(f"a run status ({', '.join(sorted(_STATUSES))})", lambda v: v in _STATUSES)
LEVEL = ValueType(f"an observation level ({', '.join(sorted(_LEVELS))})", lambda v: v in _LEVELS)


@dataclass(frozen=True)
class Shape:
    """The fields of a body (or of an object inside one).

    Required fields must be present with a value of their type; optional fields may be
    absent or null. Other keys are kept and read by nothing, so they may hold anything.
    ``rule`` checks what types cannot say (a seed policy SeedPolicy accepts).
    """

    required: Mapping[str, ValueType]
    optional: Mapping[str, ValueType]
    rule: Callable[[dict[str, Any]], str | None] | None = None
    _checked: tuple[tuple[str, Callable[[Any], bool], ValueType, bool, type | None], ...] = field(
        init=False, repr=False, compare=False)
    _texts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _others: tuple[tuple[str, Callable[[Any], bool], ValueType, bool, type | None], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # (key, check, type, nullable) of every field a value can be wrong for, flat:
        # misfits runs for every event ingested and every event folded.
        checked = tuple((key, kind.accepts, kind, nullable, kind.plain)
                        for fields, nullable in ((self.required, False), (self.optional, True))
                        for key, kind in fields.items() if kind is not ANY)
        object.__setattr__(self, "_checked", checked)
        # Optional text fields are most of an observation's: checked together in one pass.
        object.__setattr__(self, "_texts", tuple(item[0] for item in checked if item[2] is TEXT and item[3]))
        object.__setattr__(self, "_others", tuple(item for item in checked if item[0] not in self._texts))

    def misfits(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """``(field, why)`` for every field present whose value its type refuses."""
        checked = self._checked
        if self._texts:
            # Every optional text field holds ASCII text or null: join refuses anything but
            # text (TypeError), and text joined is ASCII only if each part is.
            try:
                if "".join([value for value in map(body.get, self._texts) if value is not None]).isascii():
                    checked = self._others
            except TypeError:
                pass
        found = []
        for key, accepts, kind, nullable, plain in checked:
            value = body.get(key, _ABSENT)
            if value is _ABSENT or (value is None and nullable):
                continue
            if type(value) is plain and (not isinstance(value, str) or (value.isascii() and (value != "" or kind is TEXT))):
                continue
            if not accepts(value):
                found.append((key, _refusal(key, kind, value, nullable)))
        return found

    def problems(self, body: dict[str, Any]) -> list[str]:
        """Why the body does not have this shape (empty when it does)."""
        found = [f"needs '{key}' as {kind.name}" for key, kind in self.required.items() if key not in body]
        found.extend(why for _, why in self.misfits(body))
        if not found and self.rule is not None:
            broken = self.rule(body)
            if broken:
                found.append(broken)
        return found

    def as_type(self, name: str) -> ValueType:
        """This shape as the type of a field holding an object of it."""
        return ValueType(name, lambda v: isinstance(v, dict) and not self.problems(v), self)


def _refusal(key: str, kind: ValueType, value: Any, nullable: bool) -> str:
    """Why ``value`` cannot be field ``key``, in the words a writer of JSON would use."""
    if kind.shape is not None and isinstance(value, dict):
        return f"'{key}' {kind.shape.problems(value)[0]}"
    if isinstance(value, str):
        if kind is TIME:
            return f"'{key}' {value[:40]!r} is not an ISO-8601 time"
        if kind in (STATUS, LEVEL):
            return f"{key} {value[:40]!r} is not {kind.name}"
        if not is_unicode(value):
            return f"'{key}' holds a lone UTF-16 surrogate, which is not valid Unicode"
    return f"'{key}' must be {kind.name}{' or null' if nullable else ''}, not {type_name(value)}"


def _study_rules(body: dict[str, Any]) -> str | None:
    """A study's seed policy and run budget must be what SeedPolicy and RunBudget accept:
    ``register_run`` builds them from what the ledger stores."""
    for key, kind in (("seed_policy", SeedPolicy), ("run_budget", RunBudget)):
        value = body.get(key)
        if value is None:
            continue
        try:
            kind(**value)
        except (TypeError, ValueError) as exc:
            return f"'{key}' is not a valid {kind.__name__}: {exc}"
    return None


PROVENANCE_SHAPE = Shape(
    required={},
    optional={"captured_at": TEXT, "host": TEXT, "platform": TEXT, "python_version": TEXT, "git_sha": TEXT,
              "package_versions": OBJECT, "extra": ANY},
)
HEAD_SHAPE = Shape(required={"seq": INT, "chain": TEXT}, optional={})
_IDS = {"study_id": TEXT, "run_id": TEXT}

BODY_SHAPES: dict[str, Shape] = {
    "study_registered": Shape(
        required={"study_id": ID},
        optional={"title": TEXT, "description": TEXT, "seed_policy": OBJECT, "run_budget": OBJECT,
                  "extra": OBJECT, "at": TIME},
        rule=_study_rules,
    ),
    "condition_registered": Shape(
        required={"study_id": ID, "condition_id": ID},
        optional={"factors": OBJECT, "blocks": OBJECT, "admissible": BOOL, "constraint_messages": LIST,
                  "assignment_meta": OBJECT},
    ),
    "run_registered": Shape(
        required={"run_id": ID},
        optional={"study_id": TEXT, "condition_id": TEXT, "replicate": INT, "agent_id": TEXT,
                  "problem_id": TEXT, "seed": INT, "at": TIME},
    ),
    "run_status_changed": Shape(
        required={"run_id": ID, "status": STATUS},
        optional={"study_id": TEXT, "reason": TEXT, "error": TEXT, "at": TIME, "result": OBJECT},
    ),
    "provenance_captured": Shape(
        required={"run_id": ID},
        optional={"study_id": TEXT, "provenance": PROVENANCE_SHAPE.as_type("an object"), "at": TIME},
    ),
    "observation_recorded": Shape(
        required={"timestamp": TIME, "record_id": ID, "event_type": ID},
        optional={"text": TEXT, "session_id": TEXT, "actor_id": TEXT, "meta_json": OBJECT, "level": LEVEL,
                  **_IDS, "condition_id": TEXT, "trial_id": TEXT, "step_id": TEXT, "tool_name": TEXT,
                  "evaluation_id": TEXT},
    ),
    "evaluation_recorded": Shape(
        required={},
        optional={**_IDS, "evaluator_id": TEXT, "metric_name": TEXT, "metric_value": VALUE, "metric_unit": TEXT,
                  "aggregation_level": TEXT, "notes_json": ANY},
    ),
    "line_rejected": Shape(
        required={"line": INT, "offset": INT, "reason": TEXT},
        optional={"raw": TEXT, "raw_base64": TEXT, "raw_complete": BOOL, "length": INT, "sha256": TEXT,
                  "prefix_sha256": TEXT, "file": TEXT},
    ),
    "audit_recorded": Shape(
        required={"check": ID, "at": TIME},
        optional={"ok": BOOL, "head": HEAD_SHAPE.as_type("an object"), "summary": OBJECT},
    ),
}
"""Every kind's body: required and optional fields and their types (docs/events.md lists them)."""

RECORDED_BY_STUDYLEDGER = frozenset({"line_rejected", "audit_recorded"})
"""Kinds that state what studyledger itself did (a line it could not use, an audit it ran).
Untrusted input (a drop-folder line, a user's adapter) may not state them: a forged
rejection or audit would read as the ledger's own word. They arrive only from studyledger,
or by merge and restore, which verify their source first."""


def body_problems(kind: str, body: Any, text: str | None = None) -> list[str]:
    """Why a body is not what its kind holds (empty when it is).

    Args:
        kind: The event kind.
        body: The decoded body.
        text: Its canonical JSON text, when known: a lone surrogate escaped inside it
            (``\\udXXX``) sends every string of the body through the Unicode check, so
            nothing that cannot be stored as text gets in, however deep.
    """
    shape = BODY_SHAPES.get(kind)
    if shape is None:
        return [f"unknown event kind {kind!r}"]
    if not isinstance(body, dict):
        return [f"{kind} body must be an object, not {type_name(body)}"]
    problems = [f"{kind} body {why}" if why.startswith("needs") else f"{kind} {why}" for why in shape.problems(body)]
    if not problems and (text is None or "\\ud" in text) and not _all_unicode(body):
        problems.append(f"{kind} body holds a lone UTF-16 surrogate, which is not valid Unicode")
    return problems


def check_body(kind: str, body: Any, text: str | None = None) -> None:
    """Refuse a body that is not what its kind holds (see :data:`BODY_SHAPES`).

    Raises:
        ValidationError: naming the first field that is wrong and why.
    """
    problems = body_problems(kind, body, text)
    if problems:
        raise ValidationError(problems[0])


def misfit_fields(kind: str, body: dict[str, Any]) -> list[str]:
    """Fields of a stored body whose value its kind's type refuses (read them as null)."""
    shape = BODY_SHAPES.get(kind)
    return [] if shape is None else [key for key, _ in shape.misfits(body)]


def readable_body(kind: str, body: Any) -> dict[str, Any]:
    """A stored body as readers may use it: fields of the wrong type read as null.

    What a raw writer stored is only as good as the writer; readers of raw bodies (the
    recorded audits, the fold) go through here so that no stored value crashes them.
    """
    if not isinstance(body, dict):
        return {}
    wrong = misfit_fields(kind, body)
    return {**body, **dict.fromkeys(wrong)} if wrong else body


def has_lone_surrogate(text: str) -> bool:
    """Whether canonical JSON text escapes a lone UTF-16 surrogate anywhere (``\\ud800``).

    Canonical text is ASCII, so such a body can be stored, but SQLite's JSON functions
    turn the escape into bytes that are not UTF-8, which no reader can decode.
    """
    if "\\ud" not in text:
        return False
    try:
        return not _all_unicode(json.loads(text))
    except (ValueError, RecursionError):
        return False


def _all_unicode(value: Any) -> bool:
    """Every string in a value, keys included, is valid Unicode (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_unicode(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


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

# orjson refuses what it cannot write as plain JSON (subclasses of str, int, dict and list,
# dataclasses, datetimes, integers beyond 64 bits, keys that are not text): those take the
# exact encoder.
_FAST_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
                 | orjson.OPT_PASSTHROUGH_DATETIME)
_DIGITS = frozenset(b"0123456789")


def _float_spelled_apart(out: bytes) -> bool:
    """Whether orjson's text may spell a float otherwise than ``repr`` (and so the exact encoder).

    Measured over every float magnitude, they differ at decimal exponents -5 (orjson
    ``0.0000628``, repr ``6.28e-05``) and -6..-9 (orjson ``1e-7``, repr ``1e-07``) only.
    Looked for with ``bytes.find``, which is many times quicker than a regular expression
    over a body: ``e-`` is in every trace record id. A false alarm (such characters
    inside a string) only costs the exact encoder.
    """
    at = out.find(b"0.0000")
    while at >= 0:
        if at == 0 or (out[at - 1] not in _DIGITS and out[at - 1] != 46):  # 46: "."
            return True
        at = out.find(b"0.0000", at + 1)
    at = out.find(b"e-")
    while at >= 0:
        if at > 0 and out[at - 1] in _DIGITS and out[at + 2:at + 3].isdigit() and not out[at + 3:at + 4].isdigit():
            return True
        at = out.find(b"e-", at + 2)
    return False


def _fast_canonical(body: Any, decoded: bool) -> str | None:
    """orjson's canonical text of a body when it is provably the exact encoder's, else None.

    Two checks make it exact: the text has none of the spellings where the two encoders
    differ (:func:`_float_spelled_apart`; non-ASCII text and DEL, which orjson writes raw),
    and it decodes back to a value equal to the body, so nothing was written lossily (NaN as
    null, a tuple as a list, an enum or a UUID as text). The second check also proves that
    decoding the stored text gives back the body itself, with the same types, which is what
    lets ingestion hand its decoded bodies on instead of parsing the stored text again.

    With ``decoded`` (see :func:`canonical`) the second check is proven beforehand and skipped.
    """
    try:
        out = orjson.dumps(body, option=_FAST_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None
    if not out.isascii() or b"\x7f" in out or _float_spelled_apart(out):
        return None
    if not decoded:
        try:
            if orjson.loads(out) != body:
                return None
        except (orjson.JSONDecodeError, RecursionError):  # deeper than orjson reads
            return None
    return out.decode("ascii")


def canonical(body: Any, *, decoded: bool = False) -> tuple[str, bool]:
    """The canonical JSON text of a body, and whether decoding that text gives the body back.

    The second is true when the body is plain JSON (text keys; text, numbers, booleans,
    null, lists and objects of them, no NaN): then ``json.loads(text) == body`` with the
    same types, and a reader may use the body instead of decoding the text.

    Args:
        body: The body.
        decoded: The caller vouches that the body is made only of what ``orjson.loads``
            returned for a line (exact dicts, lists, text, integers, finite floats, booleans
            and null; :func:`~studyledger.ingestion.lines.decode_line` says when) and of
            exact dicts, text, integers of 64 bits and null of its own. orjson writes each of
            those so that it reads back as itself, so the read-back check is skipped: a
            third of the cost of a trace line's body.

    Raises:
        ValidationError: the body is nested deeper than :data:`MAX_DEPTH`.
    """
    text = _fast_canonical(body, decoded)
    plain = text is not None
    if text is None:
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
    return text, plain


def canonical_body(body: Any) -> str:
    """Return the canonical JSON text of a body.

    The seed's ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` with
    its two defects fixed (:func:`stable_json_dumps`), byte for byte: orjson writes plain
    JSON where its text is provably the same (:func:`_fast_canonical`); the C encoder of the
    standard library writes the rest, and any value it refuses (non-finite floats, sets,
    paths, enums as keys) goes through :func:`stable_json_dumps`.

    Raises:
        ValidationError: the body is nested deeper than :data:`MAX_DEPTH`.
    """
    return canonical(body)[0]


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
    return event_id_of_bytes(kind, body_json.encode("utf-8"))


def event_id_of_bytes(kind: str, body: bytes) -> str:
    """:func:`event_id_for` of a body given as its UTF-8 bytes (verify hashes what it reads)."""
    return "evt-" + event_digest(kind, body).hex()


def event_digest(kind: str, body: bytes) -> bytes:
    """The bytes an event id writes in hex after ``evt-`` (what the SQLite ledger stores)."""
    digest = _BODY_PREFIX.copy()
    digest.update(body)
    digest.update(_kind_suffix(kind))
    return digest.digest()[:EVENT_ID_LENGTH // 2]


_BODY_PREFIX = hashlib.sha256(b'{"body":')


@functools.lru_cache(maxsize=64)
def _kind_suffix(kind: str) -> bytes:
    return f',"kind":{_kind_json(kind)}}}'.encode("utf-8")


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
        data: The decoded body, when it is exactly what decoding ``body`` gives (see
            :func:`canonical`): the projections fold it without parsing the text again.
        misfits: Fields of ``data`` its kind's shape refuses (:func:`misfit_fields`),
            found where the body was built, so the fold need not check them again.
        observation_row: For an observation handed over without ``data`` (by an ingest
            worker), the fields the fold takes from it
            (:func:`~studyledger.projections.observation_row`).
    """

    kind: str
    body: str
    event_id: str
    study_id: str | None
    run_id: str | None
    occurred_at: str | None
    source: str
    recorded_at: str | None = None
    data: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    misfits: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    observation_row: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the ``events`` table.

    ``decoded`` and ``misfits`` are not columns: an event just appended carries its
    :class:`NewEvent`'s ``data`` and ``misfits`` here, so folding it costs no parse.
    """

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
    decoded: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    misfits: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        """The body as a mapping, with non-finite float tags left as they are."""
        if self.decoded is not None:
            return self.decoded
        value: dict[str, Any] = json.loads(self.body)
        return value

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain mapping with the body decoded (NaN tags turned back to floats).

        A body that is not JSON (only a raw writer can store one) stays the text it is.
        """
        row = {name: getattr(self, name) for name in EVENT_COLUMNS}
        try:
            row["body"] = from_canonical(self.data)
        except (ValueError, RecursionError):
            pass
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
    text, plain = canonical(body)
    return event_from_body(str(kind), text, body, source=source, recorded_at=recorded_at, plain=plain)


def event_from_body(
    kind: str,
    text: str,
    body: dict[str, Any],
    *,
    source: str,
    recorded_at: str | None = None,
    event_id: str | None = None,
    plain: bool = False,
    misfits: tuple[str, ...] | None = None,
) -> NewEvent:
    """Build a :class:`NewEvent` from a body's canonical text and its decoded mapping.

    The indexed columns are read from the body (``study_id``, ``run_id``, and ``at`` or an
    observation's ``timestamp``), so they can never disagree with it. ``event_id`` may be
    passed when the caller has just computed it from ``kind`` and ``text``. ``plain`` says
    that decoding ``text`` gives ``body`` back (:func:`canonical`): the event then carries
    the body and its misfits for the fold. ``misfits`` may be passed by a caller that has
    just checked the body against its kind's shape (:func:`check_body`), so they are not
    looked for twice.
    """
    study_id, run_id, occurred_at = indexed_columns(body)
    if not plain:
        misfits = None
    elif misfits is None:
        try:
            misfits = tuple(misfit_fields(kind, body))
        except TypeError:
            pass  # a value a check cannot even compare (a list as a level): the fold flags it
    return NewEvent(
        kind=kind,
        body=text,
        event_id=event_id or event_id_for(kind, text),
        study_id=study_id,
        run_id=run_id,
        occurred_at=occurred_at,
        source=source,
        recorded_at=recorded_at,
        data=body if plain else None,
        misfits=misfits,
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
        level = _LEVEL_VALUES[level]
    except (KeyError, TypeError):
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


_LEVEL_VALUES = {level.value: level.value for level in ObservationLevel}
"""Each level's plain text by itself (an ObservationLevel member finds its plain text too)."""


def _text(value: Any) -> str | None:
    """Coerce an identifier-like value to text, keeping null as null."""
    if value is None or type(value) is str:
        return value
    return value if isinstance(value, str) else str(value)
