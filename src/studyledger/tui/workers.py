"""Running a ledger read in a thread and handing its result to the UI thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from textual.widget import Widget
from textual.worker import get_current_worker

from ..errors import LedgerError
from .data import SourceClosed


def in_thread(widget: Widget, fetch: Callable[[], Any], apply: Callable[[Any], None], *,
              group: str, exclusive: bool = True) -> None:
    """Run ``fetch`` in a worker thread, then ``apply`` its result on the UI thread.

    With ``exclusive``, a newer call of the same group replaces an older one still running
    (a replaced thread still runs to its end; its result is dropped). A read that fails
    becomes a notification, never a crash; reads cut short by shutdown are dropped.
    """

    def work() -> None:
        try:
            result = fetch()
        except SourceClosed:
            return
        except (sqlite3.Error, LedgerError) as exc:
            message = f"reading the ledger failed: {exc}"
            _deliver(widget, lambda: widget.notify(message, severity="error"))
            return
        if not get_current_worker().is_cancelled:
            _deliver(widget, lambda: apply(result))

    widget.run_worker(work, thread=True, group=group, exclusive=exclusive)


def _deliver(widget: Widget, call: Callable[[], None]) -> None:
    try:
        widget.app.call_from_thread(call)
    except RuntimeError:  # The app stopped while the read ran.
        pass
