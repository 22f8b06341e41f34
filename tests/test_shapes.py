"""One table of body shapes (events.BODY_SHAPES): what ingestion, merge, restore and the
fold agree a body of each kind holds, and readers that survive whatever is stored anyway
(issue 11, item 10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from studyledger import Ledger, ValidationError, ingest, search
from studyledger.store import chain_hash
from studyledger.events import BODY_SHAPES, NewEvent, body_problems, event_id_for, indexed_columns, is_unicode
from studyledger.tui.data import ObservationFilter, Source

from .audit_helpers import INSERT_STORED, fill, invoke, raw, stored_row
from .conftest import REPO

HOSTILE: list[Any] = [{"an": "object"}, ["a", "list"], "text", "", 2**63, -1, True, 1.5e308, None]
"""Values a raw writer can store in any field (a lone surrogate has its own test below)."""


def valid_body(kind: str) -> dict[str, Any]:
    """A body of ``kind`` with every required field valid."""
    values = {"timestamp": "2026-01-01T00:00:00+00:00", "at": "2026-01-01T00:00:00+00:00", "status": "running",
              "line": 1, "offset": 0}
    return {key: values.get(key, f"hostile-{key}") for key in BODY_SHAPES[kind].required}


def raw_event(kind: str, body: dict[str, Any], n: int) -> NewEvent:
    """An event as a raw writer (or an old version) could store it: any body, honest id."""
    text = json.dumps({**body, "n": n}, sort_keys=True, separators=(",", ":"))
    # Text SQLite cannot bind (a lone surrogate) cannot be a column, even for a raw writer.
    study_id, run_id, at = (value if value is None or is_unicode(value) else None
                            for value in indexed_columns(json.loads(text)))
    return NewEvent(kind, text, event_id_for(kind, text), study_id, run_id, at, "raw")


def hostile_events() -> list[NewEvent]:
    """Every field of every kind set to every hostile value (and a few bodies that are not objects)."""
    events: list[NewEvent] = []
    n = 0
    for kind, shape in BODY_SHAPES.items():
        for key in [*shape.required, *shape.optional]:
            for value in HOSTILE:
                n += 1
                events.append(raw_event(kind, {**valid_body(kind), key: value}, n))
        for text in ("[1]", '"x"', "not json", "{}"):
            events.append(NewEvent(kind, text, event_id_for(kind, text), None, None, None, "raw"))
    return events


def test_every_body_our_own_code_writes_has_its_shape(tmp_path: Path) -> None:
    """The adapters, the study-folder importer and the API produce what the table says."""
    db = tmp_path / "a.db"
    fill(db)
    assert invoke("--db", str(db), "verify", "--record")[0] == 0
    with Ledger.open(db) as ledger:
        ingest(ledger, [REPO / "tests" / "data", REPO / "tests" / "fixtures" / "upstream"])
        events = ledger.events()
    assert {e.kind for e in events} >= set(BODY_SHAPES) - {"line_rejected"}
    assert [(e.seq, body_problems(e.kind, e.data, e.body)) for e in events if body_problems(e.kind, e.data, e.body)] == []


def test_readers_survive_any_stored_body(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_ids = fill(db)
    with Ledger.open(db) as ledger:
        ledger.append(hostile_events())
        anomalies = {a["kind"] for a in ledger.anomalies()}
    assert anomalies >= {"unreadable_event", "invalid_field"}
    commands = [["verify"], ["replay"], ["stats"], ["runs"], ["runs", "--metric", "hostile-metric_name"],
                ["events"], ["audits"], ["rejects"], ["conditions", "s1"], ["conditions", "hostile-study_id"],
                ["search", "hostile"], ["show", run_ids[0]], ["show", "hostile-run_id"],
                ["diff", run_ids[0], "hostile-run_id"],
                ["export", str(tmp_path / "canonical")], ["export", str(tmp_path / "jsonl"), "--format", "jsonl"]]
    for command in commands:
        for as_json in ([], ["--json"]):
            code, _, err = invoke("--db", str(db), *command, *as_json)
            assert code in (0, 1) and "Traceback" not in err, (command, err)
    source = Source(db)
    try:
        assert source.studies() and source.runs(None)
        for run in source.runs(None):
            source.run_detail(run["run_id"])
            source.event_types(run["run_id"])
            source.span_tree(run["run_id"])
            for row in source.page(run["run_id"], ObservationFilter(), 0, 1_000):
                source.observation(row["seq"])
        source.ingestion()
        source.anomalies()
        source.search("hostile", search.Filters())
        source.diff(run_ids[0], "hostile-run_id")
        studies, _ = source.studies()
        for study in studies:
            source.conditions(study["study_id"])
            source.run_figures(study["study_id"])
    finally:
        source.close()
    # The JSONL export of it all restores to the same history: restore refuses the bodies
    # ingestion would refuse, so this ledger is one only a raw writer can make.
    code, _, err = invoke("--db", str(tmp_path / "copy.db"), "restore", str(tmp_path / "jsonl"))
    assert code != 0 and "Traceback" not in err


def test_a_lone_surrogate_is_refused_by_the_store_and_reported_when_written_raw(tmp_path: Path) -> None:
    """SQLite's JSON functions turn an escaped lone surrogate into bytes that are not UTF-8."""
    db = tmp_path / "a.db"
    fill(db)
    body = {"timestamp": "2026-01-01T00:00:00+00:00", "record_id": "r", "event_type": "e", "text": "bad \ud800"}
    event = raw_event("observation_recorded", body, 1)
    with Ledger.open(db) as ledger, pytest.raises(ValidationError, match="lone UTF-16 surrogate"):
        ledger.append([event])
    conn = raw(db)
    previous = conn.execute("SELECT seq, chain FROM events_plain ORDER BY seq DESC LIMIT 1").fetchone()
    values = (previous[0] + 1, event.event_id, event.kind, None, None, event.occurred_at, "2026-01-01", "raw",
              event.body)
    conn.execute(INSERT_STORED, stored_row(values, chain_hash(previous[1], values)))
    conn.close()
    code, out, _ = invoke("--db", str(db), "verify", "--json")
    assert code == 1 and [p["check"] for p in json.loads(out)["problems"]] == ["body"]
    for command in (["export", str(tmp_path / "out")], ["events", "--json"], ["stats"]):
        code, _, err = invoke("--db", str(db), *command)
        assert "Traceback" not in err and (code == 0 or len(err.strip().splitlines()) == 1), (command, err)
