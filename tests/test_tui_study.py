"""The study screens (conditions, comparison, run diff, search) driven through the pilot,
their figures checked against the ledger's events, and their SVG snapshots.

Update the snapshots after an intended change with
``pytest tests/test_tui_study.py --snapshot-update``.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from studyledger import Ledger
from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.observation_list import ObservationList
from studyledger.tui.screens.compare import CompareScreen
from studyledger.tui.screens.conditions import ConditionsScreen
from studyledger.tui.screens.diff import DiffScreen
from studyledger.tui.screens.run import RunScreen
from studyledger.tui.screens.runs import RunsScreen
from studyledger.tui.screens.search import SearchScreen, parse_query
from studyledger.tui.screens.studies import StudiesScreen

from .study_helpers import build_study, study_events
from .test_figures import independent_figures
from .test_tui_app import column, static_text
from .tui_helpers import CLOCK, build, status, sync, until


@pytest.fixture(scope="module")
def nan_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 conditions x 5 replicates, some scores NaN or Infinity."""
    return build_study(tmp_path_factory.mktemp("nan") / "nan.db", conditions=8, replicates=5, special=True)


@pytest.fixture(scope="module")
def big_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 runs in 50 conditions, the last 20 of each condition not finished."""
    return build_study(tmp_path_factory.mktemp("big") / "big.db", conditions=50, replicates=200, unfinished=20)


def make_app(db: Path) -> StudyLedgerApp:
    return StudyLedgerApp(db, clock=CLOCK, stale_after=60.0)


async def conditions_loaded(pilot: Pilot[Any], study: str = "study", rows: int = 1) -> ConditionsScreen:
    app = pilot.app
    assert isinstance(app, StudyLedgerApp)
    await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)
    app.open_conditions(study)
    await until(pilot, lambda: isinstance(app.screen, ConditionsScreen)
                and app.screen.query_one(DataTable).row_count >= rows)
    screen = app.screen
    assert isinstance(screen, ConditionsScreen)
    return screen


def cells(table: DataTable[Any], key: str) -> list[str]:
    """Each row's cell of the column whose key is ``key``."""
    return column(table, key)  # type: ignore[arg-type]


def parse_summary(text: str) -> tuple[float | None, int]:
    """``(mean, n)`` from a cell such as ``0.475 [-0.179,1.13] n=4 +1 NaN``."""
    found = re.match(r"(\S+?)%? .*n=(\d+)", text)
    if not found:
        return None, 0
    return float(found.group(1)), int(found.group(2))


@sync
async def test_conditions_on_screen_equal_the_events(nan_study: Path) -> None:
    expected = independent_figures(nan_study)
    async with make_app(nan_study).run_test(size=(200, 40)) as pilot:
        screen = await conditions_loaded(pilot, rows=8)
        table = screen.query_one(DataTable)
        keys = [str(row.key.value) for row in table.ordered_rows]
        assert keys == sorted(expected)
        for key, done, score, picture in zip(keys, cells(table, "runs"), cells(table, "metric:score"),
                                             cells(table, "picture"), strict=True):
            want = expected[key]
            ended = sum(n for s, n in want["by_status"].items() if s in ("success", "failed", "skipped"))
            assert done == f"{ended}/5"
            values = want["metrics"]["score"]
            finite = [v for v in values if math.isfinite(v)]
            mean, n = parse_summary(score)
            assert n == len(finite)
            assert mean == pytest.approx(statistics.fmean(finite), rel=1e-2)
            nans = sum(1 for v in values if math.isnan(v))
            assert (f"+{nans} NaN" in score) == bool(nans)
            assert (f"{nans} NaN" in picture) == bool(nans)  # counted beside the picture, never drawn
        rates = cells(table, "success")
        for key, rate in zip(keys, rates, strict=True):
            by_status = expected[key]["by_status"]
            ended = by_status.get("success", 0) + by_status.get("failed", 0)
            assert rate == f"{by_status.get('success', 0) / ended * 100:.0f}%"


@sync
async def test_ten_thousand_runs_in_fifty_conditions_sort_and_open(big_study: Path) -> None:
    expected = independent_figures(big_study)
    async with make_app(big_study).run_test(size=(200, 40)) as pilot:
        screen = await conditions_loaded(pilot, rows=50)
        table = screen.query_one(DataTable)
        assert table.row_count == 50
        ended = sum(n for want in expected.values() for s, n in want["by_status"].items()
                    if s in ("success", "failed", "skipped"))
        assert f"{ended}/10000 ended" in static_text(screen.query_one("#summary", Static))
        success = [index for index, column in enumerate(screen.columns) if column.key == "success"][0]
        while screen.sort_column != success:
            await pilot.press("o")
        await pilot.press("O")  # best first
        await until(pilot, lambda: screen.descending)

        def rate(key: str) -> float:
            by_status = expected[key]["by_status"]
            return by_status.get("success", 0) / (by_status.get("success", 0) + by_status.get("failed", 0))

        shown = [str(row.key.value) for row in table.ordered_rows]
        assert [rate(key) for key in shown] == sorted((rate(key) for key in expected), reverse=True)
        table.move_cursor(row=0)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen)
                    and pilot.app.screen.query_one(DataTable).row_count == 200)
        runs = pilot.app.screen
        assert isinstance(runs, RunsScreen) and runs.condition_id == shown[0]


@sync
async def test_conditions_update_live_as_runs_finish(tmp_path: Path) -> None:
    db = build_study(tmp_path / "live.db", conditions=3, replicates=4, unfinished=2)
    async with make_app(db).run_test(size=(200, 30)) as pilot:
        screen = await conditions_loaded(pilot, rows=3)
        table = screen.query_one(DataTable)
        assert cells(table, "runs") == ["2/4", "2/4", "2/4"]
        cursor = table.cursor_row
        with Ledger.open(db) as ledger:  # another process finishes a run of the first condition
            ledger.append([status("study-000-003", "study", "running", 500),
                           status("study-000-003", "study", "success", 501)])
        await until(pilot, lambda: cells(table, "runs")[0] == "3/4")
        assert table.cursor_row == cursor


@sync
async def test_two_marked_conditions_open_side_by_side(nan_study: Path) -> None:
    expected = independent_figures(nan_study)
    async with make_app(nan_study).run_test(size=(160, 40)) as pilot:
        await conditions_loaded(pilot, rows=8)
        await pilot.press("c", "j", "c")
        await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                    and "difference" in static_text(pilot.app.screen.query_one("#compared", Static)))
        text = static_text(pilot.app.screen.query_one("#compared", Static))
        first = [v for v in expected["cond-000"]["metrics"]["tokens"] if math.isfinite(v)]
        second = [v for v in expected["cond-001"]["metrics"]["tokens"] if math.isfinite(v)]
        delta = statistics.fmean(second) - statistics.fmean(first)
        assert f"{delta:.4g}" in text
        assert "prompt" in text and "plain" in text and "scaffold" in text


@sync
async def test_search_opens_an_observation_in_its_run(tmp_path: Path) -> None:
    db = build(tmp_path / "ledger.db")
    async with make_app(db).run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: isinstance(pilot.app.screen, StudiesScreen))
        await pilot.press("s")
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen))
        box = pilot.app.screen.query_one(Input)
        box.value = "120 tokens status:running"
        await pilot.press("enter")
        screen = pilot.app.screen
        await until(pilot, lambda: screen.query_one(DataTable).row_count == 1)
        assert [hit["run_id"] for hit in screen.hits] == ["run-live"]
        seq = screen.hits[0]["seq"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, RunScreen))
        observations = pilot.app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.loaded_row(observations.cursor) is not None
                    and observations.loaded_row(observations.cursor)["seq"] == seq)


def test_search_filters_written_in_the_query() -> None:
    words, filters = parse_query("unknown material status:failed tool:material_lookup type:ToolCallFinished")
    assert words == "unknown material"
    assert (filters.status, filters.tool, filters.event_type) == ("failed", "material_lookup", "ToolCallFinished")


@sync
async def test_two_marked_runs_open_their_diff(tmp_path: Path) -> None:
    db = build(tmp_path / "ledger.db")
    app = make_app(db)
    async with app.run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen))
        app.open_study("bracket")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count)
        await pilot.press("c", "j", "c")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.data is not None)
        text = static_text(app.screen.query_one("#fields", Static))
        assert "status" in text and "success" in text and "failed" in text and "*" in text


@sync
async def test_trace_only_runs_are_on_the_first_screen_without_none(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    with Ledger.open(db) as ledger:
        ledger.append([status(f"run-trace-{n}", None, "running", n) for n in range(3)])  # type: ignore[arg-type]
    app = make_app(db)
    async with app.run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)
        table = app.screen.query_one(DataTable)
        assert column(table, "study") == ["(no study)"]  # type: ignore[arg-type]
        assert not app.screen.query_one("#empty", Static).display
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count == 3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_row is not None)
        header = static_text(app.screen.query_one("#run-summary", Static))
        assert "None" not in header and "rep -  seed -" in header


@sync
async def test_runs_show_the_primary_outcome_with_nan_spelled_out(nan_study: Path) -> None:
    app = make_app(nan_study)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)
        app.open_study("study")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count)
        table = app.screen.query_one(DataTable)
        assert str(table.columns["metric"].label) == "score"  # type: ignore[index]
        shown = cells(table, "metric")
        assert "NaN" in shown and "Infinity" in shown and "nan" not in shown
        await pilot.press("m")
        await until(pilot, lambda: str(table.columns["metric"].label) != "score")  # type: ignore[index]


# -- snapshots ------------------------------------------------------------------------------


def test_conditions_snapshot_nan_metrics(nan_study: Path, snap_compare: Any) -> None:
    assert snap_compare(make_app(nan_study), terminal_size=(160, 20),
                        run_before=lambda pilot: conditions_loaded(pilot, rows=8))


def test_conditions_snapshot_ten_thousand_runs(big_study: Path, snap_compare: Any) -> None:
    assert snap_compare(make_app(big_study), terminal_size=(160, 24),
                        run_before=lambda pilot: conditions_loaded(pilot, rows=50))


def test_conditions_snapshot_live_study(tmp_path: Path, snap_compare: Any) -> None:
    db = build_study(tmp_path / "live.db", conditions=4, replicates=6, unfinished=3)
    assert snap_compare(make_app(db), terminal_size=(160, 16), run_before=lambda pilot: conditions_loaded(pilot, rows=4))


def test_compare_snapshot(nan_study: Path, snap_compare: Any) -> None:
    async def compared(pilot: Pilot[Any]) -> None:
        await conditions_loaded(pilot, rows=8)
        await pilot.press("c", "j", "c")
        await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                    and "difference" in static_text(pilot.app.screen.query_one("#compared", Static)))

    assert snap_compare(make_app(nan_study), terminal_size=(130, 24), run_before=compared)


def test_search_snapshot(tmp_path: Path, snap_compare: Any) -> None:
    db = tmp_path / "s.db"
    with Ledger.open(db) as ledger:
        ledger.append(study_events("study", conditions=3, replicates=8))

    async def searched(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, StudiesScreen))
        await pilot.press("s")
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen))
        pilot.app.screen.query_one(Input).value = "unknown material"
        await pilot.press("enter")
        await until(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count > 0)

    assert snap_compare(make_app(db), terminal_size=(120, 16), run_before=searched)


def test_diff_snapshot(tmp_path: Path, snap_compare: Any) -> None:
    async def diffed(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, StudyLedgerApp)
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen))
        app.open_diff("run-ok", "run-fail")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.data is not None)

    assert snap_compare(make_app(build(tmp_path / "ledger.db")), terminal_size=(120, 30), run_before=diffed)

