"""Format adapters: pure functions from one parsed JSON line to ledger events.

INTERFACE (shared by the tailer, the study-folder importer and the JSONL export):

    events_from_line(obj, *, source) -> list[NewEvent]

* ``obj`` is the parsed line (any JSON value; NaN/Infinity already parsed to floats).
* ``source`` is the event source string, ``file:PATH:LINE:OFFSET``.
* Returns the events the line states, in order (may be several: a checkpoint line gives a
  run registration, status changes, observations, evaluations, provenance).
* Raises :class:`LineRejected` with a human reason when the line cannot be used (unknown
  shape, invalid values). The caller turns that into a ``line_rejected`` event.

The adapter is chosen by the line's shape (see ``detect_format``).
"""

from __future__ import annotations

from typing import Any

from ..events import NewEvent


class LineRejected(ValueError):
    """A line that parsed but cannot be used; the message is the reason shown to users."""


def events_from_line(obj: Any, *, source: str) -> list[NewEvent]:
    """Turn one parsed line into events (see the module docstring)."""
    raise LineRejected("no adapter yet")
