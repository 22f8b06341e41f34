"""Opening a ledger never writes unless the opener is a writer; a reader never writes at all."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from studyledger import Ledger, LedgerReadOnlyError, RunStatus, StaleProjectionsError
from studyledger.store import SQLiteStore

from .audit_helpers import invoke
from .unprivileged import run_cli_unprivileged


def fingerprint(folder: Path) -> dict[str, str]:
    """The sha256 of the ledgers in a folder and of what their write-ahead logs hold.

    A reader of a WAL database may create an empty -wal and its -shm index (SQLite's
    shared memory between connections); neither holds a change to the ledger.
    """
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            if path.suffix != ".db-shm" and not (path.suffix == ".db-wal" and path.stat().st_size == 0)}


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    db = tmp_path / "ledgers" / "l.db"
    db.parent.mkdir()
    with Ledger.open(db) as ledger:
        ledger.register_study("s1")
        run = ledger.register_run("s1", "c1")
        ledger.transition(run, RunStatus.RUNNING)
    return db


def make_projections_stale(db: Path) -> None:
    """What an upgrade of the projection code leaves: tables of another version."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE ledger_meta SET value = 'old' WHERE key = 'projection_version'")
    conn.close()


def test_constructing_a_ledger_never_writes(filled: Path) -> None:
    make_projections_stale(filled)
    before = fingerprint(filled.parent)
    Ledger(SQLiteStore(filled)).close()
    assert fingerprint(filled.parent) == before


def test_a_reader_never_writes_even_when_the_tables_are_stale(filled: Path) -> None:
    make_projections_stale(filled)
    before = fingerprint(filled.parent)
    with Ledger.open(filled, readonly=True) as ledger:
        assert not ledger.projections_current
        with pytest.raises(StaleProjectionsError, match="init"):
            ledger.check_readable()
        with pytest.raises(LedgerReadOnlyError):
            ledger.register_study("s2")
        with pytest.raises(LedgerReadOnlyError):
            ledger.catch_up()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ledger.conn.execute("DELETE FROM runs")
    assert fingerprint(filled.parent) == before
    # A writer's open is the explicit catch-up, and rebuilds them.
    with Ledger.open(filled) as ledger:
        assert ledger.projections_current and ledger.runs()[0]["status"] == "running"


def test_read_commands_say_how_to_rebuild_stale_tables_and_change_nothing(filled: Path) -> None:
    make_projections_stale(filled)
    before = fingerprint(filled.parent)
    for command in (["stats"], ["runs"], ["show", "x"], ["diff", "a", "b"], ["export", str(filled.parent / "out")]):
        code, _, err = invoke("--db", str(filled), *command)
        assert code == 1 and "derived tables were built by another studyledger version" in err, command
        assert len(err.strip().splitlines()) == 1
    # Commands that read only events work on the stale ledger as it is.
    for command in (["verify"], ["events"], ["audits"], ["replay"]):
        code, _, err = invoke("--db", str(filled), *command)
        assert "Traceback" not in err, command
    assert invoke("--db", str(filled), "verify")[0] == 0
    assert fingerprint(filled.parent) == before


def test_audits_work_on_a_read_only_file_in_a_read_only_folder(filled: Path, open_folder: Path) -> None:
    """Read by a user who can write neither the file nor its folder: no -shm can be made there."""
    with Ledger.open(filled) as ledger:
        run = ledger.runs()[0]["run_id"]
    folder = open_folder / "ledgers"
    shutil.copytree(filled.parent, folder)
    ledger_file = folder / filled.name
    out = open_folder / "out"
    out.mkdir()
    out.chmod(0o777)  # where the unprivileged user may write its export and checkpoint
    ledger_file.chmod(0o444)
    folder.chmod(0o555)
    before = fingerprint(folder)
    commands = [["stats"], ["runs"], ["show", run], ["events"], ["rejects"], ["verify"], ["replay"], ["diff", run, run],
                ["audits"], ["export", str(out / "canonical")], ["export", str(out / "jsonl"), "--format", "jsonl"],
                ["checkpoint", "--out", str(out / "cp.json")],
                ["init"]]  # the check is real: this user cannot write there, so a writer's open fails
    try:
        *readers, writer = run_cli_unprivileged([["--db", str(ledger_file), *command] for command in commands])
    finally:
        folder.chmod(0o755)
    for command, (code, _, err) in zip(commands, readers, strict=False):
        assert code == 0 and "Traceback" not in err, (command, err)
    assert writer[0] != 0 and "Traceback" not in writer[2]
    assert fingerprint(folder) == before
