"""Search every run: observations, rejected lines and run errors, newest first, live.

The query is words plus optional filters written into it, ``name:value``:
``unknown material status:failed tool:material_lookup`` (filters: study, status, kind,
type, tool). Enter on a hit opens it where it lives: an observation in its run with the
cursor on it, a run error in its run, a rejected line in the ingestion screen.
"""

from __future__ import annotations

import re
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from ...search import COUNT_CAP, KINDS, Filters, match_expression
from ..data import Row
from ..format import status_text
from ..literal import clean, literal
from ..widgets import LedgerFooter, LedgerHeader, LiveTable
from .base import LiveScreen

FILTER_NAMES = {"study": "study_id", "status": "status", "kind": "kind", "type": "event_type", "tool": "tool"}
_FILTER = re.compile(r"\b(study|status|kind|type|tool):(\S+)")


def parse_query(query: str) -> tuple[str, Filters]:
    """The words to find and the ``name:value`` filters written among them."""
    found = {FILTER_NAMES[name]: value for name, value in _FILTER.findall(query)}
    return _FILTER.sub(" ", query).strip(), Filters(**found)


def marked(snippet: str, marks: list[tuple[int, int]]) -> Text:
    """A snippet shown literally, the searched words in it highlighted."""
    text = literal(snippet)
    for start, end in marks:
        # literal() may lengthen the text (control characters spelled out): mark by the
        # cleaned prefix's length, which is where the word now starts.
        begin = len(clean(snippet[:start]))
        text.stylize("bold reverse", begin, begin + len(clean(snippet[start:end])))
    return text


class SearchScreen(LiveScreen):
    """A search box over a live list of hits."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back"),
        Binding("slash", "edit", "Edit search"),
        Binding("enter", "open", "Open", show=False),
    ]

    def __init__(self, query: str = "") -> None:
        super().__init__()
        self.query_text = query
        self.hits: list[Row] = []
        self.submitted = False  # the next results take the focus from the search box

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        yield Input(self.query_text, placeholder="words to find, filters as study:ID status:failed kind:rejection "
                                                 "type:EVENT tool:NAME; enter searches", id="query")
        yield Static(id="summary", classes="summary")
        table = LiveTable(id="hits")
        for key, label in (("seq", "seq"), ("run", "run"), ("status", "status"), ("what", "what"),
                           ("snippet", "where the words are")):
            table.add_column(label, key=key)
        yield table
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = "search every run"
        self.query_one("#query", Input).focus()
        self._say(Text("Observations, rejected lines and run errors of every run, newest first. "
                       f"Kinds: {', '.join(sorted(KINDS))}.", "dim"))

    def _say(self, text: Text) -> None:
        self.query_one("#summary", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_text = event.value
        self.submitted = True
        self.refresh_data()

    def refresh_data(self) -> None:
        words, filters = parse_query(self.query_text)
        if match_expression(words) is None:
            if self.query_text.strip():
                self._say(Text("Nothing to search for: type a word.", "#c27c0e"))
            return
        source = self.source
        self._say(Text(f"searching for {clean(words)!r}…", "italic"))
        self.load(lambda: source.search(words, filters), lambda found: self._show(words, filters, found),
                  group="search")

    def _show(self, words: str, filters: Filters, found: tuple[list[Row], int]) -> None:
        hits, total = found
        self.hits = hits
        table = self.query_one(LiveTable)
        table.sync([(str(hit["seq"]), self._cells(hit)) for hit in hits])
        text = Text(no_wrap=True, end="")
        text.append(f"{total:,}{'+' if total >= COUNT_CAP else ''} hit(s) for ", "bold")
        text.append_text(literal(repr(words), "bold"))
        applied = [f"{name} {value}" for name, value in vars(filters).items() if value is not None]
        if applied:
            text.append("  filters: " + clean(", ".join(applied)), "italic")
        if len(hits) < total:
            text.append(f"  (newest {len(hits)} shown)", "dim")
        if self.source.index_note is not None:
            text.append(f"  {self.source.index_note}: searched with a temporary index", "italic")
        self._say(text)
        if hits and (self.submitted or self.focused is None):
            table.focus()
        self.submitted = False

    @staticmethod
    def _cells(hit: Row) -> list[Text | str]:
        what = hit["event_type"] or hit["kind"]
        if hit["tool_name"]:
            what = f"{what} {hit['tool_name']}"
        return [
            Text(str(hit["seq"]), justify="right"),
            literal(hit["run_id"] or "-"),
            status_text(hit["status"]) if hit["status"] else Text("-", "dim"),
            literal(what, "#d13438" if hit["kind"] != "observation" else "bold"),
            marked(hit["snippet"], hit["marks"]),
        ]

    def _hit(self) -> Row | None:
        key = self.query_one(LiveTable).current_key()
        return next((hit for hit in self.hits if str(hit["seq"]) == key), None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        """Open the hit under the cursor where it lives."""
        hit = self._hit()
        if hit is None:
            return
        if hit["kind"] == "rejection" or hit["run_id"] is None:
            self.ledger_app.action_ingestion()
        elif hit["kind"] == "observation":
            self.ledger_app.open_run_at(hit["run_id"], int(hit["seq"]))
        else:
            self.ledger_app.open_run(hit["run_id"])

    def action_edit(self) -> None:
        self.query_one("#query", Input).focus()
