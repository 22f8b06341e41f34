"""Shown when there is no ledger file yet: how to make one. Leaves as soon as one appears."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from ..literal import clean
from ..widgets import LedgerFooter, LedgerHeader


class NoLedgerScreen(Screen[None]):
    """Explains how to create the ledger the dashboard was pointed at."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "app.quit", "Quit")]

    def __init__(self, path: str, problem: str) -> None:
        super().__init__()
        self.path = clean(path)
        self.problem = clean(problem)

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static(Text.assemble(
            (f"{self.problem}\n\n", "bold"),
            "Create an empty ledger:\n",
            (f"  studyledger --db {self.path} init\n", "bold"),
            "or fill one from trace files or a study folder:\n",
            (f"  studyledger --db {self.path} ingest FOLDER\n", "bold"),
            "or watch a drop folder while the dashboard is open:\n",
            (f"  studyledger --db {self.path} tui --watch FOLDER\n", "bold"),
            "or see everything working on generated data:\n",
            ("  studyledger demo\n\n", "bold"),
            "This screen checks every second and opens the ledger as soon as it exists.",
        ), classes="empty", id="no-ledger")
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = "no ledger"
