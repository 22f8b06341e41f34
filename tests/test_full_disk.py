"""A full disk and a read-only ledger: one line saying what and where, nothing lost
(issue 11, items 11 and 15).

A full disk is made for real two ways: a 1 MiB tmpfs (needs root and CAP_SYS_ADMIN; skipped
where it cannot be mounted), and everywhere RLIMIT_FSIZE in a subprocess, where a write
past the limit is cut short and the next fails (EFBIG), as on a full disk (ENOSPC).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from studyledger import Ledger, ingest
from studyledger.audit.verify import verify
from studyledger.events import EventKind

from .ingest_helpers import row_line
from .unprivileged import run_cli_unprivileged

WRITER = textwrap.dedent("""
    import json, os, resource, signal, sys
    from studyledger import DropWriter, Observation
    folder, how = sys.argv[1], sys.argv[2]
    writer = DropWriter(folder, name="w")
    def observation(i):
        return Observation(timestamp="2026-01-01T00:00:00+00:00", record_id=f"r{i}", text="x" * 300,
                           session_id="s", actor_id="a", event_type="e")
    if how == "rlimit":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024 + 100, resource.RLIM_INFINITY))
    written, failures, i = [], 0, 0
    while failures < 3:  # fill the disk, and fail a few more times on it
        try:
            writer.observe(observation(i))
            written.append(i)
        except OSError:
            failures += 1
        i += 1
    if how == "rlimit":
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    else:
        os.unlink(os.path.join(folder, "filler"))
    for i in range(i, i + 20):  # space again: every line from now on is whole
        writer.observe(observation(i))
        written.append(i)
    writer.close()
    print(json.dumps(written))
""")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, or a skip where one cannot be mounted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE cases cover a full disk here")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN); the RLIMIT_FSIZE cases cover a full disk")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _check_every_written_line_is_stored(folder: Path, written: list[int], ledger_path: Path) -> None:
    with Ledger.open(ledger_path) as ledger:
        report = ingest(ledger, [folder / "w.jsonl"])
        stored = {e.data["record_id"] for e in ledger.events() if e.kind == EventKind.OBSERVATION_RECORDED}
    assert stored == {f"r{i}" for i in written}
    assert report.lines_rejected <= 1  # at most the one fragment the full disk cut


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_after_a_full_disk_every_later_line_stays_whole(how: str, tmp_path: Path, request: pytest.FixtureRequest
                                                         ) -> None:
    """Issue 11, item 11: on a 1 MiB tmpfs a line was written in part, the newline write
    then raised ENOSPC, and once space was freed the next line was glued to the fragment
    and rejected (320 written, 319 in the ledger)."""
    if how == "tmpfs":
        folder = request.getfixturevalue("tiny_disk")
        (folder / "filler").write_bytes(bytes(1024 * 1024 - 96 * 1024))
    else:
        folder = tmp_path / "drop"
    result = subprocess.run([sys.executable, "-c", WRITER, str(folder), how], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    _check_every_written_line_is_stored(folder, written, tmp_path / "ledger.db")


def test_ingest_onto_a_full_tmpfs_is_one_line_and_loses_nothing(tiny_disk: Path, tmp_path: Path) -> None:
    """Issue 11, item 15: `sqlite3.OperationalError: database or disk is full` was a traceback."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.jsonl").write_text("".join(row_line(i) for i in range(6_000)))
    ledger_path = tiny_disk / "ledger.db"
    result = subprocess.run([sys.executable, "-m", "studyledger", "--db", str(ledger_path), "ingest", str(drop)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: {ledger_path}: the disk is full (database or disk is full); nothing of this write was kept: "
        "free space and run it again"]
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    result = subprocess.run([sys.executable, "-m", "studyledger", "--db", str(ledger_path), "ingest", str(drop),
                             "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with Ledger.open(ledger_path, readonly=True) as ledger:
        assert ledger.stats()["observations"] == 6_000 and verify(ledger).ok


def test_ingest_past_the_file_size_limit_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.jsonl").write_text("".join(row_line(i) for i in range(6_000)))
    ledger_path = tmp_path / "ledger.db"
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY)); "
              "from studyledger.cli import main; sys.argv[0] = 'studyledger'; main()")
    result = subprocess.run([sys.executable, "-c", script, "--db", str(ledger_path), "ingest", str(drop)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {ledger_path}: the disk refused a write")
    with Ledger.open(ledger_path) as ledger:
        report = ingest(ledger, [drop])
        assert report.lines_read == 6_000 and ledger.stats()["observations"] == 6_000 and verify(ledger).ok


def test_writing_to_a_read_only_ledger_is_one_line(open_folder: Path) -> None:
    """Issue 11, item 15: `attempt to write a readonly database` was a traceback. Run by a
    user who cannot write the file (tests/unprivileged.py)."""
    ledger_path = open_folder / "ledger.db"
    Ledger.open(ledger_path).close()
    (open_folder / "a.jsonl").write_text(row_line(0))
    ledger_path.chmod(0o444)
    before = ledger_path.read_bytes()
    [(code, _, err)] = run_cli_unprivileged([["--db", str(ledger_path), "ingest", str(open_folder / "a.jsonl")]])
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"Error: {ledger_path}: cannot write the ledger (attempt to write a readonly database): the file or its "
        "folder is read-only to this user; nothing was written"]
    assert ledger_path.read_bytes() == before
