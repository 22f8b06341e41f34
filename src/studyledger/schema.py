"""Seed-compatible schema primitives and canonical serialisation.

This module speaks the vocabulary of the upstream ``design-research-experiments``
``schemas`` module (the seed) so that ids, seeds and rows computed here join with
upstream artifacts byte for byte. Two defects of the seed are fixed rather than copied:

* a ``set`` (or ``frozenset``) serialises its items sorted by their own canonical JSON,
  so the "stable" form no longer depends on the process's hash seed;
* ``NaN``, ``Infinity`` and ``-Infinity`` serialise to the tagged object
  ``{"$float": "NaN"}`` (``"Infinity"``, ``"-Infinity"``) instead of tokens that are not
  JSON. The tag keeps a NaN distinguishable from ``null`` and from the string ``"NaN"``;
  :func:`from_canonical` turns the tags back into floats. A mapping whose only key is
  ``"$float"`` is therefore reserved.

For every value the seed could serialise without those defects, the output is identical.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import math
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, cast

from .errors import ValidationError

SCHEMA_VERSION = "0.1.0"

FLOAT_TAG = "$float"
_NONFINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NONFINITE_VALUES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ConstraintSeverity(StrEnum):
    """Severity level for admissibility constraints."""

    ERROR = "error"
    WARNING = "warning"


class RunStatus(StrEnum):
    """Lifecycle status of one run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


# The run state machine. It is vocabulary, like the statuses: the API refuses what it
# forbids, the projections flag what sources report against it, and replay re-checks it.
LEGAL_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.SKIPPED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCESS, RunStatus.FAILED}),
    RunStatus.SUCCESS: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.SKIPPED: frozenset(),
}
"""Legal moves: pending -> running | skipped | failed; running -> success | failed."""

TERMINAL_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.SKIPPED})
"""Final for an attempt: no legal transition leaves them."""

DEFAULT_STATUS_REASONS: dict[RunStatus, str] = {
    RunStatus.PENDING: "awaiting_execution",
    RunStatus.RUNNING: "execution_started",
    RunStatus.SUCCESS: "completed",
    RunStatus.FAILED: "exception",
    RunStatus.SKIPPED: "not_executed",
}
"""The reason upstream's run evidence gives a status when the runner gave none
(``evidence._default_status_reason``): a run.json always has one, a checkpoint line may not."""

STATUS_PRECEDENCE: dict[RunStatus, int] = {
    RunStatus.PENDING: 0,
    RunStatus.RUNNING: 1,
    RunStatus.SKIPPED: 2,
    RunStatus.SUCCESS: 3,
    RunStatus.FAILED: 4,
}
"""Which status a run shows when sources disagree: the higher wins. Terminal beats
non-terminal, and among outcomes the conservative one (failed) wins."""


def is_legal_transition(current: str, requested: str) -> bool:
    """Whether ``current -> requested`` is a legal status transition."""
    return RunStatus(requested) in LEGAL_TRANSITIONS[RunStatus(current)]


def shown_status(current: str, reported: str) -> str:
    """The status a run shows after a source reports ``reported`` while it shows ``current``.

    A maximum by :data:`STATUS_PRECEDENCE`, so ingesting sources in any order gives the
    same answer.
    """
    keep = STATUS_PRECEDENCE[RunStatus(current)] >= STATUS_PRECEDENCE[RunStatus(reported)]
    return current if keep else reported


class ObservationLevel(StrEnum):
    """Granularity level for an observation row."""

    STUDY = "study"
    RUN = "run"
    TRIAL = "trial"
    STEP = "step"
    TOOL_CALL = "tool-call"
    EVALUATION = "evaluation"


@dataclass(slots=True)
class SeedPolicy:
    """Deterministic seed policy for run generation.

    Args:
        base_seed: Study-wide base seed.
        strategy: Seed derivation strategy name.
        per_run_offset: Numeric offset mixed into each run seed.
    """

    base_seed: int = 0
    strategy: str = "condition_replicate"
    per_run_offset: int = 9973

    def derive_seed(self, study_id: str, condition_id: str, replicate: int, salt: str = "") -> int:
        """Derive one deterministic per-run seed, exactly as upstream does."""
        payload = {
            "base_seed": self.base_seed,
            "strategy": self.strategy,
            "per_run_offset": self.per_run_offset,
            "study_id": study_id,
            "condition_id": condition_id,
            "replicate": replicate,
            "salt": salt,
        }
        digest = hashlib.sha256(stable_json_dumps(payload).encode("utf-8")).hexdigest()
        return int(digest[:16], 16) % (2**31 - 1)


@dataclass(slots=True)
class RunBudget:
    """Execution budget controls for one study.

    Args:
        replicates: Number of run replicates for each unit.
        max_runs: Optional upper bound on total runs.
        parallelism: Local worker count.
        fail_fast: Stop after first failure when `True`.
    """

    replicates: int = 1
    max_runs: int | None = None
    parallelism: int = 1
    fail_fast: bool = False

    def __post_init__(self) -> None:
        """Validate budget shape."""
        if self.replicates < 1:
            raise ValidationError("RunBudget.replicates must be >= 1.")
        if self.parallelism < 1:
            raise ValidationError("RunBudget.parallelism must be >= 1.")
        if self.max_runs is not None and self.max_runs < 1:
            raise ValidationError("RunBudget.max_runs must be >= 1 when provided.")


@dataclass(slots=True)
class ProvenanceMetadata:
    """Captured runtime provenance for reproducibility.

    Args:
        captured_at: UTC timestamp when provenance was captured.
        host: Hostname where execution happened.
        platform: Platform descriptor.
        python_version: Runtime Python version.
        package_versions: Resolved package versions.
        git_sha: Git commit SHA when available.
        extra: Additional caller-provided metadata.
    """

    captured_at: str
    host: str
    platform: str
    python_version: str
    package_versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(
        cls,
        package_names: Iterable[str] = (),
        *,
        cwd: Path | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ProvenanceMetadata:
        """Capture reproducibility metadata from the local environment."""
        versions: dict[str, str] = {}
        for package_name in package_names:
            try:
                versions[package_name] = importlib.metadata.version(package_name)
            except importlib.metadata.PackageNotFoundError:
                versions[package_name] = "not-installed"
        return cls(
            captured_at=utc_now_iso(),
            host=socket.gethostname(),
            platform=platform.platform(),
            python_version=sys.version.split()[0],
            package_versions=versions,
            git_sha=resolve_git_sha(cwd=cwd),
            extra=dict(extra or {}),
        )


@dataclass(slots=True)
class Observation:
    """Normalized process trace observation.

    Args:
        timestamp: UTC timestamp string.
        record_id: Stable row identifier.
        text: Optional human-readable event text.
        session_id: Session or conversation identifier.
        actor_id: Actor identifier.
        event_type: Event kind label.
        meta_json: Structured event metadata.
        level: Observation granularity.
        study_id: Optional study ID.
        run_id: Optional run ID.
        condition_id: Optional condition ID.
        trial_id: Optional trial ID.
        step_id: Optional step ID.
        tool_name: Optional tool name.
        evaluation_id: Optional evaluation record ID.
    """

    timestamp: str
    record_id: str
    text: str
    session_id: str
    actor_id: str
    event_type: str
    meta_json: dict[str, Any] = field(default_factory=dict)
    level: ObservationLevel = ObservationLevel.STEP
    study_id: str | None = None
    run_id: str | None = None
    condition_id: str | None = None
    trial_id: str | None = None
    step_id: str | None = None
    tool_name: str | None = None
    evaluation_id: str | None = None

    def to_row(self) -> dict[str, Any]:
        """Convert the observation to one export row."""
        return {
            "timestamp": self.timestamp,
            "record_id": self.record_id,
            "text": self.text,
            "session_id": self.session_id,
            "actor_id": self.actor_id,
            "event_type": self.event_type,
            "meta_json": stable_json_dumps(self.meta_json),
            "level": ObservationLevel(self.level).value,
            "study_id": self.study_id,
            "run_id": self.run_id,
            "condition_id": self.condition_id,
            "trial_id": self.trial_id,
            "step_id": self.step_id,
            "tool_name": self.tool_name,
            "evaluation_id": self.evaluation_id,
        }


OBSERVATION_FIELDS: tuple[str, ...] = (
    "timestamp",
    "record_id",
    "text",
    "session_id",
    "actor_id",
    "event_type",
    "meta_json",
    "level",
    "study_id",
    "run_id",
    "condition_id",
    "trial_id",
    "step_id",
    "tool_name",
    "evaluation_id",
)


def utc_now_iso() -> str:
    """Return an ISO-8601 UTC timestamp without microseconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def resolve_git_sha(cwd: Path | None = None) -> str | None:
    """Resolve the current git SHA if the working directory is a git checkout."""
    try:
        output = subprocess.check_output(
            ["git", "rev-parse", "HEAD"],
            cwd=str(cwd) if cwd is not None else None,
            stderr=subprocess.DEVNULL,
            text=True,
        ).strip()
    except (FileNotFoundError, NotADirectoryError, subprocess.CalledProcessError):
        return None
    return output or None


def stable_json_dumps(data: Any) -> str:
    """Serialize arbitrary data deterministically for IDs and manifests.

    Equal to the seed's output wherever the seed's output was well defined; sets are sorted
    and non-finite floats are tagged (see the module docstring).
    """
    return json.dumps(to_jsonable(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_jsonable(value: Any) -> Any:
    """Recursively convert a Python value to a JSON-serializable structure."""
    if value is None:
        return None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {FLOAT_TAG: _NONFINITE_NAMES[repr(value)]}
    if isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, ensure_ascii=True))
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    return str(value)


def from_canonical(value: Any) -> Any:
    """Undo the non-finite float tags of :func:`to_jsonable` in a decoded JSON value.

    Use it when a canonical body is read back for display or export, so that a NaN that
    came in is a NaN that goes out.
    """
    if isinstance(value, dict):
        if len(value) == 1 and FLOAT_TAG in value and value[FLOAT_TAG] in _NONFINITE_VALUES:
            return _NONFINITE_VALUES[value[FLOAT_TAG]]
        return {key: from_canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_canonical(item) for item in value]
    return value


def hash_identifier(prefix: str, payload: Mapping[str, Any], *, length: int = 12) -> str:
    """Build a deterministic short identifier from a stable payload hash."""
    digest = hashlib.sha256(stable_json_dumps(payload).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:length]}"


def load_callable(reference: str) -> Callable[..., Any]:
    """Load a callable from a `module:attribute` reference string."""
    if ":" not in reference:
        raise ValidationError(
            "Callable reference must use the format 'module.submodule:callable_name'."
        )
    module_name, attribute_name = reference.split(":", maxsplit=1)
    module = importlib.import_module(module_name)
    loaded = getattr(module, attribute_name)
    if not callable(loaded):
        raise ValidationError(f"Reference '{reference}' does not resolve to a callable.")
    return cast(Callable[..., Any], loaded)
