"""Every error studyledger raises on purpose, in one tree.

``StudyLedgerError`` is the root: a caller (the CLI, the dashboard, a user's script) that
catches it has caught every mistake a user can make and act on, and nothing else. Each
error carries a message meant to be shown as it is, on one line, without a traceback.

::

    StudyLedgerError
    ├── ValidationError (also ValueError)   a value the API or a schema refuses
    ├── LedgerError                          the ledger itself
    │   ├── NotALedgerError, LedgerMissingError, NewerLedgerError
    │   ├── LedgerBusyError                  another writer held the lock too long
    │   │   └── LedgerConnectionLost         the server's connection dropped and stayed down
    │   ├── LedgerReadOnlyError, LedgerFullError, StaleProjectionsError
    │   ├── LedgerPermissionError            a server role may not do this
    │   ├── EventConflictError
    │   └── UnknownRunError, UnknownStudyError (also KeyError)
    ├── InputError (also ValueError)         something read from outside cannot be used
    │   ├── BadLine                          a line that does not parse
    │   ├── LineRejected                     a line that parses but cannot be used
    │   │   └── OwnLineError                 ... marked as studyledger's own format
    │   └── StudyFolderError                 a study output folder's files
    └── CheckpointError                      a checkpoint file

This module imports nothing of the package, so every layer can raise these.
"""

from __future__ import annotations


class StudyLedgerError(Exception):
    """Root of every error studyledger raises on purpose; the message says what to do."""


class ValidationError(StudyLedgerError, ValueError):
    """A value the API or a schema refuses (the seed's ``ValidationError``)."""


class LedgerError(StudyLedgerError):
    """Something about the ledger itself: the file, its schema, its lock, its contents."""


class NotALedgerError(LedgerError):
    """The file exists but is not a studyledger ledger (or not SQLite at all)."""


class LedgerMissingError(LedgerError):
    """The ledger file does not exist and was not to be created."""


class NewerLedgerError(LedgerError):
    """The ledger was written by a newer studyledger whose schema this one cannot read."""


class LedgerBusyError(LedgerError):
    """Another writer held the ledger for longer than the retries allow."""


class LedgerConnectionLost(LedgerBusyError):
    """The connection to a ledger server dropped (a restart, the network) during a command.

    What was committed is kept and what was in flight was rolled back, or committed without
    word: either way, doing the same appends again stores them once. The next use reconnects.
    """


class LedgerPermissionError(LedgerError):
    """The server's role for this connection lacks a privilege the command needs (a reader
    writing, a writer altering tables)."""


class LedgerReadOnlyError(LedgerError):
    """A write was asked of a ledger opened read-only."""


class LedgerFullError(LedgerError):
    """The disk (or the file size limit) left no room for a write; nothing of it was kept."""


class StaleProjectionsError(LedgerError):
    """The derived tables were built by another studyledger version, and a read-only open
    may not rebuild them."""


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


class InputError(StudyLedgerError, ValueError):
    """Input read from outside (a line, a study folder) that cannot be used.

    The ingester turns these into kept rejections; nothing else about them is fatal.
    """


class BadLine(InputError):
    """A line that cannot be parsed; the message is the reason shown to users."""


class LineRejected(InputError):
    """A line that parsed but cannot be used; the message is the reason shown to users.

    A user-supplied line adapter raises this to reject a line with its own reason.
    """


class OwnLineError(LineRejected):
    """A line marked as studyledger's own format that is not a valid event."""


class StudyFolderError(InputError):
    """A study output folder whose study.yaml or CSV files cannot be read; names the file."""


class CheckpointError(StudyLedgerError):
    """A checkpoint file that cannot be written, read or compared."""


__all__ = [
    "BadLine",
    "CheckpointError",
    "EventConflictError",
    "InputError",
    "LedgerBusyError",
    "LedgerConnectionLost",
    "LedgerError",
    "LedgerFullError",
    "LedgerMissingError",
    "LedgerPermissionError",
    "LedgerReadOnlyError",
    "LineRejected",
    "NewerLedgerError",
    "NotALedgerError",
    "OwnLineError",
    "StaleProjectionsError",
    "StudyFolderError",
    "StudyLedgerError",
    "UnknownRunError",
    "UnknownStudyError",
    "ValidationError",
]
