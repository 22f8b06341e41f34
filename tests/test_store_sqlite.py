"""The store contract (tests/store_contract.py) on the SQLite backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from studyledger.store import TRIGGER_DDL

from .store_contract import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def target(self, tmp_path: Path) -> str:
        return str(tmp_path / "ledger.db")

    def raw(self, target: str, statement: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(target, isolation_level=None) as conn:
            return conn.execute(statement).fetchall()

    def tamper(self, target: str, *statements: str) -> None:
        conn = sqlite3.connect(target, isolation_level=None)
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
