"""Choosing a backend: a path opens SQLite, a ``postgresql://`` URL opens PostgreSQL.

The only place that knows both backends. The PostgreSQL one is imported on first use, so
studyledger runs without psycopg until someone names a server.
"""

from __future__ import annotations

import os
import sqlite3

from .errors import LedgerError
from .store import DatabaseURL, SQLiteStore, Store, URL_SCHEMES, ledger_target

POSTGRES_HINT = "PostgreSQL ledgers need psycopg: pip install 'studyledger[postgres]'"


def open_store(target: str | os.PathLike[str] | DatabaseURL, *, create: bool = True,
               readonly: bool = False) -> Store:
    """Open the ledger at ``target`` with the backend its form names.

    Args:
        target: A SQLite file, or ``postgresql://user@host:port/dbname``.
        create: Create the file (or the schema in an empty database) when missing.
        readonly: Never write.

    Raises:
        LedgerError: as the backend's constructor; a URL without psycopg installed.
    """
    where = ledger_target(target)
    if isinstance(where, DatabaseURL):
        _require_psycopg()
        from .store_postgres import PostgresStore

        return PostgresStore(where, create=create, readonly=readonly)
    return SQLiteStore(where, create=create, readonly=readonly)


def connect_reader(read_uri: str) -> sqlite3.Connection:
    """A read-only connection from a store's ``read_uri``, for another process (verify's workers)."""
    if read_uri.lower().startswith(URL_SCHEMES):
        _require_psycopg()
        from .store_postgres import PgConnection

        target = DatabaseURL(read_uri)
        return PgConnection(target.url, readonly=True, display=str(target))
    return sqlite3.connect(read_uri, uri=True)


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise LedgerError(f"{POSTGRES_HINT} ({exc})") from None
