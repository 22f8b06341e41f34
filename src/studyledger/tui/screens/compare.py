"""Two conditions of a study side by side: what differs in them and in what they scored.

Factor levels that differ are marked; each metric shows both summaries, the difference of
the means (second minus first) with a 95% Welch interval, and both distributions drawn on
one shared scale. NaN and Infinity are counted beside the pictures, never drawn.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from ...query import difference, finite_values, summary_text, value_text
from ..data import ConditionFigures, Row
from ..format import breakdown, distribution, progress_bar
from ..literal import literal
from ..widgets import LedgerFooter, LedgerHeader
from .base import LiveScreen

PICTURE = 16
DIFFERS = "#c27c0e"


class CompareScreen(LiveScreen):
    """Conditions ``first`` and ``second`` of a study, compared; live."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
    ]

    def __init__(self, study_id: str, first: str, second: str) -> None:
        super().__init__()
        self.study_id = study_id
        self.first = first
        self.second = second

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        with VerticalScroll(id="comparison"):
            yield Static(id="compared")
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = f"{self.first} vs {self.second}"
        self.query_one("#comparison").focus()

    def refresh_data(self) -> None:
        source, study_id = self.source, self.study_id
        self.load(lambda: source.conditions(study_id), self._show)

    def _show(self, figures: ConditionFigures) -> None:
        found = {row["condition_id"]: row for row in figures.conditions}
        a, b = found.get(self.first), found.get(self.second)
        if a is None or b is None:
            self.query_one("#compared", Static).update(Text("One of these conditions is no longer in the study.", "bold"))
            return
        table = Table(box=None, padding=(0, 2), show_edge=False, expand=False)
        table.add_column("", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column(literal(self.first, "bold"), no_wrap=True)
        table.add_column(literal(self.second, "bold"), no_wrap=True)
        table.add_column("difference (2nd − 1st)", no_wrap=True)
        self._factors(table, a, b)
        self._progress(table, a, b)
        values_a = figures.values.get(self.first, {})
        values_b = figures.values.get(self.second, {})
        for name in figures.metrics:
            self._metric(table, name, a, b, values_a.get(name, []), values_b.get(name, []))
        self.query_one("#compared", Static).update(table)

    @staticmethod
    def _factors(table: Table, a: Row, b: Row) -> None:
        names = list(dict.fromkeys([*a["factors"], *b["factors"]]))
        for name in names:
            left, right = a["factors"].get(name), b["factors"].get(name)
            same = left == right
            table.add_row(Text("" if same else "*", DIFFERS), literal(name),
                          literal(value_text(left), "" if same else DIFFERS),
                          literal(value_text(right), "" if same else DIFFERS), "")

    @staticmethod
    def _progress(table: Table, a: Row, b: Row) -> None:
        table.add_row("", Text("runs", "bold"), breakdown(a["runs_by_status"]), breakdown(b["runs_by_status"]), "")
        table.add_row("", "progress", progress_bar(a["runs_by_status"], a["planned"], PICTURE),
                      progress_bar(b["runs_by_status"], b["planned"], PICTURE), "")
        rates = [row["success_rate"] for row in (a, b)]
        shown = ["-" if rate is None else f"{rate * 100:.0f}%" for rate in rates]
        delta = "" if None in rates else f"{(rates[1] - rates[0]) * 100:+.0f} points"
        table.add_row("", "success", shown[0], shown[1], delta)

    @staticmethod
    def _metric(table: Table, name: str, a: Row, b: Row, left: list[object], right: list[object]) -> None:
        summary_a, summary_b = a["metrics"].get(name), b["metrics"].get(name)
        delta = difference(left, right)
        text = "-"
        if delta["delta"] is not None:
            text = value_text(delta["delta"])
            if delta["low"] is not None:
                text += f" [{value_text(delta['low'])}, {value_text(delta['high'])}]"
        table.add_row("", Text(name, "bold"), summary_text(summary_a) if summary_a else "-",
                      summary_text(summary_b) if summary_b else "-", text)
        numbers = finite_values([*left, *right])
        scale = (min(numbers, default=0.0), max(numbers, default=0.0))
        axis = f"{value_text(scale[0])} … {value_text(scale[1])}" if numbers else ""
        table.add_row("", Text("distribution", "dim"), distribution(left, PICTURE, scale=scale),
                      distribution(right, PICTURE, scale=scale), Text(axis, "dim"))

    def action_scroll(self, lines: int) -> None:
        self.query_one("#comparison", VerticalScroll).scroll_relative(y=lines, animate=False)
