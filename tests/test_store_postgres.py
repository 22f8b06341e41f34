"""The store contract (tests/store_contract.py) on the PostgreSQL backend, and what only it has:
restarts and dropped connections, roles, passwords kept out of output, and ledgers moving
between backends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger import Ledger, RunStatus, StudyLedgerError, ingest, query, search
from studyledger.audit.replay import replay
from studyledger.audit.verify import verify
from studyledger.errors import LedgerMissingError, LedgerPermissionError
from studyledger.store import DatabaseURL
from studyledger.store_postgres import escape_text, translate, unescape_text

from .audit_helpers import fill, invoke
from .ingest_helpers import STUDYLEDGER, own_line, start_watch, wait_for, write
from .pg_server import PgDatabase, PgServer, start_pg_server
from .store_contract import StoreContract
from .test_ingest_crash import _writer as drop_writer
from .test_store import observation_event

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"

REPO = Path(__file__).resolve().parents[1]


class TestPostgresStore(StoreContract):
    REFUSED = (*StoreContract.REFUSED, "TRUNCATE events")

    @pytest.fixture
    def target(self, pg_database: PgDatabase) -> str:
        self.database = pg_database
        return pg_database.url

    def raw(self, target: str, statement: str) -> list[tuple[Any, ...]]:
        with self.database.connect(autocommit=True) as conn:
            cursor = conn.execute(statement)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def tamper(self, target: str, *statements: str) -> None:
        self.raw(target, "; ".join(["ALTER TABLE events DISABLE TRIGGER USER", *statements,
                                    "ALTER TABLE events ENABLE TRIGGER USER"]))

    def drop_trigger(self, target: str, name: str) -> None:
        self.raw(target, f"DROP TRIGGER {name} ON events")

    def test_a_disabled_trigger_counts_as_missing(self, ledger: Ledger) -> None:
        self.raw(ledger.store.read_uri, "ALTER TABLE events DISABLE TRIGGER events_refuse_update")
        assert ledger.store.missing_triggers() == ["events_refuse_update"]


# -- restarts and dropped connections (docs/store.md, guarantee 8) ------------------------


def _ids(target: str) -> list[str]:
    with Ledger.open(target, readonly=True) as ledger:
        return [event.event_id for event in ledger.store.iter_events()]


def _count(target: str) -> int:
    """Events stored, or -1 while the server cannot be reached."""
    try:
        with Ledger.open(target, readonly=True) as ledger:
            return ledger.store.event_count()
    except StudyLedgerError:
        return -1


def _ingested_once(folder: Path, tmp_path: Path) -> tuple[list[str], int]:
    """What ingesting ``folder`` once into a fresh ledger gives: event ids, and lines read."""
    clean = tmp_path / "clean.db"
    with Ledger.open(clean) as ledger:
        report = ingest(ledger, [folder])
    return _ids(str(clean)), report.lines_read


def _assert_ingested_exactly_once(url: str, folder: Path, tmp_path: Path) -> None:
    expected, lines = _ingested_once(folder, tmp_path)
    ids = _ids(url)
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == set(expected)
    with Ledger.open(url, readonly=True) as ledger:
        files = query.ingest_files(ledger.conn)
        assert sum(f["lines_accepted"] + f["lines_rejected"] for f in files) == lines
        assert verify(ledger).ok
        assert replay(ledger, in_memory=True).identical is True


def _watch_while(url: str, folder: Path, tmp_path: Path, disturb: Any, times: int) -> None:
    """Run a watcher on a growing folder, ``disturb()`` the server ``times`` times, then check
    every line landed exactly once."""
    Ledger.open(url).close()
    stop = threading.Event()
    writer = threading.Thread(target=drop_writer, args=(folder, stop, 11))
    writer.start()
    watch = start_watch(url, folder)  # type: ignore[arg-type]
    try:
        for _ in range(times):
            before = max(_count(url), 0)
            wait_for(lambda floor=before + 300: _count(url) > floor, timeout=90, what="ingest to move on")
            disturb()
    finally:
        stop.set()
        writer.join()
    try:
        total = len(_ingested_once(folder, tmp_path / "expected")[0])
        wait_for(lambda: _count(url) >= total, timeout=180, what="the watcher to catch up")
    finally:
        watch.terminate()
        _, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    _assert_ingested_exactly_once(url, folder, tmp_path)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_mid_ingest_loses_nothing(pg_server: PgServer, pg_url: str, tmp_path: Path, mode: str) -> None:
    (tmp_path / "drop").mkdir()
    (tmp_path / "expected").mkdir()
    _watch_while(pg_url, tmp_path / "drop", tmp_path, lambda: pg_server.restart(mode), times=2)


def test_dropped_connections_mid_ingest_lose_nothing(pg_server: PgServer, pg_database: PgDatabase,
                                                     tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    (tmp_path / "expected").mkdir()
    _watch_while(pg_database.url, tmp_path / "drop", tmp_path,
                 lambda: pg_server.terminate_connections(pg_database.name), times=4)


def test_api_appends_survive_a_restart(pg_server: PgServer, pg_url: str) -> None:
    """A study writing through the API keeps writing through an immediate restart: each
    batch lands once (a commit whose answer was lost is found, not written twice)."""
    batches, size = 60, 50
    done = threading.Event()
    errors: list[BaseException] = []

    def study() -> None:
        try:
            with Ledger.open(pg_url) as ledger:
                for batch in range(batches):
                    result = ledger.append([observation_event(batch * size + i, run_id="live")
                                            for i in range(size)])
                    assert len(result.appended) + result.duplicates == size
                    if batch == 10:
                        done.set()
        except BaseException as exc:  # reported below, not lost with the thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=study)
    thread.start()
    done.wait(60)
    pg_server.restart("immediate")
    thread.join(180)
    assert not errors, errors
    with Ledger.open(pg_url, readonly=True) as ledger:
        assert ledger.store.event_count() == batches * size
        assert ledger.run("live")["observation_count"] == batches * size
        assert verify(ledger).ok


def test_the_dashboards_change_signal_survives_a_restart(pg_server: PgServer, pg_url: str) -> None:
    with Ledger.open(pg_url) as writer, Ledger.open(pg_url, readonly=True) as reader:
        first = query.data_version(reader.conn)
        pg_server.restart("fast")
        # Notifications sent while it was away are lost, so a reconnect counts as a change
        # (the dead socket shows at the first or second look).
        wait_for(lambda: query.data_version(reader.conn) != first, timeout=10, what="the reconnect to show")
        second = query.data_version(reader.conn)
        writer.append([observation_event(1)])
        wait_for(lambda: query.data_version(reader.conn) != second, timeout=10, what="a notification")


def test_a_connection_lost_inside_a_transaction_is_not_carried_on(pg_server: PgServer,
                                                                  pg_database: PgDatabase) -> None:
    from studyledger.errors import LedgerConnectionLost

    with Ledger.open(pg_database.url) as ledger:
        with pytest.raises(LedgerConnectionLost), ledger.store.transaction():
            ledger.append([observation_event(1)])
            pg_server.terminate_connections(pg_database.name)
            try:
                ledger.append([observation_event(2)])
            except LedgerConnectionLost:
                # Whoever swallows the loss cannot go on outside the transaction by accident.
                ledger.append([observation_event(3)])
        assert ledger.store.event_count() == 0
        ledger.append([observation_event(4)])  # the next transaction reconnects
        assert [e.seq for e in ledger.events()] == [1]


# -- roles ------------------------------------------------------------------------------


@pytest.fixture
def lab(pg_database: PgDatabase) -> dict[str, str]:
    """A ledger set up as docs/postgres.md says: init --roles as the owner, login roles for a
    writer and a reader. Returns their URLs."""
    prefix = pg_database.unique("lab")
    code, out, err = invoke("--db", pg_database.url, "init", "--roles", prefix, "--json")
    assert code == 0, err
    assert json.loads(out)["roles"] == {"writer": f"{prefix}_writer", "reader": f"{prefix}_reader"}
    names = {"writer": pg_database.unique("alice"), "reader": pg_database.unique("bob")}
    with pg_database.connect(autocommit=True) as conn:
        for kind, login in names.items():
            conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE "{prefix}_{kind}"')  # type: ignore[arg-type]
    return {kind: pg_database.server.url(pg_database.name, user=login) for kind, login in names.items()}


def test_postgres_roles_a_writer_appends_but_cannot_change_history(lab: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    write(folder / "a.jsonl", "".join(own_line(i) for i in range(20)) + "garbage\n")
    code, _, err = invoke("--db", lab["writer"], "ingest", str(folder))
    assert code == 0, err
    with Ledger.open(lab["writer"]) as ledger:
        ledger.append([observation_event(1)])
        assert ledger.store.event_count() == 22
    with psycopg.connect(lab["writer"], autocommit=True) as conn:
        for statement in ("UPDATE events SET body = body", "DELETE FROM events", "TRUNCATE events",
                          "DROP TRIGGER events_refuse_update ON events", "ALTER TABLE events DISABLE TRIGGER USER",
                          "DROP TABLE events", "UPDATE ledger_meta SET value = 'x'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]


def test_postgres_roles_a_writer_registers_runs_and_ingests_a_real_study(lab: dict[str, str]) -> None:
    """The writer role does all a machine of the lab does: runs move, anomalies are judged again."""
    with Ledger.open(lab["writer"]) as ledger:
        ledger.register_study("s1")
        run = ledger.register_run("s1", "c1", replicate=1)
        ledger.transition(run, RunStatus.RUNNING)
        assert ledger.run(run)["status"] == "running"
    for case in ("fail_fast", "agents_traced", "crashed"):
        code, _, err = invoke("--db", lab["writer"], "ingest", str(UPSTREAM / case))
        assert code == 0, (case, err)
    with Ledger.open(lab["writer"], readonly=True) as ledger:
        assert len(ledger.anomalies()) == 2  # agents_traced's two true disagreements


def test_postgres_roles_a_reader_only_reads(lab: dict[str, str], tmp_path: Path) -> None:
    with Ledger.open(lab["writer"]) as ledger:
        ledger.register_study("s1", title="one")
    for command in (["stats"], ["verify"], ["replay"], ["export", str(tmp_path / "out"), "--format", "jsonl"],
                    ["checkpoint", "--out", str(tmp_path / "head.json")]):
        code, _, err = invoke("--db", lab["reader"], *command)
        assert code == 0, (command, err)
    with Ledger.open(lab["reader"], readonly=True) as reader:
        assert [s["study_id"] for s in reader.studies()] == ["s1"]
    with Ledger.open(lab["reader"]) as reader, pytest.raises(LedgerPermissionError, match="privilege"):
        reader.register_study("s2")
    with psycopg.connect(lab["reader"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO ledger_meta VALUES ('k', 'v')")


def test_postgres_roles_grants_follow_a_rebuild(lab: dict[str, str], pg_database: PgDatabase) -> None:
    with Ledger.open(pg_database.url) as owner:
        owner.register_study("s1")
        owner.rebuild_projections()  # new tables, created by the owner: default privileges apply
    with Ledger.open(lab["writer"]) as ledger:
        ledger.register_study("s2")
        assert [s["study_id"] for s in ledger.studies()] == ["s1", "s2"]


# -- addresses, passwords and mistakes ------------------------------------------------------


def test_urls_print_without_their_password() -> None:
    url = DatabaseURL("postgresql://alice:s3cret@db.lab:5433/ledger?sslmode=require&password=other")
    assert "s3cret" not in str(url) and "other" not in str(url) and "s3cret" not in repr(url)
    assert str(url) == "postgresql://alice@db.lab:5433/ledger?sslmode=require"
    assert url.url.startswith("postgresql://alice:s3cret@")


def test_no_command_prints_the_password(tmp_path: Path) -> None:
    with start_pg_server(tcp=True) as server:
        name = server.create_database()
        url = server.url(name)
        assert server.password in url
        env = {**os.environ, "STUDYLEDGER_DB": url}
        outputs = []
        for command in (["init"], ["init", "--json"], ["stats"], ["verify", "--json"],
                        ["export", str(tmp_path / "x"), "--format", "jsonl", "--json"], ["events"]):
            done = subprocess.run([*STUDYLEDGER, *command], capture_output=True, text=True, env=env, timeout=120)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout + done.stderr)
        wrong = url.replace(f"/{name}", "/no_such_db")
        done = subprocess.run([*STUDYLEDGER, "--db", wrong, "stats"], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "no such database" in done.stderr and len(done.stderr.splitlines()) == 1
        bad = url.replace(server.password, "wrong-password")
        done2 = subprocess.run([*STUDYLEDGER, "--db", bad, "stats"], capture_output=True, text=True, timeout=120)
        assert done2.returncode != 0 and "refused the login" in done2.stderr
        outputs += [done.stderr, done2.stderr]
        assert "ledger" in outputs[0] and all(server.password not in text for text in outputs)
        assert all("wrong-password" not in text for text in outputs)


def test_a_url_without_psycopg_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra looks like
    with pytest.raises(StudyLedgerError, match=r"pip install 'studyledger\[postgres\]'"):
        Ledger.open("postgresql://someone@nowhere/ledger")


def test_mistakes_are_one_line(pg_server: PgServer, pg_database: PgDatabase) -> None:
    missing = pg_server.url("no_such_database")
    with pytest.raises(LedgerMissingError, match="no such database"):
        Ledger.open(missing)
    with pg_database.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE things (x int)")
    code, _, err = invoke("--db", pg_database.url, "stats")
    assert code != 0 and "not a studyledger ledger" in err and "things" in err
    code, _, err = invoke("--db", "/tmp/x.db", "init", "--roles", "lab")
    assert code != 0 and "needs a PostgreSQL ledger" in err


# -- one ledger, either backend ---------------------------------------------------------


def _comparable(ledger: Ledger) -> dict[str, Any]:
    """Everything the read side shows, minus the ledger's own clock (recorded_at)."""
    conn = ledger.conn
    clock = ("registered_at", "last_recorded", "last_activity")
    runs = [{k: v for k, v in row.items() if k not in clock} for row in ledger.runs()]
    studies = [{k: v for k, v in row.items() if k not in clock} for row in ledger.studies()]
    observations = [query.observations(conn, run["run_id"], limit=10_000) for run in runs]
    return {
        "studies": studies, "runs": runs, "observations": observations,
        "anomalies": query.anomalies(conn), "rejections": query.rejections(conn),
        "evaluations": query.evaluations(conn), "transitions": [query.transitions(conn, r["run_id"]) for r in runs],
        "provenance": [query.provenance(conn, r["run_id"]) for r in runs],
        "conditions": [query.conditions(conn, s["study_id"]) for s in ledger.studies()],
        "stats": {k: v for k, v in query.stats(conn).items() if k != "head"},
        "metric_values": query.metric_values(conn),
        "search": {text: (search.search(conn, text, limit=1000), search.count(conn, text))
                   for text in ("beam", "tool call", "error", "safety fac", "json", "run", "load")},
        "ingest_files": [{k: v for k, v in f.items() if k != "updated_at"} for f in query.ingest_files(conn)],
    }


def test_the_same_input_gives_the_same_ledger_on_both_backends(pg_url: str, tmp_path: Path) -> None:
    examples = REPO / "ledger_examples"
    sqlite = str(tmp_path / "l.db")
    for target in (sqlite, pg_url):
        code, _, err = invoke("--db", target, "ingest", str(examples))
        assert code == 0, err
        code, out, err = invoke("--db", target, "search", "beam", "--json")  # builds the search index
        assert code == 0 and json.loads(out), err
    with Ledger.open(sqlite, readonly=True) as a, Ledger.open(pg_url, readonly=True) as b:
        left, right = _comparable(a), _comparable(b)
        assert left["stats"]["events"] > 250 and left["anomalies"] and left["rejections"] and left["evaluations"]
        assert left["metric_values"] and all(hits for hits, _ in left["search"].values())
        for key in left:
            assert left[key] == right[key], key
        assert [e.event_id for e in a.store.iter_events()] == [e.event_id for e in b.store.iter_events()]
    for target in (sqlite, pg_url):
        code, _, err = invoke("--db", target, "export", str(tmp_path / f"out-{target == sqlite}"))
        assert code == 0, err
    left_files = sorted(p.relative_to(tmp_path / "out-True") for p in (tmp_path / "out-True").rglob("*"))
    right_files = sorted(p.relative_to(tmp_path / "out-False") for p in (tmp_path / "out-False").rglob("*"))
    assert left_files == right_files
    for name in left_files:
        if (tmp_path / "out-True" / name).is_file() and name.suffix in (".csv", ".jsonl"):
            left_text, right_text = ((tmp_path / out / name).read_text().replace(str(tmp_path / out), "OUT")
                                     for out in ("out-True", "out-False"))
            assert left_text == right_text, name


def test_merge_moves_a_ledger_between_backends(pg_url: str, tmp_path: Path) -> None:
    source = tmp_path / "node.db"
    fill(source, runs=3)
    with Ledger.open(source, readonly=True) as node:
        head, ids = node.head(), [e.event_id for e in node.store.iter_events()]
    code, out, err = invoke("--db", pg_url, "merge", str(source), "--json")
    assert code == 0, err
    with Ledger.open(pg_url, readonly=True) as lab:
        assert lab.head() == head  # same ids, order, recorded_at and sources: the same chain
        assert [e.event_id for e in lab.store.iter_events()] == ids
    back = tmp_path / "back.db"
    code, _, err = invoke("--db", str(back), "merge", pg_url)
    assert code == 0, err
    with Ledger.open(back, readonly=True) as copy:
        assert copy.head() == head


def test_chain_is_backend_independent(pg_url: str, tmp_path: Path) -> None:
    """An export of one backend, restored into the other, has the same ids and head chain;
    and back again."""
    source = tmp_path / "node.db"
    fill(source, runs=2)
    code, _, err = invoke("--db", str(source), "export", str(tmp_path / "out"), "--format", "jsonl")
    assert code == 0, err
    code, _, err = invoke("--db", pg_url, "restore", str(tmp_path / "out"))
    assert code == 0, err
    code, _, err = invoke("--db", pg_url, "export", str(tmp_path / "back"), "--format", "jsonl")
    assert code == 0, err
    code, _, err = invoke("--db", str(tmp_path / "again.db"), "restore", str(tmp_path / "back"))
    assert code == 0, err
    with Ledger.open(source, readonly=True) as a, Ledger.open(pg_url, readonly=True) as b, \
            Ledger.open(tmp_path / "again.db", readonly=True) as c:
        assert a.head() == b.head() == c.head()
        assert [e.event_id for e in a.events()] == [e.event_id for e in b.events()] == [e.event_id for e in c.events()]


VOLATILE = {"recorded_at", "registered_at", "last_recorded", "last_activity", "chain", "head_chain", "at",
            "created_at", "ledger_created_at", "updated_at", "path", "folder", "dir", "checkpoint"}
"""What two ledgers fed the same input at different moments, in different places, may differ in."""


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


def test_every_command_answers_the_same_on_both_backends(pg_url: str, tmp_path: Path) -> None:
    sqlite = str(tmp_path / "l.db")
    answers: dict[int, list[Any]] = {}
    for target in (sqlite, pg_url):
        for setup in (["init"], ["ingest", str(REPO / "ledger_examples")]):
            code, _, err = invoke("--db", target, *setup)
            assert code == 0, err
        runs = json.loads(invoke("--db", target, "runs", "--json")[1])
        first, second, study = runs[0]["run_id"], runs[1]["run_id"], runs[0]["study_id"]
        folder = tmp_path / ("sqlite" if target == sqlite else "postgres")
        folder.mkdir()
        for number, step in enumerate((["stats"], ["runs"], ["show", first], ["events", "--limit", "5"], ["verify"], ["replay"],
                     ["replay", "--as-of", "100"], ["diff", first, second], ["rejects"], ["conditions", study],
                     ["search", "tool call"], ["checkpoint", "--out", str(folder / "cp.json")],
                     ["verify", "--checkpoint", str(folder / "cp.json"), "--record"], ["audits"],
                     ["export", str(folder / "canonical")], ["export", str(folder / "jsonl"), "--format", "jsonl"])):
            code, out, err = invoke("--db", target, *step, "--json")
            assert code == 0, (target, step, err)
            answers.setdefault(number, []).append((step[0], _stable(json.loads(out))))
    for (command, left), (_, right) in answers.values():
        assert left == right, command
    done = subprocess.run([*STUDYLEDGER, "--db", pg_url, "watch", str(tmp_path), "--help"], capture_output=True)
    assert done.returncode == 0


def test_the_lab_demo_runs(pg_url: str, tmp_path: Path) -> None:
    """scripts/lab_demo.py: three watchers on three drop folders while simulators write, the
    dashboard live on the same URL, then verify, checkpoint and export."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "lab_demo.py"), "--url", pg_url, "--seconds", "3",
                           "--work", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dashboard: 3 studies listed" in done.stdout
    held = re.search(r"the ledger holds (\d+) events; one clean ingest of the three folders gives (\d+)", done.stdout)
    assert held is not None and held.group(1) == held.group(2) and int(held.group(1)) > 100
    assert "ok: " in done.stdout and (tmp_path / "checkpoints" / "head.json").is_file()
    assert {p.name for p in (tmp_path / "export").iterdir()} >= {"lab-node-a", "lab-node-b", "lab-node-c"}


def test_a_pg_dump_backup_restores_into_a_ledger_that_verifies(pg_server: PgServer, pg_database: PgDatabase,
                                                                tmp_path: Path) -> None:
    """docs/postgres.md's backup: pg_dump -Fc, pg_restore into an empty database."""
    fill(pg_database.url, runs=2)  # type: ignore[arg-type]
    with Ledger.open(pg_database.url) as ledger:
        ledger.append([observation_event(1, run_id="nul \x00 run")])
        head = ledger.head()
    dump = tmp_path / "ledger.dump"
    subprocess.run([str(pg_server.bindir / "pg_dump"), "-Fc", "-d", pg_database.url, "-f", str(dump)], check=True,
                   timeout=120)
    restored = pg_server.create_database()
    try:
        subprocess.run([str(pg_server.bindir / "pg_restore"), "--exit-on-error", "-d", pg_server.url(restored),
                        str(dump)], check=True, timeout=120)
        with Ledger.open(pg_server.url(restored)) as copy:
            assert copy.head() == head
            assert verify(copy).ok and copy.store.missing_triggers() == []
            assert replay(copy, in_memory=True).identical is True
            copy.append([observation_event(2)])  # and it takes appends: rowid defaults, triggers, functions
            assert copy.head().seq == head.seq + 1
    finally:
        pg_server.drop_database(restored)


# -- the dialect ------------------------------------------------------------------------------


@pytest.mark.parametrize(("sqlite", "postgres"), [
    ("SELECT * FROM t WHERE a = ? AND b LIKE '%?%'", "SELECT * FROM t WHERE a = %s AND b LIKE '%%?%%'"),
    ("SELECT path, offset FROM f ORDER BY offset LIMIT 1 OFFSET ?",
     'SELECT path, "offset" FROM f ORDER BY "offset" LIMIT 1 OFFSET %s'),
    ("UPDATE f SET offset = 0, line = ?", 'UPDATE f SET "offset" = 0, line = %s'),
    ("SELECT json_extract(body, '$.offset') FROM events", "SELECT json_extract(body, '$.offset') FROM events"),
])
def test_statements_keep_their_meaning(sqlite: str, postgres: str) -> None:
    assert translate(sqlite).text == postgres


def test_create_table_in_postgresql_words() -> None:
    statement = translate("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                          "value, offset INTEGER, UNIQUE (name))")
    assert statement.kind == "create_table" and statement.if_not_exists and statement.table == "t"
    assert statement.text == ("CREATE TABLE t (id BIGINT PRIMARY KEY DEFAULT sl_rowid('t', 'id'), "
                              'name TEXT COLLATE "C" NOT NULL, value JSON, "offset" BIGINT, UNIQUE (name))')
    assert "DEFAULT" not in translate("CREATE TABLE e (seq INTEGER PRIMARY KEY AUTOINCREMENT, b TEXT)").text


def test_writes_that_answer_nothing_wait_and_plain_inserts_are_copies() -> None:
    plain = translate("INSERT INTO observations VALUES (?,?,?)")
    assert plain.deferrable and plain.copy == "observations"
    upsert = translate("INSERT INTO runs (a, b) VALUES (?, ?) ON CONFLICT(a) DO UPDATE SET b = excluded.b")
    assert upsert.deferrable and upsert.copy is None and upsert.columns == ("a", "b")
    claimed = translate("INSERT INTO f (a) VALUES (?) ON CONFLICT (a) DO NOTHING RETURNING id")
    assert not claimed.deferrable and claimed.copy is None
    assert not translate("SELECT 1").deferrable and translate("UPDATE t SET a = ?").deferrable


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\uffff", "0", "\\"])))
def test_escaping_text_is_reversible(text: str) -> None:
    escaped = escape_text(text)
    assert "\x00" not in escaped and unescape_text(escaped) == text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\uffff", "u", "0", "\\"]),
                    max_size=30))
def test_any_text_comes_back_from_columns_and_from_bodies(pg_url: str, text: str) -> None:
    with Ledger.open(pg_url) as ledger:
        event = observation_event(abs(hash(text)) % 10**9, run_id="r " + text, text=text)
        ledger.append([event])
        row = ledger.store.conn.execute("SELECT run_id, json_extract(body, '$.text') FROM events "
                                        "WHERE event_id = ?", (event.event_id,)).fetchone()
        assert row == ("r " + text, text)
        assert ledger.run("r " + text)["run_id"] == "r " + text


def test_a_bare_number_as_a_condition_is_a_boolean() -> None:
    assert translate("SELECT a FROM t WHERE 1 ORDER BY a").text == "SELECT a FROM t WHERE TRUE ORDER BY a"
    assert translate("SELECT a FROM t WHERE b = ? AND 1").text == "SELECT a FROM t WHERE b = %s AND TRUE"
    assert translate("SELECT 1 FROM t WHERE a = 1 LIMIT 1").text == "SELECT 1 FROM t WHERE a = 1 LIMIT 1"
    assert translate("SELECT CASE WHEN a THEN 1 ELSE 0 END FROM t").text == \
        "SELECT CASE WHEN a THEN 1 ELSE 0 END FROM t"
