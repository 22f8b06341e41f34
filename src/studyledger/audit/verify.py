"""Tamper evidence: recompute everything a stored event claims and report what disagrees.

One home for every check ``studyledger verify`` makes: each row's id, columns, sequence
and chain; the immutability triggers and the schema version; and, given a checkpoint kept
elsewhere, that the ledger still extends it.

What a chain alone can and cannot see (docs/audit.md says the same):

* seen: a body, id, column or chain value edited; a row deleted, inserted or two rows
  swapped anywhere but at the end; missing immutability triggers; gaps in ``seq``;
* not seen without an outside checkpoint: rows removed from the tail (the shorter chain is
  still a valid chain), and a history rewritten consistently from some row on (every
  chain value recomputed). Keep a copy of the head elsewhere to catch those.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from ..backends import connect_reader
from ..codec import CODEC_TRIGGER_DDL, Codec, canonical_chain, canonical_id, decode_time, physical_select
from ..errors import LedgerError
from ..events import depth, event_digest, event_id_of_bytes, has_lone_surrogate, indexed_columns
from ..ledger import Ledger
from ..store import GENESIS_CHAIN, STORE_SCHEMA_VERSION, SQLiteStore, Store, chain_part, chain_text, is_sqlite
from . import merkle
from .checkpoint import Checkpoint
from .snapshot_read import event_ids, read_snapshot

SQLITE_JSON_DEPTH = 2_000
"""SQLite's JSON functions refuse documents nested deeper than this."""
_MAX_PROBLEMS = 1_000
_BATCH = 5_000
_PARTS_KEPT = 100_000
_MAX_SEQ = 2**63 - 1
_RANGE_ROWS = 32_768
"""Rows of a range handed to a process at a time by a parallel verify: about 0.25 s of
work, so processes finish within that of each other, and one range per 250 ms costs little."""
_URI_VARIABLE = "STUDYLEDGER_VERIFY_URI"
PARALLEL_FROM = 100_000
"""Ledgers with at least this many events are verified by several processes by default."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing verify found wrong.

    Attributes:
        seq: The first sequence number concerned (0 for ledger-wide problems).
        check: Which check failed: ``body`` (not a JSON object, or a stored row that cannot be
            read back), ``event_id``, ``columns``, ``sequence``, ``chain``, ``triggers``,
            ``dictionary`` (a compression dictionary changed) or ``schema``.
        message: What was wrong, in words.
    """

    seq: int
    check: str
    message: str


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify`."""

    events: int = 0
    head_seq: int = 0
    head_chain: str = GENESIS_CHAIN
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.problems

    @property
    def first_failure(self) -> Problem | None:
        """The problem with the lowest sequence number, if any."""
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "ok": self.ok,
            "events": self.events,
            "head": {"seq": self.head_seq, "chain": self.head_chain},
            "problems": [asdict(p) for p in self.problems],
            "truncated": self.truncated,
        }


@dataclass(slots=True)
class _RangeResult:
    """What checking the rows with ``after < seq <= until`` found."""

    problems: list[Problem]
    events: int
    last_seq: int
    last_chain: str


def _body_fields(text: str | bytes) -> tuple[bool, str | None, str | None, str | None]:
    """``(is an object, study_id, run_id, time)`` of a body, by ``events.indexed_columns``.

    orjson reads what it can (any standard JSON nested less than 1,024 deep); anything else
    (NaN, lone surrogates, deeper nesting, errors) is read by the standard parser, which
    gives the verdict, as it does on every backend.
    """
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            return False, None, None, None
        # Deeper than SQLite can read it is unreadable, whatever this Python's parser manages.
        if isinstance(body, dict) and depth(body) > SQLITE_JSON_DEPTH:
            return False, None, None, None
    if not isinstance(body, dict):
        return False, None, None, None
    return (True, *indexed_columns(body))


def _check_range(conn: sqlite3.Connection, after: int, until: int | None) -> _RangeResult:
    """Check a range of rows exactly as one sequential scan of the ledger would.

    Each row is checked against the stored row before it, so ranges are independent: the
    row just before the range (whatever its seq, if rows were deleted) starts the chain.
    A row is read as stored and decoded here (codec.py): the body's bytes are hashed as
    they come out of the decompressor, for its id and for the chain.
    """
    codec = Codec(conn) if is_sqlite(conn) else None
    columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
    # Both bounds plain, so the primary key bounds the scan: with ``(? < 0 OR seq <= ?)``
    # the query after a range's last row read on to the end of the table (60 ms at 1M rows).
    select = f"SELECT {physical_select(columns)} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
    before = conn.execute(
        "SELECT seq, chain FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (after,)
    ).fetchone()
    previous_seq, previous_chain = (int(before[0]), str(canonical_chain(before[1]))) if before else (0, GENESIS_CHAIN)
    result = _RangeResult([], 0, previous_seq, previous_chain)
    problems = result.problems
    bound = until if until is not None else _MAX_SEQ
    last = after
    loads, JSONDecodeError, sha256 = orjson.loads, orjson.JSONDecodeError, hashlib.sha256
    names = codec.names if codec is not None else {}
    # chain_part of each text seen (kinds, studies, runs, sources' names repeat row after
    # row); only text and null are kept, so no two values that compare equal share a part
    # (1, 1.0 and True do, and their parts differ).
    parts: dict[Any, str] = {None: "-"}
    times: dict[int, str] = {}  # recording times' parts by their time codes (one per append)

    def part(value: Any) -> str:
        text = chain_part(value)
        if value.__class__ is str:
            if len(parts) > _PARTS_KEPT:
                parts.clear()
                parts[None] = "-"
            parts[value] = text
        return text

    def time_part(stored: Any) -> str:
        if stored.__class__ is not int:
            return parts.get(stored) or part(stored)
        if len(times) > _PARTS_KEPT:
            times.clear()
        text = times[stored] = chain_part(decode_time(stored))
        return text

    while True:
        rows = conn.execute(select, (last, bound, _BATCH)).fetchall()
        if not rows:
            break
        result.events += len(rows)
        for row in rows:
            seq, stored_id, kind, study_id, run_id, occurred_at, recorded_at, source, line, offset, body, stored_chain = row
            if seq != previous_seq + 1:
                problems.append(Problem(seq, "sequence", f"gap in sequence: {previous_seq} is followed by {seq}"))
            try:
                if codec is None:  # a server: every column holds its canonical value
                    values, text = row[:8], str(body).encode("utf-8")
                    kind, occurred_at = values[2], values[5]
                    hashed = chain_text(previous_chain, values, len(text))
                else:  # codec.decode's rule, the body kept as bytes, without calls on the common row
                    if kind.__class__ is int:
                        kind = names.get(kind) or codec.name(kind)
                    if source.__class__ is int:
                        source = f"{names.get(source) or codec.name(source)}:{line}:{offset}"
                    text = codec.body_bytes(body)
                    occurred_at = decode_time(occurred_at)
                    # chain_text of the decoded values, the parts of repeated ones made once
                    event_id = (f"{4 + 2 * len(stored_id)}:evt-{stored_id.hex()}" if stored_id.__class__ is bytes
                                else chain_part(stored_id))
                    hashed = (f"{previous_chain}\n{len(str(seq))}:{seq}\n{event_id}\n{parts.get(kind) or part(kind)}\n"
                              f"{parts.get(study_id) or part(study_id)}\n{parts.get(run_id) or part(run_id)}\n"
                              f"{chain_part(occurred_at)}\n{times.get(recorded_at) or time_part(recorded_at)}\n"
                              f"{chain_part(source)}\n{len(text)}:")
            except LedgerError as exc:
                problems.append(Problem(seq, "body", f"the stored row cannot be read back: {exc}"))
                previous_seq, previous_chain = seq, canonical_chain(stored_chain)
                continue
            # The common row decided here, without calls (a third of verify's time was
            # calls); anything else is judged by _row_problems.
            try:
                decoded = loads(text)
            except JSONDecodeError:
                decoded = None
            if (decoded.__class__ is not dict or b"\\ud" in text
                    or decoded.get("study_id") != study_id or decoded.get("run_id") != run_id
                    or decoded.get("at", decoded.get("timestamp")) != occurred_at
                    or (event_digest(kind, text) != stored_id if stored_id.__class__ is bytes
                        else event_id_of_bytes(kind, text) != stored_id)):
                problems.extend(_row_problems(
                    (seq, canonical_id(stored_id), kind, study_id, run_id, occurred_at), text, stored_id))
            digest = sha256(hashed.encode("utf-8"))
            digest.update(text)
            if stored_chain.__class__ is bytes:  # canonical_chain's rule, the digest compared as bytes
                broken, stored_chain = digest.digest() != stored_chain, stored_chain.hex()
            else:
                broken = digest.hexdigest() != stored_chain
            if broken:
                problems.append(Problem(
                    seq, "chain",
                    "chain broken: the row or the one before it was changed, removed, inserted or reordered"))
            previous_seq, previous_chain = seq, stored_chain
            if len(problems) > _MAX_PROBLEMS:
                del problems[_MAX_PROBLEMS + 1:]
        last = rows[-1][0]
    result.last_seq, result.last_chain = previous_seq, previous_chain
    return result


def _row_problems(values: tuple[Any, ...], text: bytes, stored_id: Any) -> list[Problem]:
    """What is wrong with one row's body, its columns and its id (the chain is checked apart)."""
    seq, event_id, kind, study_id, run_id, occurred_at = values[:6]
    found = []
    fields = _body_fields(text)
    if not fields[0]:
        found.append(Problem(seq, "body", "body is not a JSON object that can be read "
                                          "(invalid, or nested too deeply)"))
    elif b"\\ud" in text and has_lone_surrogate(text.decode("utf-8")):
        found.append(Problem(seq, "body", "body holds a lone UTF-16 surrogate: SQLite's JSON "
                                          "functions make bytes of it that are not UTF-8"))
    elif fields[1:] != (study_id, run_id, occurred_at):
        found.append(Problem(seq, "columns", "study_id, run_id or occurred_at disagree with the body"))
    matches = (event_digest(kind, text) == stored_id if stored_id.__class__ is bytes
               else event_id_of_bytes(kind, text) == event_id)
    if not matches:
        found.append(Problem(seq, "event_id", "event id does not match its kind and body (body or id edited)"))
    return found


def _check_ranges_in_processes(conn: sqlite3.Connection, uri: str, ranges: list[tuple[int, int]],
                               workers: int) -> list[_RangeResult]:
    """Check ``ranges`` with this process, on ``conn``, and ``workers - 1`` fresh interpreters
    reading ``uri``, each taking the next unchecked range as it finishes one; collect the
    results in range order.

    Ranges are handed out one at a time rather than split evenly up front: a child starts
    about 0.2 s after this process (it imports studyledger first), and on a shared machine
    either may be slowed for a while; taking the next range when free makes them finish
    together. Plain subprocesses rather than multiprocessing: spawn re-imports the caller's
    main module (a user's script without a ``__main__`` guard would start again), and a
    fork of the dashboard, which calls this from a thread, could inherit held locks. This
    process checks ranges itself instead of waiting: on two cores, one child and this
    process keep both busy.
    """
    # The ledger's address goes by environment, not argv: a server's URL may hold a password.
    env = {**os.environ, _URI_VARIABLE: uri}
    pending = deque(enumerate(ranges))  # popleft is atomic: the threads below need no lock
    results: dict[int, _RangeResult] = {}
    failures: list[str] = []
    children = [
        subprocess.Popen(
            [sys.executable, "-c", "from studyledger.audit.verify import _range_worker; _range_worker()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        for _ in range(workers - 1)
    ]

    starting = set(children)

    def feed(child: subprocess.Popen[bytes]) -> None:
        """Hand ``child`` one range at a time and keep what it finds."""
        assert child.stdin is not None and child.stdout is not None
        try:
            # Its first line says the child has started: no range waits on its imports. A
            # child that dies (or is stopped) before has taken nothing: this process checks
            # every range left.
            if not child.stdout.readline():
                return
            starting.discard(child)
            while pending:
                try:
                    index, (after, until) = pending.popleft()
                except IndexError:  # this process took the last one meanwhile
                    break
                child.stdin.write(f"{after} {until}\n".encode())
                child.stdin.flush()
                line = child.stdout.readline()
                if not line:
                    failures.append(f"a verify worker stopped with exit status {child.wait()}")
                    return
                data = json.loads(line)
                problems = [Problem(**item) for item in data.pop("problems")]
                results[index] = _RangeResult(problems=problems, **data)
        except Exception as exc:  # raised in the caller's thread below, not lost with this one
            failures.append(f"a verify worker failed ({exc!r})")
        finally:
            child.stdin.close()

    feeders = [threading.Thread(target=feed, args=(child,), daemon=True) for child in children]
    for feeder in feeders:
        feeder.start()
    try:
        while pending:
            try:
                index, (after, until) = pending.popleft()
            except IndexError:
                break
            results[index] = _check_range(conn, after, until)
        for child in list(starting):  # every range is checked: do not wait on its start-up
            child.kill()
    except BaseException:
        pending.clear()
        for child in children:
            child.kill()
        raise
    finally:
        for feeder in feeders:
            feeder.join()
        for child in children:
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
    if failures:
        raise RuntimeError(failures[0])
    return [results[index] for index in range(len(ranges))]


def _range_worker() -> None:
    """Entry point of a worker process: say ``ready``, then check each range read from stdin
    (``after until`` a line) and print what it found as a line of JSON."""
    conn = connect_reader(os.environ[_URI_VARIABLE])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            after, until = map(int, line.split())
            result = _check_range(conn, after, until)
            sys.stdout.write(json.dumps({**asdict(result), "problems": [asdict(p) for p in result.problems]}) + "\n")
            sys.stdout.flush()
    finally:
        conn.close()


def _ranges(conn: sqlite3.Connection, parts: int) -> list[tuple[int, int]]:
    """Split the stored rows into ``parts`` seq ranges of about equal row counts."""
    # Each bound by its own subquery: SQLite reads a lone min() or max() off the primary key,
    # but scans the whole table for the two together (0.12 s at 1M rows, before any worker starts).
    low, high = conn.execute("SELECT coalesce((SELECT min(seq) FROM events), 0), "
                             "coalesce((SELECT max(seq) FROM events), 0)").fetchone()
    bounds = [low - 1 + (high - low + 1) * i // parts for i in range(parts)] + [high]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def verify(ledger: Ledger | Store, *, checkpoint: Checkpoint | None = None,
           workers: int | None = None) -> VerifyReport:
    """Check every event of a ledger and report every problem found (up to 1,000).

    Reads only: open the ledger read-only (``Ledger.open(path, readonly=True)``) and the
    file is never changed by its audit.

    Args:
        ledger: The ledger (or its store).
        checkpoint: A checkpoint taken earlier (:func:`studyledger.audit.checkpoint.load`):
            also prove that the ledger still extends it, which catches a cut-off tail and a
            consistently rewritten history that the chain alone cannot.
        workers: Processes to check with. Every row is checked against the stored row
            before it, so ranges of the ledger are checked independently and the result
            is the same as one scan's. By default a large ledger uses every core and a
            small one (under :data:`PARALLEL_FROM` events) is checked in this process.
    """
    store = ledger.store if isinstance(ledger, Ledger) else ledger
    report = VerifyReport()
    report.problems.extend(schema_problems(store))
    report.problems.extend(_outside_the_chain(store.conn, report))
    if workers is None:
        size = store.head().seq
        workers = min(os.cpu_count() or 1, 4) if size >= PARALLEL_FROM else 1
    ranges = _ranges(store.conn, max(workers, -(-store.head().seq // _RANGE_ROWS))) if workers > 1 else []
    if len(ranges) > 1:
        results = _check_ranges_in_processes(store.conn, store.read_uri, ranges, workers)
    else:
        results = [_check_range(store.conn, 0, None)]
    for result in results:
        report.events += result.events
        report.problems.extend(result.problems)
    report.head_seq, report.head_chain = results[-1].last_seq, results[-1].last_chain
    report.problems.extend(_count_problem(store.conn, report))
    if checkpoint is not None:
        report.problems.extend(checkpoint_problems(store, checkpoint))
    if len(report.problems) > _MAX_PROBLEMS:
        report.truncated = True
        del report.problems[_MAX_PROBLEMS:]
    return report


def _normalized(sql: str) -> str:
    return " ".join(sql.split())


def schema_problems(store: Store) -> list[Problem]:
    """What is wrong with the schema that keeps ``events`` append-only.

    Triggers are compared by their SQL (on PostgreSQL, with their functions' code), not their
    names: a trigger of the right name that does nothing protects nothing. Any other trigger on ``events`` is reported too, since
    it runs on every write of history.
    """
    problems = []
    version = store.meta().get("schema_version")
    if version != str(STORE_SCHEMA_VERSION):
        problems.append(Problem(0, "schema", f"ledger schema version is {version!r}, expected "
                                             f"{STORE_SCHEMA_VERSION} (a writing command such as "
                                             "`studyledger init` upgrades it)"))
    table = store.events_definition()
    if table is None or _normalized(table) != _normalized(store.layout_ddl()):
        problems.append(Problem(0, "schema", "the events table is not the one studyledger creates "
                                             "(columns or constraints changed)"))
    present = store.events_triggers()
    for name, ddl in store.trigger_ddl.items():
        sql = present.get(name)
        if sql is None:
            problems.append(Problem(0, "triggers", f"immutability trigger {name} is missing: rows can be changed"))
        elif sql != ddl:
            problems.append(Problem(0, "triggers", f"trigger {name} is not the one studyledger installs: "
                                                   "rows can be changed"))
    for name in sorted(set(present) - set(store.trigger_ddl)):
        problems.append(Problem(0, "triggers", f"trigger {name} on events is not studyledger's: "
                                               "it runs on every write of history"))
    if isinstance(store, SQLiteStore) and not store.legacy:
        problems.extend(_codec_problems(store.conn))
    return problems


def _codec_problems(conn: sqlite3.Connection) -> list[Problem]:
    """What is wrong with the names and dictionaries a compact ledger's rows are read with
    (codec.py): their triggers, and each dictionary against the SHA-256 stored with it.

    A changed name or dictionary would also show in the rows using it (their chain or id);
    this says which part of the ledger was changed.
    """
    problems = []
    present = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                "AND tbl_name IN ('ledger_names', 'ledger_dictionaries')").fetchall())
    for name, ddl in CODEC_TRIGGER_DDL.items():
        if present.get(name) != ddl:
            problems.append(Problem(0, "triggers", f"trigger {name} is missing or not the one studyledger "
                                                   "installs: names or dictionaries can be changed"))
    for dict_id, data, sha in conn.execute("SELECT id, CAST(data AS BLOB), sha256 FROM ledger_dictionaries ORDER BY id"):
        if hashlib.sha256(data).hexdigest() != sha:
            problems.append(Problem(0, "dictionary", f"compression dictionary {dict_id} does not match its "
                                                     "SHA-256: it was changed, and the bodies it reads with it"))
    return problems


def _outside_the_chain(conn: sqlite3.Connection, report: VerifyReport) -> list[Problem]:
    """Rows the chain cannot see: below seq 1 (every range starts after 0), and a count
    that disagrees with the last seq. Such a row is invisible to replay and checkpoints,
    and its id would make an honest event with that id look already stored."""
    problems = []
    for (seq,) in conn.execute(f"SELECT seq FROM events WHERE seq < 1 ORDER BY seq LIMIT {_MAX_PROBLEMS}"):
        report.events += 1
        problems.append(Problem(seq, "sequence", f"row at seq {seq}, below 1: outside the chain, "
                                                 "where verify, replay and checkpoints never look"))
    return problems


def _count_problem(conn: sqlite3.Connection, report: VerifyReport) -> list[Problem]:
    """``count = max(seq)`` holds for any 1..n: say so when nothing else explained why not."""
    count, last = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM events").fetchone()
    if count == last or any(p.check == "sequence" for p in report.problems):
        return []
    return [Problem(0, "sequence", f"{count} rows but the last seq is {last}")]


def checkpoint_problems(store: Store, checkpoint: Checkpoint) -> list[Problem]:
    """Every way in which the ledger fails to extend ``checkpoint`` (empty when it does)."""
    problems: list[Problem] = []
    n = checkpoint.tree_size
    with read_snapshot(store.conn):
        count = store.event_count()
        if count < n:
            problems.append(Problem(checkpoint.head_seq, "checkpoint",
                                    f"the ledger holds {count} events but the checkpoint of "
                                    f"{checkpoint.created_at} saw {n}: events were removed"))
        row = store.conn.execute("SELECT chain FROM events WHERE seq = ?", (checkpoint.head_seq,)).fetchone()
        if checkpoint.head_seq and row is None:
            problems.append(Problem(checkpoint.head_seq, "checkpoint",
                                    f"seq {checkpoint.head_seq}, the checkpoint's head, is gone: "
                                    "the tail was cut off"))
        elif checkpoint.head_seq and canonical_chain(row[0]) != checkpoint.head_chain:
            problems.append(Problem(checkpoint.head_seq, "checkpoint",
                                    f"chain at seq {checkpoint.head_seq} differs from the checkpoint's: "
                                    "history up to it was rewritten"))
        if count >= n:
            root = merkle.merkle_root(event_ids(store.conn, limit=n)).hex()
            if root != checkpoint.merkle_root:
                # A root cannot say which leaf differs: name the checkpoint's head.
                problems.append(Problem(checkpoint.head_seq or 1, "checkpoint",
                                        f"the Merkle root of the first {n} events differs from the "
                                        "checkpoint's: events it covers were changed, removed, "
                                        "inserted or reordered"))
    return problems
