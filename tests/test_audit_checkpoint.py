"""Checkpoint files: taken, compared with a consistency proof, and refused when they are not checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studyledger import Ledger, RunStatus
from studyledger.audit import checkpoint as checkpoints
from studyledger.audit import merkle

from .audit_helpers import drop_triggers, edit_body, fill, invoke, raw, restore_triggers, rewrite, rows, tamper


def take(db: Path, path: Path) -> dict[str, object]:
    code, out, err = invoke("--db", str(db), "checkpoint", "--out", str(path), "--json")
    assert code == 0, err
    data: dict[str, object] = json.loads(out)
    return data


def test_checkpoint_file_holds_the_head_and_the_root(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    fill(db)
    data = take(db, tmp_path / "cp.json")
    written = json.loads((tmp_path / "cp.json").read_text())
    with Ledger.open(db) as ledger:
        head = ledger.head()
        root = merkle.merkle_root(e.event_id for e in ledger.events()).hex()
    assert written["format"] == "studyledger-checkpoint" and written["version"] == 1
    assert (written["tree_size"], written["head_seq"], written["head_chain"]) == (13, head.seq, head.chain)
    assert written["merkle_root"] == root and data["path"] == str(tmp_path / "cp.json")


def test_growing_ledger_checkpoints_are_consistent(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    run_ids = fill(db, runs=1)
    take(db, tmp_path / "old.json")
    with Ledger.open(db) as ledger:
        ledger.register_run("s1", "c2", replicate=1)
        ledger.transition(ledger.runs()[-1]["run_id"], RunStatus.SKIPPED)
    take(db, tmp_path / "new.json")
    for order in (("old.json", "new.json"), ("new.json", "old.json")):
        code, out, _ = invoke("--db", str(db), "checkpoint", "--compare",
                              *(str(tmp_path / name) for name in order), "--json")
        data = json.loads(out)
        assert code == 0 and data["consistent"] is True
        assert data["older"]["tree_size"] == 7 and data["newer"]["tree_size"] == 9
        assert data["proof"]  # sizes differ: a real proof was computed and checked
    # Equal checkpoints need no ledger at all.
    code, out, _ = invoke("--db", str(tmp_path / "absent.db"), "checkpoint", "--compare",
                          str(tmp_path / "old.json"), str(tmp_path / "old.json"))
    assert code == 0 and "consistent" in out and run_ids


def test_a_rewritten_ledger_cannot_prove_consistency(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    fill(db)
    take(db, tmp_path / "old.json")
    conn = raw(db)
    drop_triggers(conn)
    history = rows(conn)
    history[3][8] = edit_body(str(history[3][8]), "text", "rewritten")
    rewrite(conn, history)
    restore_triggers(conn)
    conn.close()
    with Ledger.open(db) as ledger:
        ledger.register_run("s1", "c9", replicate=1)
    take(db, tmp_path / "new.json")  # honest about the rewritten ledger, which now has 14 events
    code, out, err = invoke("--db", str(db), "checkpoint", "--compare", str(tmp_path / "old.json"),
                            str(tmp_path / "new.json"))
    assert code == 1 and "INCONSISTENT" in err
    # Same size, different history: no ledger needed to tell.
    other = tmp_path / "other.db"
    fill(other)
    tamper(other, "DELETE FROM events WHERE seq = 13")
    with Ledger.open(other) as ledger:
        ledger.register_run("s1", "c1", replicate=2, agent_id="someone else")
    take(other, tmp_path / "other.json")
    a, b = checkpoints.load(tmp_path / "old.json"), checkpoints.load(tmp_path / "other.json")
    assert a.tree_size == b.tree_size and not checkpoints.compare(None, a, b).consistent


def test_a_truncated_ledger_cannot_prove_the_newer_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    fill(db)
    take(db, tmp_path / "new.json")
    tamper(db, "DELETE FROM events WHERE seq > 4")
    take(db, tmp_path / "old.json")
    code, _, err = invoke("--db", str(db), "checkpoint", "--compare", str(tmp_path / "old.json"),
                          str(tmp_path / "new.json"))
    assert code != 0 and "fewer than 13 events" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    ("not json", "not a studyledger checkpoint"),
    ('{"format": "something else"}', "not a studyledger checkpoint"),
    ('{"format": "studyledger-checkpoint", "version": 7}', "version 7 is not supported"),
    ('{"format": "studyledger-checkpoint", "version": 1, "tree_size": 1}', "lacks 'head_seq'"),
    ('{"format": "studyledger-checkpoint", "version": 1, "tree_size": -1, "head_seq": 1, "head_chain": "x",'
     ' "merkle_root": "y", "created_at": "t"}', "not a non-negative 64-bit integer"),
    ('{"format": "studyledger-checkpoint", "version": 1, "tree_size": 1, "head_seq": 1, "head_chain": "x",'
     ' "merkle_root": "y", "created_at": "t"}', "not 64 lowercase hex digits"),
])
def test_bad_checkpoint_files_give_one_line(tmp_path: Path, content: str, message: str) -> None:
    db = tmp_path / "l.db"
    fill(db, runs=1)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, out, err = invoke("--db", str(db), "verify", "--checkpoint", str(bad))
    assert code != 0 and message in err and str(bad) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_and_directory_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    fill(db, runs=1)
    for path, message in [(tmp_path / "none.json", "no such checkpoint file"), (tmp_path, "not a studyledger")]:
        code, _, err = invoke("--db", str(db), "verify", "--checkpoint", str(path))
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1


def test_checkpoint_needs_exactly_one_mode(tmp_path: Path) -> None:
    code, _, err = invoke("--db", str(tmp_path / "l.db"), "checkpoint")
    assert code == 2 and "--out FILE or --compare" in err


def test_verify_record_keeps_what_was_found(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    fill(db, runs=1)
    take(db, tmp_path / "cp.json")
    tamper(db, "DELETE FROM events WHERE seq > 5", restore=True)
    code, _, _ = invoke("--db", str(db), "verify", "--checkpoint", str(tmp_path / "cp.json"), "--record")
    assert code == 1
    code, out, _ = invoke("--db", str(db), "audits", "--json")
    (audit,) = json.loads(out)
    assert audit["check"] == "verify+checkpoint" and audit["ok"] is False
    assert audit["head"]["seq"] == 5 and audit["summary"]["checks_failed"] == ["checkpoint"]
    assert audit["summary"]["checkpoint"] == str(tmp_path / "cp.json")
    code, out, _ = invoke("--db", str(db), "audits")
    assert code == 0 and "verify+checkpoint  FAILED" in out
