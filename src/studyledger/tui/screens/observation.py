"""One observation in full: every field, and its meta_json pretty-printed.

A value of megabytes (a 16 MiB line is within the ingester's limit) is drawn as a bounded
preview: its first :data:`PREVIEW_CHARS` characters, scrollable, with its size. Drawn
whole, one such observation took minutes and gigabytes; ``y`` still copies all of it.
"""

from __future__ import annotations

import json
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.highlight import highlight
from textual.widgets import Static

from ..data import Row
from ..literal import clean, literal
from ..widgets import LedgerFooter, LedgerHeader
from .base import LiveScreen

PREVIEW_CHARS = 50_000
"""Most characters of one value the screen draws (and of meta_json it parses to indent)."""

FIELDS = ("seq", "timestamp", "record_id", "study_id", "run_id", "condition_id", "trial_id", "step_id",
          "level", "event_type", "tool_name", "evaluation_id", "session_id", "actor_id", "text")


def pretty_meta(meta_json: str | None) -> str:
    """meta_json indented for reading; text that is not JSON, or too long to parse for a
    preview (over :data:`PREVIEW_CHARS`), is returned as it is."""
    if not meta_json or len(meta_json) > PREVIEW_CHARS:
        return meta_json or ""
    try:
        return json.dumps(json.loads(meta_json), indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, RecursionError):
        return meta_json


def bounded(text: str) -> tuple[str, Text | None]:
    """The part of a value the screen draws, and a note saying how much is left out."""
    if len(text) <= PREVIEW_CHARS:
        return text, None
    note = Text(f"… {len(text):,} characters: the first {PREVIEW_CHARS:,} are shown; y copies all of it",
                "dim italic")
    return text[:PREVIEW_CHARS], note


class ObservationScreen(LiveScreen):
    """Every field of one observation; ``y`` copies it as JSON."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("y", "copy", "Copy JSON"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
        Binding("g", "edge(False)", "Top", show=False),
        Binding("G", "edge(True)", "Bottom", show=False),
    ]

    def __init__(self, seq: int) -> None:
        super().__init__()
        self.seq = seq
        self.row: Row | None = None

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        with VerticalScroll(id="observation"):
            yield Static(id="fields")
            yield Static(id="meta")
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = f"observation {self.seq}"
        self.query_one("#observation").focus()

    def refresh_data(self) -> None:
        if self.row is None:  # An observation never changes once recorded.
            source, seq = self.source, self.seq
            self.load(lambda: source.observation(seq), self._show)

    def _show(self, row: Row | None) -> None:
        self.row = row
        fields = self.query_one("#fields", Static)
        if row is None:
            fields.update(f"No observation {self.seq}.")
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for name in FIELDS:
            value = row.get(name)
            shown, note = bounded(value) if isinstance(value, str) else (value, None)
            cell = literal(shown, multiline=True)
            table.add_row(name, Text.assemble(cell, "\n", note) if note is not None else cell)
        fields.update(Group(table, Text("\nmeta_json", "bold")))
        shown, note = bounded(pretty_meta(row.get("meta_json")))
        meta = clean(shown, multiline=True)
        # Textual's highlighter tokenises the text (markup in it stays text) and takes its
        # colours from the current theme, so it reads on dark and light alike.
        drawn = highlight(meta, language="json") if meta else Text("(none)", "dim")
        self.query_one("#meta", Static).update(Group(drawn, note) if note is not None else drawn)

    def as_json(self) -> str:
        """The observation as the JSON ``y`` copies (meta_json decoded when it is JSON).

        A meta_json object or list too long to preview is spliced in as the JSON text it
        is (SQLite's, so valid), not parsed: parsing millions of values would cost far more
        than the text.
        """
        row = dict(self.row or {})
        meta = row.get("meta_json")
        if isinstance(meta, str) and len(meta) > PREVIEW_CHARS and meta[:1] in ("{", "["):
            row["meta_json"] = None
            return json.dumps(row, indent=2, ensure_ascii=False).replace(
                '\n  "meta_json": null', '\n  "meta_json": ' + meta, 1)
        try:
            row["meta_json"] = json.loads(meta) if meta else None
        except (ValueError, RecursionError):
            pass
        return json.dumps(row, indent=2, ensure_ascii=False)

    def action_copy(self) -> None:
        """Copy through the terminal (OSC 52), which also works over SSH."""
        if self.row is None:
            return
        self.app.copy_to_clipboard(self.as_json())
        self.notify("Observation copied as JSON.")

    def action_scroll(self, lines: int) -> None:
        self.query_one("#observation", VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_edge(self, bottom: bool) -> None:
        view = self.query_one("#observation", VerticalScroll)
        if bottom:
            view.scroll_end(animate=False)
        else:
            view.scroll_home(animate=False)
