"""A virtual list of one run's observations: only the rows on screen are ever loaded.

A run can hold a million observations. The list knows only how many rows pass its filter;
it draws each visible line through Textual's Line API (``render_line``) from a small LRU
cache of pages, and a line whose page is not cached yet draws as a placeholder while a
worker thread fetches that page from SQLite. Memory is bounded by the cache, not the run.

Follow mode works like ``tail -f``: the cursor sits on the last row and new rows keep it
there; moving up stops following, and rows that arrive meanwhile are counted instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .data import ObservationFilter, Row, Source, SpanDepths, span_ids
from .format import clock_time
from .literal import literal
from .workers import in_thread

PAGE = 100
MAX_PAGES = 40
LEVEL_COLOURS = {"run": "#3a7bd5", "step": "", "tool-call": "#c27c0e", "evaluation": "#2e9e44",
                 "trial": "#8a8f98", "study": "#b146c2"}


class ObservationList(ScrollView, can_focus=True):
    """The observations of one run, paged from SQLite, with a cursor.

    Args:
        source: Where rows come from.
        run_id: The run.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("home,g", "first", "Top", show=False),
        Binding("end,G", "last", "Bottom+follow", show=False),
        Binding("enter", "open", "Open", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"observation-list--cursor", "observation-list--dim"}
    DEFAULT_CSS = """
    ObservationList { height: 1fr; }
    ObservationList > .observation-list--cursor { background: $accent 40%; }
    ObservationList:focus > .observation-list--cursor { background: $accent; color: $text; }
    ObservationList > .observation-list--dim { color: $text-muted; }
    """

    cursor: reactive[int] = reactive(0, always_update=True)
    following: reactive[bool] = reactive(False)
    new_rows: reactive[int] = reactive(0)

    class Opened(Message):
        """The user asked to see one observation in full."""

        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    class Changed(Message):
        """Total, cursor, follow state or the new-row count changed (for the status line)."""

    def __init__(self, source: Source, run_id: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.run_id = run_id
        self.where = ObservationFilter()
        self.total = 0
        self.counted = False  # Until the first count, growth is not "new rows".
        self._last_seq = 0  # The newest row counted: growth is counted after it.
        self._recounting = False
        self.depths = SpanDepths()
        self._depth_lock = threading.Lock()  # Page workers run concurrently.
        self._pages: OrderedDict[int, list[Row]] = OrderedDict()
        self._loading: set[int] = set()
        self._generation = 0

    # -- loading ------------------------------------------------------------------------

    def reload(self, where: ObservationFilter | None = None) -> None:
        """Start over (a new filter): forget cached pages and count again off the UI thread."""
        if where is not None:
            self.where = where
        self._generation += 1
        self._pages.clear()
        self._loading.clear()
        self.new_rows = 0
        self._recounting = True
        self._count(self._counted)

    def _count(self, then: Callable[[int, tuple[int, int]], None], after_seq: int = 0) -> None:
        """Count filtered rows after ``after_seq`` in a worker, then ``then(generation, (count, last seq))``.

        Counts share one exclusive group: a newer count replaces an older one still running,
        so growth is never added twice.
        """
        generation = self._generation
        in_thread(self, lambda: self.source.tail(self.run_id, self.where, after_seq),
                  lambda found: then(generation, found), group="count")

    def _counted(self, generation: int, found: tuple[int, int]) -> None:
        if generation == self._generation:
            self._recounting = False
            total, self._last_seq = found
            self._set_total(total, min(self.cursor, max(0, total - 1)))

    def _set_total(self, total: int, cursor: int) -> None:
        self.counted = True
        self.total = total
        self.virtual_size = Size(self.size.width, total)
        self.cursor = cursor
        if self.following:
            self._to_last()
        self.refresh()
        self.post_message(self.Changed())

    def set_depths(self, depths: SpanDepths) -> None:
        """Indent by a run's whole span tree (read once when the run opened) and redraw."""
        with self._depth_lock:
            self.depths = depths
        self._pages.clear()
        self._loading.clear()
        self.refresh()

    def grow(self) -> None:
        """Rows may have been added: count again and keep the view still (or follow)."""
        if self._recounting:
            return  # A full count is on its way; a growth count would replace it.
        if not self.counted:
            self.reload()
            return
        self._count(self._grown, self._last_seq)

    def _grown(self, generation: int, found: tuple[int, int]) -> None:
        added, last_seq = found
        if generation != self._generation or not added:
            return
        self._last_seq = last_seq
        # The last page may have been partial: drop it so its new rows get read.
        self._pages.pop((self.total - 1) // PAGE if self.total else 0, None)
        self.total += added
        self.virtual_size = Size(self.size.width, self.total)
        if self.following:
            self._to_last()
        else:
            self.new_rows += added
        self.refresh()
        self.post_message(self.Changed())

    def _row(self, index: int) -> Row | None:
        number, offset = divmod(index, PAGE)
        page = self._pages.get(number)
        if page is not None:
            self._pages.move_to_end(number)
            return page[offset] if offset < len(page) else None
        self._request(number)
        return None

    def _request(self, number: int) -> None:
        if number in self._loading:
            return
        self._loading.add(number)
        generation = self._generation
        before = self._pages.get(number - 1)
        after_seq = int(before[-1]["seq"]) if before and len(before) == PAGE else None

        def load() -> list[Row]:
            rows = self.source.page(self.run_id, self.where, number * PAGE, PAGE, after_seq=after_seq)
            with self._depth_lock:
                for row in rows:
                    span, parent = span_ids(row.get("meta_json"))
                    row["_depth"] = self.depths.depth(span, parent)
                    row.pop("meta_json", None)  # Keep the cache small: the detail view re-reads it.
            return rows

        in_thread(self, load, lambda rows: self._loaded(generation, number, rows), group="pages", exclusive=False)

    def _loaded(self, generation: int, number: int, rows: list[Row]) -> None:
        if generation != self._generation:
            return
        self._loading.discard(number)
        self._pages[number] = rows
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        self.refresh()
        self.post_message(self.Changed())

    def loaded_row(self, index: int) -> Row | None:
        """The row at ``index`` if its page is loaded (no fetch is started)."""
        page = self._pages.get(index // PAGE)
        return page[index % PAGE] if page and index % PAGE < len(page) else None

    # -- drawing ------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        """One screen line: the row at scroll offset + y, or a placeholder while it loads."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= self.total:
            return Strip.blank(width, self.rich_style)
        row = self._row(index)
        base = self.rich_style
        on_cursor = index == self.cursor
        if on_cursor:
            base = base + self.get_component_rich_style("observation-list--cursor")
        if row is None:
            text = Text("  …", Style(color=self.get_component_rich_style("observation-list--dim").color))
        else:
            text = self._format(row)
        # On the cursor bar only the cursor's colours count, so every column stays readable.
        segments = [Segment(s.text, base + Style(bold=s.style.bold) if on_cursor else base + s.style)
                    if s.style else Segment(s.text, base)
                    for s in text.render(self.app.console) if s.text != "\n"]
        strip = Strip(segments).crop(scroll_x, scroll_x + width).extend_cell_length(width, base)
        return strip.simplify()

    def _format(self, row: Row) -> Text:
        text = Text(no_wrap=True, end="")
        # Only the colour: a component style's background would hide the cursor bar.
        dim = Style(color=self.get_component_rich_style("observation-list--dim").color)
        text.append(f"{row['seq']:>8} ", dim)
        text.append(f"{clock_time(row.get('timestamp')):<8} ", dim)
        level = str(row.get("level") or "")
        text.append(literal(f"{level:<9} ", LEVEL_COLOURS.get(level, "")))
        text.append("  " * min(int(row.get("_depth", 0)), 12))
        event_type, tool = str(row.get("event_type") or ""), str(row.get("tool_name") or "")
        text.append(literal(event_type, "bold"))
        if tool:
            text.append(" ")
            text.append(literal(tool, "#c27c0e"))
        # Trace adapters often start the text with the event type and tool name; say them once.
        body = str(row.get("text") or "")
        for prefix in (event_type, tool):
            if prefix and body.startswith(prefix):
                body = body[len(prefix):].lstrip()
        if body:
            text.append("  ")
            text.append(literal(body))
        return text

    # -- cursor and follow -----------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self.post_message(self.Changed())

    def watch_following(self, following: bool) -> None:
        if following:
            self.new_rows = 0
        self.post_message(self.Changed())

    def move_to(self, index: int) -> None:
        """Put the cursor on a row and scroll just enough to show it."""
        if self.total == 0:
            self.cursor = 0
            return
        self.cursor = max(0, min(index, self.total - 1))
        height = max(1, self.scrollable_content_region.height)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)
        if self.cursor < self.total - 1:
            self.following = False

    def _to_last(self) -> None:
        self.cursor = max(0, self.total - 1)
        self.scroll_to(y=max(0, self.total - self.scrollable_content_region.height), animate=False)

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        """Jump to the bottom and follow new rows from there."""
        self.following = True
        self._to_last()
        self.refresh()

    def action_open(self) -> None:
        row = self.loaded_row(self.cursor)
        if row is not None:
            self.post_message(self.Opened(int(row["seq"])))

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        # Scrolling up by wheel is "stop following" too.
        self.following = False
        super()._on_mouse_scroll_up(event)

    def on_click(self, event: events.Click) -> None:
        index = int(self.scroll_y) + event.y
        if 0 <= index < self.total:
            if event.chain >= 2 and index == self.cursor:
                self.action_open()
            self.move_to(index)

    def status(self) -> dict[str, Any]:
        """What the status line shows."""
        return {"cursor": self.cursor, "total": self.total, "following": self.following,
                "new": self.new_rows}
