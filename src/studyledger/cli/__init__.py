"""The ``studyledger`` command.

Each area registers its commands from its own module (``core``, ``ingest``, ``audit``,
``dashboard``, ``demo``, ``explore``), so the layers below never import the CLI and the dashboard's
imports are only paid by the commands that use it.
"""

from __future__ import annotations

from .common import cli
from . import audit, core, dashboard, demo, explore, ingest  # imported for their commands, which they register


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="studyledger")


__all__ = ["cli", "main"]
