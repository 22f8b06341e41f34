"""Regenerate the README's CLI reference from ``--help`` (tests/test_readme.py checks it).

Run: ``python scripts/update_readme.py``. As sqlite-utils does, the reference is the help
text itself, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from click.testing import CliRunner

from studyledger.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def help_text(*args: str) -> str:
    """The help output of ``studyledger ARGS --help`` at a fixed width."""
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="studyledger", terminal_width=100)
    return result.output.rstrip()


def cli_reference() -> str:
    """Markdown: the group's help, then each command's, in name order."""
    parts = ["```", help_text(), "```"]
    for name in sorted(cli.commands):
        parts += ["", f"### studyledger {name}", "", "```", help_text(name), "```"]
    return "\n".join(parts)


def render(readme: str) -> str:
    """The README with its CLI reference section replaced by the current one."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{cli_reference()}\n{END}", readme)


if __name__ == "__main__":
    text = README.read_text()
    updated = render(text)
    README.write_text(updated)
    sys.stdout.write("README.md CLI reference " + ("updated\n" if updated != text else "already current\n"))
