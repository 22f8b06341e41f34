"""Shared fixtures: real ledger files in temporary folders."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from studyledger import Ledger, RunBudget, ingest
from studyledger.ingestion.service import IngestReport

from .pg_server import pg_database, pg_server, pg_url  # fixtures of a throwaway PostgreSQL server

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / "tests" / "data" / "shared"
"""Copies of the project's shared upstream examples (format samples, the seed's reference
vectors), kept in the repository so the suite passes in a fresh clone with nothing beside it."""


UPSTREAM = REPO / "tests" / "fixtures" / "upstream"
UPSTREAM_CASES = ("plain", "runner_raises", "fail_fast", "metrics_special", "agents_traced", "crashed", "resumed",
                  "rerun")
"""Every case of tests/fixtures/upstream (see its README)."""


@pytest.fixture(scope="session")
def upstream_ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, IngestReport]]]:
    """Ledgers of upstream's real output (tests/fixtures/upstream), one per case, each
    ingested once a session as `studyledger ingest CASE` does, with what the ingest
    reported. Tests only read them (a search builds an index: search a copy,
    :func:`copy_ledger`); the session checks at its end that none was written."""
    root = tmp_path_factory.mktemp("upstream-ledgers")
    found = {}
    for case in UPSTREAM_CASES:
        path = root / f"{case}.db"
        with Ledger.open(path) as opened:
            found[case] = (path, ingest(opened, [UPSTREAM / case]))
    digests = {case: hashlib.sha256(path.read_bytes()).hexdigest() for case, (path, _) in found.items()}
    yield found
    written = [case for case, (path, _) in found.items()
               if hashlib.sha256(path.read_bytes()).hexdigest() != digests[case]]
    assert not written, f"a test wrote the shared upstream ledgers {written}: give it a copy_ledger"


@pytest.fixture(scope="session")
def upstream_ledgers(upstream_ingested: dict[str, tuple[Path, IngestReport]]) -> dict[str, Path]:
    """The shared upstream ledgers' files, by case (:func:`upstream_ingested`)."""
    return {case: path for case, (path, _) in upstream_ingested.items()}


def copy_ledger(source: Path, folder: Path) -> Path:
    """A copy of a closed ledger file in ``folder``, for a test that writes."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, folder / source.name))


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
