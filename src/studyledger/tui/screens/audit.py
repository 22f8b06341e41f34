"""Audit: does the hash chain hold, and what did the projections flag as odd?"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Label, Static

from ...audit.verify import VerifyReport
from ..data import Row
from ..literal import literal
from ..widgets import LedgerFooter, LedgerHeader, LiveTable
from .base import LiveScreen


class AuditScreen(LiveScreen):
    """The verify result (recomputed on ``v``) and the anomalies list."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("v", "verify", "Verify again"),
    ]

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static("verifying the hash chain…", id="verify", classes="summary")
        yield Label("Anomalies", classes="section")
        table = LiveTable(id="anomalies")
        for key in ("seq", "run", "kind", "message"):
            table.add_column(key, key=key)
        yield table
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = "audit"
        self.query_one(LiveTable).focus()
        self._start_verify()  # the anomalies load when the screen is shown (on resume)

    def refresh_data(self) -> None:
        # Verify reads every event, so it runs when asked; anomalies are cheap and live.
        self.load(self.source.anomalies, self._anomalies, group="anomalies")

    def action_verify(self) -> None:
        self._start_verify()
        self.refresh_data()

    def _start_verify(self) -> None:
        self.query_one("#verify", Static).update(Text("verifying the hash chain…", "italic"))
        self.load(self.source.verify, self._verified, group="verify")

    def _verified(self, report: VerifyReport) -> None:
        text = Text(no_wrap=False, end="")
        if report.ok:
            text.append("✔ intact", "bold #2e9e44")
            text.append(f"  {report.events:,} event(s), chain verified to seq {report.head_seq:,} "
                        f"(head {report.head_chain[:16]}…)")
            text.append("\n  A chain cannot see a truncated tail or a fully rewritten history: "
                        "compare with `studyledger checkpoint`.", "dim")
        else:
            first = report.first_failure
            text.append("✘ tampered", "bold #d13438")
            text.append(f"  {len(report.problems)} problem(s) in {report.events:,} event(s)")
            if first is not None:
                text.append(f"; first at seq {first.seq} ({first.check}): ")
                text.append_text(literal(first.message))
            for problem in report.problems[1:6]:
                text.append(f"\n  seq {problem.seq} ({problem.check}): ")
                text.append_text(literal(problem.message))
        self.query_one("#verify", Static).update(text)

    def _anomalies(self, rows: list[Row]) -> None:
        self.query_one(LiveTable).sync([
            (str(r["id"]), [
                Text(str(r["seq"]), justify="right"),
                literal(r.get("run_id") or r.get("study_id")),
                literal(r.get("kind"), "#c27c0e" if r.get("severity") == "warning" else "#d64a3b"),
                literal(r.get("message")),
            ])
            for r in rows
        ])
