"""Exactly-once tailing of JSONL files into a ledger.

Each file's read position lives in the ``ingest_files`` table of the ledger itself and is
updated in the SAME transaction as the events its lines produced, so a process killed at
any instant resumes exactly where its last commit left off: nothing lost, nothing twice.
Lines are committed in batches (:data:`BATCH_LINES` lines or :data:`BATCH_BYTES` bytes),
never one transaction per line.

A file is known by device and inode, not by name, so a renamed (rotated) file is read on
to its end under its new name. A stored offset is trusted only when the bytes before it are
the bytes that were read: the sha256 of the whole consumed prefix is committed with the
offset (kept as lines are read, from the very bytes parsed), and a pass hashes the file's
prefix again before reading on. A file truncated in place (copytruncate), truncated and
regrown past the offset, or rewritten under the same inode is read again from its start;
event ids are content hashes, so a re-read appends only lines not stored before.

A trailing line without its newline is left for the next pass. Reading streams in chunks
of :data:`CHUNK` bytes, so memory stays flat for any file size (bounded by the line limit).
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import projections
from ..codec import prepare
from ..errors import EventConflictError, InputError, ValidationError
from ..events import NewEvent
from ..ledger import Ledger
from ..query import INGEST_FILES_TABLE
from ..store import SQLiteStore, is_sqlite, utc_now_precise
from . import adapters
from .adapters import LineAdapter
from .lines import (
    DEFAULT_LINE_LIMIT,
    TOO_LONG_KEEP,
    TooLong,
    is_blank,
    decode_line,
    path_text,
    rejection_event,
    source_prefix,
)
from ..worker import Worker, WorkerLost, can_fork, collector_paused

CHUNK = 1 << 20
BATCH_LINES = 10_000
BATCH_BYTES = 2 << 20
"""A batch's bounds. A commit writes every page its batch touched, the id index's scattered
ones included, so fewer, larger batches store a line in less time; past about 2 MiB they
gain hardly more for more memory (figures in the commit that chose these)."""
WORKER_MIN_BYTES = 8 << 20
"""Unread bytes of a file from which a worker process converts its lines (about 20,000
trace lines, a second of work): a fork costs a few milliseconds, and a small file is read
before a worker would have paid for itself."""
TAIL_CHECK = 64
"""Bytes before the offset a pass that trusts its held digest compares anyway."""
HELD_DIGESTS = 4096
"""Files whose committed prefix digest a tailer keeps in memory (about 200 bytes each)."""
STATE_TABLE = INGEST_FILES_TABLE
JSONL_MARKERS = (".jsonl", ".ndjson")
COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4"})

_STATE_DDL = f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    line INTEGER NOT NULL,
    prefix_sha256 TEXT,
    lines_accepted INTEGER NOT NULL DEFAULT 0,
    lines_rejected INTEGER NOT NULL DEFAULT 0,
    resets INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    UNIQUE (device, inode)
)"""
_EMPTY_HASH = hashlib.sha256(b"").hexdigest()
_KEPT_COLUMNS = "id, path, device, inode, offset, line, lines_accepted, lines_rejected, resets, updated_at"

Progress = Callable[[int], None]


@dataclass(kw_only=True)
class LineCounts:
    """What reading did to lines and events; every complete line read is accepted or rejected.

    Attributes:
        lines_read: Complete lines committed.
        lines_accepted: Of those, lines that gave events (or were blank).
        lines_rejected: Of those, lines kept as ``line_rejected`` events.
        events_appended: Events newly stored.
        duplicates: Events that were already stored (re-read or repeated facts).
        bytes_read: Bytes committed.
    """

    lines_read: int = 0
    lines_accepted: int = 0
    lines_rejected: int = 0
    events_appended: int = 0
    duplicates: int = 0
    bytes_read: int = 0


@dataclass(kw_only=True)
class FileStats(LineCounts):
    """What one pass over one file did.

    Attributes:
        path: The file (absolute).
        offset: The committed offset after the pass.
        pending_bytes: Bytes of an unfinished last line, waiting for its newline.
        reset: Why reading restarted at byte 0 (``truncated`` or ``replaced``), if it did.
        missing: The file was gone when the pass started.
        raced: Another process committed this file meanwhile; the pass stopped early.
    """

    path: str
    offset: int = 0
    pending_bytes: int = 0
    reset: str | None = None
    missing: bool = False
    raced: bool = False


@dataclass(slots=True)
class _Line:
    """One complete line waiting in a batch, with the events it gave.

    ``data`` is None for a line a worker read: its bytes are read again from the file in
    the rare case they are needed (a line the store refuses becomes a rejection).
    """

    number: int
    offset: int
    end: int
    data: bytes | TooLong | None
    events: list[NewEvent]
    accepted: bool


@dataclass(frozen=True, slots=True)
class _Batch:
    """Lines to commit together, the offset after the last and the digest of every byte before it.

    ``prepared`` holds, by event id, what a worker made of each event for the store
    (:func:`~studyledger.codec.prepare`); empty when this process converted the lines.
    """

    lines: list[_Line]
    end: int
    prefix_sha256: str
    prepared: dict[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a committed batch leaves a file, and the sha256 of every byte before it."""

    path: str
    offset: int
    line: int
    prefix_sha256: str


# What one line's events can do to an append that another line's cannot: conflict with a
# stored id, or hold a value SQLite refuses to bind. Anything else (a busy or full disk)
# concerns the whole batch and propagates.
_LINE_FAULTS = (EventConflictError, ValidationError, sqlite3.IntegrityError, sqlite3.InterfaceError,
                sqlite3.ProgrammingError, OverflowError, UnicodeError)


@dataclass(slots=True)
class _State:
    """The stored position of one file, as this pass last committed or read it.

    ``row_id`` is None for a file never committed: its row is inserted by its first
    commit, in the same transaction, so a file costs no transaction of its own.
    """

    row_id: int | None
    offset: int
    line: int
    device: int
    inode: int
    prefix: Prefix


class _Raced(Exception):
    """Another process moved this file's offset since this pass read it."""


class _PrefixDigest:
    """sha256 of a file's bytes from its start up to a point, read back with ``pread``.

    A pass keeps the digest of what it reads as it reads (:class:`Prefix`); this reads the
    file again, for a stored offset to check and for a line the store refused after the
    pass had read on. Each byte is hashed once however far it goes, in chunks.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.position = 0

    def line(self, item: _Line) -> bytes | TooLong:
        """A line's bytes: as read, or read again for a line a worker read."""
        return item.data if item.data is not None else os.pread(self.fd, item.end - item.offset - 1, item.offset)

    def upto(self, end: int) -> str:
        if end < self.position:
            self.digest, self.position = hashlib.sha256(), 0
        while self.position < end:
            chunk = os.pread(self.fd, min(CHUNK, end - self.position), self.position)
            if not chunk:
                break
            self.digest.update(chunk)
            self.position += len(chunk)
        return self.digest.copy().hexdigest()


def ensure_state_table(ledger: Ledger) -> None:
    """Create the ingest state table when missing (it is ingest state, not a projection).

    A table from before prefix digests (it checked the first KiB and the 64 bytes before
    the offset) is rebuilt with every digest unknown: each file is then read once more
    from its start, which stores nothing twice, rather than trusted on a lucky check.
    """
    with ledger.store.transaction():
        columns = {row[1] for row in ledger.conn.execute(f"PRAGMA table_info({STATE_TABLE})")}
        if columns and "prefix_sha256" not in columns:
            ledger.conn.execute(f"ALTER TABLE {STATE_TABLE} RENAME TO {STATE_TABLE}_old")
            ledger.conn.execute(_STATE_DDL)
            ledger.conn.execute(f"INSERT INTO {STATE_TABLE} ({_KEPT_COLUMNS}) "
                                f"SELECT {_KEPT_COLUMNS} FROM {STATE_TABLE}_old")
            ledger.conn.execute(f"DROP TABLE {STATE_TABLE}_old")
        else:
            ledger.conn.execute(_STATE_DDL)


def is_jsonl_name(name: str) -> bool:
    """Whether a file found in a folder is JSONL to ingest.

    Rotated names (``app.jsonl.1``, ``app.jsonl.2026-01-01``) count, so a rotated file is
    still read to its end; compressed archives and hidden (temporary) files do not.
    """
    if name.startswith("."):
        return False
    lowered = name.lower()
    if Path(lowered).suffix in COMPRESSED_SUFFIXES:
        return False
    return any(lowered.endswith(marker) or marker + "." in lowered for marker in JSONL_MARKERS)


class Prefix:
    """The running sha256 of a file's bytes from 0 to the offset read so far.

    hashlib cannot save a hash's state, so the digest of the whole prefix is committed and
    a pass starts by hashing the prefix again (:func:`hash_prefix`), which both checks the
    stored offset and gives the state to read on with.
    """

    __slots__ = ("hash",)

    def __init__(self, started: Any = None) -> None:
        self.hash: Any = started if started is not None else hashlib.sha256()

    def hexdigest(self) -> str:
        """The digest of the prefix so far."""
        return str(self.hash.hexdigest())


def read_lines(
    file: IO[bytes], offset: int, limit: int, prefix: Prefix | None = None
) -> Iterator[tuple[int, int, bytes | TooLong]]:
    """Complete lines from ``offset`` on: ``(start, end after the newline, bytes)``.

    A line over ``limit`` bytes is hashed while it streams past and yielded as
    :class:`TooLong`, so memory never holds more than ``limit + CHUNK`` bytes. An
    unfinished last line is not yielded: it waits for its newline.

    Args:
        prefix: The digest of the bytes before ``offset``. Each line's bytes (newline
            included) are added just before the line is yielded, from the very bytes read,
            so between yields it is the digest of exactly the prefix consumed so far.
    """
    file.seek(offset)
    position, pending = offset, b""
    skipping: Any = None  # a running sha256 while a line over the limit streams past
    prefix_with_it: Any = None  # the prefix's digest with that line's bytes so far
    head, skipped = b"", 0
    while chunk := file.read(CHUNK):
        if skipping is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                skipping.update(chunk)
                if prefix_with_it is not None:
                    prefix_with_it.update(chunk)
                skipped += len(chunk)
                continue
            skipping.update(chunk[:newline])
            if prefix is not None:
                prefix_with_it.update(chunk[: newline + 1])
                prefix.hash = prefix_with_it
            skipped += newline
            yield position, position + skipped + 1, TooLong(head, skipped, skipping.hexdigest())
            position += skipped + 1
            skipping, prefix_with_it, chunk = None, None, chunk[newline + 1 :]
        # Split at once, keeping no joined copy: a line of many megabytes is held once.
        parts = (pending + chunk if pending else chunk).split(b"\n")
        pending = parts.pop()
        for part in parts:
            end = position + len(part) + 1
            if prefix is not None:
                prefix.hash.update(part)
                prefix.hash.update(b"\n")
            if len(part) > limit:
                yield position, end, TooLong(part[:TOO_LONG_KEEP], len(part), hashlib.sha256(part).hexdigest())
            else:
                yield position, end, part
            position = end
        if len(pending) > limit:
            skipping, head, skipped = hashlib.sha256(pending), pending[:TOO_LONG_KEEP], len(pending)
            if prefix is not None:
                prefix_with_it = prefix.hash.copy()
                prefix_with_it.update(pending)
            pending = b""


class Tailer:
    """Reads files into one ledger, committing offsets with the events they produced.

    Args:
        ledger: The open ledger (its connection is used from one thread at a time).
        line_limit: Longest line parsed, in bytes; longer lines are rejected and skipped.
        adapter: A user's line adapter, tried before the built-in formats.
        on_progress: Called with the number of bytes each committed batch consumed.
        worker_min_bytes: Read a file with a worker process (both cores: see
            :meth:`_worth_a_worker`) when this much of it is unread; None never does.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        line_limit: int = DEFAULT_LINE_LIMIT,
        adapter: LineAdapter | None = None,
        on_progress: Progress | None = None,
        batch_lines: int = BATCH_LINES,
        batch_bytes: int = BATCH_BYTES,
        worker_min_bytes: int | None = WORKER_MIN_BYTES,
    ) -> None:
        if line_limit < 1:
            raise ValueError("line_limit must be at least 1 byte")
        self.ledger = ledger
        self.line_limit = line_limit
        self.adapter = adapter
        self.on_progress = on_progress
        self.batch_lines = batch_lines
        self.batch_bytes = batch_bytes
        self.worker_min_bytes = worker_min_bytes
        # (device, inode) -> (offset, digest of [0, offset), its last bytes) as this tailer
        # last committed them.
        self._held: OrderedDict[tuple[int, int], tuple[int, Any, bytes]] = OrderedDict()
        ensure_state_table(ledger)

    @property
    def conn(self) -> sqlite3.Connection:
        """The ledger's connection."""
        return self.ledger.conn

    def ingest_path(self, path: str | os.PathLike[str], *, within: str | None = None) -> FileStats:
        """Read a file from its committed offset to its last complete line.

        Args:
            path: The file.
            within: The folder it was found in: the file must be in it, by its real path
                (see :func:`open_regular`). None for a file named directly.

        Returns:
            What the pass did; ``missing`` when the file is gone (not an error: files are
            deleted under watchers all the time).

        Raises:
            OSError: the file exists but cannot be read (permissions, not a regular file,
                a symbolic link out of ``within``).
            LedgerBusyError: another writer held the ledger past every retry.
        """
        name = os.path.abspath(path)
        try:
            file = open_regular(name, within=within)
        except FileNotFoundError:
            return FileStats(path=name, missing=True)
        with file:
            return self.ingest_file(file, name)

    def ingest_file(self, file: IO[bytes], path: str, *, verify: bool = True) -> FileStats:
        """Read an open file from its committed offset to its last complete line.

        The file is identified by its descriptor's device and inode, so a handle kept
        open across a rename or a deletion still reads the right file to its end.

        Args:
            file: The file, opened for binary reading.
            path: Its name as the filesystem knows it (recorded as text: see
                :func:`~studyledger.ingestion.lines.path_text`).
            verify: Hash the bytes before the stored offset and compare them with the
                committed digest before reading on. False skips that when this tailer
                itself committed the stored offset (it then holds the digest in memory);
                it costs the bytes appended only, and stays sound as long as a verifying
                pass follows: the digest committed always describes the bytes that were
                read, so a prefix changed meanwhile is found then and read again. The
                watcher verifies each file at its reconcile scans.
        """
        stats = FileStats(path=path)
        try:
            self._ingest_open(file, path, stats, verify)
        except _Raced:
            stats.raced = True
        return stats

    # -- one file -------------------------------------------------------------------

    def _ingest_open(self, file: IO[bytes], name: str, stats: FileStats, verify: bool) -> None:
        fd = file.fileno()
        info = os.fstat(fd)
        state = self._resume(fd, info, name, stats, verify)
        reread = _PrefixDigest(fd)
        key = (state.device, state.inode)
        if self._worth_a_worker(info.st_size - state.offset):
            try:
                position = self._read_with_worker(file, name, state, stats, reread)
            except WorkerLost:
                # Everything committed stays; read on from the last commit in this process,
                # checking the prefix as a new pass would.
                state = self._resume(fd, os.fstat(fd), name, stats, True)
            else:
                stats.offset = state.offset
                stats.pending_bytes = max(0, position - state.offset)
                self._held.pop(key, None)  # the worker held the digest; a later pass hashes again
                return
        self._commit_each(self._batches(file, name, state), name, state, stats, reread)
        stats.offset = state.offset
        stats.pending_bytes = max(0, file.tell() - state.offset)
        # Every line read was committed: the digest is that of exactly [0, state.offset).
        tail = os.pread(fd, min(TAIL_CHECK, state.offset), state.offset - min(TAIL_CHECK, state.offset))
        self._held[key] = (state.offset, state.prefix.hash.copy(), tail)
        self._held.move_to_end(key)
        while len(self._held) > HELD_DIGESTS:
            self._held.popitem(last=False)

    def _batches(self, file: IO[bytes], name: str, state: _State) -> Iterator[_Batch]:
        """The file's complete lines from ``state.offset`` on, converted, in batches.

        ``state.prefix`` follows the lines read (:func:`read_lines`), so at each batch's end
        it is the digest of every byte before that end.
        """
        source = source_prefix(name)
        lines: list[_Line] = []
        size = 0
        number = state.line
        for start, end, data in read_lines(file, state.offset, self.line_limit, state.prefix):
            number += 1
            lines.append(self._convert(name, source, number, start, end, data, state.prefix))
            size += end - start
            if len(lines) >= self.batch_lines or size >= self.batch_bytes:
                yield _Batch(lines, end, state.prefix.hexdigest())
                lines, size = [], 0
        if lines:
            yield _Batch(lines, lines[-1].end, state.prefix.hexdigest())

    def _worth_a_worker(self, unread: int) -> bool:
        """Whether to read this file with a worker process (see :mod:`.worker`).

        Only when there is enough to read for the process start (milliseconds) to pay,
        lines are read by the built-in formats (a user's adapter may keep state across
        lines, which a child's copy would keep apart), the ledger is a SQLite file (a
        server's round trips, not conversion, bound the rate there; its connection is a
        subclass of SQLite's, hence the exact type) and this process may fork
        (:func:`can_fork`).
        """
        return (self.worker_min_bytes is not None and unread >= self.worker_min_bytes and self.adapter is None
                and is_sqlite(self.ledger.conn) and can_fork())

    def _read_with_worker(self, file: IO[bytes], name: str, state: _State, stats: FileStats,
                          reread: _PrefixDigest) -> int:
        """Commit the batches a worker converts, as they come; the offset it read to.

        The worker is a fork of this process: it reads the file with this pass's state as
        it is now (offset and prefix digest) while this process stores the batch before.

        Raises:
            WorkerLost: the worker ended early; every batch it sent before is committed.
        """
        with Worker(lambda: self._batches(file, name, state), _pack, _unpack, file.tell) as worker:
            self._commit_each(iter(worker), name, state, stats, reread)
            position: int = worker.result
        return position

    def _commit_each(self, batches: Iterator[_Batch], name: str, state: _State, stats: FileStats,
                     reread: _PrefixDigest) -> None:
        """Commit the batches in order, each made and committed with the collector paused."""
        while True:
            with collector_paused():
                batch = next(batches, None)
                if batch is None:
                    return
                self._commit(name, state, batch, stats, reread)
                del batch  # not held while the next one is made: a batch may be megabytes

    def _resume(self, fd: int, info: os.stat_result, name: str, stats: FileStats, verify: bool) -> _State:
        """The state to read on from: stored and verified, reset, or new.

        The stored offset is trusted only when the file's bytes before it hash to the
        digest committed with it; the hashing also gives the running digest to read on
        with. A digest that is unknown (a table from an older version) is a doubt, and a
        doubt is a re-read: it costs time, never a duplicate. Without ``verify``, the
        digest this tailer holds for the very offset and digest stored stands in for the
        hashing (see :meth:`ingest_file`).
        """
        row = self.conn.execute(
            f"SELECT id, path, offset, line, prefix_sha256 FROM {STATE_TABLE} WHERE device = ? AND inode = ?",
            (info.st_dev, info.st_ino),
        ).fetchone()
        if row is None:
            return _State(None, 0, 0, info.st_dev, info.st_ino, Prefix())
        row_id, stored_path, offset, line, digest = row
        state = _State(row_id, offset, line, info.st_dev, info.st_ino, Prefix())
        stats.offset = offset
        problem: str | None
        held = self._held.get((info.st_dev, info.st_ino))
        if info.st_size < offset:
            problem = "truncated"
        elif (not verify and held is not None and held[0] == offset and held[1].hexdigest() == digest
              and os.pread(fd, len(held[2]), offset - len(held[2])) == held[2]):
            # The bytes just before the offset are checked even so: they catch most
            # truncations at once, before a line is read from a place that is no longer
            # a line's start (the next verifying pass catches the rest).
            state.prefix, problem = Prefix(held[1].copy()), None
        else:
            state.prefix = hash_prefix(fd, offset)
            problem = None if digest is not None and state.prefix.hexdigest() == digest else "replaced"
        if problem is not None:
            self._reset(state, name, problem)
            stats.reset = problem
        elif stored_path != path_text(name):
            # Renamed (rotated): keep reading the same file under its new name.
            with self.ledger.store.transaction():
                self._check_position(state)
                self.conn.execute(f"UPDATE {STATE_TABLE} SET path = ? WHERE id = ?", (path_text(name), row_id))
        return state

    def _reset(self, state: _State, name: str, why: str) -> None:
        with self.ledger.store.transaction():
            self._check_position(state)
            self.conn.execute(
                f"UPDATE {STATE_TABLE} SET path = ?, offset = 0, line = 0, prefix_sha256 = ?, "
                f"resets = resets + 1, updated_at = ? WHERE id = ?",
                (path_text(name), _EMPTY_HASH, utc_now_precise(), state.row_id),
            )
        state.offset = state.line = 0
        state.prefix = Prefix()

    def _check_position(self, state: _State) -> None:
        """Refuse to write when another process moved the offset since it was read."""
        row = self.conn.execute(
            f"SELECT offset, line FROM {STATE_TABLE} WHERE id = ?", (state.row_id,)
        ).fetchone()
        if row is None or (row[0], row[1]) != (state.offset, state.line):
            raise _Raced

    # -- lines ----------------------------------------------------------------------

    def _convert(self, name: str, source: str, number: int, offset: int, end: int, data: bytes | TooLong,
                 prefix: Prefix) -> _Line:
        """Turn one line into its events, or into its rejection.

        ``source`` is :func:`source_prefix` of the file; ``prefix`` the digest of the file
        through this line's newline (read_lines added the line before handing it out): what
        a rejection names as the content it ends.
        """
        if isinstance(data, TooLong):
            reason = f"line longer than the limit of {self.line_limit} bytes ({data.length} bytes)"
            return _Line(number, offset, end, data, [rejection_event(name, number, offset, reason, data,
                                                                     prefix_sha256=prefix.hexdigest())], False)
        if is_blank(data):
            return _Line(number, offset, end, data, [], True)
        try:
            value, decoded = decode_line(data)
            found = adapters.events_from_line(value, source=f"{source}{number}:{offset}", adapter=self.adapter,
                                              decoded=decoded)
            return _Line(number, offset, end, data, found, True)
        except InputError as exc:
            reason = str(exc) or type(exc).__name__
        return _Line(number, offset, end, data, [rejection_event(name, number, offset, reason, data,
                                                                 prefix_sha256=prefix.hexdigest())], False)

    # -- committing -----------------------------------------------------------------

    def _commit(self, name: str, state: _State, batch: _Batch, stats: FileStats, reread: _PrefixDigest) -> None:
        """Append a batch's events and move the offset to its end, in one transaction."""
        end, lines = batch.end, batch.lines
        position = _Position(path=name, offset=end, line=lines[-1].number, prefix_sha256=batch.prefix_sha256)
        with self._preparing(batch.prepared):
            try:
                appended, duplicates, row_id = self._store(state, lines, position, reread, each=False)
            except _LINE_FAULTS:
                # One unstorable line must not block the file: store line by line, keeping the
                # lines the store refuses as rejections.
                appended, duplicates, row_id = self._store(state, lines, position, reread, each=True)
        state.row_id = row_id
        accepted = sum(1 for item in lines if item.accepted)
        stats.lines_read += len(lines)
        stats.lines_accepted += accepted
        stats.lines_rejected += len(lines) - accepted
        stats.events_appended += appended
        stats.duplicates += duplicates
        stats.bytes_read += end - state.offset
        if self.on_progress is not None:
            self.on_progress(end - state.offset)
        state.offset, state.line = end, lines[-1].number

    def _preparing(self, prepared: dict[str, tuple[Any, ...]]) -> AbstractContextManager[None]:
        """The store's codec using what a worker prepared (a worker reads into SQLite only)."""
        store = self.ledger.store
        return store.codec.preparing(prepared) if prepared and isinstance(store, SQLiteStore) else nullcontext()

    def _store(
        self, state: _State, batch: list[_Line], position: _Position, reread: _PrefixDigest, *, each: bool
    ) -> tuple[int, int, int]:
        """One transaction: the batch's events, then the new offset.

        With ``each``, every line gets a savepoint, and a line whose events the store
        refuses (an integer too large for SQLite, a conflicting id) is rolled back alone
        and kept as a rejection instead.

        Returns:
            Events appended, duplicates, and the file's state row id.
        """
        appended = duplicates = 0
        with self.ledger.store.transaction():
            row_id = self._claim_row(state)
            if each:
                for item in batch:
                    self.conn.execute("SAVEPOINT tail_line")
                    try:
                        result = self.ledger.append(item.events)
                    except _LINE_FAULTS as exc:
                        self.conn.execute("ROLLBACK TO tail_line")
                        item.accepted = False
                        # The pass read on past this line: its prefix (and, if a worker
                        # read it, the line) is read again.
                        item.events = [rejection_event(
                            position.path, item.number, item.offset,
                            f"cannot store ({type(exc).__name__}: {exc})", reread.line(item),
                            prefix_sha256=reread.upto(item.end),
                        )]
                        result = self.ledger.append(item.events)
                    self.conn.execute("RELEASE tail_line")
                    appended += len(result.appended)
                    duplicates += result.duplicates
            else:
                result = self.ledger.append([event for item in batch for event in item.events])
                appended, duplicates = len(result.appended), result.duplicates
            accepted = sum(1 for item in batch if item.accepted)
            self.conn.execute(
                f"UPDATE {STATE_TABLE} SET path = ?, offset = ?, line = ?, prefix_sha256 = ?, "
                f"lines_accepted = lines_accepted + ?, lines_rejected = lines_rejected + ?, updated_at = ? "
                f"WHERE id = ?",
                (path_text(position.path), position.offset, position.line, position.prefix_sha256, accepted,
                 len(batch) - accepted, utc_now_precise(), row_id),
            )
        return appended, duplicates, row_id

    def _claim_row(self, state: _State) -> int:
        """The file's state row, checked unmoved or newly inserted; inside the transaction."""
        if state.row_id is not None:
            self._check_position(state)
            return state.row_id
        claimed = self.conn.execute(
            f"INSERT INTO {STATE_TABLE} (path, device, inode, offset, line, prefix_sha256, updated_at) "
            f"VALUES ('', ?, ?, 0, 0, ?, '') ON CONFLICT (device, inode) DO NOTHING RETURNING id",
            (state.device, state.inode, _EMPTY_HASH),
        ).fetchone()
        if claimed is None:
            raise _Raced  # another process committed this file first
        return int(claimed[0])


def _pack(batch: _Batch) -> tuple[Any, ...]:
    """A batch as plain values for the pipe from a worker (see :mod:`.worker`), with what
    the store's codec would make of each event alone (:func:`~studyledger.codec.prepare`):
    the worker is the less busy of the two.

    A line's bytes stay behind (read again if ever needed), and so does an observation's
    decoded body: the fold needs only a few of its fields
    (:func:`~studyledger.projections.observation_row`), and sending a body costs more
    than parsing it. Other events keep their bodies: they fold in Python.
    """
    prepared: dict[str, tuple[Any, ...]] = {}
    lines = []
    for line in batch.lines:
        events = []
        for event in line.events:
            row = projections.observation_row(event.kind, event.data, event.misfits)
            data, misfits = (None, ()) if row is not None else (event.data, event.misfits)
            events.append((event.kind, event.body, event.event_id, event.study_id, event.run_id, event.occurred_at,
                           event.source, event.recorded_at, data, misfits, row))
            if event.event_id not in prepared:  # the first of an id, as the store keeps
                try:
                    prepared[event.event_id] = prepare(event.event_id, event.occurred_at, event.source)
                except ValidationError:
                    pass  # the writer meets it again and says what is wrong
        kept = line.data if isinstance(line.data, TooLong) else None
        lines.append((line.number, line.offset, line.end, kept, events, line.accepted))
    return batch.end, batch.prefix_sha256, lines, prepared


def _unpack(packed: tuple[Any, ...]) -> _Batch:
    """The batch :func:`_pack` packed."""
    end, digest, lines, prepared = packed
    return _Batch([_Line(number, offset, after, kept, [NewEvent(*event) for event in events], accepted)
                   for number, offset, after, kept, events, accepted in lines], end, digest, prepared)


def hash_prefix(fd: int, length: int) -> Prefix:
    """The digest of a file's first ``length`` bytes, to read on with (memory stays flat)."""
    reader = _PrefixDigest(fd)
    reader.upto(length)
    return Prefix(reader.digest)


def open_regular(path: str, *, within: str | None = None) -> IO[bytes]:
    """Open a regular file for binary reading, never blocking, never leaving ``within``.

    The file is opened with ``O_NONBLOCK`` and checked on the descriptor (``fstat``), not
    by a ``stat`` before the open: a FIFO swapped in between would block the open forever.

    With ``within`` (the folder the file was found in), a symbolic link is followed only
    to a file inside that folder: the file's real path must lie under the folder's, and it
    is then opened one component at a time from the folder without following any link
    (``O_NOFOLLOW``), so a link swapped in after the check cannot lead out either. A drop
    folder's writer cannot make the ingester read what it was not given.

    Raises:
        FileNotFoundError: it is gone (or a link leads nowhere).
        OSError: it is not a regular file, leads out of ``within``, or cannot be read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if within is None:
        fd = os.open(path, flags)
    else:
        root = os.path.realpath(within)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            raise OSError(errno.EACCES, f"a symbolic link to {path_text(real)}, outside {path_text(within)}: "
                                        "not read", path)
        fd = _open_beneath(root, os.path.relpath(real, root), flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.fdopen(fd, "rb")  # the caller owns and closes it
    except BaseException:
        os.close(fd)
        raise


def _open_beneath(root: str, relative: str, flags: int) -> int:
    """Open ``root/relative`` through real folders only: no component may be a link."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        *folders, name = relative.split(os.sep)
        for folder in folders:
            inner = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(name, flags | nofollow, dir_fd=directory)
    finally:
        os.close(directory)
