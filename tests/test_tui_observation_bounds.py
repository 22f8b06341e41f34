"""The observation screen draws a bounded preview of a huge value (issue 11, item 5): one
16 MiB observation ran the dashboard for minutes and grew it to 6.2 GB."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Static

from studyledger import Ledger
from studyledger.tui.screens.observation import PREVIEW_CHARS, ObservationScreen

from .test_tui_app import make_app, static_text
from .tui_helpers import build, observation, sync, until

HUGE = 4 * 1024 * 1024


@sync
async def test_a_huge_observation_is_a_bounded_scrollable_preview_and_copies_whole(tmp_path: Path) -> None:
    db = build(tmp_path / "ledger.db")
    # 200,000 values: more than the ingester accepts from a line, as an older ledger or
    # the API can hold; and a text of 4 MiB.
    meta = {"items": [{} for _ in range(200_000)], "tail": "end-of-meta"}
    with Ledger.open(db) as ledger:
        ledger.append([observation("run-ok", 99, text="t" * HUGE + "end-of-text", meta=meta, second=59)])
        seq = ledger.head().seq
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        app.push_screen(ObservationScreen(seq))
        await until(pilot, lambda: isinstance(app.screen, ObservationScreen) and app.screen.row is not None)
        fields = static_text(app.screen.query_one("#fields", Static))
        meta_shown = static_text(app.screen.query_one("#meta", Static))
        assert f"{HUGE + len('end-of-text'):,} characters: the first {PREVIEW_CHARS:,} are shown" in fields
        assert "end-of-text" not in fields and "end-of-meta" not in meta_shown
        assert len(fields) < 4 * PREVIEW_CHARS and len(meta_shown) < 4 * PREVIEW_CHARS
        await pilot.press("G")  # scrollable to its end
        await pilot.press("y")
        copied = json.loads(app.clipboard)
        assert copied["text"].endswith("end-of-text") and copied["meta_json"] == meta
