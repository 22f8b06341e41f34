"""Audits read one consistent snapshot while another process keeps appending."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from studyledger import Ledger
from studyledger.audit import checkpoint as checkpoints
from studyledger.audit.replay import replay
from studyledger.audit.verify import checkpoint_problems
from studyledger.store import SQLiteStore

from .audit_helpers import fill

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from studyledger import Ledger, Observation
    db, stop = Path(sys.argv[1]), Path(sys.argv[2])
    with Ledger.open(db) as ledger:
        run_id = ledger.runs()[0]["run_id"]
        for i in range(3000):  # bounded even if the test never says stop
            if stop.exists():
                break
            ledger.observe(*[Observation(timestamp="2026-01-01T00:00:00+00:00", record_id=f"w{i}-{j}",
                                         text="x", session_id=run_id, actor_id="w", event_type="step",
                                         run_id=run_id) for j in range(5)])
            if i == 0:
                print("started", flush=True)
""")


def test_replay_and_checkpoints_during_appends(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    fill(db, runs=1)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        taken = []
        store = SQLiteStore(db, create=False)
        try:
            for _ in range(3):
                report = replay(store, in_memory=True)
                assert report.identical is True, report.differences
                taken.append(checkpoints.take(store))
                time.sleep(0.05)
        finally:
            store.close()
    finally:
        stop.touch()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    sizes = [cp.tree_size for cp in taken]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0], sizes  # the ledger grew meanwhile
    with Ledger.open(db) as ledger:
        for cp in taken:
            assert checkpoint_problems(ledger.store, cp) == []
        assert checkpoints.compare(ledger.store, taken[0], taken[-1]).consistent
        assert replay(ledger.store).identical is True
