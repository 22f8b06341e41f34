"""Ingestion: the files the ingester tracks, how far it has read, and the lines it refused."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Label, Static

from ...query import value_text
from ..data import Row
from ..format import short_time
from ..literal import literal, shorten
from ..widgets import LedgerFooter, LedgerHeader, LiveTable
from .base import LiveScreen


class IngestionScreen(LiveScreen):
    """Watched files with their committed offsets, then rejected lines with their reasons."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("tab", "app.focus_next", "Next table", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Static(id="watcher", classes="summary")
        yield Label("Files", classes="section")
        files = LiveTable(id="files")
        for key in ("file", "offset", "line", "accepted", "rejected", "resets", "updated"):
            files.add_column(key, key=key)
        yield files
        yield Label("Rejected lines", classes="section")
        rejected = LiveTable(id="rejected")
        for key in ("seq", "file", "line", "reason", "raw"):
            rejected.add_column(key, key=key)
        yield rejected
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = "ingestion"
        self.query_one("#files").focus()

    def refresh_data(self) -> None:
        self.load(self.source.ingestion, self._show)

    def _show(self, result: tuple[list[Row], list[Row]]) -> None:
        files, rejected = result
        self.query_one("#watcher", Static).update(self._watcher_line(len(files), len(rejected)))
        self.query_one("#files", LiveTable).sync([
            (str(f["path"]) + f":{f['device']}:{f['inode']}", [
                literal(_near(f["path"])),
                Text(f"{f['offset']:,}", justify="right"),
                Text(f"{f['line']:,}", justify="right"),
                Text(f"{f['lines_accepted']:,}", justify="right"),
                Text(f"{f['lines_rejected']:,}", "#d13438" if f["lines_rejected"] else "", justify="right"),
                Text(str(f["resets"]), justify="right"),
                short_time(f.get("updated_at")),
            ])
            for f in files
        ])
        self.query_one("#rejected", LiveTable).sync([
            (str(r["seq"]), [
                Text(str(r["seq"]), justify="right"),
                literal(_near(r.get("file"))),
                Text(value_text(r.get("line")), justify="right"),
                literal(shorten(r.get("reason"), 80), "#d13438"),
                literal(shorten(r.get("raw"), 120), "dim"),
            ])
            for r in rejected
        ])

    def _watcher_line(self, files: int, rejected: int) -> Text:
        watcher = self.ledger_app.watcher
        text = Text(no_wrap=True, end="")
        if watcher is None:
            text.append("No folder watched by this dashboard", "dim")
            text.append(" (start it with --watch DIR, or run `studyledger watch DIR` beside it).", "dim")
        else:
            stats = watcher.stats
            state = (("stopped", "#d13438") if not watcher.running else
                     ("waiting for", "#c27c0e") if watcher.waiting is not None else ("watching", "#2e9e44"))
            text.append(state[0], f"bold {state[1]}")
            text.append(" ")
            text.append_text(literal(watcher.folder))
            text.append(f"  {stats.files} file(s) read this session, {stats.lines_accepted:,} line(s) accepted, "
                        f"{stats.lines_rejected:,} rejected")
            if watcher.error is not None:
                text.append("  error: ", "#d13438")
                text.append_text(literal(shorten(watcher.error, 100), "#d13438"))
        text.append(f"   {files} file(s) known, {rejected} rejected line(s) shown", "dim")
        return text


def _near(path: object) -> str:
    """A path relative to the working directory when it lies below it (shorter columns)."""
    text = "" if path is None else str(path)
    try:
        return str(Path(text).relative_to(Path.cwd()))
    except ValueError:
        return text
