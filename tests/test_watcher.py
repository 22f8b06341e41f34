"""The watcher with real watchdog observers on real folders."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from studyledger import Ledger, query
from studyledger.events import EventKind
from studyledger.ingestion.watcher import Watcher

from .ingest_helpers import count_events, own_line, start_watch, wait_for, write

OBS = EventKind.OBSERVATION_RECORDED.value


def lines(start: int, stop: int) -> str:
    return "".join(own_line(i) for i in range(start, stop))


def test_appended_lines_land_in_the_ledger(ledger_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    with Watcher(ledger_path, folder) as watcher:
        write(folder / "a.jsonl", lines(0, 3))
        wait_for(lambda: count_events(ledger_path, OBS) == 3, what="first lines")
        write(folder / "a.jsonl", lines(3, 5))
        (folder / "deep" / "er").mkdir(parents=True)
        write(folder / "deep" / "er" / "b.jsonl", lines(5, 7))
        wait_for(lambda: count_events(ledger_path, OBS) == 7, what="appended lines")
    assert watcher.error is None
    stats = watcher.stats
    assert (stats.files, stats.lines_read, stats.events_appended) == (2, 7, 7)


def test_files_present_at_start_are_read(ledger_path: Path, tmp_path: Path) -> None:
    write(tmp_path / "old.jsonl", lines(0, 4))
    with Watcher(ledger_path, tmp_path):
        wait_for(lambda: count_events(ledger_path, OBS) == 4, what="existing lines")


def test_partial_line_is_completed_live(ledger_path: Path, tmp_path: Path) -> None:
    text = own_line(0)
    with Watcher(ledger_path, tmp_path) as watcher:
        write(tmp_path / "a.jsonl", text[:30])
        wait_for(lambda: watcher.stats.files == 1, what="first read")
        assert count_events(ledger_path) == 0
        write(tmp_path / "a.jsonl", text[30:])
        wait_for(lambda: count_events(ledger_path, OBS) == 1, what="completed line")
    assert watcher.stats.lines_rejected == 0


def after_first_scan(ledger_path: Path) -> None:
    """Wait until the start-up scan has read the marker file (line 0, written before the
    watcher started), so what is written next can only be found by the mechanism under test."""
    wait_for(lambda: count_events(ledger_path, OBS) == 1, what="the start-up scan")


def test_reconcile_scan_catches_what_events_miss(ledger_path: Path, tmp_path: Path) -> None:
    # A polling observer that never polls delivers no events at all: only the reconcile
    # scan can find these lines.
    write(tmp_path / "marker.jsonl", lines(0, 1))
    with Watcher(ledger_path, tmp_path, poll=3600, reconcile=0.2):
        after_first_scan(ledger_path)
        write(tmp_path / "a.jsonl", lines(1, 6))
        wait_for(lambda: count_events(ledger_path, OBS) == 6, what="reconciled lines")


def test_polling_observer(ledger_path: Path, tmp_path: Path) -> None:
    write(tmp_path / "marker.jsonl", lines(0, 1))
    with Watcher(ledger_path, tmp_path, poll=0.1, reconcile=3600):
        after_first_scan(ledger_path)
        write(tmp_path / "a.jsonl", lines(1, 3))
        wait_for(lambda: count_events(ledger_path, OBS) == 3, what="polled lines")


def test_rotation_while_watching_loses_nothing(ledger_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "app.jsonl"
    with Watcher(ledger_path, tmp_path) as watcher:
        write(path, lines(0, 3))
        wait_for(lambda: count_events(ledger_path, OBS) == 3, what="before rotation")
        write(path, lines(3, 6))
        path.rename(tmp_path / "app.jsonl.1")
        write(path, lines(6, 8))
        wait_for(lambda: count_events(ledger_path, OBS) == 8, what="after rotation")
    assert watcher.stats.duplicates == 0


def test_rotation_out_of_the_folder_is_read_to_its_end(ledger_path: Path, tmp_path: Path) -> None:
    folder, archive = tmp_path / "drop", tmp_path / "archive"
    folder.mkdir()
    archive.mkdir()
    with Watcher(ledger_path, folder, reconcile=3600):
        write(folder / "a.jsonl", lines(0, 2))
        wait_for(lambda: count_events(ledger_path, OBS) == 2, what="before move")
        with open(folder / "a.jsonl", "ab") as handle:
            handle.write(lines(2, 4).encode())
            handle.flush()
            (folder / "a.jsonl").rename(archive / "a.old")
        wait_for(lambda: count_events(ledger_path, OBS) == 4, what="tail of the moved file")


def test_deleted_file_is_read_to_its_end_through_the_held_handle(ledger_path: Path, tmp_path: Path) -> None:
    with Watcher(ledger_path, tmp_path, reconcile=3600):
        write(tmp_path / "a.jsonl", lines(0, 2))
        wait_for(lambda: count_events(ledger_path, OBS) == 2, what="before deletion")
        with open(tmp_path / "a.jsonl", "ab") as handle:
            handle.write(lines(2, 5).encode())
            handle.flush()
            (tmp_path / "a.jsonl").unlink()
        wait_for(lambda: count_events(ledger_path, OBS) == 5, what="lines written just before deletion")


def test_deleted_files_do_not_stop_the_watcher(ledger_path: Path, tmp_path: Path) -> None:
    with Watcher(ledger_path, tmp_path, reconcile=0.1) as watcher:
        for index in range(20):
            write(tmp_path / f"f{index}.jsonl", own_line(index))
            (tmp_path / f"f{index}.jsonl").unlink()
        write(tmp_path / "last.jsonl", own_line(99))
        wait_for(lambda: count_events(ledger_path, OBS) >= 1, what="the surviving file")
        assert watcher.running
    assert watcher.error is None


def test_burst_of_appends(ledger_path: Path, tmp_path: Path) -> None:
    with Watcher(ledger_path, tmp_path):
        for index in range(0, 3_000, 100):
            write(tmp_path / f"f{index % 7}.jsonl", lines(index, index + 100))
        wait_for(lambda: count_events(ledger_path, OBS) == 3_000, what="the burst")


def test_stop_commits_and_restart_resumes(ledger_path: Path, tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", lines(0, 10))
    first = Watcher(ledger_path, tmp_path).start()
    wait_for(lambda: count_events(ledger_path, OBS) == 10, what="first watcher")
    first.stop()
    write(tmp_path / "a.jsonl", lines(10, 12))
    with Watcher(ledger_path, tmp_path) as second:
        wait_for(lambda: count_events(ledger_path, OBS) == 12, what="second watcher")
    assert (second.stats.lines_read, second.stats.duplicates) == (2, 0)


def test_missing_folder_is_refused(ledger_path: Path, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        Watcher(ledger_path, tmp_path / "nope").start()


def test_a_broken_ledger_is_reported_not_swallowed(tmp_path: Path) -> None:
    not_ledger = tmp_path / "x.db"
    not_ledger.write_bytes(b"this is not sqlite" * 100)
    watcher = Watcher(not_ledger, tmp_path).start()
    wait_for(lambda: not watcher.running, what="watcher thread to end")
    assert watcher.error is not None and "ledger" in str(watcher.error)


def test_study_folder_facts_are_read_live(ledger_path: Path, tmp_path: Path) -> None:
    study = tmp_path / "bracket"
    shutil.copytree(Path(__file__).parent / "data" / "study", study)
    with Watcher(ledger_path, study, reconcile=0.2) as watcher:
        wait_for(lambda: count_events(ledger_path, EventKind.STUDY_REGISTERED.value) == 1, what="study.yaml")
        wait_for(lambda: count_events(ledger_path, EventKind.CONDITION_REGISTERED.value) >= 1, what="conditions")
        (study / "study.yaml").write_text("study_id: [unclosed\n")
        wait_for(lambda: any("study.yaml" in error for error in watcher.stats.errors), what="the broken yaml reported")
        assert watcher.running


# -- study output folders dropped into a watched folder ---------------------------------

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"


def runs_by_status(db: Path, study_id: str) -> dict[str, int]:
    """``{status: runs}`` of one study, read through a separate connection ({} before any)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT status, count(*) FROM runs WHERE study_id = ? GROUP BY status",
                                     (study_id,)).fetchall())
    except sqlite3.OperationalError:
        return {}


def test_study_folders_in_the_watched_folder_are_imported_at_start_when_copied_in_and_after_a_restart(
        ledger_path: Path, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    shutil.copytree(UPSTREAM / "plain", drop / "plain")
    with Watcher(ledger_path, drop, reconcile=0.2) as first:
        wait_for(lambda: runs_by_status(ledger_path, "plain-study") == {"success": 10}, what="a study there at start")
        shutil.copytree(UPSTREAM / "agents_traced", drop / "incoming" / "agents_traced")
        wait_for(lambda: runs_by_status(ledger_path, "agents-traced-study") == {"success": 20, "failed": 4},
                 what="a study copied in while watching")
    shutil.copytree(UPSTREAM / "crashed", drop / "crashed")
    with Watcher(ledger_path, drop, reconcile=0.2) as second:
        wait_for(lambda: runs_by_status(ledger_path, "crash-study") == {"success": 4, "running": 1, "pending": 7},
                 what="a killed study copied in while stopped")
    for watcher in (first, second):
        stats = watcher.stats
        assert watcher.error is None and stats.errors == [] and stats.problems == [] and stats.lines_rejected == 0
    assert set(second.stats.studies) == {"plain-study", "agents-traced-study", "crash-study"}
    with Ledger.open(ledger_path, readonly=True) as ledger:
        assert len(ledger.anomalies()) == 2  # the two true disagreements of agents_traced
        assert query.rejections(ledger.conn) == []


def _pending(record: dict[str, Any]) -> dict[str, Any]:
    """The run.json upstream writes for a planned run before the study starts."""
    return {**record, "status": "pending", "status_reason": "awaiting_execution", "attempted": False,
            "terminal": False, "error": None, "timing": {"started_at": None, "ended_at": None, "latency_s": 0.0},
            "observed": {"artifact_refs": [], "evaluations": [], "execution_metadata": {}, "metrics": {},
                         "observation_count": 0, "outputs": {}, "provenance": {}, "trace_refs": []}}


def test_a_study_folder_is_followed_live_as_upstream_writes_it(ledger_path: Path, tmp_path: Path) -> None:
    """Every run.json pending first, then each run running and finished with its checkpoint
    line, and study.yaml and the CSV files only at the end: the ledger follows each step."""
    source, study = UPSTREAM / "plain", tmp_path / "drop" / "plain"
    runs_dir, checkpoints = study / "artifacts" / "runs", study / "artifacts" / "checkpoints"
    lines = (source / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines(keepends=True)
    records = {json.loads(line)["run_id"]: json.loads((source / "artifacts" / "runs" / json.loads(line)["run_id"]
                                                       / "run.json").read_text()) for line in lines}
    study.mkdir(parents=True)
    with Watcher(ledger_path, tmp_path / "drop", reconcile=0.2) as watcher:
        for run_id, record in records.items():
            (runs_dir / run_id / "attachments").mkdir(parents=True)
            (runs_dir / run_id / "observations.jsonl").write_text("")
            (runs_dir / run_id / "run.json").write_text(json.dumps(_pending(record), indent=2))
        wait_for(lambda: runs_by_status(ledger_path, "plain-study") == {"pending": 10}, what="the planned runs")
        checkpoints.mkdir()
        for done, (line, (run_id, record)) in enumerate(zip(lines, records.items(), strict=True), start=1):
            running = {**_pending(record), "status": "running", "status_reason": "execution_started",
                       "attempted": True, "timing": {**record["timing"], "ended_at": None, "latency_s": 0.0}}
            (runs_dir / run_id / "run.json").write_text(json.dumps(running, indent=2))
            wait_for(lambda: runs_by_status(ledger_path, "plain-study").get("running") == 1, what=f"{run_id} running")
            for name in ("observations.jsonl", "run.json"):
                shutil.copy(source / "artifacts" / "runs" / run_id / name, runs_dir / run_id / name)
            shutil.copy(source / "artifacts" / "checkpoints" / f"{run_id}.json", checkpoints / f"{run_id}.json")
            write(checkpoints / "runs.jsonl", line)
            wait_for(lambda done=done: runs_by_status(ledger_path, "plain-study").get("success") == done,
                     what=f"{run_id} done")
        for name in ("study.yaml", "conditions.csv", "evaluations.csv", "manifest.json", "runs.csv", "events.csv"):
            shutil.copy(source / name, study / name)
        with Ledger.open(ledger_path, readonly=True) as ledger:
            wait_for(lambda: bool(query.conditions(ledger.conn, "plain-study")), what="the files written at the end")
            assert ledger.study("plain-study")["title"] == "Bracket sizing, plain"
            assert ledger.anomalies() == [] and query.rejections(ledger.conn) == []
    assert watcher.error is None and watcher.stats.problems == [] and watcher.stats.errors == []


def test_watch_imports_a_study_folder_dropped_in(ledger_path: Path, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    process = start_watch(ledger_path, drop, "--reconcile", "0.2")
    try:
        wait_for(lambda: ledger_path.exists(), what="the ledger")
        shutil.copytree(UPSTREAM / "crashed", drop / "crashed")
        wait_for(lambda: runs_by_status(ledger_path, "crash-study") == {"success": 4, "running": 1, "pending": 7},
                 what="the killed study")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"Warning" not in err and b"Error" not in err


def test_a_file_truncated_and_regrown_while_watched_loses_nothing(ledger_path: Path, tmp_path: Path) -> None:
    """Issue 11, item 2: a live watcher missed the lines regrown before its old offset."""
    from .test_tailer import same_tail_line

    path = tmp_path / "a.jsonl"
    write(path, b"".join(same_tail_line(i, "old") for i in range(30)))
    # Polling slowly, so that no notification runs a pass between the truncate and the
    # regrow (inotify often did, which hid the bug): the reconcile scan sees both at once.
    with Watcher(ledger_path, tmp_path, poll=60, reconcile=0.2):
        wait_for(lambda: count_events(ledger_path, OBS) == 30, what="the first lines")
        with open(path, "r+b") as handle:
            handle.truncate(len(same_tail_line(0, "old")) * 10)
            handle.seek(0, 2)
            handle.write(b"".join(same_tail_line(i, "new") for i in range(30)))
        wait_for(lambda: count_events(ledger_path, OBS) == 60, what="every regrown line")


# -- the watched folder gone for a moment (review item 8) ----------------------------------


@pytest.mark.parametrize("back", ["moved back", "made again"])
def test_the_watcher_waits_for_its_folder_to_come_back(ledger_path: Path, tmp_path: Path, back: str) -> None:
    """`mv drop drop.gone; sleep 5; mv drop.gone drop` stopped `watch` for good with a raw
    errno. It waits, says so while it waits, and then watches the folder again, through
    the observer too (a new folder is a new inode to watch)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    write(drop / "a.jsonl", lines(0, 1))
    with Watcher(ledger_path, drop, reconcile=0.1) as watcher:
        wait_for(lambda: count_events(ledger_path, OBS) == 1, what="the first line")
        drop.rename(tmp_path / "drop.gone")
        waiting = f"{drop}: the folder is gone; waiting for it to come back"
        wait_for(lambda: watcher.waiting == waiting, what="the watcher to wait")
        assert watcher.running and watcher.stats.errors == [waiting]
        if back == "moved back":
            (tmp_path / "drop.gone").rename(drop)
        else:
            drop.mkdir()
        write(drop / "b.jsonl", lines(1, 3))
        wait_for(lambda: count_events(ledger_path, OBS) == 3, what="lines in the folder come back")
        assert watcher.waiting is None and watcher.stats.errors == []
        watcher.reconcile = 3600.0  # from now on only the observer can tell ...
        time.sleep(0.5)  # ... once the scan due in 0.1 s has run (nothing shows it has)
        write(drop / "c.jsonl", lines(3, 4))
        wait_for(lambda: count_events(ledger_path, OBS) == 4, what="a line the observer reports")
    assert watcher.error is None


def test_watch_keeps_running_while_its_folder_is_away(ledger_path: Path, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    process = start_watch(ledger_path, drop, "--reconcile", "0.1")
    said: list[bytes] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: said.extend(iter(process.stderr.readline, b"")), daemon=True)
    reader.start()
    waiting = f"{drop}: the folder is gone; waiting for it to come back"
    try:
        write(drop / "a.jsonl", lines(0, 1))
        wait_for(lambda: count_events(ledger_path, OBS) == 1, what="the first line")
        drop.rename(tmp_path / "drop.gone")
        wait_for(lambda: waiting.encode() in b"".join(said), what="watch to say it waits")
        (tmp_path / "drop.gone").rename(drop)
        write(drop / "a.jsonl", lines(1, 2))
        wait_for(lambda: count_events(ledger_path, OBS) == 2, what="a line after the folder came back")
        wait_for(lambda: b"back; watching it again" in b"".join(said), what="watch to say it is back")
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(10)
    err = b"".join(said).decode()
    assert process.returncode == 0, err
    assert err.count(waiting) == 1 and f"{drop}: back; watching it again" in err and "Error" not in err, err
