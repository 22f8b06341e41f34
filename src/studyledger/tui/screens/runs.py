"""The runs of one study: filter by status with one key, sort by any column, search.

Beside each run's status is a metric: the study's primary outcome, or the one ``m``
picks. Above the table, what the runs took (latency, cost, tokens) when the runner
recorded it. Two runs marked with ``c`` open side by side (their diff).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from ...query import is_stale, run_duration, value_text
from ..data import Row, RunFigures
from ..format import STALE, breakdown, duration, metric_cell, resources_text, short_time, status_text
from ..literal import literal
from ..widgets import LedgerFooter, LedgerHeader, LiveTable, SearchBar
from .base import LiveScreen, header_sort, mark_pair

# Single-key status filters, in lifecycle order ("stale" is derived, not a status).
STATUS_KEYS = {"0": None, "1": "pending", "2": "running", "3": "success", "4": "failed",
               "5": "skipped", "6": STALE}
# What a run is and how it did come first, so a narrow terminal still shows them; the
# columns past its edge scroll into view.
COLUMNS: list[tuple[str, str, Callable[[Row], Any]]] = [
    ("run", "run id", lambda r: r["run_id"]),
    ("status", "status", lambda r: (r.get("status") or "", r["_stale"])),
    ("metric", "metric", lambda r: _metric_order(r["_metric"])),
    ("duration", "duration", lambda r: r["_duration"] if r["_duration"] is not None else -1.0),
    ("obs", "obs", lambda r: r.get("observation_count") or 0),
    ("condition", "condition", lambda r: r.get("condition_id") or ""),
    ("rep", "rep", lambda r: r.get("replicate") or 0),
    ("seed", "seed", lambda r: r.get("seed") or 0),
    ("started", "started", lambda r: r.get("started_at") or ""),
]


def _metric_order(value: Any) -> tuple[int, float, str]:
    """Sort key of a metric value: numbers (true/false as 1/0) by value, then NaN, text, missing."""
    if isinstance(value, (int, float)) and value == value:  # not NaN
        return (0, float(value), "")
    if isinstance(value, float):
        return (1, 0.0, "")
    return (2, 0.0, str(value)) if value is not None else (3, 0.0, "")




class RunsScreen(LiveScreen):
    """The runs of a study (or of every study when ``study_id`` is None)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("enter", "open", "Open", show=False),
        Binding("1", "status('1')", "Status", key_display="0-6"),
        *[Binding(key, f"status('{key}')", f"Only {name or 'all'}", show=False) for key, name in STATUS_KEYS.items()
          if key != "1"],
        Binding("o", "sort", "Sort", show=False),  # a header's click sorts too; ? lists it
        Binding("O", "reverse", "Reverse", show=False),
        Binding("slash", "search", "Search"),
        Binding("m", "next_metric", "Metric", show=False),
        Binding("c", "mark", "Compare"),
        Binding("v", "conditions", "Conditions"),
    ]

    def __init__(self, study_id: str | None, *, condition_id: str | None = None,
                 without_study: bool = False) -> None:
        super().__init__()
        self.study_id = study_id
        self.condition_id = condition_id
        self.without_study = without_study
        self.metric: str | None = None  # None: the study's primary outcome
        self.metric_names: list[str] = []
        self.marked: list[str] = []
        self.status: str | None = None
        self.search = ""
        self.sort_column = -1  # -1: registration order
        self.descending = False
        self.rows: list[Row] = []
        self.figures: RunFigures | None = None

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static(id="summary", classes="summary")
        yield Static(id="empty", classes="empty")
        table = LiveTable(id="runs")
        for key, label, _ in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield SearchBar("search run id, condition, agent, problem, status")
        yield LedgerFooter()

    def on_mount(self) -> None:
        if self.without_study:
            self.sub_title = "runs without a study"
        elif self.condition_id is not None:
            self.sub_title = f"runs of {self.study_id}, condition {self.condition_id}"
        else:
            self.sub_title = f"runs of {self.study_id}" if self.study_id else "all runs"
        self.query_one(LiveTable).focus()

    def refresh_data(self) -> None:
        source, study_id, condition_id, without = self.source, self.study_id, self.condition_id, self.without_study

        def fetch() -> tuple[list[Row], RunFigures]:
            found = source.runs(study_id, condition_id=condition_id, without_study=without)
            return found, source.run_figures(study_id, condition_id)

        self.load(fetch, self._apply)

    def _apply(self, result: tuple[list[Row], RunFigures]) -> None:
        rows, figures = result
        self.figures = figures
        values = figures.values
        self.metric_names = figures.metrics or sorted({name for found in values.values() for name in found})
        if self.metric is None or self.metric not in self.metric_names:
            self.metric = figures.primary if figures.primary is not None else next(iter(self.metric_names), None)
        now, after = self.now(), self.ledger_app.stale_after
        for row in rows:
            row["_stale"] = is_stale(row, now, after)
            # The runner's latency when it measured one (its times are whole seconds).
            latency = figures.latencies.get(row["run_id"])
            row["_duration"] = latency if latency is not None else run_duration(row, now, after)
        self.rows = rows
        self._show_metric()

    def _show_metric(self) -> None:
        """Fill the metric column with the chosen metric, from the figures already read."""
        values = self.figures.values if self.figures is not None else {}
        for row in self.rows:
            row["_metric"] = values.get(row["run_id"], {}).get(self.metric) if self.metric else None
        self.query_one(LiveTable).relabel("metric", self.metric or "metric")
        self._show()

    def shown_runs(self) -> list[Row]:
        """The runs that pass the status filter and the search, in the chosen order."""
        rows = self.rows
        if self.status == STALE:
            rows = [r for r in rows if r["_stale"]]
        elif self.status is not None:
            rows = [r for r in rows if r.get("status") == self.status]
        if self.search:
            needle = self.search.lower()
            rows = [r for r in rows if any(needle in str(r.get(k) or "").lower() for k in
                                           ("run_id", "condition_id", "agent_id", "problem_id", "status"))]
        if self.sort_column >= 0:
            rows = sorted(rows, key=COLUMNS[self.sort_column][2], reverse=self.descending)
        return rows

    def _show(self) -> None:
        rows = self.shown_runs()
        by_status: dict[str, int] = {}
        for row in self.rows:
            by_status[row["status"]] = by_status.get(row["status"], 0) + 1
        summary = Text(no_wrap=True, end="")
        summary.append_text(breakdown(by_status, sum(r["_stale"] for r in self.rows)))
        shown = [f"status {self.status}"] if self.status else []
        shown += [f"search {self.search!r}"] if self.search else []
        shown += [f"sorted by {COLUMNS[self.sort_column][1]}{' desc' if self.descending else ''}"] \
            if self.sort_column >= 0 else []
        shown += [f"marked {self.marked[0]} (c on another run compares)"] if self.marked else []
        if shown:
            summary.append("   " + ", ".join(shown), "italic")
        resources = resources_text(self.figures.resources) if self.figures else Text()
        if resources:
            summary = Text("\n", no_wrap=True, end="").join([summary, resources])
        self.query_one("#summary", Static).update(summary)
        empty = self.query_one("#empty", Static)
        empty.display = not rows
        if not rows:
            empty.update("No runs match; 0 shows every status, / changes the search." if self.rows
                         else "No runs in this study yet. They appear here as they are registered.")
        self.query_one(LiveTable).sync([(r["run_id"], self._cells(r)) for r in rows])

    def _cells(self, row: Row) -> list[Text | str]:
        return [
            literal(("◆ " if row["run_id"] in self.marked else "") + row["run_id"], "bold"),
            status_text(row.get("status"), stale=row["_stale"]),
            metric_cell(row["_metric"]),
            Text(duration(row["_duration"]), justify="right"),
            Text(str(row.get("observation_count") or 0), justify="right"),
            literal(row.get("condition_id")),
            Text(value_text(row.get("replicate")), justify="right"),
            Text(value_text(row.get("seed")), justify="right"),
            short_time(row.get("started_at")),
        ]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.ledger_app.open_run(str(event.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_column, self.descending = header_sort(event.column_index, self.sort_column, self.descending)
        self._show()

    def action_open(self) -> None:
        key = self.query_one(LiveTable).current_key()
        if key is not None:
            self.ledger_app.open_run(key)

    def action_status(self, key: str) -> None:
        """Show only runs of one status (``0``: all)."""
        self.status = STATUS_KEYS[key]
        self._show()

    def action_sort(self) -> None:
        """Sort by the next column (after the last one, back to registration order)."""
        self.sort_column = self.sort_column + 1 if self.sort_column + 1 < len(COLUMNS) else -1
        self.descending = False
        self._show()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._show()

    def action_search(self) -> None:
        self.query_one(SearchBar).open(self.search)

    def action_next_metric(self) -> None:
        """Show the next metric of the study in the last column."""
        if not self.metric_names:
            self.notify("No run of these has a metric yet.", severity="warning")
            return
        index = self.metric_names.index(self.metric) + 1 if self.metric in self.metric_names else 0
        self.metric = self.metric_names[index % len(self.metric_names)]
        self._show_metric()

    def action_mark(self) -> None:
        """Mark the run under the cursor; marking a second opens the two side by side."""
        key = self.query_one(LiveTable).current_key()
        pair = None if key is None else mark_pair(self.marked, key)
        if pair is not None:
            self.ledger_app.open_diff(*pair)
        self._show()

    def action_conditions(self) -> None:
        if self.study_id is not None:
            self.ledger_app.open_conditions(self.study_id)

    def on_search_bar_done(self, event: SearchBar.Done) -> None:
        if event.text is not None:
            self.search = event.text.strip()
            self._show()
        self.query_one(LiveTable).focus()
