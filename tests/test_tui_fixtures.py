"""The study screens on upstream's real output, at the sizes people use (80x24, 120x40):
every column shown fits the screen, nothing wraps, and what the screens say equals what
upstream's own files say (runs.csv, runs.jsonl), read independently in the test.

Update the snapshots after an intended change with
``pytest tests/test_tui_fixtures.py --snapshot-update``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.format import duration
from studyledger.tui.screens.conditions import ConditionsScreen
from studyledger.tui.screens.run import RunScreen
from studyledger.tui.screens.runs import RunsScreen
from studyledger.tui.screens.studies import StudiesScreen

from .test_tui_app import column, details_text, static_text
from .tui_helpers import CLOCK, sync, until

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"
SIZES = [(80, 24), (120, 40)]


def runs_csv(case: str) -> list[dict[str, str]]:
    with (UPSTREAM / case / "runs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def make_app(db: Path) -> StudyLedgerApp:
    return StudyLedgerApp(db, clock=CLOCK, stale_after=60.0)


async def conditions(pilot: Pilot[Any], study: str, rows: int) -> ConditionsScreen:
    app = pilot.app
    assert isinstance(app, StudyLedgerApp)
    await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)
    app.open_conditions(study)
    await until(pilot, lambda: isinstance(app.screen, ConditionsScreen)
                and app.screen.query_one(DataTable).row_count == rows)
    await pilot.pause(0.1)
    screen = app.screen
    assert isinstance(screen, ConditionsScreen)
    return screen


def table_width(table: DataTable[Any]) -> int:
    return sum(column.get_render_width(table) for column in table.columns.values())


@sync
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
async def test_conditions_fit_the_screen_and_equal_runs_csv(upstream_ledgers: dict[str, Path],
                                                           size: tuple[int, int]) -> None:
    expected: dict[tuple[str, str], list[float]] = {}
    for row in runs_csv("agents_traced"):
        if row["primary_outcome"]:
            expected.setdefault((row["agent_id"], row["problem_id"]), []).append(float(row["primary_outcome"]))
    async with make_app(upstream_ledgers["agents_traced"]).run_test(size=size) as pilot:
        screen = await conditions(pilot, "agents-traced-study", 6)
        table = screen.query_one(DataTable)
        keys = [str(key.value) for key in table.columns]
        assert table_width(table) <= size[0] - 2  # nothing cut at the edge
        # What the conditions are, how far, and the primary outcome always; more when there is room.
        assert {"factor:agent_id", "factor:problem_id", "progress", "metric:primary_outcome"} <= set(keys)
        if size[0] >= 120:
            assert {"condition", "picture", "success", "runs"} <= set(keys)
        agents, problems = column(table, "factor:agent_id"), column(table, "factor:problem_id")
        for agent, problem, cell in zip(agents, problems, column(table, "metric:primary_outcome"), strict=True):
            values = expected[(agent, problem)]
            mean, n = cell.split(" ")[0], cell.rsplit("n=", 1)[1]
            assert int(n) == len(values)
            assert float(mean) == pytest.approx(statistics.fmean(values), abs=5e-4)
        summary = screen.query_one("#summary", Static)
        lines = static_text(summary).splitlines()
        assert len(lines) == 4 and summary.size.height == 4  # never wrapped
        assert all(len(line) <= size[0] - 2 for line in lines)
        assert "primary_outcome" in lines[1] and "latency" in lines[3] and "cost $0" in lines[3]


@sync
async def test_an_inadmissible_condition_says_so_in_its_own_column(upstream_ledgers: dict[str, Path]) -> None:
    study = (UPSTREAM / "plain" / "conditions.csv").read_text()
    assert "False" in study  # upstream lists one inadmissible condition
    async with make_app(upstream_ledgers["plain"]).run_test(size=(120, 40)) as pilot:
        screen = await conditions(pilot, "plain-study", 6)
        table = screen.query_one(DataTable)
        progress = column(table, "progress")
        assert progress.count("inadmissible") == 1
        assert all("inadmissible" not in cell for cell in column(table, "condition"))
        header = str(table.columns["picture"].label)  # type: ignore[index]
        assert "…" in header  # the pictures' shared scale


@sync
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
async def test_runs_show_the_primary_outcome_beside_the_status_and_the_runners_latency(
        upstream_ledgers: dict[str, Path], size: tuple[int, int]) -> None:
    csv_rows = {row["run_id"]: row for row in runs_csv("agents_traced")}
    app = make_app(upstream_ledgers["agents_traced"])
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)
        app.open_study("agents-traced-study")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count)
        table = app.screen.query_one(DataTable)
        assert str(table.columns["metric"].label) == "primary_outcome"  # type: ignore[index]
        shown = list(table.columns.values())
        through_metric = shown[: [str(c.key.value) for c in shown].index("metric") + 1]
        assert sum(c.get_render_width(table) for c in through_metric) <= size[0] - 2
        for run_id, metric, took in zip(column(table, "run"), column(table, "metric"), column(table, "duration"),
                                        strict=True):
            row = csv_rows[run_id]
            assert metric == ("-" if not row["primary_outcome"] else f"{float(row['primary_outcome']):.4g}")
            assert took == duration(float(row["latency_s"]))
        assert "latency" in static_text(app.screen.query_one("#summary", Static))


@sync
async def test_the_run_screen_shows_metrics_evaluator_outputs_and_outputs(upstream_ledgers: dict[str, Path]) -> None:
    lines = {}
    for line in (UPSTREAM / "metrics_special" / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines():
        record = json.loads(line)
        lines[record["outputs"]["answer"]["variant"]] = record
    app = make_app(upstream_ledgers["metrics_special"])
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        for variant, spelled in (("nan", "NaN"), ("inf", "Infinity")):
            record = lines[variant]
            await app.open_run(record["run_id"])
            await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_row is not None)
            text = details_text(app.screen)
            figures = static_text(app.screen.query_one("#run-figures", Static))
            for group in ("evaluators", "run metrics", "outputs"):
                assert group in figures
            for name, value in (("answer.max_stress_ratio", spelled), ("answer.variant", variant),
                                ("max_stress_ratio", spelled), ("score", spelled), ("converged", "true")):
                assert re.search(rf"(^|\s){re.escape(name)}\s+{value}\s", figures), (name, figures)
            assert f"{duration(record['latency'])} the runner's latency" in text
            await pilot.press("escape")


# -- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_conditions_snapshot_of_a_real_study(upstream_ledgers: dict[str, Path], snap_compare: Any,
                                             size: tuple[int, int]) -> None:
    assert snap_compare(make_app(upstream_ledgers["agents_traced"]), terminal_size=size,
                        run_before=lambda pilot: conditions(pilot, "agents-traced-study", 6))


def test_conditions_snapshot_light_theme(upstream_ledgers: dict[str, Path], snap_compare: Any) -> None:
    async def light(pilot: Pilot[Any]) -> None:
        await conditions(pilot, "metrics-special-study", 4)
        await pilot.press("t")
        await pilot.pause(0.2)

    assert snap_compare(make_app(upstream_ledgers["metrics_special"]), terminal_size=(120, 24), run_before=light)


def test_run_snapshot_with_metrics_at_80x24(upstream_ledgers: dict[str, Path], snap_compare: Any) -> None:
    async def opened(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, StudyLedgerApp)
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-58e8e56f2eb9")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_row is not None)
        await pilot.press("D")
        await pilot.pause(0.2)

    assert snap_compare(make_app(upstream_ledgers["metrics_special"]), terminal_size=(80, 24), run_before=opened)


def shown_at_its_width(widget: Static) -> str:
    """What a Static shows, laid out at the width it has on the screen."""
    console = Console(width=widget.content_size.width, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(widget.content)
    return capture.get()


@sync
async def test_the_run_figures_keep_every_value_when_the_keys_panel_narrows_them(
        upstream_ledgers: dict[str, Path]) -> None:
    """Review item 14: with `?` open, the run-metrics grid dropped values (laid out for the
    width it had before the panel took its share)."""
    record = next(json.loads(line) for line in
                  (UPSTREAM / "metrics_special" / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines()
                  if json.loads(line)["outputs"]["answer"]["variant"] == "nan")
    app = make_app(upstream_ledgers["metrics_special"])
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run(record["run_id"])
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_row is not None)
        figures = app.screen.query_one("#run-figures", Static)
        pairs = [("answer.max_stress_ratio", "NaN"), ("answer.variant", "nan"), ("max_stress_ratio", "NaN"),
                 ("score", "NaN"), ("converged", "true")]
        wide = figures.content_size.width
        for name, value in pairs:
            assert re.search(rf"(^|\s){re.escape(name)}\s+{value}\s", shown_at_its_width(figures)), name
        await pilot.press("question_mark")
        await until(pilot, lambda: figures.content_size.width < wide)
        await pilot.pause()
        text = shown_at_its_width(figures)
        for name, value in pairs:
            assert re.search(rf"(^|\s){re.escape(name)}\s+{value}\s", text), (name, text)
        assert "…" not in text
