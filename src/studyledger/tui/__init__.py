"""The terminal dashboard (``studyledger tui``). Importing this package imports Textual."""

from .app import StudyLedgerApp

__all__ = ["StudyLedgerApp"]
