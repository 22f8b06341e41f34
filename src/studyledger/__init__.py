"""studyledger: an append-only, event-sourced SQLite ledger for experiment runs.

The public API: the seed's vocabulary (``RunStatus``, ``Observation``, ``SeedPolicy``,
``stable_json_dumps``, ``hash_identifier``, ...), the :class:`Ledger`, and the errors a
caller can act on. Everything else is reachable through its module.
"""

from .errors import (
    EventConflictError,
    LedgerBusyError,
    LedgerError,
    LedgerMissingError,
    NewerLedgerError,
    NotALedgerError,
    UnknownRunError,
    UnknownStudyError,
)
from .events import EventKind, NewEvent, make_event
from .ledger import Ledger, run_id_for
from .schema import (
    SCHEMA_VERSION,
    ConstraintSeverity,
    Observation,
    ObservationLevel,
    ProvenanceMetadata,
    RunBudget,
    RunStatus,
    SeedPolicy,
    ValidationError,
    from_canonical,
    hash_identifier,
    load_callable,
    resolve_git_sha,
    stable_json_dumps,
    to_jsonable,
    utc_now_iso,
)
from .store import AppendResult, StoredEvent
from .verify import Problem, VerifyReport

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AppendResult",
    "ConstraintSeverity",
    "EventConflictError",
    "EventKind",
    "Ledger",
    "LedgerBusyError",
    "LedgerError",
    "LedgerMissingError",
    "NewEvent",
    "NewerLedgerError",
    "NotALedgerError",
    "Observation",
    "ObservationLevel",
    "Problem",
    "ProvenanceMetadata",
    "RunBudget",
    "RunStatus",
    "SeedPolicy",
    "StoredEvent",
    "UnknownRunError",
    "UnknownStudyError",
    "ValidationError",
    "VerifyReport",
    "__version__",
    "from_canonical",
    "hash_identifier",
    "load_callable",
    "make_event",
    "resolve_git_sha",
    "run_id_for",
    "stable_json_dumps",
    "to_jsonable",
    "utc_now_iso",
]
