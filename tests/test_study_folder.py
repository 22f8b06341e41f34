"""Study output folders: scan a real folder, ingest what it lists into a real ledger."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger import Ledger, SeedPolicy, query
from studyledger.ingestion import study_folder
from studyledger.ingestion.service import plan
from studyledger.ingestion.study_folder import (
    CheckpointCache,
    StudyFolderError,
    StudyFolderScan,
    scan_study_folder,
)
from tests.test_adapters import ingest_lines

FIXTURE = Path(__file__).parent / "data" / "study"
PENDING, RUNNING = "run-a670cf5d7175", "run-19f6c2c262c1"
TRACES = FIXTURE / "traces"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A writable copy of the fixture study folder."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "study"))


def import_folder(ledger: Ledger, folder: Path) -> tuple[StudyFolderScan, int]:
    """Scan a folder and ingest everything it lists; returns the scan and events appended."""
    scan = scan_study_folder(folder)
    appended = len(ledger.append(scan.events).appended)
    for path in scan.jsonl_files:
        added, _, reasons = ingest_lines(ledger, path)
        assert reasons == []
        appended += added
    return scan, appended


def test_scan_lists_the_jsonl_files_and_the_orphan_trace() -> None:
    scan = scan_study_folder(FIXTURE)
    assert scan.study_id == "bracket-study"
    assert scan.problems == []
    assert [p.relative_to(FIXTURE).as_posix() for p in scan.jsonl_files] == [
        "artifacts/checkpoints/runs.jsonl",
        "artifacts/runs/run-222222222222/observations.jsonl",
        # named by runs.jsonl's trace_refs:
        "traces/run_20260302T101600Z_run-222222222222.jsonl",
        # named by nothing yet, but its file name carries the running run's id:
        f"traces/run_20260302T101700Z_{RUNNING}.jsonl",
        "traces/run_20260302T090000Z_stray-request-7.jsonl",
    ]
    assert scan.orphan_traces == [TRACES / "run_20260302T090000Z_stray-request-7.jsonl"]
    kinds = [event.kind for event in scan.events]
    assert kinds == ["study_registered"] + ["condition_registered"] * 3 + [
        "run_registered", "run_status_changed", "run_registered", "evaluation_recorded"]
    assert plan([FIXTURE]).studies == [FIXTURE] and plan([FIXTURE / "traces"]).studies == []


def test_importing_a_study_folder_gives_the_study_conditions_and_every_run(ledger: Ledger) -> None:
    import_folder(ledger, FIXTURE)
    study = ledger.study("bracket-study")
    assert study["title"] == "Bracket sizing under load"
    assert study["description"].startswith("Can an LLM agent size a steel bracket")
    assert json.loads(study["seed_policy"])["base_seed"] == 42
    assert json.loads(study["run_budget"]) == {"replicates": 2, "max_runs": 12, "parallelism": 2, "fail_fast": False}
    extra = json.loads(study["extra"])
    assert [f["name"] for f in extra["factors"]] == ["material", "thickness_mm"]
    assert extra["outcomes"][0]["name"] == "feasibility" and extra["schema_version"] == "0.2.0"
    assert study["runs_by_status"] == {"success": 1, "failed": 1, "pending": 1, "running": 1}

    conditions = {row["condition_id"]: row for row in query.conditions(ledger.conn, "bracket-study")}
    assert [row["admissible"] for row in conditions.values()] == [1, 1, 0]
    bad = conditions["cond-9999aaaabbbb"]
    assert json.loads(bad["constraint_messages"]) == [
        "material 'unobtainium' is not in the catalogue", "thickness 4 mm is below the minimum for unobtainium"]
    assert json.loads(bad["factors"]) == {"material": "unobtainium", "thickness_mm": 4}
    assert json.loads(bad["blocks"]) == {"site": "lab"}

    pending, running = ledger.run(PENDING), ledger.run(RUNNING)
    assert (pending["status"], pending["study_id"], pending["replicate"]) == ("pending", "bracket-study", 1)
    # The run.json seed is upstream's derivation, so it joins with a ledger-registered run.
    assert pending["seed"] == SeedPolicy(base_seed=42).derive_seed(
        "bracket-study", "cond-6f5e4d3c2b1a", 1, salt="json-agent:bracket")
    assert (running["status"], running["started_at"], running["observation_count"]) == (
        "running", "2026-03-02T10:17:00+00:00", 2)
    done = ledger.run("run-222222222222")
    assert (done["status"], done["observation_count"]) == ("success", 2 + 3)  # checkpoint + its trace

    # The trace no run names is kept: its run exists, with no study until a source says.
    stray = ledger.run("stray-request-7")
    assert (stray["study_id"], stray["observation_count"]) == (None, 1)

    evaluations = {(row["run_id"], row["metric_name"]): row["metric_value"]
                   for row in query.evaluations(ledger.conn)}
    # feasibility comes once, from runs.jsonl with its real NaN (the CSV says only "nan").
    assert evaluations == {("run-222222222222", "feasibility"): '{"$float":"NaN"}',
                           ("run-444444444444", "latency_score"): 0.25}


def test_importing_the_same_folder_again_appends_nothing(ledger: Ledger) -> None:
    _, first = import_folder(ledger, FIXTURE)
    head = ledger.head()
    _, again = import_folder(ledger, FIXTURE)
    assert first > 0 and again == 0 and ledger.head() == head


def test_two_sources_confirming_one_outcome_are_not_an_anomaly(ledger: Ledger) -> None:
    import_folder(ledger, FIXTURE)
    assert ledger.anomalies() == []


def test_a_trace_that_contradicts_the_runner_is_flagged(ledger: Ledger, study: Path) -> None:
    trace = study / "traces" / "run_20260302T101600Z_run-222222222222.jsonl"
    trace.write_text(trace.read_text().replace('"success": true', '"success": false'))
    import_folder(ledger, study)
    assert ledger.run("run-222222222222")["status"] == "failed"
    assert "conflicting_outcome" in {a["kind"] for a in ledger.anomalies("run-222222222222")}


# -- what goes wrong --------------------------------------------------------------------


def test_problems_are_reported_and_the_rest_imported(ledger: Ledger, study: Path) -> None:
    (study / "artifacts" / "runs" / PENDING / "run.json").write_text("{not json")
    runs = study / "artifacts" / "checkpoints" / "runs.jsonl"
    line = json.loads(runs.read_text().splitlines()[1])
    line["trace_refs"] = ["traces/missing.jsonl", "../../../etc/passwd"]
    runs.write_text(runs.read_text() + json.dumps(line) + "\n")
    (study / "notes.jsonl").write_text("{}\n")
    scan = scan_study_folder(study)
    assert scan.problems == [
        f"{study / 'artifacts/runs' / PENDING / 'run.json'}: invalid JSON: "
        "Expecting property name enclosed in double quotes (column 2); "
        "not read (the run may still come from its other records)",
        f"{runs}:3: trace 'traces/missing.jsonl' does not exist",
        f"{runs}:3: trace '../../../etc/passwd' is outside the study folder; not imported",
        f"{study / 'notes.jsonl'}: not a file a study folder is known to hold; not imported",
    ]
    import_folder(ledger, study)
    assert {run["run_id"] for run in ledger.runs(study_id="bracket-study")} == {
        "run-222222222222", "run-444444444444", RUNNING}


def test_a_finished_run_json_states_the_same_events_as_runs_jsonl(study: Path) -> None:
    line = (study / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines()[0]
    folder = study / "artifacts" / "runs" / "run-222222222222"
    (folder / "run.json").write_text(line)
    from studyledger.ingestion.adapters import events_from_line

    from_runs_jsonl = {e.event_id for e in events_from_line(json.loads(line), source="x")}
    from_run_json = {e.event_id for e in scan_study_folder(study).events if e.run_id == "run-222222222222"}
    assert from_run_json == from_runs_jsonl


@pytest.mark.parametrize(("name", "text", "message"), [
    ("study.yaml", "study_id: s\ntitle: [unclosed\n", "study.yaml:3: invalid YAML"),
    ("study.yaml", "study_id: s\n\tbad: tab\n", "study.yaml:2: invalid YAML"),
    ("study.yaml", "a: &x [1]\nb: *x\nstudy_id: s\n", "study.yaml:2: invalid YAML: aliases (*name) are not accepted"),
    ("study.yaml", "- just\n- a list\n", "study.yaml: must be a mapping of keys to values, not list"),
    ("study.yaml", "title: no id\n", "study.yaml: 'study_id' must be non-empty text"),
    ("study.yaml", "study_id: s\ntitle: 7\n", "study.yaml: 'title' must be text, not int"),
    ("study.yaml", "study_id: s\nseed_policy: {base: 1}\n", "study.yaml: 'seed_policy': "),
    ("study.yaml", "study_id: s\nrun_budget: {replicates: 0}\n", "study.yaml: RunBudget.replicates must be >= 1."),
    ("study.yaml", "study_id: s\nrun_budget: 3\n", "study.yaml: 'run_budget' must be a mapping, not int"),
    ("conditions.csv", "condition_id,admissible\nc1,true\nc2,true,extra\n", "conditions.csv:3: 3 fields, the header has 2"),
    ("conditions.csv", "condition_id,admissible\nc1,maybe\n", "conditions.csv:2: 'admissible' must be true or false, not 'maybe'"),
    ("conditions.csv", "condition_id,admissible\n,true\n", "conditions.csv:2: 'condition_id' is empty"),
    ("conditions.csv", "condition_id,admissible,assignment_meta_json\nc1,true,{bad\n",
     "conditions.csv:2: 'assignment_meta_json' is not JSON"),
    ("conditions.csv", 'condition_id,admissible\nc1,"true\n', "conditions.csv:2: invalid CSV"),
    ("evaluations.csv", "run_id,metric_value\nr,1\nr,2,3\n", "evaluations.csv:3: 3 fields, the header has 2"),
])
def test_malformed_files_give_one_line_naming_file_and_line(study: Path, name: str, text: str, message: str) -> None:
    (study / name).write_text(text)
    with pytest.raises(StudyFolderError) as caught:
        scan_study_folder(study)
    assert message in str(caught.value)
    assert str(study / name) in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_that_is_not_utf8_is_named(study: Path) -> None:
    (study / "conditions.csv").write_bytes(b"condition_id,admissible\n\xff\xfe,true\n")
    with pytest.raises(StudyFolderError, match=r"conditions\.csv: not UTF-8 text \(byte 24\)"):
        scan_study_folder(study)


def test_a_folder_without_study_yaml_is_not_a_study(tmp_path: Path) -> None:
    with pytest.raises(StudyFolderError, match="not a study output folder"):
        scan_study_folder(tmp_path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_text=st.text(max_size=200), csv_text=st.text(max_size=200))
def test_arbitrary_study_files_only_ever_raise_study_folder_error(
    tmp_path: Path, yaml_text: str, csv_text: str
) -> None:
    (tmp_path / "study.yaml").write_text("study_id: s\n" + yaml_text, encoding="utf-8", errors="surrogatepass")
    (tmp_path / "conditions.csv").write_text(csv_text, encoding="utf-8", errors="surrogatepass")
    try:
        scan_study_folder(tmp_path)
    except StudyFolderError as exc:
        assert str(tmp_path) in str(exc)


def _stray_line(run_id: str = "stray-request-7") -> str:
    line = json.loads((FIXTURE / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines()[1])
    line["run_id"] = line["run_spec"]["run_id"] = run_id
    return json.dumps(line) + "\n"


def test_rescans_follow_a_growing_runs_jsonl(study: Path) -> None:
    runs = study / "artifacts" / "checkpoints" / "runs.jsonl"
    stray = study / "traces" / "run_20260302T090000Z_stray-request-7.jsonl"
    cache = CheckpointCache()  # as a watcher's scans share one: each continues the last
    assert scan_study_folder(study, cache=cache).orphan_traces == [stray]
    text = _stray_line()
    with runs.open("a") as handle:
        handle.write(text[:40])  # half a line: the runner is still writing it
    assert scan_study_folder(study, cache=cache).orphan_traces == [stray]
    with runs.open("a") as handle:
        handle.write(text[40:])
    # The run now exists in runs.jsonl, so its trace is no longer an orphan.
    assert scan_study_folder(study, cache=cache).orphan_traces == []


@pytest.mark.parametrize("replace", ["rename", "truncate"])
def test_rescans_notice_a_replaced_runs_jsonl(study: Path, replace: str) -> None:
    runs = study / "artifacts" / "checkpoints" / "runs.jsonl"
    stray = study / "traces" / "run_20260302T090000Z_stray-request-7.jsonl"
    runs.write_text(runs.read_text() + _stray_line())
    cache = CheckpointCache()
    assert scan_study_folder(study, cache=cache).orphan_traces == []
    # Rewritten longer, without the stray run or run-222222222222: the old summary must
    # not be continued, so both their traces are orphans again.
    replacement = "".join(_stray_line(f"other-{n}") for n in range(8))
    assert len(replacement) > runs.stat().st_size  # so only the bytes check can tell
    if replace == "rename":
        (runs.parent / "new").write_text(replacement)
        (runs.parent / "new").replace(runs)
    else:
        with runs.open("r+") as handle:
            handle.truncate(0)
            handle.write(replacement)
    assert scan_study_folder(study, cache=cache).orphan_traces == [
        stray, study / "traces" / "run_20260302T101600Z_run-222222222222.jsonl"]


def _line_of_length(run_id: str, length: int) -> str:
    """A runs.jsonl line naming ``run_id``, padded to exactly ``length`` bytes."""
    head, tail = json.dumps({"run_id": run_id, "pad": ""})[:-2], '"}\n'
    return head + "x" * (length - len(head) - len(tail)) + tail


def test_rescans_notice_runs_jsonl_rewritten_with_the_same_bytes_before_the_offset(study: Path) -> None:
    """Truncated and written again, its earlier lines other runs' and its last line and
    length as before: the bytes just before where the last scan stopped agree, the file
    does not. A cached scan must see what a fresh one sees."""
    runs = study / "artifacts" / "checkpoints" / "runs.jsonl"
    last = _stray_line()
    runs.write_text(runs.read_text() + last)
    cache = CheckpointCache()
    assert scan_study_folder(study, cache=cache).orphan_traces == []
    before = runs.stat().st_size - len(last)
    with runs.open("r+") as handle:
        handle.truncate(0)
        handle.write(_line_of_length("other-run", before) + last)
    fresh = scan_study_folder(study).orphan_traces
    assert study / "traces" / "run_20260302T101600Z_run-222222222222.jsonl" in fresh
    assert scan_study_folder(study, cache=cache).orphan_traces == fresh



def test_rescans_read_only_the_run_records_that_changed_since_their_events_were_appended(
        ledger: Ledger, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "upstream" / "crashed", tmp_path / "crashed"))
    cache = CheckpointCache()
    first = scan_study_folder(folder, cache=cache)
    assert {event.kind for event in first.events} >= {"run_registered", "run_status_changed"}
    # Not appended yet (say the ledger was busy): the next scan reads everything again.
    assert len(scan_study_folder(folder, cache=cache).events) == len(first.events)
    ledger.append(first.events)
    cache.confirm(first)
    again = scan_study_folder(folder, cache=cache)
    assert again.events == [] and again.study_id == "crash-study" and again.problems == []
    assert again.jsonl_files == first.jsonl_files  # the running run's trace is still known by its id
    # The runner rewrites one record (atomically, as upstream does): only it is read.
    record = folder / "artifacts" / "runs" / "run-1e82141caa1a" / "run.json"
    data = json.loads(record.read_text())
    data.update(status="running", status_reason="execution_started", attempted=True,
                timing={"started_at": "2026-11-30T14:40:00+00:00", "ended_at": None, "latency_s": 0.0})
    (record.parent / ".run.json.tmp").write_text(json.dumps(data))
    (record.parent / ".run.json.tmp").replace(record)
    changed = scan_study_folder(folder, cache=cache)
    assert [(event.kind, event.run_id) for event in changed.events] == [
        ("run_registered", "run-1e82141caa1a"), ("run_status_changed", "run-1e82141caa1a")]
    ledger.append(changed.events)
    assert ledger.run("run-1e82141caa1a")["status"] == "running"


# -- a study folder's whole files obey the drop folder's rules (review item 2) ---------


def _scan_within(study: Path, seconds: float = 20) -> StudyFolderScan:
    """Scan in a thread; a scan still blocked after ``seconds`` fails the test (and the
    FIFOs it may wait on are opened, so the thread can end)."""
    result: list[StudyFolderScan | BaseException] = []

    def scan() -> None:
        try:
            result.append(scan_study_folder(study))
        except BaseException as exc:  # handed to the test's thread
            result.append(exc)

    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        while thread.is_alive():  # opened both ways, a FIFO lets a blocked reader go on to EOF
            for fifo in (path for path in study.rglob("*") if path.is_fifo()):
                os.close(os.open(fifo, os.O_RDWR))
            thread.join(0.1)
        pytest.fail("the scan blocked on a file that is not a regular one")
    [found] = result
    if isinstance(found, BaseException):
        raise found
    return found


def test_a_fifo_among_the_run_records_never_blocks_the_scan(study: Path) -> None:
    record = study / "artifacts" / "runs" / PENDING / "run.json"
    record.unlink()
    os.mkfifo(record)
    runs = study / "artifacts" / "checkpoints" / "runs.jsonl"
    runs.unlink()
    os.mkfifo(runs)
    scan = _scan_within(study)
    assert f"{record}: not a regular file; not read (the run may still come from its other records)" in scan.problems
    assert runs in scan.jsonl_files  # listed, so the tailer refuses it with its reason like any other FIFO


@pytest.mark.parametrize("name", ["study.yaml", "conditions.csv", "evaluations.csv"])
def test_a_fifo_named_like_a_whole_study_file_is_refused_not_waited_on(study: Path, name: str) -> None:
    (study / name).unlink()
    os.mkfifo(study / name)
    with pytest.raises(StudyFolderError, match=rf"{name}: not a regular file"):
        _scan_within(study)


@pytest.mark.parametrize("name", ["study.yaml", "conditions.csv", "evaluations.csv"])
def test_a_whole_study_file_linked_out_of_the_folder_is_not_read(study: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / f"outside-{name}"
    shutil.move(study / name, outside)
    (study / name).symlink_to(outside)
    with pytest.raises(StudyFolderError, match=rf"{name}: a symbolic link to .*outside.*: not read"):
        scan_study_folder(study)
    # A link that stays inside the folder is followed.
    shutil.move(outside, study / f"real-{name}")
    (study / name).unlink()
    (study / name).symlink_to(study / f"real-{name}")
    assert scan_study_folder(study).study_id == "bracket-study"


def test_a_run_record_linked_out_of_the_folder_is_not_read(study: Path, tmp_path: Path) -> None:
    record = study / "artifacts" / "runs" / PENDING / "run.json"
    outside = tmp_path / "outside.json"
    shutil.move(record, outside)
    record.symlink_to(outside)
    scan = scan_study_folder(study)
    [problem] = [p for p in scan.problems if str(record) in p]
    assert "outside" in problem and "not read" in problem
    assert PENDING not in {event.run_id for event in scan.events}


def test_a_run_record_is_held_to_a_lines_limits(study: Path) -> None:
    """A 16 MiB run.json of `{}` objects took 460 MB to import: a record is refused as a
    line is, over the line limit or over the value limit, before anything is built."""
    records = study / "artifacts" / "runs"
    many = records / PENDING / "run.json"
    many.write_bytes(b'{"run_id": "' + PENDING.encode() + b'", "x": [' + b"{}," * 100_000 + b"{}]}")
    big = records / RUNNING / "run.json"
    big.write_bytes(b'{"x": "' + b"y" * (16 * 1024 * 1024) + b'"}')
    scan = scan_study_folder(study)
    assert (f"{many}: too many JSON values (100,004; at most 100,000, as in a line); "
            "not read (the run may still come from its other records)") in scan.problems
    assert (f"{big}: larger than the line limit (16,777,216 bytes); "
            "not read (the run may still come from its other records)") in scan.problems


def test_a_csv_is_held_to_a_lines_value_limit(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16 MiB conditions.csv of short rows took 2.3 GB and 76 s: the cells of the rows
    imported count as a line's values do."""
    monkeypatch.setattr(study_folder, "MAX_VALUES", 1_000)
    (study / "conditions.csv").write_text("condition_id,admissible\n" + "".join(f"c{i},true\n" for i in range(499)))
    assert len(scan_study_folder(study).events) > 499
    (study / "conditions.csv").write_text("condition_id,admissible\n" + "".join(f"c{i},true\n" for i in range(501)))
    with pytest.raises(StudyFolderError, match=r"conditions\.csv:502: more than 1,000 values"):
        scan_study_folder(study)
    (study / "conditions.csv").write_text("condition_id" + ",x" * 1_000 + "\n")
    with pytest.raises(StudyFolderError, match=r"conditions\.csv:1: more than 1,000 values"):
        scan_study_folder(study)


def test_study_yaml_is_held_to_a_lines_value_limit(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study_folder, "MAX_VALUES", 1_000)
    # Nodes are counted, keys too: the mapping, two keys, two values, then the list's items.
    (study / "study.yaml").write_text("study_id: s\nx: [" + "{}, " * 995 + "]\n")
    assert scan_study_folder(study).study_id == "s"
    (study / "study.yaml").write_text("study_id: s\nx: [" + "{}, " * 996 + "]\n")
    with pytest.raises(StudyFolderError, match=r"study\.yaml:2: invalid YAML: more than 1,000 values"):
        scan_study_folder(study)


def test_the_scan_reads_past_an_overlong_runs_jsonl_line(study: Path) -> None:
    runs = study / "artifacts" / "checkpoints" / "runs.jsonl"
    with runs.open("ab") as handle:
        handle.write(b'{"run_id": "' + b"r" * (17 * 1024 * 1024) + b'"}\n')
    runs.write_text(runs.read_text() + _stray_line())
    scan = scan_study_folder(study)  # the tailer rejects the long line; the scan reads past it
    assert scan.orphan_traces == []  # the stray run's line after it was read
