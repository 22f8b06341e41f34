"""Two runs side by side: provenance, configuration and outcome, differences marked.

The same comparison as ``studyledger diff`` (:func:`studyledger.audit.diff.diff_runs`):
provenance with nested JSON decoded into dotted fields, metrics as the evaluators wrote
them. ``d`` shows only the fields that differ.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from ...query import value_text
from ..data import Row
from ..literal import literal, shorten
from ..widgets import LedgerFooter, LedgerHeader
from .base import LiveScreen

DIFFERS = "#c27c0e"
SECTIONS = ("provenance", "configuration", "outcome")


class DiffScreen(LiveScreen):
    """Runs ``run_a`` and ``run_b`` compared field by field."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("d", "only_differences", "Only differences"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
    ]

    def __init__(self, run_a: str, run_b: str) -> None:
        super().__init__()
        self.run_a = run_a
        self.run_b = run_b
        self.only_differences = False
        self.data: Row | None = None

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        with VerticalScroll(id="diff"):
            yield Static(id="fields")
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = f"{self.run_a} vs {self.run_b}"
        self.query_one("#diff").focus()

    def refresh_data(self) -> None:
        source, a, b = self.source, self.run_a, self.run_b
        self.load(lambda: source.diff(a, b), self._show)

    def _show(self, data: Row) -> None:
        self.data = data
        table = Table(box=None, padding=(0, 2), show_edge=False)
        table.add_column("", no_wrap=True)
        table.add_column(Text(f"{data['differences']} field(s) differ", DIFFERS), no_wrap=True)
        table.add_column(literal(self.run_a, "bold"), overflow="fold")
        table.add_column(literal(self.run_b, "bold"), overflow="fold")
        for section in SECTIONS:
            table.add_row("", Text(section, "bold underline"), "", "")
            for row in data[section]:
                if self.only_differences and row["same"]:
                    continue
                style = "" if row["same"] else DIFFERS
                table.add_row(Text("" if row["same"] else "*", DIFFERS), literal(row["field"]),
                              literal(shorten(value_text(row["a"]), 200), style),
                              literal(shorten(value_text(row["b"]), 200), style))
        self.query_one("#fields", Static).update(table)

    def action_only_differences(self) -> None:
        """Show only the fields that differ (again: every field)."""
        self.only_differences = not self.only_differences
        if self.data is not None:
            self._show(self.data)

    def action_scroll(self, lines: int) -> None:
        self.query_one("#diff", VerticalScroll).scroll_relative(y=lines, animate=False)
