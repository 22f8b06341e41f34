"""Audits read (issue 11, item 12): verify, replay, diff, export, stats and merge's source
never change the ledger they audit, and they work on a read-only file and folder (the
read-only folder case of every command is in tests/test_readonly.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from studyledger import Ledger
from studyledger.audit.checkpoint import take, write

from .audit_helpers import fill, invoke
from .unprivileged import run_cli_unprivileged


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


def test_a_read_only_file_in_a_writable_folder_is_audited_and_a_write_is_one_line(open_folder: Path) -> None:
    """Before, a read-only file said "not a studyledger ledger (unable to open database
    file)". tests/test_readonly.py runs every audit on a read-only file in a read-only
    folder; here the folder can be written (SQLite makes its -shm there), the file cannot."""
    folder = open_folder / "ledgers"
    folder.mkdir()
    db = folder / "ledger.db"
    run_id = fill(db)[0]
    with Ledger.open(db) as ledger:
        write(take(ledger.store), open_folder / "head.json")
    folder.chmod(0o777)
    db.chmod(0o444)
    out = open_folder / "out"
    out.mkdir()
    out.chmod(0o777)
    before = digest(db)
    commands = [["stats"], ["runs"], ["show", run_id], ["events"], ["diff", run_id, run_id],
                ["verify", "--checkpoint", str(open_folder / "head.json")], ["replay"], ["audits"],
                ["export", str(out / "jsonl"), "--format", "jsonl"],
                ["verify", "--record"], ["ingest", str(open_folder / "head.json")]]
    results = run_cli_unprivileged([["--db", str(db), *command] for command in commands]
                                   + [["--db", str(out / "merged.db"), "merge", str(db)]])
    *readers, (record, _, record_err), (ingest, _, ingest_err), merged = results
    for command, (code, _, err) in zip(commands, readers, strict=False):
        assert code == 0 and "Traceback" not in err, (command, err)
    assert merged[0] == 0, merged[2]
    for code, err in ((record, record_err), (ingest, ingest_err)):  # writes: one line, nothing written
        assert code == 1 and "read-only" in err and len(err.strip().splitlines()) == 1, err
    assert digest(db) == before


def test_a_read_only_folder_whose_wal_holds_transactions_is_refused_not_read_stale(open_folder: Path) -> None:
    """Immutable (the only way SQLite reads in a read-only folder), the -wal is not read:
    a ledger whose writer was killed would be audited as it was before its last writes."""
    folder = open_folder / "ledgers"
    folder.mkdir()
    db = folder / "ledger.db"
    script = textwrap.dedent("""
        import os, sys
        from studyledger import Ledger, RunBudget
        ledger = Ledger.open(sys.argv[1])
        ledger.conn.execute("PRAGMA wal_autocheckpoint = 0")
        ledger.register_study("s1", run_budget=RunBudget(replicates=1))
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
    Path(f"{db}-shm").unlink()  # as a copy of the ledger and its log would be
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)
    try:
        [(code, _, err)] = run_cli_unprivileged([["--db", str(db), "stats"]])
    finally:
        folder.chmod(0o755)
    assert code == 1 and "write-ahead log ledger.db-wal holds transactions" in err, err
