"""The store contract (tests/store_contract.py) on the SQLite backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from studyledger.codec import Codec
from studyledger.store import TRIGGER_DDL

from .store_contract import StoreContract, _literal


class TestSQLiteStore(StoreContract):
    BODY = "sl_body(body)"

    @pytest.fixture
    def target(self, tmp_path: Path) -> str:
        return str(tmp_path / "ledger.db")

    def raw(self, target: str, statement: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(target, isolation_level=None) as conn:
            return conn.execute(statement).fetchall()

    def tamper(self, target: str, *statements: str) -> None:
        conn = sqlite3.connect(target, isolation_level=None)
        Codec(conn).register()  # an attacker can read compressed bodies as studyledger does
        try:
            for name in TRIGGER_DDL:
                conn.execute(f"DROP TRIGGER {name}")
            for statement in statements:
                conn.execute(statement)
            for ddl in TRIGGER_DDL.values():
                conn.execute(ddl)
        finally:
            conn.close()

    def drop_trigger(self, target: str, name: str) -> None:
        self.raw(target, f"DROP TRIGGER {name}")

    def row_literal(self, values: tuple[Any, ...], chain: str) -> str:
        """Id and chain as the bytes SQLite keeps; text is accepted for every other column."""
        seq, event_id, *rest, source, body = values
        return ", ".join([str(seq), f"X'{event_id[4:]}'", *map(_literal, rest), _literal(source), "NULL", "NULL",
                          _literal(body), f"X'{chain}'"])
