"""Untrusted text is shown literally: markup stays text, control characters never escape."""

from __future__ import annotations

import html
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from rich.text import Text
from textual.widgets import DataTable

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.literal import clean, literal
from studyledger.tui.observation_list import ObservationList
from studyledger.tui.screens.observation import ObservationScreen
from studyledger.tui.screens.studies import StudiesScreen

from .test_tui_app import details_text
from .tui_helpers import CLOCK, build, sync, until

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def screen_text(app: StudyLedgerApp) -> str:
    """The characters on screen, from the app's own SVG screenshot."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


@given(st.text())
def test_clean_text_never_holds_a_control_character(value: str) -> None:
    assert not CONTROL.search(clean(value))
    assert not CONTROL.search(literal(value).plain)
    assert "\n" not in literal(value).plain


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc",))))
def test_printable_text_is_shown_exactly(value: str) -> None:
    shown = literal(value)
    assert shown.plain == value.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    assert not shown.spans  # no markup was parsed into styles


def test_markup_is_not_parsed_and_escapes_are_spelled_out() -> None:
    shown = literal("[bold red]x[/] \x1b[2J\x07\x9b")
    assert shown.plain == "[bold red]x[/] \\x1b[2J\\x07\\x9b"
    assert isinstance(shown, Text)
    assert literal("a\nb\tc", multiline=True).plain == "a\nb\tc"


@sync
async def test_hostile_titles_errors_and_trace_text_are_shown_literally(tmp_path: Path) -> None:
    db = build(tmp_path / "hostile.db", hostile=True)
    app = StudyLedgerApp(db, clock=CLOCK)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and app.screen.query_one(DataTable).row_count == 2)
        title = app.screen.query_one(DataTable).get_cell("bracket", "title")
        assert "[bold red]pwned[/]" in title.plain and "\\x1b[2J" in title.plain
        screen = screen_text(app)
        assert "Bracket sizing [bold re" in screen
        assert not CONTROL.search(app.export_screenshot().replace("\n", ""))

        await app.open_run("run-fail")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.loaded_row(0) is not None)
        await pilot.pause(0.1)
        line = observations.render_line(0).text
        assert "[bold red]pwned[/] \\x1b[2J\\x1b]0;owned\\x07\\x9b31m tail" in line
        assert "[bold red]pwned[/]" in details_text(app.screen)
        screen = screen_text(app)
        assert "[bold red]pwned[/] \\x1b[2J" in screen
        assert not CONTROL.search(app.export_screenshot().replace("\n", ""))

        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ObservationScreen) and app.screen.row is not None)
        assert "[bold red]pwned[/]" in screen_text(app)
        assert not CONTROL.search(app.export_screenshot().replace("\n", ""))
