"""Untrusted text made safe to draw: shown as it is, never obeyed.

Titles, trace text and meta_json come from programs and files the dashboard does not
control. Rich markup in them (``[bold red]``) must not style the screen, and terminal
control characters (ESC, BEL, CSI sequences, C1 controls) must never reach the terminal,
where they could move the cursor, retitle the window or worse. Every piece of data is
wrapped in :func:`literal` before it is drawn: a ``rich.text.Text`` built from the plain
string (markup is never parsed) with each control character replaced by a visible escape.
"""

from __future__ import annotations

import re

from rich.style import Style
from rich.text import Text

# C0 controls, DEL and C1 controls; tab and newline are handled by the caller's mode.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPE_STYLE = Style(dim=True, reverse=True)


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(value: object, *, multiline: bool = False) -> str:
    """``value`` as a string with every control character spelled out (``\\x1b``).

    Args:
        value: Anything; None becomes the empty string.
        multiline: Keep newlines and tabs (for detail views); otherwise they are escaped
            too, so one value always stays on one table row.
    """
    text = "" if value is None else str(value)
    if multiline:
        return _CONTROL.sub(lambda m: m.group() if m.group() in "\n\t" else _visible(m.group()), text)
    return _CONTROL.sub(lambda m: _visible(m.group()), text)


def literal(value: object, style: str | Style = "", *, multiline: bool = False) -> Text:
    """A Text that shows ``value`` exactly, escapes highlighted, markup inert; ``-`` for
    None, as every missing value is shown."""
    text = "-" if value is None else str(value)
    result = Text(style=style, no_wrap=not multiline, end="")
    position = 0
    for match in _CONTROL.finditer(text):
        if multiline and match.group() in "\n\t":
            continue
        result.append(text[position:match.start()])
        result.append(_visible(match.group()), _ESCAPE_STYLE)
        position = match.end()
    result.append(text[position:])
    return result


def shorten(value: object, width: int) -> str:
    """One line of at most ``width`` characters, ending in an ellipsis when cut."""
    text = clean(value)
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
