"""Ledgers with fixed contents and fixed times for the dashboard's tests and screenshots.

Every event is appended through the Ledger API (``make_event`` + ``Ledger.append``) with a
fixed ``recorded_at``, so the same call always builds the same ledger and the dashboard,
run with :data:`CLOCK`, draws the same screen.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from textual.css.query import NoMatches

from studyledger import Ledger
from studyledger.events import EventKind, NewEvent, make_event
from studyledger.events import observation_recorded as observation_body
from studyledger.events import provenance_captured, run_registered, run_status_changed, study_registered

RECORDED = "2026-03-02T10:00:00.000000+00:00"
NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
HOSTILE = "[bold red]pwned[/] \x1b[2J\x1b]0;owned\x07\x9b31m tail"


def CLOCK() -> datetime:  # named like a constant: it stands for one fixed moment
    """The fixed "now" of every deterministic test: 30 minutes after the events."""
    return NOW


def _event(kind: EventKind, body: dict[str, Any]) -> NewEvent:
    return make_event(kind, body, source="api", recorded_at=RECORDED)


def at(second: int) -> str:
    """A timestamp ``second`` seconds after 09:00 on the fixture day."""
    return f"2026-03-02T09:{second // 60:02d}:{second % 60:02d}.000000+00:00"


def observation(run_id: str, n: int, *, event_type: str = "step", level: str = "step", text: str = "",
                tool: str | None = None, span: str | None = None, parent: str | None = None,
                second: int = 0, meta: dict[str, Any] | None = None) -> NewEvent:
    """One observation event of a run."""
    extra = dict(meta or {})
    if span is not None:
        extra.update(span_id=span, parent_span_id=parent)
    return _event(EventKind.OBSERVATION_RECORDED, observation_body({
        "timestamp": at(second), "record_id": f"{run_id}-{n}", "text": text, "event_type": event_type,
        "level": level, "run_id": run_id, "study_id": None, "tool_name": tool, "meta_json": extra}))


def register(study: str, run_id: str, condition: str, replicate: int, seed: int) -> NewEvent:
    """A run registration."""
    return _event(EventKind.RUN_REGISTERED, run_registered(
        run_id, study_id=study, condition_id=condition, replicate=replicate, agent_id="agent",
        problem_id="bracket", seed=seed, at=at(0)))


def status(run_id: str, study: str, to: str, second: int, *, reason: str | None = None,
           error: str | None = None) -> NewEvent:
    """A status change."""
    return _event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
        run_id, to, at=at(second), reason=reason, error=error, study_id=study))


def trace(run_id: str, start: int) -> list[NewEvent]:
    """A small agent trace: run > agent > step > (model call, tool call)."""
    return [
        observation(run_id, start, event_type="RunStarted", level="run", span="s-run", second=1),
        observation(run_id, start + 1, event_type="AgentRunStarted", span="s-agent", parent="s-run", second=1),
        observation(run_id, start + 2, event_type="ModelCallStarted", text="model small",
                    span="s-model", parent="s-agent", second=2),
        observation(run_id, start + 3, event_type="ModelCallFinished", text="model small 120 tokens",
                    span="s-model", parent="s-agent", second=3, meta={"usage": {"total_tokens": 120}}),
        observation(run_id, start + 4, event_type="ToolCallStarted", level="tool-call", tool="beam",
                    span="s-tool", parent="s-agent", second=4),
        observation(run_id, start + 5, event_type="ToolCallFinished", level="tool-call", tool="beam",
                    text="beam ok (12 ms)", span="s-tool", parent="s-agent", second=5),
        observation(run_id, start + 6, event_type="RunFinished", level="run", span="s-run", second=6),
    ]


def build(path: Path, *, hostile: bool = False) -> Path:
    """A ledger with two studies and runs in every status (one running, stale at :data:`NOW`).

    With ``hostile``, a study title, a run's error and an observation carry Rich markup and
    terminal control sequences.
    """
    title = f"Bracket sizing {HOSTILE}" if hostile else "Bracket sizing: prompt x model"
    events = [
        _event(EventKind.STUDY_REGISTERED, study_registered("bracket", title=title, at=at(0))),
        _event(EventKind.STUDY_REGISTERED, study_registered("smoke", title="Nightly smoke tests", at=at(0))),
        register("bracket", "run-ok", "baseline", 1, 101),
        register("bracket", "run-fail", "baseline", 2, 102),
        register("bracket", "run-live", "scaffold", 1, 103),
        register("bracket", "run-skip", "scaffold", 2, 104),
        register("bracket", "run-wait", "scaffold", 3, 105),
        register("smoke", "run-smoke", "default", 1, 7),
        status("run-ok", "bracket", "running", 1),
        *trace("run-ok", 0),
        status("run-ok", "bracket", "success", 7, reason="completed"),
        status("run-fail", "bracket", "running", 10),
        observation("run-fail", 0, event_type="ToolCallFinished", level="tool-call", tool="beam",
                    text=HOSTILE if hostile else "beam failed", second=12),
        status("run-fail", "bracket", "failed", 13, reason="tool error",
               error=HOSTILE if hostile else "RuntimeError: beam solver diverged"),
        status("run-live", "bracket", "running", 20),
        *trace("run-live", 0)[:4],
        status("run-skip", "bracket", "skipped", 30, reason="dependency unavailable"),
        status("run-smoke", "smoke", "running", 40),
        status("run-smoke", "smoke", "success", 45),
        _event(EventKind.PROVENANCE_CAPTURED, provenance_captured("run-ok", {
            "captured_at": at(1), "host": "lab-7", "platform": "Linux", "python_version": "3.11.7",
            "git_sha": "abc1234", "package_versions": {"numpy": "2.1.0"}, "extra": {}}, study_id="bracket")),
    ]
    with Ledger.open(path) as ledger:
        ledger.append(events)
    return path


def build_big(path: Path, count: int, *, batch: int = 50_000) -> str:
    """A ledger whose run ``run-big`` has ``count`` observations; returns the run id."""
    with Ledger.open(path) as ledger:
        ledger.append([
            _event(EventKind.STUDY_REGISTERED, study_registered("big", title="Big", at=at(0))),
            register("big", "run-big", "c", 1, 1),
            status("run-big", "big", "running", 1),
        ])
        for start in range(0, count, batch):
            ledger.append([
                observation("run-big", n, event_type="ToolCallFinished" if n % 10 == 0 else "step",
                            level="tool-call" if n % 10 == 0 else "step", text=f"row {n}",
                            second=n % 3600)
                for n in range(start, min(count, start + batch))
            ])
    return "run-big"


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test with asyncio (the suite has no async pytest plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def _holds(condition: Callable[[], object]) -> bool:
    try:
        return bool(condition())
    except NoMatches:  # The screen is still composing.
        return False


async def until(pilot: Any, condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (workers finish in their own time).

    Raises:
        AssertionError: it did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)
        await asyncio.sleep(0.01)
