"""The tamper matrix: every way of changing a ledger file is caught by verify or verify --checkpoint.

Each case edits a real ledger file through a raw sqlite3 session after dropping the
immutability triggers, then (where the attack would) puts the triggers back, so that the
only evidence left is in the rows themselves.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from studyledger.audit import checkpoint as checkpoints
from studyledger.events import EventKind, make_event
from studyledger.store import SQLiteStore, chain_hash
from studyledger.audit.verify import checkpoint_problems, verify

from .audit_helpers import (
    INSERT_STORED,
    drop_triggers,
    edit_body,
    fill,
    invoke,
    raw,
    restore_triggers,
    rewrite,
    rows,
    stored_row,
)


def flip_body_byte(conn: sqlite3.Connection) -> None:
    body = conn.execute("SELECT body FROM events_json WHERE seq = 5").fetchone()[0]
    position = body.index('"t1"') + 2  # inside the text, so the JSON stays valid
    flipped = body[:position] + chr(ord(body[position]) ^ 1) + body[position + 1:]
    conn.execute("UPDATE events SET body = ? WHERE seq = 5", (flipped,))


def change_id(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE events SET event_id = X'0123456789abcdef0123456789abcdef' WHERE seq = 4")


def delete_middle(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM events WHERE seq = 5")


def insert_forged(conn: sqlite3.Connection) -> None:
    """Slip a made-up observation in after seq 4, with a valid id and the chain it needs there."""
    forged = make_event(EventKind.OBSERVATION_RECORDED, {
        "timestamp": "2026-01-01T00:00:59+00:00", "record_id": "forged", "text": "never happened",
        "session_id": "", "actor_id": "", "event_type": "step", "meta_json": {}, "level": "step",
        "study_id": None, "run_id": None, "condition_id": None, "trial_id": None, "step_id": None,
        "tool_name": None, "evaluation_id": None}, source="api")
    last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    for seq in range(last, 4, -1):  # make room at seq 5, from the top so keys never collide
        conn.execute("UPDATE events SET seq = seq + 1 WHERE seq = ?", (seq,))
    previous = conn.execute("SELECT chain FROM events_plain WHERE seq = 4").fetchone()[0]
    values = [5, forged.event_id, forged.kind, forged.study_id, forged.run_id, forged.occurred_at,
              "2026-01-01T00:01:00+00:00", forged.source, forged.body]
    conn.execute(INSERT_STORED, stored_row(values, chain_hash(previous, values)))


def reorder(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE events SET seq = -1 WHERE seq = 5")
    conn.execute("UPDATE events SET seq = 5 WHERE seq = 6")
    conn.execute("UPDATE events SET seq = 6 WHERE seq = -1")


def delete_tail(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM events WHERE seq > 7")
    restore_triggers(conn)


def insert_forged_rechained(conn: sqlite3.Connection) -> None:
    """The forged row above, with every later chain value recomputed and the triggers back."""
    insert_forged(conn)
    rewrite(conn, rows(conn))
    restore_triggers(conn)


def rewrite_history(conn: sqlite3.Connection) -> None:
    """Change what a run's status event says, then recompute every id and chain consistently."""
    history = rows(conn)
    for row in history:
        if row[2] == EventKind.RUN_STATUS_CHANGED.value and json.loads(str(row[8]))["status"] == "success":
            row[8] = edit_body(str(row[8]), "status", "failed")
            break
    rewrite(conn, history)
    restore_triggers(conn)


# name: (attack, verify alone sees it, the checkpoint sees it)
MATRIX: dict[str, tuple[Callable[[sqlite3.Connection], None], bool, bool]] = {
    "flip one byte of a body": (flip_body_byte, True, False),
    "change an event id": (change_id, True, True),
    "delete a row in the middle": (delete_middle, True, True),
    "insert a forged row with its own chain": (insert_forged, True, True),
    "insert a forged row and re-chain the rest": (insert_forged_rechained, False, True),
    "reorder two rows": (reorder, True, True),
    "delete the tail": (delete_tail, False, True),
    "rewrite the whole history consistently": (rewrite_history, False, True),
}


@pytest.fixture
def pinned(tmp_path: Path) -> tuple[Path, Path]:
    """A ledger of 13 events and a checkpoint of it kept in another file."""
    db = tmp_path / "ledger.db"
    fill(db)  # 1 study + 2 x (register, running, 3 observations, success)
    code, _, err = invoke("--db", str(db), "checkpoint", "--out", str(tmp_path / "cp.json"))
    assert code == 0, err
    return db, tmp_path / "cp.json"


def test_an_untouched_ledger_passes_both(pinned: tuple[Path, Path]) -> None:
    db, cp = pinned
    code, out, err = invoke("--db", str(db), "verify", "--checkpoint", str(cp), "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] is True


@pytest.mark.parametrize("case", list(MATRIX))
def test_tamper_matrix(pinned: tuple[Path, Path], case: str) -> None:
    db, cp = pinned
    attack, verify_sees, checkpoint_sees = MATRIX[case]
    conn = raw(db)
    drop_triggers(conn)
    attack(conn)
    conn.close()

    store = SQLiteStore(db, create=False)
    try:
        core = verify(store)
        pinned_problems = checkpoint_problems(store, checkpoints.load(cp))
    finally:
        store.close()
    assert (not core.ok) is verify_sees, core.problems
    assert bool(pinned_problems) is checkpoint_sees, pinned_problems
    assert all(p.check == "checkpoint" for p in pinned_problems)

    # The command a user runs sees every case and exits 1, naming the failing check.
    code, out, err = invoke("--db", str(db), "verify", "--checkpoint", str(cp), "--json")
    assert code == 1, out
    report = json.loads(out)
    assert report["ok"] is False
    assert ("checkpoint" in {p["check"] for p in report["problems"]}) is checkpoint_sees
    code, out, err = invoke("--db", str(db), "verify", "--checkpoint", str(cp))
    assert code == 1 and "FAILED" in err


def test_appending_after_a_checkpoint_still_extends_it(pinned: tuple[Path, Path]) -> None:
    db, cp = pinned
    fill_more = invoke("--db", str(db), "verify", "--record")  # appends an audit_recorded event
    assert fill_more[0] == 0
    code, out, err = invoke("--db", str(db), "verify", "--checkpoint", str(cp), "--json")
    assert code == 0, out
    assert json.loads(out)["events"] == 14


def test_checkpoint_of_another_history_fails(tmp_path: Path, pinned: tuple[Path, Path]) -> None:
    _, cp = pinned
    other = tmp_path / "other.db"
    fill(other, runs=3)  # a different, longer history: same study, more runs
    code, out, _ = invoke("--db", str(other), "verify", "--checkpoint", str(cp), "--json")
    problems = json.loads(out)["problems"]
    assert code == 1 and [p["check"] for p in problems] == ["checkpoint", "checkpoint"]
