"""Shared fixtures: real ledger files in temporary folders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from studyledger import Ledger, RunBudget, ingest

from .pg_server import pg_database, pg_server, pg_url  # fixtures of a throwaway PostgreSQL server

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / "tests" / "data" / "shared"
"""Copies of the project's shared upstream examples (format samples, the seed's reference
vectors), kept in the repository so the suite passes in a fresh clone with nothing beside it."""


UPSTREAM = REPO / "tests" / "fixtures" / "upstream"


@pytest.fixture(scope="session")
def upstream_ledgers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ledgers of upstream's real output (tests/fixtures/upstream), one per case, each
    ingested as `studyledger ingest CASE` does; tests only read them."""
    root = tmp_path_factory.mktemp("upstream-ledgers")
    paths = {}
    for case in ("metrics_special", "agents_traced", "crashed", "plain"):
        paths[case] = root / f"{case}.db"
        with Ledger.open(paths[case]) as opened:
            ingest(opened, [UPSTREAM / case])
    return paths


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Where a test's ledger file lives (not created yet)."""
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    """A fresh, empty ledger on disk."""
    with Ledger.open(ledger_path) as opened:
        yield opened


@pytest.fixture
def study_ledger(ledger: Ledger) -> Ledger:
    """A ledger with study ``s1`` (3 replicates) registered."""
    ledger.register_study("s1", title="Study one", description="d", run_budget=RunBudget(replicates=3))
    return ledger


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A temporary folder another user can enter (pytest's own are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="studyledger-ro-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o666)
    shutil.rmtree(folder)
