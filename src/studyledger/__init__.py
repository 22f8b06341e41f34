"""studyledger: an append-only, event-sourced SQLite ledger for experiment runs.

The public API: the seed's vocabulary (``RunStatus``, ``Observation``, ``SeedPolicy``,
``stable_json_dumps``, ``hash_identifier``, ...), the :class:`Ledger`, ingestion
(:class:`DropWriter`, :func:`ingest_paths`, :class:`Watcher`), audits (:func:`replay`,
:func:`state_as_of`, :func:`merge`, the exports) and the errors a caller can act on.
The dashboard is not imported here: ``import studyledger`` never loads Textual.
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
from .audit.checkpoint import Checkpoint
from .audit.diff import diff_runs
from .audit.export_canonical import export_canonical
from .audit.export_jsonl import export_jsonl
from .audit.merge import MergeReport, merge
from .audit.replay import ReplayReport, Snapshot, replay, state_as_of
from .events import EventKind, NewEvent, make_event
from .ingest.adapters import LineRejected, events_from_line
from .ingest.dropwriter import DropWriter
from .ingest.study_folder import StudyFolderScan, scan_study_folder
from .ingest.tailer import IngestStats, Tailer, ingest_paths
from .ingest.watcher import Watcher
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
    "Checkpoint",
    "ConstraintSeverity",
    "DropWriter",
    "EventConflictError",
    "EventKind",
    "IngestStats",
    "Ledger",
    "LedgerBusyError",
    "LedgerError",
    "LedgerMissingError",
    "LineRejected",
    "MergeReport",
    "NewEvent",
    "NewerLedgerError",
    "NotALedgerError",
    "Observation",
    "ObservationLevel",
    "Problem",
    "ProvenanceMetadata",
    "ReplayReport",
    "RunBudget",
    "RunStatus",
    "SeedPolicy",
    "Snapshot",
    "StoredEvent",
    "StudyFolderScan",
    "Tailer",
    "UnknownRunError",
    "UnknownStudyError",
    "ValidationError",
    "VerifyReport",
    "Watcher",
    "__version__",
    "diff_runs",
    "events_from_line",
    "export_canonical",
    "export_jsonl",
    "from_canonical",
    "hash_identifier",
    "ingest_paths",
    "load_callable",
    "make_event",
    "merge",
    "replay",
    "resolve_git_sha",
    "run_id_for",
    "scan_study_folder",
    "stable_json_dumps",
    "state_as_of",
    "to_jsonable",
    "utc_now_iso",
]
