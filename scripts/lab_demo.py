"""The lab case, end to end: three machines' watchers write one PostgreSQL ledger live.

    python scripts/lab_demo.py [--url postgresql://...] [--seconds 20] [--tui] [--work DIR]

What it runs, each a real ``studyledger`` process (printed as it goes, so it doubles as a
recipe for a real lab, where each pair runs on its own machine):

1. ``studyledger --db URL init --roles lab``: the schema, and the roles lab_writer/lab_reader
   (skipped with ``--url`` unless ``--roles`` is given: creating roles needs the right to).
2. For nodes a, b and c: ``studyledger --db URL watch node-X/`` and, into the same folder,
   ``studyledger simulate node-X/ --study lab-node-X`` (a study that unfolds over --seconds).
3. The dashboard on the same URL: ``studyledger --db URL tui`` in this terminal with --tui;
   otherwise the real app runs headless in this process, reports what it shows each second
   (refreshed by LISTEN/NOTIFY) and saves ``dashboard.svg``.
4. When the simulators are done and the watchers have caught up (the ledger holds what one
   clean ingest of the three folders gives): stop the watchers, then ``verify``,
   ``checkpoint --out`` (into a folder outside the database), ``export`` (canonical and
   jsonl) and ``stats``.

Without ``--url`` it starts a throwaway server (the test suite's ``tests/pg_server.py``; run as
root it runs the server as the ``postgres`` user) and removes it at the end. Exits non-zero if
any step fails or the ledger does not hold exactly what was written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.pg_server, for the throwaway server

from studyledger import Ledger, ingest  # noqa: E402
from studyledger.store import DatabaseURL  # noqa: E402

NODES = ("a", "b", "c")


def studyledger(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "studyledger", "--db", url, *args]


def show(command: list[str]) -> str:
    """The command as a user would type it, with the password left out of the URL."""
    words = ["studyledger", *command[3:]]
    return " ".join(shlex.quote(str(DatabaseURL(w)) if w.startswith("postgresql://") else w) for w in words)


def run(command: list[str]) -> str:
    print(f"$ {show(command)}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    print(done.stdout + done.stderr, end="", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {show(command)}")
    return done.stdout


def count(url: str) -> int:
    with Ledger.open(url, readonly=True) as ledger:
        return ledger.store.event_count()


async def headless_dashboard(url: str, done: Any, shot: Path) -> None:
    """The real dashboard app on ``url``, driven by Textual's pilot until ``done()``."""
    from textual.widgets import DataTable

    from studyledger.tui.app import StudyLedgerApp

    app = StudyLedgerApp(url)
    async with app.run_test(size=(140, 32)) as pilot:
        last = ""
        while not done():
            await pilot.pause(1.0)
            tables = app.screen.query(DataTable)
            rows = tables.first().row_count if tables else 0
            line = f"dashboard: {rows} studies listed, head seq {count(url)}"
            if line != last:
                print(line, flush=True)
                last = line
        await pilot.pause(2.0)  # one more refresh after the last write
        app.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway server)")
    parser.add_argument("--roles", metavar="PREFIX", help="with --url: also create roles PREFIX_writer/_reader")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each simulated study unfolds")
    parser.add_argument("--tui", action="store_true", help="open the dashboard in this terminal")
    parser.add_argument("--work", help="folder for the drop folders, checkpoint and exports (kept)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="studyledger-lab-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    if args.url is None:
        from tests.pg_server import start_pg_server

        server = start_pg_server()
        url, roles = server.url(server.create_database("lab")), "lab"
        print(f"throwaway PostgreSQL server: {DatabaseURL(url)}", flush=True)
    else:
        url, roles = args.url, args.roles
    processes: list[subprocess.Popen[str]] = []
    try:
        run(studyledger(url, "init", *(["--roles", roles] if roles else [])))
        # On the throwaway server each machine logs in as a member of lab_writer and the
        # auditor as a member of lab_reader, as a lab would set it up (docs/postgres.md).
        node_urls = {node: url for node in NODES}
        if server is not None:
            with server.connect("lab", autocommit=True) as conn:
                for node in NODES:
                    conn.execute(f'CREATE ROLE "node_{node}" LOGIN IN ROLE lab_writer')  # type: ignore[arg-type]
                conn.execute('CREATE ROLE "auditor" LOGIN IN ROLE lab_reader')
            node_urls = {node: server.url("lab", user=f"node_{node}") for node in NODES}
            url = server.url("lab", user="auditor")
        watchers, simulators = [], []
        for number, node in enumerate(NODES):
            folder = work / f"node-{node}"
            folder.mkdir(exist_ok=True)
            watch = studyledger(node_urls[node], "watch", str(folder))
            simulate = [sys.executable, "-m", "studyledger", "simulate", str(folder), "--seconds", str(args.seconds),
                        "--study", f"lab-node-{node}", "--seed", str(number), "--runs", "9"]
            print(f"$ {show(watch)} &", flush=True)
            watchers.append(subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            print(f"$ {' '.join(['studyledger', *simulate[3:]])} &", flush=True)
            simulators.append(subprocess.Popen(simulate, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        processes = watchers + simulators
        if args.tui and sys.stdout.isatty():
            print(f"$ {show(studyledger(url, 'tui'))}   (q quits)", flush=True)
            subprocess.run(studyledger(url, "tui"))
        else:
            print(f"$ {show(studyledger(url, 'tui'))}   (here: the same app, headless)", flush=True)
            asyncio.run(headless_dashboard(url, lambda: all(p.poll() is not None for p in simulators),
                                           work / "dashboard.svg"))
        for simulator in simulators:
            simulator.wait(timeout=args.seconds + 60)
        clean = work / "expected.db"
        with Ledger.open(clean) as ledger:
            ingest(ledger, [work / f"node-{node}" for node in NODES])
        expected = count(str(clean))
        deadline = time.monotonic() + 60
        while count(url) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        for watcher in watchers:
            watcher.terminate()
            _, err = watcher.communicate(timeout=60)
            print(err, end="", flush=True)
            if watcher.returncode != 0:
                raise SystemExit("a watcher failed")
        stored = count(url)
        print(f"the ledger holds {stored} events; one clean ingest of the three folders gives {expected}", flush=True)
        if stored != expected:
            raise SystemExit("the ledger does not hold exactly what was written")
        run(studyledger(url, "verify"))
        (work / "checkpoints").mkdir(exist_ok=True)
        run(studyledger(url, "checkpoint", "--out", str(work / "checkpoints" / "head.json")))
        exported = json.loads(run(studyledger(url, "export", str(work / "export"), "--json")))
        run(studyledger(url, "export", str(work / "export-jsonl"), "--format", "jsonl"))
        run(studyledger(url, "stats"))
        print(f"exported {len(exported['studies'])} studies; everything is in {work}", flush=True)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        if server is not None:
            server.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
