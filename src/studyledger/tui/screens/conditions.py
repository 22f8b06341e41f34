"""A study at a glance: one row per condition, live.

Each row says what the condition is (its factor levels), how far it is (a bar of its runs
by status against the runs the budget plans), how often it succeeds, and what it scored
(each metric's mean with a 95% interval and n, and a picture of one metric's distribution
on a scale shared by every row, so rows compare by eye). Enter lists a condition's runs;
``c`` marks two conditions and opens them side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from ...events import parse_instant
from ...query import finite_values, summary_text, value_text
from ..data import ConditionFigures, Row
from ..format import bins, breakdown, distribution, duration, progress_bar, spark
from ..literal import literal
from ..widgets import LedgerHeader, LiveTable
from .base import LiveScreen
from .compare import CompareScreen

METRIC_COLUMNS = 3  # metric summaries shown as columns (primary first); the rest via compare
BAR = 16
PICTURE = 12
TIMELINE = 40


def factors_text(factors: dict[str, Any]) -> str:
    """``agent_id=direct-echo problem_id=bracket-a`` (levels as recorded)."""
    return " ".join(f"{name}={value_text(level)}" for name, level in factors.items()) or "-"


def ended(row: Row) -> int:
    """Runs of a condition that reached an end (success, failed or skipped)."""
    return sum(row["runs_by_status"].get(status, 0) for status in ("success", "failed", "skipped"))


def _mean_order(summary: Row | None) -> tuple[int, float]:
    return (1, 0.0) if summary is None or summary["mean"] is None else (0, float(summary["mean"]))


class ConditionsScreen(LiveScreen):
    """The conditions of one study, compared."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("enter", "open", "Runs", show=False),
        Binding("c", "mark", "Compare"),
        Binding("m", "next_metric", "Metric"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse", "Reverse", show=False),
    ]

    def __init__(self, study_id: str) -> None:
        super().__init__()
        self.study_id = study_id
        self.figures: ConditionFigures | None = None
        self.metric: str | None = None  # the metric pictured; None: the primary outcome
        self.marked: list[str] = []
        self.sort_column = -1
        self.descending = False
        self.columns: list[tuple[str, str, Callable[[Row], Any]]] = []

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static(id="summary", classes="summary")
        yield Static(id="empty", classes="empty")
        yield LiveTable(id="conditions")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "studyledger"
        self.sub_title = f"conditions of {self.study_id}"
        self.query_one(LiveTable).focus()

    def refresh_data(self) -> None:
        source, study_id = self.source, self.study_id
        self.load(lambda: source.conditions(study_id), self._apply)

    def _apply(self, figures: ConditionFigures) -> None:
        self.figures = figures
        if self.metric not in figures.metrics:
            self.metric = figures.primary
        self._show()

    # -- drawing ----------------------------------------------------------------------

    def _metric_columns(self, figures: ConditionFigures) -> list[str]:
        names = sorted(figures.metrics, key=lambda name: name != figures.primary)
        return names[:METRIC_COLUMNS]

    def _define_columns(self, figures: ConditionFigures) -> None:
        def metric(name: str) -> Callable[[Row], Any]:
            return lambda row: _mean_order(row["metrics"].get(name))

        columns: list[tuple[str, str, Callable[[Row], Any]]] = [
            ("condition", "condition", lambda r: r["condition_id"]),
            ("factors", "factors", lambda r: factors_text(r["factors"])),
            ("progress", "progress", lambda r: ended(r) / max(1, r["planned"] or r["runs"])),
            ("runs", "done", lambda r: (ended(r), r["planned"] or 0)),
            ("success", "success", lambda r: -1.0 if r["success_rate"] is None else r["success_rate"]),
        ]
        columns += [(f"metric:{name}", name, metric(name)) for name in self._metric_columns(figures)]
        columns += [("duration", "duration", lambda r: _mean_order(r["duration_s"])),
                    ("picture", "distribution", lambda r: 0)]
        if [(key, label) for key, label, _ in columns] != [(key, label) for key, label, _ in self.columns]:
            self.columns = columns
            self.query_one(LiveTable).set_columns([(key, label) for key, label, _ in columns])

    def shown_conditions(self) -> list[Row]:
        """The conditions in the chosen order."""
        rows = list(self.figures.conditions) if self.figures else []
        if 0 <= self.sort_column < len(self.columns):
            rows.sort(key=self.columns[self.sort_column][2], reverse=self.descending)
        return rows

    def _show(self) -> None:
        figures = self.figures
        if figures is None:
            return
        self._define_columns(figures)
        rows = self.shown_conditions()
        empty = self.query_one("#empty", Static)
        empty.display = not rows
        if not rows:
            empty.update("No conditions and no runs in this study yet. They appear here as they arrive.")
        self.query_one("#summary", Static).update(self._summary(figures))
        scale = self._scale(figures)
        self.query_one(LiveTable).sync([(r["condition_id"], self._cells(r, figures, scale)) for r in rows])

    def _scale(self, figures: ConditionFigures) -> tuple[float, float]:
        """One range for every row's picture, so rows compare by eye."""
        numbers = [x for per in figures.values.values() for x in finite_values(per.get(self.metric or "", []))]
        return (min(numbers, default=0.0), max(numbers, default=0.0))

    def _cells(self, row: Row, figures: ConditionFigures, scale: tuple[float, float]) -> list[Text | str]:
        marked = row["condition_id"] in self.marked
        name = literal(("◆ " if marked else "") + row["condition_id"], "bold")
        if row["admissible"] is False:
            name.append(" inadmissible", "dim italic")
        planned = "?" if row["planned"] is None else str(row["planned"])
        rate = "-" if row["success_rate"] is None else f"{row['success_rate'] * 100:.0f}%"
        cells: list[Text | str] = [
            name,
            literal(factors_text(row["factors"])),
            progress_bar(row["runs_by_status"], row["planned"], BAR),
            Text(f"{ended(row)}/{planned}", justify="right"),
            Text(rate, justify="right"),
        ]
        for metric in self._metric_columns(figures):
            summary = row["metrics"].get(metric)
            cells.append(Text(summary_text(summary, 3) if summary else "-", "" if summary else "dim"))
        mean = row["duration_s"]["mean"]
        cells.append(Text(duration(mean) if mean is not None else "-", justify="right"))
        values = figures.values.get(row["condition_id"], {}).get(self.metric or "", [])
        cells.append(distribution(values, PICTURE, scale=scale))
        return cells

    def _summary(self, figures: ConditionFigures) -> Text:
        by_status: dict[str, int] = {}
        for row in figures.conditions:
            for status, count in row["runs_by_status"].items():
                by_status[status] = by_status.get(status, 0) + count
        plans = [row["planned"] for row in figures.conditions]
        planned = None if any(p is None for p in plans) or not plans else sum(p for p in plans if p is not None)
        text = Text(no_wrap=True, end="")
        title = (figures.study or {}).get("title")
        if title:
            text.append_text(literal(title, "bold"))
            text.append("  ")
        text.append_text(progress_bar(by_status, planned, 24))
        done = sum(by_status.get(s, 0) for s in ("success", "failed", "skipped"))
        text.append(f" {done}/{planned if planned is not None else '?'} ended  ")
        text.append_text(breakdown(by_status))
        if figures.primary:
            text.append("  primary outcome ", "dim")
            text.append_text(literal(figures.primary, "bold"))
        text.append("\n")
        text.append_text(self._timeline(figures.ended))
        if self.metric:
            text.append("   distribution of ", "dim")
            text.append_text(literal(self.metric, "bold"))
            text.append(" (m: next metric)", "dim")
        if self.marked:
            text.append(f"   marked {self.marked[0]}: c on another condition compares", "italic")
        return text

    @staticmethod
    def _timeline(ends: list[str]) -> Text:
        """Runs ended over time: one block per slice of the study's span so far."""
        moments = sorted(m for m in (parse_instant(e) for e in ends) if m is not None)
        text = Text(no_wrap=True, end="")
        text.append("runs ended over time ", "dim")
        if not moments:
            text.append("(none yet)", "dim")
            return text
        first, last = moments[0], moments[-1]
        stamps = [m.timestamp() for m in moments]
        text.append(f"{_clock(first)} ", "dim")
        text.append_text(spark(bins(stamps, stamps[0], stamps[-1], TIMELINE), "#2e9e44"))
        text.append(f" {_clock(last)}", "dim")
        return text

    # -- keys -----------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.ledger_app.open_study(self.study_id, str(event.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_index == self.sort_column:
            self.descending = not self.descending
        else:
            self.sort_column, self.descending = event.column_index, False
        self._show()

    def action_open(self) -> None:
        key = self.query_one(LiveTable).current_key()
        if key is not None:
            self.ledger_app.open_study(self.study_id, key)

    def action_mark(self) -> None:
        """Mark the condition under the cursor; marking a second opens the two side by side."""
        key = self.query_one(LiveTable).current_key()
        if key is None:
            return
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked.append(key)
        if len(self.marked) == 2:
            first, second = self.marked
            self.marked = []
            self.app.push_screen(CompareScreen(self.study_id, first, second))
        self._show()

    def action_next_metric(self) -> None:
        """Picture the next metric's distribution."""
        names = self.figures.metrics if self.figures else []
        if not names:
            self.notify("No run of this study has a metric yet.", severity="warning")
            return
        index = names.index(self.metric) + 1 if self.metric in names else 0
        self.metric = names[index % len(names)]
        self._show()

    def action_sort(self) -> None:
        """Sort by the next column (after the last one, back to the study's order)."""
        self.sort_column = self.sort_column + 1 if self.sort_column + 1 < len(self.columns) - 1 else -1
        self.descending = False
        self._show()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._show()


def _clock(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M:%S")
