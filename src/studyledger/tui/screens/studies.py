"""The first screen: every study, its runs by status, and when it last moved.

Runs that no source tied to a study (trace files ingested alone) have a row of their own,
so every run in the ledger is reachable from here.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from ...query import is_stale
from ..data import Row
from ..format import MISSING, ago, breakdown
from ..literal import literal
from ..widgets import LedgerFooter, LedgerHeader, LiveTable
from .base import LiveScreen


# The row of runs without a study: a study id is never empty (events require it), so
# this key cannot collide with one.
WITHOUT_STUDY = ""


class StudiesScreen(LiveScreen):
    """All studies in the ledger; enter opens one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("v", "conditions", "Conditions"),
        Binding("r", "all_runs", "All runs"),
        Binding("i", "app.ingestion", "Ingestion"),
        Binding("a", "app.audit", "Audit"),
    ]

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static(id="empty", classes="empty")
        table = LiveTable(id="studies")
        table.add_column("study", key="study")
        table.add_column("title", key="title", width=26)
        table.add_column("runs", key="runs")
        table.add_column("last activity", key="last")
        # Last: spelled as the runs screen spells statuses, it is the widest, and on a
        # narrow screen is the one cut at its end.
        table.add_column("runs by status", key="status")
        yield table
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = "studies"

    def refresh_data(self) -> None:
        source = self.source

        def fetch() -> tuple[list[Row], dict[str, int], dict[str | None, int]]:
            studies, without = source.studies()
            now = self.now()
            after = self.ledger_app.stale_after
            stale: dict[str | None, int] = {}
            for run in source.runs(None, status="running"):  # only running runs go stale
                if is_stale(run, now, after):
                    stale[run["study_id"]] = stale.get(run["study_id"], 0) + 1
            return studies, without, stale

        self.load(fetch, self._show)

    def _show(self, result: tuple[list[Row], dict[str, int], dict[str | None, int]]) -> None:
        studies, without, stale = result
        table = self.query_one(LiveTable)
        empty = self.query_one("#empty", Static)
        if not studies and not without:
            db = self.source.path
            empty.update(Text.assemble(
                ("No studies in this ledger yet.\n\n", "bold"),
                "Ingest trace files or a study folder:\n",
                (f"  studyledger --db {db} ingest FOLDER\n", "bold"),
                "or keep ingesting while you watch:\n",
                (f"  studyledger --db {db} tui --watch FOLDER\n", "bold"),
                "or record runs from Python with studyledger.Ledger.\n",
                "This screen updates by itself when they arrive.",
            ))
        shown = bool(studies or without)
        empty.display = not shown
        table.display = shown
        now = self.now()
        rows = [
            (s["study_id"], [
                literal(s["study_id"], "bold"),
                literal(s["title"]),
                Text(str(s["run_count"]), justify="right"),
                Text(ago(s.get("last_activity"), now)),
                breakdown(s["runs_by_status"], stale.get(s["study_id"], 0)),
            ])
            for s in studies
        ]
        if without:
            rows.append((WITHOUT_STUDY, [
                Text("(no study)", "italic"),
                Text("runs from traces no study names", "dim"),
                Text(str(sum(without.values())), justify="right"),
                Text(MISSING),
                breakdown(without, stale.get(None, 0)),
            ]))
        table.sync(rows)
        if shown and self.focused is None:
            table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._open(str(event.row_key.value))

    def action_open(self) -> None:
        key = self.query_one(LiveTable).current_key()
        if key is not None:
            self._open(key)

    def _open(self, key: str) -> None:
        if key == WITHOUT_STUDY:
            self.ledger_app.open_runs_without_study()
        else:
            self.ledger_app.open_study(key)

    def action_conditions(self) -> None:
        key = self.query_one(LiveTable).current_key()
        if key is not None and key != WITHOUT_STUDY:
            self.ledger_app.open_conditions(key)

    def action_all_runs(self) -> None:
        self.ledger_app.open_study(None)
