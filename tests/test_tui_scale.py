"""A run with a very large number of observations opens fast and scrolls from pages.

The default suite uses 100,000 observations, 25 times what the list may hold in memory
(:data:`MAX_PAGES` pages); set ``STUDYLEDGER_TUI_BIG=1000000`` for the full million. The ledger is built once and kept in pytest's cache folder
(``.pytest_cache``), so only the first run pays for it. Times are printed, never asserted.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.data import ObservationFilter
from studyledger.tui.observation_list import MAX_PAGES, ObservationList

from .tui_helpers import CLOCK, build_big, sync, until

BIG = int(os.environ.get("STUDYLEDGER_TUI_BIG", "100000"))


@pytest.fixture(scope="session")
def big_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Cached across runs when pytest's cache is on (building it is the slow part).
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("studyledger-tui-big")) if cache is not None else tmp_path_factory.mktemp("big")
    path = folder / f"big-{BIG}.db"
    if path.exists():
        with sqlite3.connect(path) as conn:
            found = conn.execute("SELECT observation_count FROM runs WHERE run_id = 'run-big'").fetchone()
        if found == (BIG,):
            return path
        path.unlink()
    partial = path.with_suffix(".partial")
    for leftover in folder.glob(f"{partial.name}*"):
        leftover.unlink()
    build_big(partial, BIG)
    partial.rename(path)
    return path


@sync
async def test_a_huge_run_opens_and_scrolls_from_pages(big_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = StudyLedgerApp(big_db, clock=CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        started = time.perf_counter()
        await app.open_run("run-big")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.total == BIG and observations.loaded_row(0) is not None)
        opened = time.perf_counter() - started
        assert observations.loaded_row(0)["record_id"] == "run-big-0"  # type: ignore[index]

        started = time.perf_counter()
        await pilot.press("G")
        await until(pilot, lambda: observations.loaded_row(BIG - 1) is not None)
        to_end = time.perf_counter() - started
        assert observations.loaded_row(BIG - 1)["record_id"] == f"run-big-{BIG - 1}"  # type: ignore[index]

        started = time.perf_counter()
        middle = BIG // 2 + 37
        observations.move_to(middle)
        await until(pilot, lambda: observations.loaded_row(middle) is not None)
        jump = time.perf_counter() - started
        assert observations.loaded_row(middle)["record_id"] == f"run-big-{middle}"  # type: ignore[index]

        before = observations.cursor
        await pilot.press("pagedown", "pagedown")  # the keys work; timing them would time the pilot
        await until(pilot, lambda: observations.cursor > before)
        started = time.perf_counter()
        for _ in range(60):  # scroll 60 screens down, page by page, waiting for each screen's rows
            observations.action_page(1)
            await until(pilot, lambda: observations.loaded_row(observations.cursor) is not None)
        paging = time.perf_counter() - started
        cursor = observations.cursor
        assert observations.loaded_row(cursor)["record_id"] == f"run-big-{cursor}"  # type: ignore[index]
        wanted = range(0, BIG, BIG // (MAX_PAGES + 5))  # rows on more pages than the list may keep ...
        for row in wanted:
            observations._row(row)  # asks for the row's page, as drawing it would
        assert len(observations._loading) > MAX_PAGES  # (a few were held already)
        await until(pilot, lambda: not observations._loading)  # ... every one read ...
        assert len(observations._pages) <= MAX_PAGES  # ... and no more kept: memory is bounded by the cache

        started = time.perf_counter()  # a filter on a huge run counts through the index
        app.screen.apply_filter(ObservationFilter(level="tool-call"))  # type: ignore[attr-defined]
        await until(pilot, lambda: observations.total == BIG // 10 and observations.loaded_row(0) is not None)
        filtered = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[tui scale] {BIG:,} observations: open {opened * 1000:.0f} ms, end {to_end * 1000:.0f} ms, "
              f"jump to middle {jump * 1000:.0f} ms, 60 page-downs {paging * 1000:.0f} ms, "
              f"tool-call filter {filtered * 1000:.0f} ms")
