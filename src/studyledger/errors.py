"""Errors a user can cause and can act on.

Each carries a message meant to be printed as it is: the CLI shows ``str(error)`` on one
line of stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

from .schema import ValidationError


class LedgerError(Exception):
    """Base class of the ledger's own errors: the message says what to do."""


class NotALedgerError(LedgerError):
    """The file exists but is not a studyledger ledger (or not SQLite at all)."""


class LedgerMissingError(LedgerError):
    """The ledger file does not exist and was not to be created."""


class NewerLedgerError(LedgerError):
    """The ledger was written by a newer studyledger whose schema this one cannot read."""


class LedgerBusyError(LedgerError):
    """Another writer held the ledger for longer than the retries allow."""


class EventConflictError(LedgerError):
    """An event id is already stored with a different body.

    Ids are content hashes, so this means a hash collision or an edited row: never drop
    the new event silently.
    """


class UnknownRunError(LedgerError, KeyError):
    """A run id that the ledger has never seen."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown run"


class UnknownStudyError(LedgerError, KeyError):
    """A study id that the ledger has never seen."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown study"


__all__ = [
    "EventConflictError",
    "LedgerBusyError",
    "LedgerError",
    "LedgerMissingError",
    "NewerLedgerError",
    "NotALedgerError",
    "UnknownRunError",
    "UnknownStudyError",
    "ValidationError",
]
