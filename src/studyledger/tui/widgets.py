"""Small widgets the screens share: a header, a search bar and live-updating tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Mount
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input
from textual.widgets._header import HeaderTitle

Cells = Sequence[Text | str]


class LedgerHeader(Header):
    """Textual's header, with its title redrawn the moment it changes.

    Textual's own Header redraws the title in a coroutine queued on the header. When the
    app quits before that queue runs (a user pressing q as a screen appears, a test that
    ends at once), the title widget has already been removed and the queued redraw raises
    NoMatches, which Textual reports as the app's crash. A plain watcher runs at once, so
    nothing is left queued.
    """

    def _on_mount(self, event: Mount) -> None:
        event.prevent_default()  # Header's own _on_mount would queue the redraws again.
        for owner in (self.app, self.screen):
            self.watch(owner, "title", self._show_title)
            self.watch(owner, "sub_title", self._show_title)

    def _show_title(self) -> None:
        for title in self.query(HeaderTitle):
            title.update(self.format_title())


class LedgerFooter(Footer):
    """The footer every screen shows: compact, and without the command palette's key, so
    a screen's keys fit in 80 columns (``?`` lists every key, ctrl+p among them)."""

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)


class SearchBar(Input):
    """The ``/`` prompt: enter searches, escape gives up; either way focus goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]
    DEFAULT_CSS = """
    SearchBar { dock: bottom; display: none; border: none; height: 1; padding: 0 1; }
    SearchBar.-active { display: block; }
    """

    class Done(Message):
        """The user finished with the bar; ``text`` is None when they cancelled."""

        def __init__(self, text: str | None) -> None:
            super().__init__()
            self.text = text

    def __init__(self, placeholder: str = "search") -> None:
        super().__init__(placeholder=placeholder, id="search")

    def open(self, value: str = "") -> None:
        """Show the bar with ``value`` and take focus."""
        self.value = value
        self.add_class("-active")
        self.focus()

    def action_cancel(self) -> None:
        self.remove_class("-active")
        self.post_message(self.Done(None))

    async def action_submit(self) -> None:
        self.remove_class("-active")
        self.post_message(self.Done(self.value))


class LiveTable(DataTable[Text | str]):
    """A DataTable refreshed in place, so a live update never moves the cursor.

    Unchanged rows are left alone, changed cells are updated, rows added at the end are
    appended; only when rows are removed or reordered is the table rebuilt, and then the
    cursor goes back to the same row key.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._cells: dict[str, list[str]] = {}

    def set_columns(self, columns: Sequence[tuple[str, str | Text]]) -> None:
        """Replace every column (key, label): for tables whose columns follow the data,
        such as one per metric. The rows are dropped; the next :meth:`sync` refills them."""
        self.clear(columns=True)
        self._cells = {}
        for key, label in columns:
            self.add_column(label, key=key)

    def relabel(self, key: str, label: str) -> None:
        """Give one column a new header; the columns are rebuilt so that each is as wide as
        its new header and cells (the next :meth:`sync` refills the rows)."""
        columns = [(str(column.key.value), column.label.plain) for column in self.columns.values()]
        if (key, label) not in columns:
            self.set_columns([(name, label if name == key else shown) for name, shown in columns])

    def current_key(self) -> str | None:
        """The key of the row under the cursor."""
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def sync(self, rows: Sequence[tuple[str, Cells]]) -> None:
        """Show exactly ``rows`` (key, cells) in this order, disturbing as little as possible."""
        keys = [key for key, _ in rows]
        old = list(self._cells)
        columns = list(self.columns)
        if keys[: len(old)] == old:
            for key, cells in rows[: len(old)]:
                plain = [c.plain if isinstance(c, Text) else c for c in cells]
                previous = self._cells[key]
                for column, value, before, cell in zip(columns, plain, previous, cells, strict=False):
                    if value != before:
                        self.update_cell(key, column, cell, update_width=True)
                self._cells[key] = plain
            for key, cells in rows[len(old):]:
                self.add_row(*cells, key=key)
                self._cells[key] = [c.plain if isinstance(c, Text) else c for c in cells]
            return
        current, scroll = self.current_key(), self.scroll_y
        self.clear()
        self._cells = {}
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._cells[key] = [c.plain if isinstance(c, Text) else c for c in cells]
        if current in self._cells:
            self.move_cursor(row=keys.index(current), animate=False, scroll=False)
            self.scroll_to(y=scroll, animate=False)
