"""What ``studyledger verify`` adds on top of the core checks: a checkpoint, and a record."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..ledger import Ledger
from ..verify import VerifyReport
from . import checkpoint as checkpoints
from .record import record_audit


def extend_verify(ledger: Ledger, report: VerifyReport, checkpoint_file: Path | None, record: bool) -> None:
    """Add checkpoint problems to ``report`` and record the audit when asked.

    Raises:
        CheckpointError: the checkpoint file cannot be read.
    """
    check = "verify"
    if checkpoint_file is not None:
        pinned = checkpoints.load(checkpoint_file)
        report.problems.extend(checkpoints.check(ledger.store, pinned))
        check = "verify+checkpoint"
    if record:
        first = report.first_failure
        record_audit(ledger, check, report.ok, {
            "events": report.events,
            "problems": len(report.problems),
            "checks_failed": sorted({p.check for p in report.problems}),
            "first_problem": None if first is None else asdict(first),
            "checkpoint": None if checkpoint_file is None else str(checkpoint_file),
        })
