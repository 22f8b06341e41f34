"""kill -9 a live watcher at random moments while files grow: nothing lost, nothing twice."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

from studyledger import Ledger
from studyledger import ingest
from studyledger.audit.verify import verify

from .ingest_helpers import event_ids, own_line, start_watch, wait_for

KILLS = 6


def _writer(folder: Path, stop: threading.Event, seed: int) -> None:
    """Append bursts of good lines, bad lines and lines split across two writes."""
    rng = random.Random(seed)
    index = 0
    handles = [open(folder / f"w{n}.jsonl", "ab") for n in range(3)]
    try:
        while not stop.is_set():
            handle = rng.choice(handles)
            burst = b"".join(own_line(index + k, tag="crash").encode() for k in range(rng.randint(1, 400)))
            index += 400
            if rng.random() < 0.2:
                burst += b"not json at all\n"
            handle.write(burst)
            handle.flush()
            if rng.random() < 0.3:
                # Half a line now, the rest later: the watcher must wait for the newline.
                line = own_line(index, tag="split").encode()
                index += 1
                handle.write(line[:20])
                handle.flush()
                time.sleep(0.01)
                handle.write(line[20:])
                handle.flush()
            time.sleep(rng.uniform(0.0, 0.02))
    finally:
        for handle in handles:
            handle.close()


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    folder, crashed, clean = tmp_path / "drop", tmp_path / "crashed.db", tmp_path / "clean.db"
    folder.mkdir()
    rng = random.Random(20261129)
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(folder, stop, 7))
    writer.start()
    try:
        for _ in range(KILLS):
            process = start_watch(crashed, folder)
            time.sleep(rng.uniform(0.5, 1.4))
            process.kill()
            process.wait(timeout=30)
            assert process.returncode == -9
    finally:
        stop.set()
        writer.join()

    with Ledger.open(clean) as ledger:
        expected = ingest(ledger, [folder])
    assert expected.lines_read == expected.lines_accepted + expected.lines_rejected
    clean_ids = event_ids(clean)

    process = start_watch(crashed, folder)
    try:
        wait_for(lambda: len(event_ids(crashed)) >= len(clean_ids), timeout=30, what="watcher to catch up")
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0

    crashed_ids = event_ids(crashed)
    assert len(crashed_ids) == len(clean_ids)
    assert set(crashed_ids) == set(clean_ids)
    with sqlite3.connect(crashed) as conn:
        committed_lines = conn.execute("SELECT sum(lines_accepted + lines_rejected) FROM ingest_files").fetchone()[0]
    assert committed_lines == expected.lines_read
    with Ledger.open(crashed) as ledger:
        assert verify(ledger.store).ok
