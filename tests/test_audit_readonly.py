"""Audits read (issue 11, item 12): verify, replay, diff, export, stats and merge's source
never change the ledger they audit, and they work on a read-only file and folder."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studyledger import Ledger
from studyledger.audit.checkpoint import take, write

from .audit_helpers import fill, invoke
from .unprivileged import run_bound


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_does_not_rebuild_what_replay_must_find(tmp_path: Path) -> None:
    """verify used to rebuild stale projections first: after a changed projection_version
    and an edited runs.status, verify then replay said "identical"."""
    db = tmp_path / "ledger.db"
    run_id = fill(db)[0]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE ledger_meta SET value = 'old' WHERE key = 'projection_version'")
    conn.execute("UPDATE runs SET status = 'failed' WHERE run_id = ?", (run_id,))
    conn.close()
    before = digest(db)
    assert invoke("--db", str(db), "verify")[0] == 0
    code, out, _ = invoke("--db", str(db), "replay", "--json")
    assert code == 1 and json.loads(out)["identical"] is False
    assert {"table": "runs", "problem": "changed", "key": {"run_id": run_id}, "columns": ["status"],
            "stored": {"status": "failed"}, "rebuilt": {"status": "success"}} in json.loads(out)["differences"]
    assert digest(db) == before


def test_merge_leaves_its_source_and_its_pending_wal_as_they_are(tmp_path: Path) -> None:
    """merge opened its source read-write: the source's pending WAL was checkpointed."""
    source = tmp_path / "source.db"
    fill(source, runs=1)
    # A writer killed after committing: its last transactions are only in the -wal file.
    script = textwrap.dedent("""
        import os, sys
        from studyledger import Ledger, RunBudget
        ledger = Ledger.open(sys.argv[1])
        ledger.conn.execute("PRAGMA wal_autocheckpoint = 0")
        ledger.register_study("s2", run_budget=RunBudget(replicates=1))
        ledger.register_run("s2", "c9")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script, str(source)], check=True, timeout=60)
    wal = Path(f"{source}-wal")
    assert wal.stat().st_size > 0
    before = (digest(source), digest(wal))
    code, out, err = invoke("--db", str(tmp_path / "target.db"), "merge", str(source), "--json")
    assert code == 0, err
    assert json.loads(out)["appended"] == 9  # 7, and the 2 that only the WAL holds
    assert (digest(source), digest(wal)) == before


@pytest.fixture
def read_only(tmp_path: Path) -> tuple[Path, str, Path]:
    """A ledger in a folder where neither the folder nor the file can be written, and a
    checkpoint of it kept elsewhere."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "ledger.db"
    run_id = fill(db)[0]
    with Ledger.open(db) as ledger:
        write(take(ledger.store), tmp_path / "head.json")
    return db, run_id, tmp_path / "head.json"


@pytest.mark.parametrize("folder_writable", [True, False], ids=["read-only file", "read-only folder"])
def test_the_audit_commands_work_on_a_read_only_ledger(read_only: tuple[Path, str, Path], tmp_path: Path,
                                                       folder_writable: bool) -> None:
    """Before, a read-only file or mount said "not a studyledger ledger (unable to open
    database file)". Run by a user that the permissions bind (see tests/unprivileged.py)."""
    db, run_id, head = read_only
    db.chmod(0o444)
    db.parent.chmod(0o755 if folder_writable else 0o555)
    before = digest(db)
    out = tmp_path / "out"
    try:
        for command in (["stats"], ["runs"], ["show", run_id], ["events"], ["diff", run_id, run_id],
                        ["verify", "--checkpoint", str(head)], ["replay"], ["audits"],
                        ["checkpoint", "--out", str(tmp_path / "again.json")],
                        ["export", str(out / "canonical")], ["export", str(out / "jsonl"), "--format", "jsonl"]):
            result = run_bound("--db", str(db), *command)
            assert result.returncode == 0, (command, result.stderr)
        result = run_bound("--db", str(tmp_path / "merged.db"), "merge", str(db))
        assert result.returncode == 0, result.stderr
        # A write is refused in one line, and the file is as it was.
        result = run_bound("--db", str(db), "verify", "--record")
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
        assert "read-only" in result.stderr and "Traceback" not in result.stderr
    finally:
        db.parent.chmod(0o755)
    assert digest(db) == before
    assert not Path(f"{db}-wal").exists() or folder_writable
