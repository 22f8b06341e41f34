"""Studies with conditions and metrics, built fast through the Ledger API, for figures tests.

Every event has a fixed ``recorded_at`` and fixed times, so the same call builds the same
ledger and the dashboard (run with ``tui_helpers.CLOCK``) draws the same screen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from studyledger import Ledger, RunBudget
from studyledger.events import (
    EventKind,
    NewEvent,
    condition_registered,
    evaluation_recorded,
    make_event,
    run_registered,
    run_status_changed,
    study_registered,
)

from .tui_helpers import RECORDED, at


def _event(kind: EventKind, body: dict[str, Any]) -> NewEvent:
    return make_event(kind, body, source="api", recorded_at=RECORDED)


def study_events(study: str, *, conditions: int, replicates: int, seed: int = 0,
                 special: bool = False, unfinished: int = 0) -> list[NewEvent]:
    """A study of ``conditions`` x ``replicates`` runs with a primary outcome ``score``,
    a true/false ``feasible`` and a ``tokens`` count per run.

    Args:
        special: Some scores are NaN, Infinity or -Infinity (as upstream writes them).
        unfinished: The last this many runs of each condition are left running or pending.
    """
    events = [_event(EventKind.STUDY_REGISTERED, study_registered(
        study, title=f"Study {study}", run_budget=RunBudget(replicates=replicates),
        extra={"outcomes": [{"name": "score", "primary": True}, {"name": "tokens", "primary": False}]}, at=at(0)))]
    for c in range(conditions):
        condition = f"cond-{c:03d}"
        events.append(_event(EventKind.CONDITION_REGISTERED, condition_registered(
            study, condition, factors={"prompt": ["plain", "scaffold"][c % 2], "model": f"m{c // 2}"})))
        for r in range(1, replicates + 1):
            run_id = f"{study}-{c:03d}-{r:03d}"
            n = (seed * 7919 + c * 104729 + r * 1299709) % 1000
            events.append(_event(EventKind.RUN_REGISTERED, run_registered(
                run_id, study_id=study, condition_id=condition, replicate=r, agent_id="agent",
                problem_id="bracket", seed=n, at=at(0))))
            if r > replicates - unfinished:
                if r % 2:
                    events.append(_event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
                        run_id, "running", at=at(60 + r % 600), study_id=study)))
                continue
            events.append(_event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
                run_id, "running", at=at(r % 1200), study_id=study)))
            failed = n % 7 == 0
            events.append(_event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
                run_id, "failed" if failed else "success", at=at(r % 1200 + 1 + n % 30), study_id=study,
                error="RuntimeError: unknown material" if failed else None)))
            score: float = (n % 100) / 100 + c / 100
            if special and n % 5 == 0:
                score = [math.nan, math.inf, -math.inf][n % 3]
            for name, value in (("score", score), ("feasible", n % 3 != 0), ("tokens", 100 + n)):
                events.append(_event(EventKind.EVALUATION_RECORDED, evaluation_recorded(
                    run_id, evaluator_id="problem_evaluator", metric_name=name, metric_value=value,
                    metric_unit="unitless", aggregation_level="run", study_id=study)))
    return events


def build_study(path: Path, study: str = "study", **options: Any) -> Path:
    """A ledger holding one :func:`study_events` study."""
    with Ledger.open(path) as ledger:
        ledger.append(study_events(study, **options))
    return path
