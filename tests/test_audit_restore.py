"""Restore: the one path on which an export may set when and where its events were recorded,
so it checks the whole export first (issue 11, items 9 and 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studyledger import Ledger
from studyledger.audit.checkpoint import take, write
from studyledger.audit.export_jsonl import export_jsonl
from studyledger.events import event_id_for
from studyledger.store import GENESIS_CHAIN, chain_hash

from .audit_helpers import fill, invoke
from .ingest_helpers import event_ids


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    """A filled ledger and its JSONL export (``events.jsonl``)."""
    db = tmp_path / "a.db"
    fill(db)
    with Ledger.open(db, readonly=True) as ledger:
        export_jsonl(ledger, tmp_path / "out")
    return db, tmp_path / "out" / "events.jsonl"


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def save(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n" for row in rows))


def rechain(rows: list[dict[str, object]]) -> None:
    """Recompute every id and chain: the strongest forgery of an export."""
    chain = GENESIS_CHAIN
    for seq, row in enumerate(rows, start=1):
        body = json.dumps(row["body"], sort_keys=True, separators=(",", ":"))
        row["seq"], row["event_id"] = seq, event_id_for(str(row["kind"]), body)
        body_obj = row["body"]
        assert isinstance(body_obj, dict)
        at = body_obj.get("at", body_obj.get("timestamp"))
        chain = chain_hash(chain, (seq, row["event_id"], row["kind"], body_obj.get("study_id"), body_obj.get("run_id"),
                                   at, row["recorded_at"], row["source"], body))
        row["chain"] = chain


def restore_into(tmp_path: Path, export: Path, *extra: str) -> tuple[int, str]:
    code, _, err = invoke("--db", str(tmp_path / "copy.db"), "restore", str(export), *extra)
    return code, err


def test_a_restore_reproduces_ids_order_recording_and_head(tmp_path: Path, exported: tuple[Path, Path]) -> None:
    db, export = exported
    code, err = restore_into(tmp_path, export.parent)
    assert code == 0, err
    with Ledger.open(db, readonly=True) as a, Ledger.open(tmp_path / "copy.db", readonly=True) as b:
        assert [e.to_dict() for e in a.events()] == [e.to_dict() for e in b.events()]
        assert a.head() == b.head()


@pytest.mark.parametrize(("edit", "reason"), [
    ("body", "does not match its kind and body"),
    ("body and id", "chain differs from the one its history gives"),
    ("recorded_at", "chain differs"),
    ("source", "chain differs"),
    ("line removed", "seq 5, expected 4"),
    ("lines swapped", "seq 5, expected 4"),
    ("not a time", "'recorded_at' 'yesterday' is not an ISO-8601 time"),
    ("bad shape", "run_status_changed status 'pwned' is not a run status"),
    ("not json", "not a JSON line"),
])
def test_an_edited_export_is_refused_and_nothing_is_restored(tmp_path: Path, exported: tuple[Path, Path],
                                                             edit: str, reason: str) -> None:
    _, export = exported
    rows = lines(export)
    body = rows[3]["body"]
    assert isinstance(body, dict)
    if edit == "body":
        body["text"] = "forged"
    elif edit == "body and id":
        body["text"] = "forged"
        rows[3]["event_id"] = event_id_for(str(rows[3]["kind"]), json.dumps(body, sort_keys=True, separators=(",", ":")))
    elif edit in ("recorded_at", "source"):
        rows[3][edit] = "2000-01-01T00:00:00+00:00" if edit == "recorded_at" else "file:elsewhere:1:0"
    elif edit == "line removed":
        del rows[3]
    elif edit == "lines swapped":
        rows[3], rows[4] = rows[4], rows[3]
    elif edit == "not a time":
        rows[3]["recorded_at"] = "yesterday"
    elif edit == "bad shape":
        status = next(row for row in rows if row["kind"] == "run_status_changed")
        status["body"] = {**status["body"], "status": "pwned"}  # type: ignore[dict-item]
        del status["event_id"]
    save(export, rows)
    if edit == "not json":
        export.write_text(export.read_text() + "{broken\n")
    code, err = restore_into(tmp_path, export)
    assert code != 0 and reason in err, err
    assert len(err.strip().splitlines()) == 1
    assert event_ids(tmp_path / "copy.db") == []


def test_a_consistent_rewrite_needs_a_checkpoint_kept_elsewhere(tmp_path: Path, exported: tuple[Path, Path]) -> None:
    db, export = exported
    with Ledger.open(db, readonly=True) as ledger:
        write(take(ledger.store), tmp_path / "head.json")
    rows = lines(export)
    rows[3]["body"]["text"] = "forged"  # type: ignore[index]
    rechain(rows)
    save(export, rows)
    code, err = restore_into(tmp_path, export, "--checkpoint", str(tmp_path / "head.json"))
    assert code != 0 and "differs from the checkpoint's" in err
    assert event_ids(tmp_path / "copy.db") == []
    # Without the checkpoint the forgery is a valid history: the documented limit.
    assert restore_into(tmp_path, export)[0] == 0


def test_restore_fills_only_an_empty_ledger(tmp_path: Path, exported: tuple[Path, Path]) -> None:
    _, export = exported
    fill(tmp_path / "copy.db", runs=1)
    before = event_ids(tmp_path / "copy.db")
    code, err = restore_into(tmp_path, export)
    assert code != 0 and "holds events already" in err and "merge" in err
    assert event_ids(tmp_path / "copy.db") == before


def test_ingesting_an_export_never_takes_its_recording_columns(tmp_path: Path, exported: tuple[Path, Path]) -> None:
    """Issue 11, item 14: a drop line with ``recorded_at`` 1970 put an event ingested today
    into ``replay --as-of 2000``; its ``source`` said ``api``."""
    _, export = exported
    rows = lines(export)
    for row in rows:
        row["recorded_at"], row["source"] = "1970-01-01T00:00:00+00:00", "api"
    save(export, rows)
    copy = tmp_path / "copy.db"
    assert invoke("--db", str(copy), "ingest", str(export))[0] == 0
    code, out, _ = invoke("--db", str(copy), "replay", "--as-of", "2000-01-01T00:00:00+00:00", "--json")
    assert code == 0 and json.loads(out)["events"] == 0
    with Ledger.open(copy, readonly=True) as ledger:
        assert all(e.source.startswith(f"file:{export}:") and e.recorded_at > "2020" for e in ledger.events())
