"""A study at a glance: one row per condition, live.

Each row says what the condition is (one column per factor, its level in words), how far
it is (a bar of its runs by status against the runs the budget plans), how often it
succeeds, and what it scored: the pictured metric (the study's primary outcome until
``m`` picks another) with its mean, 95% interval and n, and beside it a picture of its
distribution on a scale shared by every row (the scale is in the column's header), so
rows compare by eye. Then as many other metrics as the terminal has room for; every
metric is in the comparison (``c``) and in ``studyledger conditions``. Enter lists a
condition's runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.events import Resize
from textual.widgets import DataTable, Static

from ...events import parse_instant
from ...query import finite_values, summary_text, value_text
from ..data import ConditionFigures, Row
from ..format import bins, breakdown, distribution, duration, progress_bar, resources_text, spark
from ..literal import literal
from ..widgets import LedgerFooter, LedgerHeader, LiveTable
from .base import LiveScreen, header_sort, mark_pair
from .compare import CompareScreen

BAR = 12
NARROW_BAR = 8
WIDE = 100  # columns from which bars are BAR wide
PICTURE = 12
CELL_PADDING = 2  # DataTable's cell padding, one each side
SCROLLBAR = 2


def factors_text(factors: dict[str, Any]) -> str:
    """``agent_id=direct-echo problem_id=bracket-a`` (levels as recorded)."""
    return " ".join(f"{name}={value_text(level)}" for name, level in factors.items()) or "-"


def ended(row: Row) -> int:
    """Runs of a condition that reached an end (success, failed or skipped)."""
    return sum(row["runs_by_status"].get(status, 0) for status in ("success", "failed", "skipped"))


def _mean_order(summary: Row | None) -> tuple[int, float]:
    return (1, 0.0) if summary is None or summary["mean"] is None else (0, float(summary["mean"]))


@dataclass(frozen=True)
class Column:
    """One column the table may show: its key, header, sort key and cell."""

    key: str
    label: str | Text
    order: Callable[[Row], Any]
    cell: Callable[[Row], Text]


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
        self.columns: list[Column] = []

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static(id="summary", classes="summary study-summary")
        yield Static(id="empty", classes="empty")
        yield LiveTable(id="conditions")
        yield LedgerFooter()

    def on_mount(self) -> None:
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

    def on_resize(self, event: Resize) -> None:
        self._show()  # the columns that fit depend on the width

    # -- columns ----------------------------------------------------------------------

    def _candidates(self, figures: ConditionFigures) -> list[tuple[int, Column]]:
        """Every column the table may show, in display order, each with its priority (0
        first): what the condition is, how far it is and how it scores come before the
        condition's id, which the factor levels already say in words."""
        factor_names = list(dict.fromkeys(name for row in figures.conditions for name in row["factors"]))
        bar = BAR if self._width() >= WIDE else NARROW_BAR

        def factor(name: str) -> Column:
            return Column(f"factor:{name}", name, lambda r: value_text(r["factors"].get(name)),
                          lambda r: literal(value_text(r["factors"].get(name))))

        def metric(name: str) -> Column:
            return Column(f"metric:{name}", name, lambda r: _mean_order(r["metrics"].get(name)),
                          lambda r: _summary_cell(r["metrics"].get(name)))

        columns = [
            (6 if factor_names else 0, Column("condition", "condition", lambda r: r["condition_id"], self._name_cell)),
            *[(0, factor(name)) for name in factor_names],
            (1, Column("progress", "progress", lambda r: ended(r) / max(1, r["planned"] or r["runs"]),
                       lambda r: _progress_cell(r, bar))),
            (5, Column("runs", "done", lambda r: (ended(r), r["planned"] or 0), _done_cell)),
            (4, Column("success", "success", lambda r: -1.0 if r["success_rate"] is None else r["success_rate"],
                       _rate_cell)),
        ]
        if self.metric is not None:
            scale = self._scale(figures)
            values = figures.values
            pictured = self.metric
            columns += [(2, metric(pictured)),
                        (3, Column("picture", _scale_label(scale), lambda r: 0,
                                   lambda r: distribution(values.get(r["condition_id"], {}).get(pictured, []),
                                                          PICTURE, scale=scale)))]
        columns.append((7, Column("duration", "latency", lambda r: _mean_order(r["duration_s"]), _latency_cell)))
        others = dict.fromkeys(name for name in (figures.primary, *figures.metrics) if name not in (None, self.metric))
        columns += [(8, metric(name)) for name in others if name is not None]
        return columns

    def _fit(self, columns: list[tuple[int, Column]], rows: list[Row]) -> list[Column]:
        """The columns that fit the screen, taken by priority (a column that does not fit is
        skipped, a narrower one after it may still fit), shown in display order."""
        width = self._width() - SCROLLBAR
        ranked = sorted(range(len(columns)), key=lambda index: columns[index][0])
        chosen: set[int] = set()
        used = 0
        for index in ranked:
            needed = _column_width(columns[index][1], rows)
            if used + needed <= width or not chosen:
                chosen.add(index)
                used += needed
        return [column for index, (_, column) in enumerate(columns) if index in chosen]

    def _width(self) -> int:
        # The app's size, not the screen's: a screen not laid out yet has a provisional size,
        # and columns chosen for it would be chosen again (and the rows rebuilt) a moment later.
        return self.app.size.width

    def _define_columns(self, figures: ConditionFigures, rows: list[Row]) -> None:
        columns = self._fit(self._candidates(figures), rows)
        shown = [(column.key, column.label) for column in columns]
        if shown != [(column.key, column.label) for column in self.columns]:
            self.query_one(LiveTable).set_columns(shown)
        self.columns = columns

    # -- drawing ----------------------------------------------------------------------

    def shown_conditions(self) -> list[Row]:
        """The conditions in the chosen order."""
        rows = list(self.figures.conditions) if self.figures else []
        if 0 <= self.sort_column < len(self.columns):
            rows.sort(key=self.columns[self.sort_column].order, reverse=self.descending)
        return rows

    def _show(self) -> None:
        figures = self.figures
        if figures is None:
            return
        self._define_columns(figures, list(figures.conditions))
        rows = self.shown_conditions()
        empty = self.query_one("#empty", Static)
        empty.display = not rows
        if not rows:
            empty.update("No conditions and no runs in this study yet. They appear here as they arrive.")
        self.query_one("#summary", Static).update(self._summary(figures))
        self.query_one(LiveTable).sync([(r["condition_id"], [c.cell(r) for c in self.columns]) for r in rows])

    def _scale(self, figures: ConditionFigures) -> tuple[float, float]:
        """One range for every row's picture, so rows compare by eye."""
        numbers = [x for per in figures.values.values() for x in finite_values(per.get(self.metric or "", []))]
        return (min(numbers, default=0.0), max(numbers, default=0.0))

    def _name_cell(self, row: Row) -> Text:
        return literal(("◆ " if row["condition_id"] in self.marked else "") + row["condition_id"], "bold")

    def _summary(self, figures: ConditionFigures) -> Text:
        """Four lines, each cut (never wrapped) at the screen's edge: progress, what is
        pictured, runs ended over time, what the runs took."""
        by_status: dict[str, int] = {}
        for row in figures.conditions:
            for status, count in row["runs_by_status"].items():
                by_status[status] = by_status.get(status, 0) + count
        plans = [row["planned"] for row in figures.conditions]
        planned = None if any(p is None for p in plans) or not plans else sum(p for p in plans if p is not None)
        title = (figures.study or {}).get("title")
        progress = Text(no_wrap=True, end="")
        if title:
            progress.append_text(literal(title, "bold"))
            progress.append("  ")
        progress.append_text(progress_bar(by_status, planned, 20))
        done = sum(by_status.get(s, 0) for s in ("success", "failed", "skipped"))
        progress.append(f" {done}/{planned if planned is not None else '?'} ended  ")
        progress.append_text(breakdown(by_status))
        pictured = Text(no_wrap=True, end="")
        if self.metric:
            pictured.append("pictured ", "dim")
            pictured.append_text(literal(self.metric, "bold"))
            if self.metric == figures.primary:
                pictured.append(" (the primary outcome)", "dim")
            elif figures.primary:
                pictured.append("   primary outcome ", "dim")
                pictured.append_text(literal(figures.primary, "bold"))
            pictured.append(f"   m: next of {len(figures.metrics)} metrics", "dim")
        else:
            pictured.append("no metric recorded yet", "dim")
        if self.marked:
            pictured.append(f"   marked {self.marked[0]}: c on another compares", "italic")
        lines = [progress, pictured, self._timeline(figures.ended)]
        resources = resources_text(figures.resources)
        if resources:
            lines.append(resources)
        width = max(1, self._width() - 2)
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return Text("\n", no_wrap=True, end="").join(lines)

    def _timeline(self, ends: list[str]) -> Text:
        """Runs ended over time: one block per slice of the study's span so far."""
        moments = sorted(m for m in (parse_instant(e) for e in ends) if m is not None)
        text = Text(no_wrap=True, end="")
        text.append("runs ended ", "dim")
        if not moments:
            text.append("none yet", "dim")
            return text
        first, last = moments[0], moments[-1]
        stamps = [m.timestamp() for m in moments]
        slices = max(8, min(48, self._width() - 60))
        text.append(f"{_clock(first)} ", "dim")
        text.append_text(spark(bins(stamps, stamps[0], stamps[-1], slices), "#2e9e44"))
        text.append(f" {_clock(last)}", "dim")
        if last > first:
            text.append(f" ({duration((last - first).total_seconds())})", "dim")
        return text

    # -- keys -----------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.ledger_app.open_study(self.study_id, str(event.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_column, self.descending = header_sort(event.column_index, self.sort_column, self.descending)
        self._show()

    def action_open(self) -> None:
        key = self.query_one(LiveTable).current_key()
        if key is not None:
            self.ledger_app.open_study(self.study_id, key)

    def action_mark(self) -> None:
        """Mark the condition under the cursor; marking a second opens the two side by side."""
        key = self.query_one(LiveTable).current_key()
        pair = None if key is None else mark_pair(self.marked, key)
        if pair is not None:
            self.app.push_screen(CompareScreen(self.study_id, *pair))
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
        self.sort_column = self.sort_column + 1 if self.sort_column + 1 < len(self.columns) else -1
        self.descending = False
        self._show()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._show()


def _column_width(column: Column, rows: list[Row]) -> int:
    """The cells a column takes: its widest cell or header, and its padding."""
    label = column.label.cell_len if isinstance(column.label, Text) else len(column.label)
    return max([label, *(column.cell(row).cell_len for row in rows)]) + CELL_PADDING


def _scale_label(scale: tuple[float, float]) -> Text:
    """The distribution column's header: the shared scale its pictures are drawn on."""
    low, high = scale
    return Text(f"{value_text(low, 3)} … {value_text(high, 3)}" if high > low else "distribution")


def _summary_cell(summary: Row | None) -> Text:
    return Text(summary_text(summary, 3), no_wrap=True) if summary else Text("-", "dim")


def _progress_cell(row: Row, width: int) -> Text:
    """The bar of a condition's runs; an inadmissible condition plans none, and says so."""
    if row["admissible"] is False and not row["runs"]:
        return Text("inadmissible", "dim italic")
    return progress_bar(row["runs_by_status"], row["planned"], width)


def _done_cell(row: Row) -> Text:
    planned = "?" if row["planned"] is None else str(row["planned"])
    return Text(f"{ended(row)}/{planned}", justify="right")


def _rate_cell(row: Row) -> Text:
    rate = row["success_rate"]
    return Text("-" if rate is None else f"{rate * 100:.0f}%", justify="right")


def _latency_cell(row: Row) -> Text:
    mean = row["duration_s"]["mean"]
    return Text(duration(mean) if mean is not None else "-", justify="right")


def _clock(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M:%S")
