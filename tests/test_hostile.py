"""What a hostile drop folder can do to the ingester, each case on its own (issue 11):
names that are not UTF-8, values that cannot be text, symbolic links out of the folder,
FIFOs swapped in. Every one is one explained refusal; none stops the other files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studyledger import Ledger, Watcher, ingest, query
from studyledger.events import EventKind
from studyledger.ingestion.lines import raw_bytes
from studyledger.ingestion.tailer import Tailer

from .conftest import UPSTREAM
from .ingest_helpers import (
    STUDYLEDGER,
    count_events,
    event_ids,
    own_line,
    row_line,
    start_watch,
    wait_for,
    write,
)
from .test_tailer import same_tail_line as same_tail

OBS = EventKind.OBSERVATION_RECORDED.value
BAD_NAME = b"a\xff\x1b[2J.jsonl"


def bad_named(folder: Path, content: bytes) -> str:
    """A file whose name is not UTF-8 (Python holds it with a lone surrogate)."""
    name = os.fsdecode(os.path.join(os.fsencode(folder), BAD_NAME))
    with open(name, "wb") as handle:
        handle.write(content)
    return name


def test_a_name_that_is_not_utf8_is_read_and_stopped_nothing(ledger: Ledger, tmp_path: Path) -> None:
    """Issue 11, item 1: `ingest drop` died with UnicodeEncodeError and read nothing."""
    write(tmp_path / "good.jsonl", own_line(0))
    bad = bad_named(tmp_path, (own_line(1) + "not json\n").encode())
    report = ingest(ledger, [tmp_path])
    assert (report.errors, report.lines_read, report.lines_rejected) == ([], 3, 1)
    assert len(event_ids(ledger.path, OBS)) == 2
    [rejection] = [e for e in ledger.events() if e.kind == EventKind.LINE_REJECTED]
    # The name is recorded as text a person can read, each byte that is not UTF-8 as \xNN.
    shown = f"{tmp_path}/a\\xff\x1b[2J.jsonl"
    assert os.fsencode(bad) == os.fsencode(str(tmp_path)) + b"/a\xff\x1b[2J.jsonl"
    assert rejection.source == f"file:{shown}:2:{len(own_line(1))}"
    assert raw_bytes(rejection.data) == b"not json"
    assert {row["path"] for row in query.ingest_files(ledger.conn)} == {str(tmp_path / "good.jsonl"), shown}
    again = ingest(ledger, [tmp_path])  # its offset was committed like any other's
    assert (again.lines_read, again.errors) == (0, [])


def test_the_watcher_reads_a_name_that_is_not_utf8(ledger_path: Path, tmp_path: Path) -> None:
    """Issue 11, item 1: `watch drop` exited at once on every restart."""
    drop = tmp_path / "drop"
    drop.mkdir()
    bad_named(drop, own_line(0).encode())
    with Watcher(ledger_path, drop, reconcile=0.2) as watcher:
        write(drop / "good.jsonl", own_line(1))
        wait_for(lambda: count_events(ledger_path, OBS) == 2, what="both files")
        assert watcher.running and watcher.error is None


def test_a_study_yaml_value_that_cannot_be_text_rejects_that_folder_only(ledger: Ledger, tmp_path: Path) -> None:
    """Issue 11, item 1: a title holding a lone surrogate stopped every file."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text('study_id: s1\ntitle: "bad \\ud800 title"\n')
    write(tmp_path / "good.jsonl", own_line(0))
    report = ingest(ledger, [tmp_path])
    [error] = report.errors
    assert "lone UTF-16 surrogate" in error and "study" in error
    assert len(event_ids(ledger.path, OBS)) == 1


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the drop folder that looks like JSONL to the ingester."""
    path = tmp_path / "outside" / "secret.jsonl"
    path.parent.mkdir()
    write(path, own_line(99, tag="secret") + "root:x:0:0:secret\n")
    return path


def test_a_link_out_of_the_folder_is_not_followed(ledger: Ledger, tmp_path: Path, secret: Path) -> None:
    """Issue 11, item 3: `ln -s /etc/passwd drop/passwd.jsonl` copied every line of it."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "passwd.jsonl").symlink_to(secret)
    (drop / "etc.jsonl").symlink_to("/etc/passwd")
    write(drop / "real.jsonl", own_line(0))
    (drop / "inside.jsonl").symlink_to(drop / "real.jsonl")  # inside: followed (same file, read once)
    report = ingest(ledger, [drop])
    assert len(report.errors) == 2 and all("outside" in error for error in report.errors)
    assert report.lines_read == 1 and len(ledger.events()) == 1
    assert all("secret" not in e.body and "root:" not in e.body for e in ledger.events())
    # Named directly, a file is the user's choice: it is read.
    assert ingest(ledger, [drop / "passwd.jsonl"]).lines_read == 2


def test_a_link_swapped_into_a_path_after_the_scan_is_refused(ledger: Ledger, tmp_path: Path, secret: Path) -> None:
    """The check is made when the file is opened, through real folders only."""
    drop = tmp_path / "drop"
    (drop / "sub").mkdir(parents=True)
    (drop / "sub").rmdir()
    (drop / "sub").symlink_to(secret.parent)  # a folder link swapped in under a scanned name
    with pytest.raises(OSError, match="outside"):
        Tailer(ledger).ingest_path(drop / "sub" / "secret.jsonl", within=str(drop))
    (drop / "x.jsonl").symlink_to(secret)
    with pytest.raises(OSError, match="outside"):
        Tailer(ledger).ingest_path(drop / "x.jsonl", within=str(drop))
    assert ledger.events() == []


def test_the_watcher_does_not_follow_a_link_out(ledger_path: Path, tmp_path: Path, secret: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    with Watcher(ledger_path, drop, reconcile=0.2) as watcher:
        (drop / "passwd.jsonl").symlink_to(secret)
        write(drop / "good.jsonl", own_line(0))
        wait_for(lambda: any("outside" in error for error in watcher.stats.errors), what="the refusal")
        wait_for(lambda: count_events(ledger_path, OBS) == 1, what="the good file")
        assert watcher.running
    assert len(event_ids(ledger_path)) == 1


def test_a_fifo_swapped_in_between_stat_and_open_never_blocks(tmp_path: Path) -> None:
    """Issue 11, item 4: open_regular stat-ed then opened, so a FIFO swapped in between
    blocked the open (and the watcher) forever. A thread swaps a file and a FIFO under one
    name while the main thread opens it; a hang is the subprocess's timeout."""
    script = textwrap.dedent("""
        import os, sys, threading, time
        from studyledger.ingestion.tailer import open_regular
        folder = sys.argv[1]
        path, regular, fifo = (os.path.join(folder, name) for name in ("x.jsonl", "r", "f"))
        stop = threading.Event()
        def swap():
            while not stop.is_set():
                open(regular, "w").close()
                os.replace(regular, path)
                os.mkfifo(fifo)
                os.replace(fifo, path)
        threading.Thread(target=swap, daemon=True).start()
        opened = refused = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                open_regular(path).close()
                opened += 1
            except FileNotFoundError:
                pass
            except OSError:
                refused += 1
        stop.set()
        print(opened, refused)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=30)
    opened, refused = map(int, result.stdout.split())
    assert opened > 0 and refused > 0  # both kinds were met, and no open blocked


def test_a_fifo_named_run_json_never_blocks_ingest_or_watch(tmp_path: Path) -> None:
    """Review item 2: a study folder's run.json was opened directly, so a FIFO there hung
    `ingest` and `watch` for good. A hang is the subprocess's timeout."""
    study = tmp_path / "drop" / "crashed"
    shutil.copytree(UPSTREAM / "crashed", study)
    run_json = next((study / "artifacts" / "runs").glob("*/run.json"))
    run_json.unlink()
    os.mkfifo(run_json)
    result = subprocess.run([*STUDYLEDGER, "--db", str(tmp_path / "l.db"), "ingest", str(tmp_path / "drop")],
                            capture_output=True, text=True, timeout=60)
    assert f"{run_json}: not a regular file" in result.stderr and result.returncode == 0, result.stderr
    with Watcher(tmp_path / "w.db", tmp_path / "drop", reconcile=0.2) as watcher:
        wait_for(lambda: any(f"{run_json}: not a regular file" in p for p in watcher.stats.problems),
                 what="the FIFO's refusal")
        assert watcher.running and "crash-study" in watcher.stats.studies


def test_a_study_yaml_linked_out_of_the_folder_is_not_read(ledger: Ledger, tmp_path: Path) -> None:
    """Review item 2: links never lead out of the folder given, study files included."""
    outside = tmp_path / "outside.yaml"
    outside.write_text("study_id: from-outside\ntitle: secret\n")
    study = tmp_path / "drop" / "crashed"
    shutil.copytree(UPSTREAM / "crashed", study)
    (study / "study.yaml").symlink_to(outside)
    report = ingest(ledger, [tmp_path / "drop"])
    assert "from-outside" not in report.studies
    assert [error for error in report.errors if "study.yaml" in error and "outside" in error]
    assert all("secret" not in e.body for e in ledger.events())


def _own(kind: str, body: dict[str, object], **extra: object) -> str:
    return json.dumps({"studyledger": 1, "kind": kind, "body": body, **extra}) + "\n"


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b[2J"
BAD_LINES = {  # the line, and what its rejection's reason says
    "invalid-utf8": (b'{"text": "\xff\xfe"}\n', "invalid UTF-8"),
    "invalid-json": (b'{"a": 1,,}\n', "invalid JSON"),
    "huge-number": (b'{"record_id": "n", "timestamp": "2026-01-01T00:00:00+00:00", "event_type": "x", '
                    b'"meta_json": {"v": 1e400}}\n', "out of the range of a 64-bit float"),
    "factors": (_own("condition_registered", {"study_id": "s", "condition_id": "c", "factors": "notadict"}).encode(),
                "'factors' must be an object"),
    "audit-head": (_own("audit_recorded", {"check": "verify", "ok": True, "head": "x",
                                           "at": "2026-01-01T00:00:00+00:00"}).encode(), "recorded by studyledger"),
    "forged-rejection": (_own("line_rejected", {"file": "/etc/shadow", "line": 1, "offset": 0, "reason": "x",
                                                "raw": "root:$6$"}).encode(), "recorded by studyledger"),
    "pwned-status": (_own("run_status_changed", {"run_id": "r", "status": "pwned"}).encode(), "not a run status"),
    "list-run-id": (_own("run_registered", {"run_id": ["list"]}).encode(), "'run_id' must be non-empty text"),
    "surrogate": (_own("run_registered", {"run_id": "r", "agent_id": "\ud800"}).encode(), "lone UTF-16 surrogate"),
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_a_hostile_folder_at_once(tmp_path: Path, secret: Path) -> None:
    """Issue 11, done when: every case above in one watched folder at once. The watcher
    keeps running, the good files are all read, each bad thing is one explained rejection
    (a line) or error (a file), memory stays under 300 MB, and verify passes. Study
    folders' own files are held to the same rules (review item 2)."""
    drop, db = tmp_path / "drop", tmp_path / "ledger.db"
    drop.mkdir()
    good: set[str] = set()

    def good_lines(name: str, count: int) -> bytes:
        good.update(f"rec-{name}-{i}" for i in range(count))
        return "".join(row_line(i, tag=name) for i in range(count)).encode()

    # Good files, some with hostile names or content that is still good data.
    write(drop / "plain.jsonl", good_lines("plain", 50))
    write(drop / "bom.jsonl", b"\xef\xbb\xbf" + good_lines("bom", 3))
    bad_named(drop, good_lines("badname", 3))
    escapes = _own("run_registered", {"run_id": f"run-{ESCAPES}", "agent_id": ESCAPES},
                   recorded_at="1970-01-01T00:00:00+00:00", source=f"api{ESCAPES}")
    write(drop / f"esc{ESCAPES}.jsonl", escapes + _own("run_status_changed", {
        "run_id": f"run-{ESCAPES}", "status": "failed", "reason": ESCAPES, "at": "2026-01-01T00:00:00+00:00"}))
    regrown = drop / "regrown.jsonl"
    write(regrown, b"".join(same_tail(i, "first") for i in range(30)))
    # Bad lines, each in a file of good ones.
    for name, (line, _) in BAD_LINES.items():
        write(drop / f"{name}.jsonl", good_lines(name, 2) + line)
    with open(drop / "monster.jsonl", "wb") as out:  # 16 MiB, within the line limit: 5.6M objects
        out.write(good_lines("monster", 1) + b'{"meta_json":{"a":[')
        for _ in range(55):
            out.write(b"{}," * 100_000)
        out.write(b"{}]}}\n")
    with open(drop / "too-long.jsonl", "wb") as out:  # 17 MiB: over the line limit
        out.write(b'{"x": "')
        for _ in range(17):
            out.write(b"y" * (1024 * 1024))
        out.write(b'"}\n' + good_lines("too-long", 1))
    # Bad files.
    (drop / "passwd.jsonl").symlink_to("/etc/passwd")
    (drop / "secret.jsonl").symlink_to(secret)
    os.mkfifo(drop / "pipe.jsonl")
    study = drop / "study"
    study.mkdir()
    (study / "study.yaml").write_text('study_id: s1\ntitle: "bad \\ud800 title"\n')
    # A study folder's whole files: a FIFO run.json, a 16 MiB run.json of 5.6M objects
    # (it took 460 MB), a study.yaml linked out of its folder.
    records = drop / "records"
    for run in ("r-fifo", "r-monster"):
        (records / "artifacts" / "runs" / run).mkdir(parents=True)
    (records / "study.yaml").write_text("study_id: hostile-records\n")
    os.mkfifo(records / "artifacts" / "runs" / "r-fifo" / "run.json")
    with open(records / "artifacts" / "runs" / "r-monster" / "run.json", "wb") as out:
        out.write(b'{"x": [')
        for _ in range(55):
            out.write(b"{}," * 100_000)
        out.write(b"{}]}")
    (tmp_path / "outside.yaml").write_text("study_id: from-outside\ntitle: secret\n")
    (drop / "linked").mkdir()
    (drop / "linked" / "study.yaml").symlink_to(tmp_path / "outside.yaml")

    watch = start_watch(db, drop, "--json", "--reconcile", "0.3")
    try:
        wait_for(lambda: count_events(db, OBS) == len(good) + 30, timeout=60, what="the good lines")
        # Truncated to a shorter prefix and regrown past the old offset, while watched.
        with open(regrown, "r+b") as handle:
            handle.truncate(len(same_tail(0, "first")) * 10)
            handle.seek(0, os.SEEK_END)
            handle.write(b"".join(same_tail(i, "second") for i in range(30)))
        wait_for(lambda: count_events(db, OBS) == len(good) + 60, timeout=30, what="the regrown lines")
        assert watch.poll() is None  # still running
        peak = _peak_kib(watch.pid)
    finally:
        watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0 and b"Traceback" not in err, err
    assert peak < 300 * 1024, f"peak RSS {peak // 1024} MB"
    totals = json.loads(out)
    errors = sorted(totals["errors"])
    assert len(errors) == 5, errors
    assert sum("passwd.jsonl" in e and "outside" in e for e in errors) == 1
    assert sum("secret.jsonl" in e and "outside" in e for e in errors) == 1
    assert sum("pipe.jsonl" in e and "not a regular file" in e for e in errors) == 1
    assert sum("study" in e and "lone UTF-16 surrogate" in e for e in errors) == 1
    assert sum("linked/study.yaml" in e and "outside" in e for e in errors) == 1
    assert totals["studies"] == ["hostile-records"]
    problems = totals["problems"]
    assert sum("r-fifo/run.json: not a regular file" in p for p in problems) == 1, problems
    assert sum("r-monster/run.json: too many JSON values" in p for p in problems) == 1, problems

    with Ledger.open(db, readonly=True) as ledger:
        events = ledger.events()
        records = {e.data.get("record_id") for e in events if e.kind == OBS}
        assert good <= records
        rejections = [e for e in events if e.kind == EventKind.LINE_REJECTED]
        by_file = {Path(e.source.removeprefix("file:").rsplit(":", 2)[0]).stem: e.data["reason"] for e in rejections}
        assert len(by_file) == len(rejections) == len(BAD_LINES) + 2, " ".join(sorted(by_file))  # one each
        for name, (_, reason) in BAD_LINES.items():
            assert reason in by_file[name], (name, by_file[name])
        assert "too many JSON values" in by_file["monster"]
        assert "longer than the limit" in by_file["too-long"]
        assert all("secret" not in e.body and "root:" not in e.body for e in events if e.kind != EventKind.LINE_REJECTED)
        forged = next(e for e in events if e.kind == EventKind.RUN_REGISTERED)
        assert forged.recorded_at > "2020" and forged.source.startswith("file:")
    for command in (["verify"], ["rejects"], ["runs"], ["events"]):
        result = subprocess.run([sys.executable, "-m", "studyledger", "--db", str(db), *command],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout
