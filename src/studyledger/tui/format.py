"""How values look on screen: status colours, times, durations, the status bar.

Colours are mid-tone so they read on both the dark and the light theme.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from ..events import parse_instant
from .literal import literal

STATUS_ORDER = ("pending", "running", "success", "failed", "skipped")
STATUS_COLOURS = {
    "pending": "#8a8f98",
    "running": "#3a7bd5",
    "success": "#2e9e44",
    "failed": "#d13438",
    "skipped": "#c27c0e",
    "stale": "#b146c2",
}
STALE = "stale"


def status_text(status: str | None, *, stale: bool = False) -> Text:
    """A run's status in its colour; a stale run says so."""
    name = status or "?"
    text = literal(name, f"bold {STATUS_COLOURS.get(name, '')}".strip())
    if stale:
        text.append(" stale", f"bold {STATUS_COLOURS[STALE]}")
    return text


SHORT_NAMES = {"pending": "pend", "running": "run", "success": "ok", "failed": "fail", "skipped": "skip"}


def breakdown(by_status: dict[str, int], stale: int = 0, *, short: bool = False) -> Text:
    """Coloured counts per status, in lifecycle order (``3 running 2 success``).

    Args:
        short: Abbreviate the names (``3 run 2 ok``) to fit a table column.
    """
    text = Text(no_wrap=True, end="")
    known = [s for s in STATUS_ORDER if by_status.get(s)]
    others = sorted(s for s in by_status if s not in STATUS_ORDER and by_status[s])
    for status in known + others:
        if text:
            text.append(" ")
        name = SHORT_NAMES.get(status, status) if short else status
        text.append(f"{by_status[status]} {name}", STATUS_COLOURS.get(status, ""))
    if stale:
        text.append(f" {stale} stale" if short else f" ({stale} stale)", STATUS_COLOURS[STALE])
    return text if text else Text("no runs", "dim")


def short_time(value: str | None) -> str:
    """``MM-DD HH:MM:SS`` in UTC (the year is in the detail views)."""
    moment = parse_instant(value)
    return moment.strftime("%m-%d %H:%M:%S") if moment else ""


def full_time(value: str | None) -> str:
    """``YYYY-MM-DD HH:MM:SS.fff`` in UTC, or the raw text when it does not parse."""
    moment = parse_instant(value)
    if moment is None:
        return "" if value is None else str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def ago(value: str | None, now: datetime) -> str:
    """How long before ``now`` a timestamp was (``3m ago``); blank when unknown."""
    moment = parse_instant(value)
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return short_time(value)
    return f"{duration(seconds) if seconds >= 1 else 'just now'}{' ago' if seconds >= 1 else ''}"
