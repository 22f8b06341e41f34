"""One ingestion service: the API, the CLI and the watcher ingest the same paths the same way."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from studyledger import IngestReport, Ledger, LineRejected, Observation, Watcher, ingest, query
from studyledger.ingestion.service import plan

from .audit_helpers import invoke
from .ingest_helpers import row_line, wait_for

STUDY = Path(__file__).parent / "data" / "study"


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    """A folder holding a study output folder and, beside it, plain JSONL files."""
    folder = tmp_path / "drop"
    shutil.copytree(STUDY, folder / "nested" / "study")
    (folder / "loose.jsonl").write_text("".join(row_line(n) for n in range(3)))
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "skipped.jsonl").write_text(row_line(99))
    return folder


def test_plan_finds_study_folders_and_the_files_outside_them(drop: Path) -> None:
    found = plan([drop])
    assert found.studies == [drop / "nested" / "study"]
    assert found.files == [drop / "loose.jsonl"]
    # A study folder named directly is one too; a missing path is refused before reading.
    assert plan([drop / "nested" / "study"]).studies == [drop / "nested" / "study"]
    with pytest.raises(FileNotFoundError):
        plan([drop, drop / "nope"])


def test_the_api_and_the_cli_give_the_same_report_and_the_same_ledger(drop: Path, tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "api.db") as ledger:
        report = ingest(ledger, [drop])
        api = query.stats(ledger.conn)
    code, out, err = invoke("--db", str(tmp_path / "cli.db"), "ingest", str(drop), "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads(json.dumps(report.to_dict()))
    assert report.studies == ["bracket-study"] and report.lines_rejected == 0
    with Ledger.open(tmp_path / "cli.db", readonly=True) as ledger:
        cli = query.stats(ledger.conn)
    assert {k: v for k, v in cli.items() if k != "head"} == {k: v for k, v in api.items() if k != "head"}
    assert cli["head"]["seq"] == api["head"]["seq"]


def test_progress_counts_every_byte_once_and_ends_at_the_total(drop: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    with Ledger.open(tmp_path / "l.db") as ledger:
        ingest(ledger, [drop], progress=lambda done, total: seen.append((done, total)))
        again: list[tuple[int, int]] = []
        ingest(ledger, [drop], progress=lambda done, total: again.append((done, total)))
    total = seen[-1][1]
    assert total > 0 and seen[-1][0] == total
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    # Nothing new the second time: files already read jump straight to their end.
    assert again[-1] == (total, total)


def test_the_watcher_imports_a_study_folder_copied_in_while_it_runs(tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    with Watcher(tmp_path / "l.db", folder, reconcile=0.2) as watcher:
        shutil.copytree(STUDY, folder / "later")
        with Ledger.open(tmp_path / "l.db", readonly=True) as ledger:
            wait_for(lambda: ledger.studies() and ledger.studies()[0]["registered"], timeout=20)
            wait_for(lambda: len(ledger.runs()) >= 3, timeout=20)
        assert watcher.stats.studies == ["bracket-study"]
    assert watcher.error is None
    with Ledger.open(tmp_path / "once.db") as ledger:
        expected = query.stats(ingest(ledger, [folder]) and ledger.conn)
    with Ledger.open(tmp_path / "l.db", readonly=True) as ledger:
        got = query.stats(ledger.conn)
    assert {k: got[k] for k in ("studies", "runs", "observations", "evaluations", "rejected")} == \
        {k: expected[k] for k in ("studies", "runs", "observations", "evaluations", "rejected")}


# -- a user's line adapter ---------------------------------------------------------------


ADAPTER = '''
from studyledger import LineRejected, Observation


def sensor(line):
    """Lines of a lab's own sensor format: {"sensor": NAME, "t": TIME, "value": V, "run": RUN}."""
    if not isinstance(line, dict) or "sensor" not in line:
        return None
    if line["value"] == "broken":
        raise LineRejected("sensor reported a broken reading")
    if line["value"] == "crash":
        return 1 / 0
    if line["value"] == "garbage":
        return [42]
    if line["value"] == "forged":
        return [{"kind": "run_status_changed", "body": {"run_id": "r", "status": "pwned"},
                 "recorded_at": "1970-01-01T00:00:00+00:00", "source": "elsewhere"}]
    return [Observation(timestamp=line["t"], record_id=f"{line['sensor']}-{line['t']}", text=str(line["value"]),
                        session_id=line["run"], actor_id=line["sensor"], event_type="sensor_reading",
                        run_id=line["run"])]
'''


@pytest.fixture
def adapter_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "lab_adapters.py").write_text(ADAPTER)
    sys.path.insert(0, str(tmp_path))
    yield "lab_adapters:sensor"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("lab_adapters", None)


def sensor_line(value: object, t: int = 0) -> str:
    return json.dumps({"sensor": "strain", "t": f"2026-03-02T10:00:{t:02d}+00:00", "value": value, "run": "r1"}) + "\n"


def test_a_users_adapter_reads_its_format_and_its_failures_are_explained(adapter_module: str, tmp_path: Path) -> None:
    data = tmp_path / "lab.jsonl"
    data.write_text(sensor_line(1.5, 0) + sensor_line("broken", 1) + sensor_line("crash", 2) + sensor_line("garbage", 3)
                    + sensor_line("forged", 4) + row_line(7))
    code, out, err = invoke("--db", str(tmp_path / "l.db"), "ingest", str(data), "--adapter", adapter_module, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["lines_read"], report["lines_accepted"], report["lines_rejected"]) == (6, 2, 4)
    with Ledger.open(tmp_path / "l.db", readonly=True) as ledger:
        reasons = [row["reason"] for row in query.rejections(ledger.conn)]
        observations = ledger.observations("r1")
    assert reasons[0] == "sensor reported a broken reading"
    assert "ZeroDivisionError" in reasons[1] and "sensor" in reasons[1]
    assert "returned a number" in reasons[2]
    assert "pwned" in reasons[3]  # checked as an own line is: not a run status
    # The adapter's reading is an observation; a line it declines goes to the built-in formats.
    assert [row["text"] for row in observations] == ["1.5"]


def test_an_adapter_that_cannot_be_loaded_is_a_one_line_error(tmp_path: Path) -> None:
    for reference in ("no_such_module:f", "json:no_such_function", "not-a-reference"):
        code, _, err = invoke("--db", str(tmp_path / "l.db"), "ingest", str(tmp_path), "--adapter", reference)
        assert code != 0 and "Traceback" not in err and reference in err, err


def test_the_api_takes_an_adapter_and_the_report_is_the_one_type(adapter_module: str, tmp_path: Path) -> None:
    from studyledger.ingestion.adapters import load_adapter

    data = tmp_path / "lab.jsonl"
    data.write_text(sensor_line(2.5))
    with Ledger.open(tmp_path / "l.db") as ledger:
        report = ingest(ledger, [data], adapter=load_adapter(adapter_module))
    assert isinstance(report, IngestReport) and report.events_appended == 1
    assert issubclass(LineRejected, ValueError) and Observation.__name__ == "Observation"


def test_paths_given_as_a_generator_are_all_read(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(row_line(0))
    with Ledger.open(tmp_path / "l.db") as ledger:
        report = ingest(ledger, (path for path in [tmp_path / "a.jsonl"]))
    assert (report.files, report.lines_read) == (1, 1)


def test_json_keeps_the_problems_of_a_study_folder_without_a_study_id(tmp_path: Path) -> None:
    run = tmp_path / "drop" / "st" / "artifacts" / "runs" / "run-x"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"record_type": "run-evidence"}')
    code, out, err = invoke("--db", str(tmp_path / "l.db"), "ingest", str(tmp_path / "drop"), "--json")
    report = json.loads(out)
    assert code == 0 and report["studies"] == [] and any("run_id" in problem for problem in report["problems"])


def test_an_adapter_beside_the_user_is_found_and_a_broken_one_is_named(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the current folder on it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "beside.py").write_text(ADAPTER)
    (tmp_path / "broken_syntax.py").write_text("def f(:\n")
    (tmp_path / "broken_import.py").write_text("import json\nraise RuntimeError('no licence file')\n")
    data = tmp_path / "lab.jsonl"
    data.write_text(sensor_line(1.5))
    code, out, err = invoke("--db", str(tmp_path / "l.db"), "ingest", str(data), "--adapter", "beside:sensor", "--json")
    assert code == 0 and json.loads(out)["events_appended"] == 1, err
    for reference, where in (("broken_syntax:f", "broken_syntax.py:1"), ("broken_import:f", "broken_import.py:2")):
        code, _, err = invoke("--db", str(tmp_path / "l.db"), "ingest", str(data), "--adapter", reference)
        assert code == 2 and where in err and "Traceback" not in err, err
    sys.modules.pop("beside", None)
