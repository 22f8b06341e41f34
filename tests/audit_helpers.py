"""Shared pieces of the audit tests: a small filled ledger and ways to tamper with its file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner

from studyledger import Ledger, Observation, RunBudget, RunStatus
from studyledger.cli import cli
from studyledger.codec import PHYSICAL_COLUMNS, Codec, id_bytes
from studyledger.events import event_id_for
from studyledger.store import EVENT_COLUMNS, GENESIS_CHAIN, TRIGGER_DDL, chain_hash

INSERT_STORED = f"INSERT INTO events ({', '.join(PHYSICAL_COLUMNS)}) VALUES ({', '.join('?' * len(PHYSICAL_COLUMNS))})"
"""A raw insert of a row in the form :func:`stored_row` gives."""


def stored_row(values: Sequence[object], chain: str) -> list[object]:
    """A row (its canonical values before the chain, and the chain) as a raw writer stores it
    in a SQLite ledger: id and chain as bytes, every other column as its text, which the
    table accepts as well as its compact forms."""
    seq, event_id, kind, study_id, run_id, occurred_at, recorded_at, source, body = values
    return [seq, id_bytes(str(event_id)), kind, study_id, run_id, occurred_at, recorded_at, source, None, None,
            body, bytes.fromhex(chain)]


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the real ``studyledger`` command in-process."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def fill(path: Path, runs: int = 2, observations: int = 3) -> list[str]:
    """A ledger with one study, ``runs`` finished runs and their observations."""
    run_ids = []
    with Ledger.open(path) as ledger:
        ledger.register_study("s1", title="Study one", run_budget=RunBudget(replicates=max(runs, 1)))
        for replicate in range(1, runs + 1):
            run_id = ledger.register_run("s1", "c1", replicate=replicate)
            ledger.transition(run_id, RunStatus.RUNNING)
            ledger.observe(*[
                Observation(timestamp=f"2026-01-01T00:00:{i:02d}+00:00", record_id=f"{run_id}-{i}", text=f"t{i}",
                            session_id=run_id, actor_id="agent", event_type="step", run_id=run_id)
                for i in range(observations)])
            ledger.transition(run_id, RunStatus.SUCCESS)
            run_ids.append(run_id)
    return run_ids


def raw(path: Path) -> sqlite3.Connection:
    """A raw sqlite3 session on the file, the way an attacker would open it (reading
    compressed bodies with ``sl_body`` as studyledger does: an attacker can too)."""
    conn = sqlite3.connect(path, isolation_level=None)
    Codec(conn).register()
    return conn


def drop_triggers(conn: sqlite3.Connection) -> None:
    for name in TRIGGER_DDL:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def restore_triggers(conn: sqlite3.Connection) -> None:
    for ddl in TRIGGER_DDL.values():
        conn.execute(ddl)


def rows(conn: sqlite3.Connection) -> list[list[object]]:
    return [list(row) for row in conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events_json ORDER BY seq")]


def rewrite(conn: sqlite3.Connection, new_rows: list[list[object]]) -> None:
    """Replace the whole events table by ``new_rows`` with ids and chains recomputed.

    This is the strongest attack on a ledger file: every row is self-consistent again.
    """
    conn.execute("DELETE FROM events")
    chain = GENESIS_CHAIN
    for seq, row in enumerate(new_rows, start=1):
        _, _, kind, study_id, run_id, occurred_at, recorded_at, source, body, _ = row
        event_id = event_id_for(str(kind), str(body))
        values = [seq, event_id, kind, study_id, run_id, occurred_at, recorded_at, source, body]
        chain = chain_hash(chain, values)
        conn.execute(INSERT_STORED, stored_row(values, chain))


def edit_body(body: str, key: str, value: object) -> str:
    data = json.loads(body)
    data[key] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def tamper(path: Path, *statements: str, restore: bool = False) -> None:
    """Run SQL on the file with the triggers dropped (and put back when ``restore``)."""
    conn = raw(path)
    drop_triggers(conn)
    for statement in statements:
        conn.execute(statement)
    if restore:
        restore_triggers(conn)
    conn.close()
