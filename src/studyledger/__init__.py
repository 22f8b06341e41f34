"""studyledger: an append-only, event-sourced ledger of experiment runs.

What a user calls, and the types those calls return, are here; each is documented in
docs/api.md (generated from these docstrings). The CLI's verbs have the same names:
``ingest``, ``verify``, ``replay``, ``merge``, ``restore``, ``export_*``, ``diff_runs``, checkpoints.

Names load on first use, so ``import studyledger`` costs almost nothing: a program that
only records runs never loads the watcher, YAML or the command line, and nothing here
ever loads the dashboard.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public API by section: name -> (module, attribute), loaded on first use. docs/api.md
# is generated from this table and the docstrings (scripts/update_docs.py).
_API: dict[str, dict[str, tuple[str, str]]] = {
    "The ledger": {
        "Ledger": ("studyledger.ledger", "Ledger"),
        "run_id_for": ("studyledger.ledger", "run_id_for"),
        "Head": ("studyledger.store", "Head"),
        "AppendResult": ("studyledger.store", "AppendResult"),
    },
    "The seed's vocabulary": {
        name: ("studyledger.schema", name) for name in (
            "RunStatus", "ObservationLevel", "Observation", "ProvenanceMetadata", "RunBudget", "SeedPolicy",
            "ConstraintSeverity",
        )
    },
    "Ingestion": {
        "ingest": ("studyledger.ingestion.service", "ingest"),
        "IngestReport": ("studyledger.ingestion.service", "IngestReport"),
        "Watcher": ("studyledger.ingestion.watcher", "Watcher"),
        "DropWriter": ("studyledger.ingestion.dropwriter", "DropWriter"),
        "LineAdapter": ("studyledger.ingestion.adapters", "LineAdapter"),
    },
    "Audits": {
        "verify": ("studyledger.audit.verify", "verify"),
        "VerifyReport": ("studyledger.audit.verify", "VerifyReport"),
        "Problem": ("studyledger.audit.verify", "Problem"),
        "take_checkpoint": ("studyledger.audit.checkpoint", "take"),
        "save_checkpoint": ("studyledger.audit.checkpoint", "write"),
        "load_checkpoint": ("studyledger.audit.checkpoint", "load"),
        "Checkpoint": ("studyledger.audit.checkpoint", "Checkpoint"),
        "replay": ("studyledger.audit.replay", "replay"),
        "ReplayReport": ("studyledger.audit.replay", "ReplayReport"),
        "state_as_of": ("studyledger.audit.replay", "state_as_of"),
        "Snapshot": ("studyledger.audit.replay", "Snapshot"),
        "diff_runs": ("studyledger.audit.diff", "diff_runs"),
        "export_canonical": ("studyledger.audit.export_canonical", "export_canonical"),
        "export_jsonl": ("studyledger.audit.export_jsonl", "export_jsonl"),
        "merge": ("studyledger.audit.merge", "merge"),
        "MergeReport": ("studyledger.audit.merge", "MergeReport"),
        "restore": ("studyledger.audit.restore", "restore"),
        "RestoreReport": ("studyledger.audit.restore", "RestoreReport"),
    },
    "Errors": {
        name: ("studyledger.errors", name) for name in (
            "StudyLedgerError", "ValidationError", "LedgerError", "NotALedgerError", "LedgerMissingError",
            "NewerLedgerError", "LedgerBusyError", "LedgerConnectionLost", "LedgerPermissionError",
            "LedgerReadOnlyError", "LedgerFullError", "StaleProjectionsError",
            "EventConflictError", "UnknownRunError", "UnknownStudyError", "InputError", "LineRejected",
            "StudyFolderError", "CheckpointError",
        )
    },
}
_EXPORTS = {name: where for section in _API.values() for name, where in section.items()}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'studyledger' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from .audit.checkpoint import Checkpoint
    from .audit.checkpoint import load as load_checkpoint
    from .audit.checkpoint import take as take_checkpoint
    from .audit.checkpoint import write as save_checkpoint
    from .audit.diff import diff_runs
    from .audit.export_canonical import export_canonical
    from .audit.export_jsonl import export_jsonl
    from .audit.merge import MergeReport, merge
    from .audit.replay import ReplayReport, Snapshot, replay, state_as_of
    from .audit.restore import RestoreReport, restore
    from .audit.verify import Problem, VerifyReport, verify
    from .errors import (
        CheckpointError,
        EventConflictError,
        InputError,
        LedgerBusyError,
        LedgerError,
        LedgerConnectionLost,
        LedgerFullError,
        LedgerMissingError,
        LedgerPermissionError,
        LedgerReadOnlyError,
        LineRejected,
        NewerLedgerError,
        NotALedgerError,
        StaleProjectionsError,
        StudyFolderError,
        StudyLedgerError,
        UnknownRunError,
        UnknownStudyError,
        ValidationError,
    )
    from .ingestion.adapters import LineAdapter
    from .ingestion.dropwriter import DropWriter
    from .ingestion.service import IngestReport, ingest
    from .ingestion.watcher import Watcher
    from .ledger import Ledger, run_id_for
    from .schema import (
        ConstraintSeverity,
        Observation,
        ObservationLevel,
        ProvenanceMetadata,
        RunBudget,
        RunStatus,
        SeedPolicy,
    )
    from .store import AppendResult, Head
