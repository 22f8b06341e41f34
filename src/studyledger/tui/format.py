"""How values look on screen: status colours, times, durations, the status bar.

Colours are mid-tone so they read on both the dark and the light theme.
"""

from __future__ import annotations

import math
from datetime import datetime
from statistics import median

from rich.text import Text

from ..events import parse_instant
from ..query import finite_values, non_finite_counts, value_text
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


def breakdown(by_status: dict[str, int], stale: int = 0) -> Text:
    """Coloured counts per status, in lifecycle order (``3 running 2 success (1 stale)``),
    in the words of the status column, wherever it is shown."""
    text = Text(no_wrap=True, end="")
    known = [s for s in STATUS_ORDER if by_status.get(s)]
    others = sorted(s for s in by_status if s not in STATUS_ORDER and by_status[s])
    for status in known + others:
        if text:
            text.append(" ")
        text.append(f"{by_status[status]} {status}", STATUS_COLOURS.get(status, ""))
    if stale:
        text.append(f" ({stale} stale)", STATUS_COLOURS[STALE])
    return text if text else Text("no runs", "dim")


MISSING = "-"
"""What every view shows for a value that is not there (``query.value_text`` says the same)."""


def short_time(value: str | None) -> str:
    """``MM-DD HH:MM:SS`` in UTC (the year is in the detail views)."""
    moment = parse_instant(value)
    return moment.strftime("%m-%d %H:%M:%S") if moment else MISSING


def clock_time(value: str | None) -> str:
    """``HH:MM:SS`` in UTC."""
    moment = parse_instant(value)
    return moment.strftime("%H:%M:%S") if moment else MISSING


def full_time(value: str | None) -> str:
    """``YYYY-MM-DD HH:MM:SS.fff`` in UTC, or the raw text when it does not parse."""
    moment = parse_instant(value)
    if moment is None:
        return MISSING if value is None else str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds is None:
        return MISSING
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def ago(value: str | None, now: datetime) -> str:
    """How long before ``now`` a timestamp was (``3m ago``)."""
    moment = parse_instant(value)
    if moment is None:
        return MISSING
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return short_time(value)
    return f"{duration(seconds) if seconds >= 1 else 'just now'}{' ago' if seconds >= 1 else ''}"


# -- pictures made of text ----------------------------------------------------------------
#
# Distributions and progress are drawn with block characters in a Rich Text, not with a
# plotting widget: they must fit inside a table cell and a comparison row, one line high,
# and read on dark and light themes alike. NaN and Infinity are never drawn as numbers:
# they are counted beside the picture (see :func:`distribution`).

BLOCKS = " ▁▂▃▄▅▆▇█"


def spark(counts: list[int], style: str = "") -> Text:
    """One line of block characters, each as high as its count relative to the largest."""
    top = max(counts, default=0)
    text = Text(no_wrap=True, end="")
    for count in counts:
        level = 0 if not count else max(1, round(count / top * (len(BLOCKS) - 1)))
        text.append(BLOCKS[level], style)
    return text


def bins(values: list[float], low: float, high: float, width: int) -> list[int]:
    """Counts of ``values`` in ``width`` equal bins from ``low`` to ``high`` (inclusive)."""
    counts = [0] * width
    span = high - low
    for value in values:
        index = 0 if span <= 0 else min(width - 1, int((value - low) / span * width))
        counts[max(0, index)] += 1
    return counts


def distribution(values: list[object], width: int = 12, *, scale: tuple[float, float] | None = None,
                 style: str = "#3a7bd5") -> Text:
    """A histogram of the finite values on one line, then the count of each non-finite value.

    Args:
        scale: ``(low, high)`` to share between pictures that are compared; default the
            values' own range.
    """
    numbers = finite_values(values)
    low, high = scale if scale is not None else (min(numbers, default=0.0), max(numbers, default=0.0))
    text = spark(bins(numbers, low, high, width), style) if numbers else Text("·" * width, "dim")
    for name, count in sorted(non_finite_counts(values).items()):
        text.append(f" {count} {name}", "#c27c0e")
    return text


def progress_bar(by_status: dict[str, int], planned: int | None, width: int = 20) -> Text:
    """A bar of a condition's (or study's) runs against its plan, one colour per status.

    Ended runs fill from the left (success, failed, skipped), then running, then pending;
    planned runs no source has mentioned yet are the dotted rest. Without a plan the bar
    is of the runs known.
    """
    known = sum(by_status.values())
    total = max(planned or 0, known)
    text = Text(no_wrap=True, end="")
    if not total:
        return Text("·" * width, "dim")
    filled = 0
    exact = 0.0
    for status in ("success", "failed", "skipped", "running", "pending"):
        exact += by_status.get(status, 0) / total * width
        cells = round(exact) - filled
        if cells > 0:
            text.append("█" * cells if status != "pending" else "▒" * cells, STATUS_COLOURS[status])
            filled += cells
    text.append("·" * (width - filled), "dim")
    return text


def metric_cell(value: object) -> Text:
    """A metric value for a table cell: NaN and Infinity spelled out and marked, missing dim."""
    if value is None:
        return Text("-", "dim", justify="right")
    style = "#c27c0e" if isinstance(value, float) and not math.isfinite(value) else ""
    text = literal(value_text(value), style)  # text metrics come from files: shown literally
    text.justify = "right"
    return text


def money(value: float) -> str:
    """``$0``, ``$0.0031``, ``$12.40``: cents once there are any, else what there is."""
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if abs(value) >= 0.01 else f"${value:.2g}"


def resources_text(resources: dict[str, list[float]], width: int = 12) -> Text:
    """What runs took, on one line: latency's distribution and range, cost and tokens.

    ``latency ▁▃█▂ 1ms…66ms median 5ms   cost $0.42 ($0.018/run)   tokens 12,400 (517/run)``;
    a figure no run recorded is left out, and the line is empty when none is known.
    """
    text = Text(no_wrap=True, end="")
    latency = sorted(resources.get("latency_s", []))
    if latency:
        text.append("latency ", "dim")
        if latency[0] != latency[-1]:
            text.append_text(spark(bins(latency, latency[0], latency[-1], width), "#3a7bd5"))
            text.append(f" {duration(latency[0])}…{duration(latency[-1])}")
        text.append(f" median {duration(median(latency))}")
    for name, shown in (("cost_usd", money), ("tokens", lambda v: f"{v:,.0f}")):
        values = resources.get(name, [])
        if values:
            total = sum(values)
            text.append(f"   {name.removesuffix('_usd')} ", "dim")
            text.append(shown(total))
            if total:
                text.append(f" ({shown(total / len(values))}/run)", "dim")
    return text
