"""What every data screen shares: a source, a clock, and a hook for live updates."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.screen import Screen

from ..data import Source
from ..workers import in_thread

if TYPE_CHECKING:
    from ..app import StudyLedgerApp


def mark_pair(marked: list[str], key: str) -> tuple[str, str] | None:
    """Mark ``key`` (or unmark it); once two are marked, clear the marks and return the pair.

    Comparing is two presses of ``c``, on the conditions screen and on a runs table alike.
    """
    if key in marked:
        marked.remove(key)
    else:
        marked.append(key)
    if len(marked) < 2:
        return None
    first, second = marked
    marked.clear()
    return first, second


def header_sort(column: int, sort_column: int, descending: bool) -> tuple[int, bool]:
    """``(sort column, descending)`` after a click on a column's header: the column sorted
    by reverses, another sorts ascending. The conditions screen and a runs table alike."""
    return (column, not descending) if column == sort_column else (column, False)


class LiveScreen(Screen[None]):
    """A screen whose data the app refreshes when the ledger changes.

    Subclasses load in :meth:`refresh_data`, always in a worker thread, and apply results
    on the UI thread, so a slow query never freezes input.
    """

    @property
    def ledger_app(self) -> StudyLedgerApp:
        """The app, typed."""
        from ..app import StudyLedgerApp

        assert isinstance(self.app, StudyLedgerApp)
        return self.app

    @property
    def source(self) -> Source:
        """The ledger's read side."""
        source = self.ledger_app.source
        assert source is not None
        return source

    def now(self) -> datetime:
        """The dashboard's clock."""
        return self.ledger_app.clock()

    def refresh_data(self) -> None:
        """Reload what the screen shows (called when it is shown or resumed, and on ledger changes)."""

    def on_screen_resume(self) -> None:
        # Textual resumes a screen when it is first pushed too: this is its first load.
        self.refresh_data()

    def load(self, fetch: Callable[[], Any], apply: Callable[[Any], None], *, group: str = "load") -> None:
        """Read in a worker thread, apply on the UI thread (see :func:`in_thread`)."""
        in_thread(self, fetch, apply, group=group)
