"""CPU an idle ``studyledger watch`` spends over finished study folders.

Copies the finished real upstream studies (tests/fixtures/upstream: every case but the
killed one) into one folder, ``--folders`` of them in turn, starts ``studyledger watch`` on
it, waits until the ledger stops growing, then reads the watcher's CPU time (user + system,
from /proc) over ``--seconds`` in which nothing changes. Every reconcile scan (2 s) looks at
every study folder; with nothing changed it should cost next to nothing.

Run: ``python benchmarks/bench_idle_watch.py [--folders 30] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from studyledger import Ledger

UPSTREAM = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "upstream"
FINISHED = ("plain", "runner_raises", "fail_fast", "metrics_special", "agents_traced", "resumed", "rerun")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def events(db: Path) -> int:
    if not db.exists():
        return -1
    with Ledger.open(db, readonly=True) as ledger:
        return ledger.store.head().seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="studyledger-idle-") as tmp:
        drop, db = Path(tmp) / "drop", Path(tmp) / "ledger.db"
        for n in range(args.folders):
            case = FINISHED[n % len(FINISHED)]
            shutil.copytree(UPSTREAM / case, drop / f"{n:02d}-{case}")
        watch = subprocess.Popen([sys.executable, "-m", "studyledger", "--db", str(db), "watch", str(drop)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            last, steady = -1, 0
            while steady < 3:  # the ledger unchanged across three reconcile scans: all read
                time.sleep(2.0)
                now = events(db)
                steady = steady + 1 if now == last and now > 0 else 0
                last = now
            before = cpu_seconds(watch.pid)
            time.sleep(args.seconds)
            spent = cpu_seconds(watch.pid) - before
        finally:
            watch.send_signal(signal.SIGTERM)
            watch.wait(timeout=60)
    print(f"idle watch over {args.folders} finished study folders ({last:,} events): "
          f"{spent:.2f} CPU-s in {args.seconds:.0f} s")


if __name__ == "__main__":
    main()
