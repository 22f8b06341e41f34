"""Save an SVG screenshot of each dashboard screen into screenshots/.

    python scripts/make_screenshots.py [--out screenshots] [--png]

Builds a fresh ledger from ledger_examples/ (ingested exactly as its README says, through
the `studyledger ingest` command) and drives the real app with Textual's pilot, saving
each screen with the app's own ``save_screenshot``. The dashboard's clock is pinned to ten
minutes after the last event was recorded, so "ago" columns and stale flags come out the
same on every run. Without ledger_examples/ the ledger is built through the Python API.
With --png, each SVG is also converted with rsvg-convert (when installed) for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from studyledger import Ledger, Observation, RunBudget, RunStatus
from textual.widgets import DataTable, Input, Static

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.screens.compare import CompareScreen
from studyledger.tui.screens.search import SearchScreen
from studyledger.events import parse_instant
from studyledger.tui.observation_list import ObservationList

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "ledger_examples"
SIZE = (110, 32)
WIDE = (120, 32)  # the study screens, at the width they are laid out for
SEARCH = "beam"  # a tool the example traces call
CRASHED_RUN = "run-14447d5846f9"  # documented in ledger_examples/README.md
TOOL_RUN = "run-52be32d9b27d"


def build_ledger(db: Path, examples: Path) -> None:
    """Ingest the examples the way a user would, or write a small study through the API."""
    if examples.is_dir():
        subprocess.run([sys.executable, "-m", "studyledger", "--db", str(db), "ingest",
                        str(examples / "bracket-study"), str(examples / "drop")],
                       check=True, stdout=subprocess.DEVNULL)
        return
    with Ledger.open(db) as ledger:
        ledger.register_study("demo", title="Demo study", description="written by make_screenshots.py",
                              run_budget=RunBudget(replicates=2))
        for replicate in (1, 2):
            run_id = ledger.register_run("demo", "baseline", replicate=replicate, agent_id="agent", problem_id="p")
            ledger.transition(run_id, RunStatus.RUNNING)
            ledger.observe(*[Observation(timestamp=datetime.now().astimezone().isoformat(),
                                         record_id=f"{run_id}-{n}", text=f"step {n}", session_id=run_id,
                                         actor_id="agent", event_type="step", run_id=run_id)
                              for n in range(20)])
            ledger.transition(run_id, RunStatus.SUCCESS)


def pinned_clock(db: Path) -> Callable[[], datetime]:
    """Ten minutes after the last recorded event."""
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT max(recorded_at) FROM events").fetchone()[0]
    moment = (parse_instant(last) or datetime.now().astimezone()) + timedelta(minutes=10)
    return lambda: moment


async def settle(app: StudyLedgerApp, pilot: object, ready: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for the screen's workers, then a little longer for the last paint."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                break
        except Exception:  # the screen is still composing
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"screen {type(app.screen).__name__} did not load in {timeout} s")
        await asyncio.sleep(0.05)
    await pilot.pause(0.3)  # type: ignore[attr-defined]


async def shoot(db: Path, out: Path, examples_used: bool) -> list[Path]:
    """Drive the app through every screen, saving one SVG each."""
    app = StudyLedgerApp(db, clock=pinned_clock(db), stale_after=300.0)
    saved: list[Path] = []

    def save(name: str) -> None:
        saved.append(Path(app.save_screenshot(f"{name}.svg", path=str(out))))

    async def step(name: str, action: Callable[[], object], ready: Callable[[], object]) -> None:
        action()
        await pilot.pause(0.1)
        await settle(app, pilot, ready)
        save(name)

    def rows(selector: str = "DataTable") -> int:
        return app.screen.query_one(selector, DataTable).row_count

    def verified() -> bool:
        shown = str(app.screen.query_one("#verify", Static).content)
        return "intact" in shown or "tampered" in shown

    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot, lambda: app.source is not None and app.screen.query("DataTable"))
        save("01-studies")
        assert app.source is not None
        first = app.source.ids()[0][0]["study_id"]
        await step("02-runs", lambda: app.open_study(first), rows)
        runs = {r["run_id"] for r in app.source.ids()[1]}
        for name, run_id in (("03-run-crashed", CRASHED_RUN), ("04-run-tool-calls", TOOL_RUN)):
            if run_id not in runs:
                run_id = sorted(runs)[0]
            opened = app.open_run(run_id)
            assert opened is not None
            await opened
            observations = app.screen.query_one(ObservationList)
            await settle(app, pilot, lambda listed=observations: listed.loaded_row(max(0, listed.total - 1)) is not None)
            if name == "04-run-tool-calls":
                await pilot.press("j", "j", "j", "j", "j")
            await pilot.pause(0.2)
            save(name)
        await pilot.press("enter")
        await settle(app, pilot, lambda: getattr(app.screen, "row", None))
        save("05-observation")
        await step("06-ingestion", app.action_ingestion, lambda: rows("#rejected") or not examples_used)
        await step("07-audit", app.action_audit, verified)
        await pilot.press("escape", "escape", "escape", "escape")
        await pilot.press("t")
        await step("08-runs-light-theme", lambda: app.open_study(first), rows)
    saved += await shoot_study_screens(db, out, first)
    return saved


async def shoot_study_screens(db: Path, out: Path, study: str) -> list[Path]:
    """The conditions of a study, two of them compared, a search across every run, and one
    run's metrics and outputs."""
    app = StudyLedgerApp(db, clock=pinned_clock(db), stale_after=300.0)
    saved: list[Path] = []

    def save(name: str) -> None:
        saved.append(Path(app.save_screenshot(f"{name}.svg", path=str(out))))

    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot, lambda: app.source is not None and app.screen.query("DataTable"))
        app.open_conditions(study)
        await settle(app, pilot, lambda: app.screen.query_one(DataTable).row_count)
        save("09-conditions")
        await pilot.press("c", "j", "c")
        await settle(app, pilot, lambda: isinstance(app.screen, CompareScreen)
                     and not isinstance(app.screen.query_one("#compared", Static).content, str))
        save("10-compare-conditions")
        await pilot.press("escape", "escape", "s")
        await settle(app, pilot, lambda: isinstance(app.screen, SearchScreen))
        app.screen.query_one(Input).value = SEARCH
        await pilot.press("enter")
        await settle(app, pilot, lambda: app.screen.query_one(DataTable).row_count)
        save("11-search")
        assert app.source is not None
        finished = [run for run in app.source.runs(study, status="success")]
        if finished:
            opened = app.open_run(finished[0]["run_id"])
            assert opened is not None
            await opened
            await settle(app, pilot, lambda: getattr(app.screen, "run_row", None))
            await pilot.press("D")  # the details on the whole screen: metrics, outputs, history
            await pilot.pause(0.2)
            save("12-run-metrics")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots")
    parser.add_argument("--examples", type=Path, default=EXAMPLES, help="example inputs to ingest")
    parser.add_argument("--png", action="store_true", help="also write PNG copies (needs rsvg-convert)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "examples.db"
        build_ledger(db, args.examples)
        saved = asyncio.run(shoot(db, args.out, args.examples.is_dir()))
    converter = shutil.which("rsvg-convert")
    for svg in saved:
        print(svg.relative_to(REPO) if svg.is_relative_to(REPO) else svg)
        if args.png and converter:
            subprocess.run([converter, str(svg), "-o", str(svg.with_suffix(".png"))], check=True)


if __name__ == "__main__":
    main()
