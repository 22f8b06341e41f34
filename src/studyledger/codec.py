"""How a SQLite ledger keeps each event in few bytes and reads back exactly its canonical values.

An event is defined by its canonical values (docs/store.md): the id ``evt-`` and 32 hex
digits, the kind, ISO-8601 times, the source ``file:PATH:LINE:OFFSET``, the canonical JSON
body and the chain in hex. Event ids, the chain and ``verify`` are defined on those values,
never on how a row is stored. The SQLite backend stores them compactly:

============================  ==========================================================
column                        stored as
============================  ==========================================================
``event_id``                  its 16 bytes (a BLOB)
``chain``                     its 32 bytes (a BLOB)
``kind``                      the id of its name in ``ledger_names``
``occurred_at``,              a *time code*: microseconds since 1970 times 2, plus 1 when
``recorded_at``               the text has no fraction; only for text of the exact forms
                              ``2026-03-02T09:00:10.123456+00:00`` and
                              ``2026-03-02T09:00:10+00:00`` that reads back the same;
                              any other time stays text
``source``, ``line``,         the id in ``ledger_names`` of the text before
``offset``                    ``:LINE:OFFSET``, and the two numbers (other sources: the
                              text, with null line and offset)
``body``                      a zstd frame made with one of the ledger's dictionaries
                              (its id in the frame's header), or the canonical text when
                              there is no dictionary yet or compressing does not pay
============================  ==========================================================

Every column also reads its canonical text as itself, so a row in the older layout (before
an upgrade) and a row a raw writer stored read back the same way.

Dictionaries are trained on the ledger's own bodies: the first when it holds
:data:`FIRST_TRAINING` events, each next one when it has grown :data:`GROWTH` times since
the last. They are stored in ``ledger_dictionaries`` with their SHA-256, never changed
(triggers refuse it, like ``events``), and each body names the one it needs, so a ledger
stays readable forever. ``verify`` checks each dictionary's hash, and every body it
decompresses against its event id.

Plain SQLite readers: the ``events_plain`` view shows every column decoded but the body, in
plain SQL; ``events_json`` adds the body, through the function ``sl_body`` that
:meth:`Codec.register` installs (docs/store.md says how to install it without studyledger).
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import zstandard

from .errors import LedgerError, ValidationError
from .events import StoredEvent

ZSTD_LEVEL = 3
"""zstd's level 3: ~1.4 us per 700-byte body; level 9 saves another 13% at 6x the time."""
DICTIONARY_BYTES = 32_768
TRAINING_SAMPLES = 2_048
"""Bodies a dictionary is trained on, spread evenly over the ledger: spread samples see many
runs, which matters more than their number (107 B per body from 1,024 spread, 132 B from
the first 8,192, on the benchmark's trace)."""
FIRST_TRAINING = 1_024
GROWTH = 16
MAX_BODY_BYTES = 1 << 30
"""A frame claiming more than this is refused before it is decompressed: a hostile ledger
cannot make a reader allocate what it claims."""

PHYSICAL_COLUMNS = ("seq", "event_id", "kind", "study_id", "run_id", "occurred_at", "recorded_at", "source",
                    "line", "offset", "body", "chain")
"""The columns of the SQLite ``events`` table (schema version 3), in order."""

COMPACT_EVENTS_DDL = """CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id BLOB NOT NULL UNIQUE CHECK (typeof(event_id) = 'blob' AND length(event_id) = 16),
                    kind NOT NULL,
                    study_id TEXT,
                    run_id TEXT,
                    occurred_at,
                    recorded_at NOT NULL,
                    source NOT NULL,
                    line INTEGER,
                    offset INTEGER,
                    body NOT NULL,
                    chain BLOB NOT NULL CHECK (typeof(chain) = 'blob' AND length(chain) = 32)
                )"""
"""The SQLite ``events`` table since schema version 3 (codec.py's table says what each column holds)."""

NAMES_DDL = "CREATE TABLE ledger_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"
DICTIONARIES_DDL = """CREATE TABLE ledger_dictionaries (
                    id INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 255),
                    data BLOB NOT NULL,
                    sha256 TEXT NOT NULL,
                    events INTEGER NOT NULL,
                    created_at TEXT NOT NULL
                )"""

CODEC_TABLES = ("ledger_names", "ledger_dictionaries")
CODEC_TRIGGER_DDL = {
    f"{table}_refuse_{verb.lower()}": (
        f"CREATE TRIGGER {table}_refuse_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
        f"SELECT RAISE(ABORT, 'studyledger {table} are append-only: {verb} refused'); END"
    )
    for table in CODEC_TABLES
    for verb in ("UPDATE", "DELETE")
}
"""Names and dictionaries are history too: a changed one would read every row using it differently."""


def _time_sql(column: str) -> str:
    return (f"CASE typeof({column}) WHEN 'integer' THEN strftime('%Y-%m-%dT%H:%M:%S', {column} / 2000000, "
            f"'unixepoch') || CASE {column} % 2 WHEN 0 THEN printf('.%06d', {column} / 2 % 1000000) ELSE '' END "
            f"|| '+00:00' ELSE {column} END")


def _name_sql(column: str) -> str:
    return (f"CASE typeof({column}) WHEN 'integer' THEN (SELECT name FROM ledger_names WHERE id = {column}) "
            f"ELSE {column} END")


def _decoded_view(name: str, body: str) -> str:
    return f"""CREATE VIEW {name} AS SELECT
    seq,
    'evt-' || lower(hex(event_id)) AS event_id,
    {_name_sql("kind")} AS kind,
    study_id,
    run_id,
    {_time_sql("occurred_at")} AS occurred_at,
    {_time_sql("recorded_at")} AS recorded_at,
    CASE typeof(source) WHEN 'integer' THEN {_name_sql("source")} || ':' || line || ':' || offset
        ELSE source END AS source,
    {body} AS body,
    lower(hex(chain)) AS chain
FROM events"""


EVENTS_PLAIN_DDL = _decoded_view("events_plain", "body")
"""Every column decoded in plain SQL, which any SQLite reader can run, except the body: as
stored (the canonical text, or a zstd frame naming its dictionary in ``ledger_dictionaries``)."""
EVENTS_JSON_DDL = _decoded_view("events_json", "sl_body(body)")
"""Every column as its canonical value, in ``EVENT_COLUMNS`` order: what the code above the
store reads (on PostgreSQL the connection reads the name as ``events``, which holds them).
The body needs ``sl_body`` (:meth:`Codec.register`)."""

LEGACY_VIEWS = ("CREATE TEMP VIEW events_json AS SELECT * FROM main.events",
                "CREATE TEMP VIEW events_plain AS SELECT * FROM main.events")
"""``events_json`` and ``events_plain`` of a ledger still in the layout of schema version 2,
whose columns hold the canonical values."""

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_LENGTHS = frozenset({25, 32})
_HEX = frozenset("0123456789abcdef")


def id_bytes(event_id: str) -> bytes:
    """The 16 bytes stored for an event id (``evt-`` and 32 lowercase hex digits).

    Raises:
        ValidationError: not an id of that form (every id studyledger computes is).
    """
    digits = event_id[4:]
    if len(event_id) != 36 or not event_id.startswith("evt-") or not _HEX.issuperset(digits):
        raise ValidationError(f"event id {event_id[:60]!r} is not 'evt-' and 32 lowercase hex digits")
    return bytes.fromhex(digits)


def canonical_id(stored: Any) -> Any:
    """An event id as read from a row: 16 bytes as ``evt-`` and hex; anything else as it is."""
    return "evt-" + stored.hex() if stored.__class__ is bytes else stored


def canonical_chain(stored: Any) -> Any:
    """A chain value as read from a row: bytes as hex; anything else as it is."""
    return stored.hex() if stored.__class__ is bytes else stored


_SECONDS: dict[int, str] = {}
_TIMES: dict[int, str] = {}


def decode_time(stored: Any) -> Any:
    """A time as read from a row: a time code as its text; anything else as it is."""
    if stored.__class__ is not int:
        return stored
    text = _TIMES.get(stored)  # the rows of one append share their recording time
    if text is None:
        if len(_TIMES) > 4_096:
            _TIMES.clear()
        text = _TIMES[stored] = _time_text(stored)
    return text


def _time_text(stored: int) -> str:
    seconds, micros = divmod(stored >> 1, 1_000_000)
    head = _SECONDS.get(seconds)
    if head is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        try:
            head = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (ValueError, OverflowError, OSError):  # only an edited row holds such a code
            raise UnreadableRow(f"a time code ({stored}) that is no time of any calendar") from None
        _SECONDS[seconds] = head
    return f"{head}+00:00" if stored & 1 else f"{head}.{micros:06d}+00:00"


def encode_time(text: str | None) -> str | int | None:
    """The time code of a time, when its text reads back exactly from one; else the text.

    The second is looked up by the text's first 19 characters (the events of one run
    share their seconds), so most times cost a slice and a lookup, not a parse.
    """
    if text is None or len(text) not in _TIME_LENGTHS or not text.endswith("+00:00") or not text.isascii():
        return text
    head = text[:19]
    seconds = _SECOND_CODES.get(head, -1)
    if seconds == -1:
        if len(_SECOND_CODES) > 100_000:
            _SECOND_CODES.clear()
        seconds = _SECOND_CODES[head] = _second(head)
    if seconds is None:
        return text
    if len(text) == 25:
        return seconds * 2_000_000 + 1
    fraction = text[20:26]
    if text[19] != "." or not fraction.isdigit():
        return text
    return (seconds * 1_000_000 + int(fraction)) * 2


_SECOND_CODES: dict[str, int | None] = {}


def _second(head: str) -> int | None:
    """The second since 1970 that :func:`decode_time` writes as ``head``
    (``2026-03-02T09:00:10``), or None when it writes no second that way."""
    try:
        moment = datetime.fromisoformat(head + "+00:00")
    except ValueError:
        return None
    seconds = (moment - _EPOCH) // _SECOND
    return seconds if seconds >= 0 and _time_text(seconds * 2_000_000 + 1) == head + "+00:00" else None


_SECOND = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) - _EPOCH


def prepare(event_id: str, occurred_at: str | None, source: str) -> tuple[Any, ...]:
    """What :meth:`Codec.encode` stores of an event that depends on the event alone, not on
    the ledger: an ingest worker makes it while the writer stores the batch before.

    The body stays with the writer, which holds the dictionary to compress it with: moved
    to the worker too, it made the worker the slower of the two (issue 13's measurements).

    Returns:
        ``(occurred_at, source, id bytes, occurred_at's time code, source's name or None,
        line, offset)``: the source is split when it is ``NAME:LINE:OFFSET`` with both
        numbers as written.

    Raises:
        ValidationError: the id is not one studyledger computes.
    """
    head: str | None = None
    line = offset = None
    prefix, _, tail = source.rpartition(":")
    name, _, middle = prefix.rpartition(":")
    if name and middle.isdigit() and tail.isdigit() and middle.isascii() and tail.isascii() \
            and str(int(middle)) == middle and str(int(tail)) == tail:
        # One object for a file's name: sent once a batch, and hashed once where it is looked up.
        head, line, offset = sys.intern(name), int(middle), int(tail)
    return occurred_at, source, id_bytes(event_id), encode_time(occurred_at), head, line, offset


class UnreadableRow(LedgerError):
    """A stored row that cannot be read back: a name or dictionary it needs is missing, or its
    body was edited so that it no longer decompresses."""


class Codec:
    """The names and dictionaries of one SQLite ledger, for encoding and decoding its rows.

    One per connection. Names and dictionaries created inside a write transaction are
    remembered only once it commits (:meth:`rolled_back` forgets them), so a rolled-back
    id is never used again for something else.

    Args:
        conn: The connection to the ledger.
        schema: The schema the ledger is attached as (replay attaches it as ``ledger``).
    """

    def __init__(self, conn: sqlite3.Connection, schema: str = "main") -> None:
        self.conn = conn
        self.schema = schema
        self.names: dict[int, str] = {}
        self.name_ids: dict[str, int] = {}
        self.dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
        self.decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self.latest: tuple[int, int] | None = None  # (dictionary id, events when trained)
        self._compressor: tuple[int, zstandard.ZstdCompressor] | None = None
        self._new_names: list[str] = []
        self._new_dictionaries: list[int] = []
        self._untrainable_below = 0
        self._last_time: tuple[str | None, str | int | None] = (None, None)
        self._last_frame: tuple[bytes, str] = (b"", "")
        self.prepared: dict[str, tuple[Any, ...]] = {}
        self.refresh()

    # -- the ledger's names and dictionaries ----------------------------------------------

    def _has_tables(self) -> bool:
        row = self.conn.execute(f"SELECT count(*) FROM {self.schema}.sqlite_master WHERE type = 'table' "
                                "AND name IN ('ledger_names', 'ledger_dictionaries')").fetchone()
        return bool(row[0] == 2)

    def refresh(self) -> None:
        """Read the names and dictionaries stored so far (another writer may have added some)."""
        if not self._has_tables():
            return
        for name_id, name in self.conn.execute(f"SELECT id, name FROM {self.schema}.ledger_names"):
            self.names[name_id] = name
            self.name_ids[name] = name_id
        for dict_id, data, events in self.conn.execute(
                f"SELECT id, CAST(data AS BLOB), events FROM {self.schema}.ledger_dictionaries WHERE id > ? ORDER BY id",
                (max(self.decompressors, default=0),)):
            self._add_dictionary(dict_id, zstandard.ZstdCompressionDict(bytes(data)))
            self.latest = (dict_id, events)

    def _add_dictionary(self, dict_id: int, dictionary: zstandard.ZstdCompressionDict) -> None:
        self.dictionaries[dict_id] = dictionary
        self.decompressors[dict_id] = zstandard.ZstdDecompressor(dict_data=dictionary)

    def committed(self) -> None:
        """The write transaction committed: what it created is the ledger's for good."""
        self._new_names.clear()
        self._new_dictionaries.clear()

    def rolled_back(self) -> None:
        """The write transaction rolled back: forget the names and dictionaries it created."""
        for name in self._new_names:
            self.names.pop(self.name_ids.pop(name), None)
        if self._new_dictionaries:
            self.dictionaries.clear()
            self.decompressors.clear()
            self._compressor = None
            self.latest = None
            self.refresh()
        self.committed()

    def name_id(self, name: str) -> int:
        """The id of a name, stored first if it is new (inside the caller's write transaction)."""
        found = self.name_ids.get(name)
        if found is not None:
            return found
        row = self.conn.execute("SELECT id FROM ledger_names WHERE name = ?", (name,)).fetchone()
        if row is None:
            row = self.conn.execute("INSERT INTO ledger_names(name) VALUES (?) RETURNING id", (name,)).fetchone()
            self._new_names.append(name)
        self.names[row[0]] = name
        self.name_ids[name] = row[0]
        return int(row[0])

    def name(self, name_id: int) -> str:
        """The name an id stands for."""
        return self._known(self.names, name_id, f"name {name_id} is not in ledger_names: the ledger was edited")

    def _known(self, found: dict[int, T], key: int, missing: str) -> T:
        """``found[key]``, read again from the ledger when another writer may have added it."""
        value = found.get(key)
        if value is None:
            self.refresh()
            value = found.get(key)
            if value is None:
                raise UnreadableRow(missing)
        return value

    # -- writing --------------------------------------------------------------------------

    def encode(self, row: StoredEvent) -> tuple[Any, ...]:
        """The stored form of a chained row, in :data:`PHYSICAL_COLUMNS` order.

        What :func:`prepare` made of the same event elsewhere (an ingest worker, see
        :meth:`preparing`) is used when it is there for the same times and source.
        """
        prepared = self.prepared.get(row.event_id) if self.prepared else None
        if prepared is None or prepared[0] != row.occurred_at or prepared[1] != row.source:
            prepared = prepare(row.event_id, row.occurred_at, row.source)
        _, _, key, occurred, head, line, offset = prepared
        if self._last_time[0] != row.recorded_at:
            self._last_time = (row.recorded_at, encode_time(row.recorded_at))
        return (row.seq, key, self.name_id(row.kind), row.study_id, row.run_id, occurred, self._last_time[1],
                row.source if head is None else self.name_id(head), line, offset, self.encode_body(row.body),
                bytes.fromhex(row.chain))

    @contextmanager
    def preparing(self, prepared: dict[str, tuple[Any, ...]]) -> Iterator[None]:
        """Use ``prepared`` (:func:`prepare` of each event, by its id) in the appends inside."""
        self.prepared = prepared
        try:
            yield
        finally:
            self.prepared = {}

    def encode_body(self, text: str) -> str | bytes:
        """A body as stored: compressed with the latest dictionary when that is smaller."""
        if self.latest is None:
            return text
        if self._compressor is None or self._compressor[0] != self.latest[0]:
            self._compressor = (self.latest[0], zstandard.ZstdCompressor(
                level=ZSTD_LEVEL, dict_data=self.dictionaries[self.latest[0]], write_checksum=False,
                write_content_size=True, write_dict_id=True))
        raw = text.encode("utf-8")
        frame = self._compressor[1].compress(raw)
        return frame if len(frame) < len(raw) else text

    def train_if_due(self, head_seq: int, table: str = "events") -> None:
        """Train the ledger's next dictionary when it has grown enough (inside the write transaction).

        The first at :data:`FIRST_TRAINING` events, each next one at :data:`GROWTH` times the
        size at the last; trained on :data:`TRAINING_SAMPLES` bodies spread over the ledger's
        ``table`` (an upgrade trains on the table it copies from).
        """
        due = FIRST_TRAINING if self.latest is None else self.latest[1] * GROWTH
        if head_seq < max(due, self._untrainable_below):
            return
        stored = self.conn.execute("SELECT max(id) FROM ledger_dictionaries").fetchone()[0] or 0
        if stored != (self.latest[0] if self.latest else 0):  # another writer trained one meanwhile
            self.refresh()
            return self.train_if_due(head_seq, table)
        if stored >= 255:
            return
        step = max(1, head_seq // TRAINING_SAMPLES)
        seqs = list(range(1, head_seq + 1, step))[:TRAINING_SAMPLES]
        samples: list[bytes | bytearray | memoryview[int]] = [self.body_bytes(body) for body in self._bodies(seqs, table)]
        try:
            trained = zstandard.train_dictionary(DICTIONARY_BYTES, samples, dict_id=stored + 1, level=ZSTD_LEVEL)
        except zstandard.ZstdError:
            self._untrainable_below = head_seq * 2  # too little to learn from: try again when twice as large
            return
        data = trained.as_bytes()
        self.conn.execute("INSERT INTO ledger_dictionaries(id, data, sha256, events, created_at) "
                          "VALUES (?, ?, ?, ?, ?)", (stored + 1, data, hashlib.sha256(data).hexdigest(), head_seq,
                                                     datetime.now(UTC).isoformat()))
        self._new_dictionaries.append(stored + 1)
        self._add_dictionary(stored + 1, trained)
        self.latest = (stored + 1, head_seq)

    def _bodies(self, seqs: Sequence[int], table: str) -> Iterable[Any]:
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for (body,) in self.conn.execute(f"SELECT body FROM {self.schema}.{table} WHERE seq IN ({marks})", chunk):
                yield body

    # -- reading --------------------------------------------------------------------------

    def body_bytes(self, stored: Any) -> bytes:
        """A stored body as its canonical UTF-8 bytes.

        Raises:
            UnreadableRow: a frame whose dictionary the ledger lacks, or that does not decompress.
        """
        if stored.__class__ is not bytes:
            if stored.__class__ is str:
                return bytes(stored.encode("utf-8"))
            raise UnreadableRow(f"a body stored as {type(stored).__name__}, neither text nor a zstd frame")
        try:
            frame = zstandard.get_frame_parameters(stored)
            decompressor = self.decompressors.get(frame.dict_id) or self._known(
                self.decompressors, frame.dict_id,
                f"a body compressed with dictionary {frame.dict_id}, which the ledger does not hold")
            if not 0 <= frame.content_size <= MAX_BODY_BYTES:
                raise UnreadableRow(f"a compressed body claiming {frame.content_size} bytes")
            return decompressor.decompress(stored)
        except zstandard.ZstdError as exc:
            raise UnreadableRow(f"a compressed body that does not decompress ({exc})") from None

    def body(self, stored: Any) -> str:
        """A stored body as its canonical text."""
        if stored.__class__ is str:
            return str(stored)
        return self.body_bytes(stored).decode("utf-8")

    def decode(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """A stored row (:data:`PHYSICAL_COLUMNS`) as its canonical values (``EVENT_COLUMNS``)."""
        seq, event_id, kind, study_id, run_id, occurred_at, recorded_at, source, line, offset, body, chain = row
        if kind.__class__ is int:
            kind = self.names.get(kind) or self.name(kind)
        if source.__class__ is int:
            source = f"{self.names.get(source) or self.name(source)}:{line}:{offset}"
        return (seq, canonical_id(event_id), kind, study_id, run_id, decode_time(occurred_at),
                decode_time(recorded_at), source, self.body(body), canonical_chain(chain))

    def register(self, conn: sqlite3.Connection | None = None) -> None:
        """Install ``sl_body(body)`` (a stored body as its text; null when it cannot be read)
        on the connection, for the ``events_json`` view."""
        (conn or self.conn).create_function("sl_body", 1, self._sql_body, deterministic=True)

    def _sql_body(self, stored: Any) -> str | None:
        # A query reading several fields of one body calls this once per field, with the
        # same frame each time: keep the last answer.
        if stored.__class__ is not bytes:
            return stored if stored is None or stored.__class__ is str else None
        last = self._last_frame
        if last[0] == stored:
            return last[1]
        try:
            text = self.body_bytes(stored).decode("utf-8")
        except (UnreadableRow, UnicodeDecodeError):
            return None
        self._last_frame = (stored, text)
        return text


def physical_select(columns: Iterable[str]) -> str:
    """The select list reading :data:`PHYSICAL_COLUMNS` from an ``events`` table with ``columns``:
    a table in the older layout has no line or offset (its source is text)."""
    present = set(columns)
    return ", ".join(name if name in present else f"NULL AS {name}" for name in PHYSICAL_COLUMNS)


__all__ = ["Codec", "UnreadableRow", "COMPACT_EVENTS_DDL", "EVENTS_JSON_DDL", "EVENTS_PLAIN_DDL", "PHYSICAL_COLUMNS", "canonical_chain",
           "canonical_id", "decode_time", "encode_time", "id_bytes", "physical_select", "prepare"]
