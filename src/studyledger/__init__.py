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

# name -> (module, attribute): the public API, loaded on first use.
_EXPORTS: dict[str, tuple[str, str]] = {
    # the ledger
    "Ledger": ("studyledger.ledger", "Ledger"),
    "run_id_for": ("studyledger.ledger", "run_id_for"),
    "Head": ("studyledger.store", "Head"),
    "AppendResult": ("studyledger.store", "AppendResult"),
    # the seed's vocabulary
    "ConstraintSeverity": ("studyledger.schema", "ConstraintSeverity"),
    "Observation": ("studyledger.schema", "Observation"),
    "ObservationLevel": ("studyledger.schema", "ObservationLevel"),
    "ProvenanceMetadata": ("studyledger.schema", "ProvenanceMetadata"),
    "RunBudget": ("studyledger.schema", "RunBudget"),
    "RunStatus": ("studyledger.schema", "RunStatus"),
    "SeedPolicy": ("studyledger.schema", "SeedPolicy"),
    # ingestion
    "DropWriter": ("studyledger.ingestion.dropwriter", "DropWriter"),
    "IngestReport": ("studyledger.ingestion.service", "IngestReport"),
    "LineAdapter": ("studyledger.ingestion.adapters", "LineAdapter"),
    "Watcher": ("studyledger.ingestion.watcher", "Watcher"),
    "ingest": ("studyledger.ingestion.service", "ingest"),
    # audits
    "Checkpoint": ("studyledger.audit.checkpoint", "Checkpoint"),
    "MergeReport": ("studyledger.audit.merge", "MergeReport"),
    "Problem": ("studyledger.audit.verify", "Problem"),
    "ReplayReport": ("studyledger.audit.replay", "ReplayReport"),
    "RestoreReport": ("studyledger.audit.restore", "RestoreReport"),
    "Snapshot": ("studyledger.audit.replay", "Snapshot"),
    "VerifyReport": ("studyledger.audit.verify", "VerifyReport"),
    "diff_runs": ("studyledger.audit.diff", "diff_runs"),
    "export_canonical": ("studyledger.audit.export_canonical", "export_canonical"),
    "export_jsonl": ("studyledger.audit.export_jsonl", "export_jsonl"),
    "load_checkpoint": ("studyledger.audit.checkpoint", "load"),
    "merge": ("studyledger.audit.merge", "merge"),
    "replay": ("studyledger.audit.replay", "replay"),
    "restore": ("studyledger.audit.restore", "restore"),
    "save_checkpoint": ("studyledger.audit.checkpoint", "write"),
    "state_as_of": ("studyledger.audit.replay", "state_as_of"),
    "take_checkpoint": ("studyledger.audit.checkpoint", "take"),
    "verify": ("studyledger.audit.verify", "verify"),
    # errors
    **{name: ("studyledger.errors", name) for name in (
        "CheckpointError", "EventConflictError", "InputError", "LedgerBusyError", "LedgerError",
        "LedgerFullError", "LedgerMissingError", "LedgerReadOnlyError", "LineRejected", "NewerLedgerError",
        "NotALedgerError", "StaleProjectionsError", "StudyFolderError", "StudyLedgerError",
        "UnknownRunError", "UnknownStudyError", "ValidationError",
    )},
}

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
        LedgerFullError,
        LedgerMissingError,
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
