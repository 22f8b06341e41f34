"""A design-research-experiments study output folder -> the events it states, and its JSONL files.

A study folder holds two kinds of files. Whole-file facts (``study.yaml``, ``conditions.csv``,
``evaluations.csv``, each ``artifacts/runs/<run_id>/run.json`` and
``artifacts/checkpoints/<run_id>.json``) are read here, at once, into events. Growing JSONL
files (``artifacts/checkpoints/runs.jsonl``, per-run ``observations.jsonl``,
``traces/*.jsonl``) are only listed: the tailer reads those with committed offsets, so a
re-scan never re-reads what it already holds.

Upstream's runner writes every planned run's run.json (pending) before the first run starts
and study.yaml and the CSV files only at the end, so a study killed mid-run has run.json
files and no study.yaml: such a folder is a study folder too, and its runs come from run.json.

Trace files that no run references are kept (listed for ingestion like the others) and
also returned in :attr:`StudyFolderScan.orphan_traces`, so the caller can report them: an
orphan is information (a run that crashed before its checkpoint, a stray file), not an error.
See docs/formats.md for every mapping.

A study folder sits in a drop folder and is as untrusted as the rest of it: every file is
opened as the tailer opens one (:func:`~studyledger.ingestion.tailer.open_regular`: never
waiting on a FIFO, never through a symbolic link out of the study folder), and a whole file
is held to a line's limits (:func:`_read_whole`, :data:`MAX_VALUES`), because each is read
into memory at once as a line is.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from ..errors import BadLine, LineRejected, StudyFolderError
from ..events import (
    EventKind,
    NewEvent,
    condition_registered,
    make_event,
    run_status_changed,
    study_registered,
)
from ..schema import TERMINAL_STATUSES, RunBudget, RunStatus, SeedPolicy
from .adapters import (
    RUN_EVIDENCE,
    evaluation_body,
    events_from_line,
    run_registration,
)
from .lines import DEFAULT_LINE_LIMIT, MAX_VALUES, parse_line, values_in
from .tailer import CHUNK, hash_prefix, open_regular

STUDY_FILE = "study.yaml"
CONDITIONS_FILE = "conditions.csv"
EVALUATIONS_FILE = "evaluations.csv"
CHECKPOINTS_DIR = Path("artifacts") / "checkpoints"
CHECKPOINTS = CHECKPOINTS_DIR / "runs.jsonl"
RUNS_DIR = Path("artifacts") / "runs"
TRACES_DIR = "traces"
TRACE_NAME = re.compile(r"^run_\d{8}T\d{6}Z_(?P<request_id>.+)\.jsonl$")
"""design-research-agents names a trace ``run_<UTC time>_<request id>.jsonl``."""

WHOLE_FILE_LIMIT = DEFAULT_LINE_LIMIT
"""Largest whole file of a study folder read, in bytes: each is read at once, as a line is."""

_STUDY_FIELDS = frozenset({"study_id", "title", "description", "seed_policy", "run_budget", "budget"})


@dataclass(slots=True)
class StudyFolderScan:
    """What a study folder states, and what the tailer must still read.

    Attributes:
        study_id: The study, from study.yaml, else from the first run record that names one
            (a killed study has no study.yaml); None when nothing names it yet.
        events: Study, condition, run and evaluation events from the whole-file sources,
            in an order the projections can fold (registrations before statuses).
        jsonl_files: The JSONL files to ingest: runs.jsonl, per-run observations.jsonl,
            referenced traces and orphan traces.
        orphan_traces: Trace files that no run references (also in ``jsonl_files``).
        problems: One line per thing found wrong but not fatal (a broken run.json, a
            referenced trace that is missing), each naming its file.
        read_records: The run record files this scan read, for
            :meth:`CheckpointCache.confirm` once their events are appended.
        gone_records: Record files a cache knew that this scan no longer found.
    """

    study_id: str | None
    events: list[NewEvent] = field(default_factory=list)
    jsonl_files: list[Path] = field(default_factory=list)
    orphan_traces: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    read_records: dict[str, tuple[_Signature, _Record]] = field(default_factory=dict)
    gone_records: set[str] = field(default_factory=set)


def is_study_folder(path: Path) -> bool:
    """Whether a folder is a study output folder: it holds study.yaml, or the ``artifacts/``
    layout upstream's runner creates before the first run (``artifacts/runs`` or
    ``artifacts/checkpoints``), which is all a study killed mid-run leaves."""
    return os.path.lexists(path / STUDY_FILE) or (path / RUNS_DIR).is_dir() or (path / CHECKPOINTS_DIR).is_dir()


def scan_study_folder(path: Path, *, cache: CheckpointCache | None = None) -> StudyFolderScan:
    """Read a study folder's whole-file facts and list its JSONL files.

    Args:
        path: The study output folder (see :func:`is_study_folder`).
        cache: Summaries of runs.jsonl kept from earlier scans of the same folder (a
            watcher's): each scan then reads only what was appended since.

    Raises:
        StudyFolderError: the folder is not a study folder, study.yaml is malformed, or
            conditions.csv / evaluations.csv is malformed, or one of them cannot be read
            (not a regular file, a link out of the folder, over a line's limits); the
            message names the file and line.
    """
    root = path
    if not is_study_folder(root):
        raise StudyFolderError(f"{root}: not a study output folder (no {STUDY_FILE}, no {RUNS_DIR})")
    study_id: str | None = None
    scan = StudyFolderScan(study_id=None)
    if os.path.lexists(root / STUDY_FILE):
        study_id, study_event = _study(root / STUDY_FILE, root)
        scan.events.append(study_event)
    checkpoints = _read_checkpoints(root / CHECKPOINTS, root, cache)
    run_ids = set(checkpoints.run_ids)
    references = list(checkpoints.trace_refs)
    records = [*sorted((root / RUNS_DIR).glob("*/run.json")), *sorted((root / CHECKPOINTS_DIR).glob("*.json"))]
    run_events: list[NewEvent] = []
    summaries = _run_records(root, records, study_id, scan, cache, run_events)
    study_id = study_id or checkpoints.study_id or next(
        (record.study_id for record in summaries if record.study_id), None)
    scan.study_id = study_id
    stated = set(checkpoints.evaluations)
    for record in summaries:
        run_ids.add(record.run_id)
        references.extend(record.references)
        stated.update(record.evaluations)
    scan.events.extend(_conditions(root / CONDITIONS_FILE, root, study_id))
    scan.events.extend(run_events)
    scan.events.extend(_evaluations(root / EVALUATIONS_FILE, root, study_id, stated))
    if os.path.lexists(root / CHECKPOINTS):
        # Listed whatever it is: the tailer reads it, or says why not (a FIFO, a link out).
        scan.jsonl_files.append(root / CHECKPOINTS)
    scan.jsonl_files.extend(sorted((root / RUNS_DIR).glob("*/observations.jsonl")))
    _traces(root, run_ids, references, scan)
    listed = {file.resolve() for file in scan.jsonl_files}
    for other in sorted(root.rglob("*.jsonl")):
        if other.resolve() not in listed:
            scan.problems.append(f"{other}: not a file a study folder is known to hold; not imported")
    return scan


def _read_whole(path: Path, root: Path) -> bytes:
    """A whole file of the study folder ``root``, read as the drop folder's rules allow.

    Raises:
        OSError: it is gone, not a regular file, a symbolic link out of ``root``,
            unreadable, or longer than :data:`WHOLE_FILE_LIMIT`; ``strerror`` says which.
    """
    with open_regular(str(path), within=str(root)) as handle:
        data = handle.read(WHOLE_FILE_LIMIT + 1)
    if len(data) > WHOLE_FILE_LIMIT:
        raise OSError(errno.EFBIG, f"larger than the line limit ({WHOLE_FILE_LIMIT:,} bytes)", str(path))
    return data


def _whole_text(path: Path, root: Path, encoding: str) -> str:
    """A whole study file as text (see :func:`_read_whole`).

    Raises:
        StudyFolderError: it cannot be read, or is not UTF-8; the message names it.
    """
    try:
        return _read_whole(path, root).decode(encoding)
    except OSError as exc:
        raise StudyFolderError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise StudyFolderError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _too_many_values(where: str) -> StudyFolderError:
    return StudyFolderError(f"{where}: more than {MAX_VALUES:,} values (at most as many as in a line)")


def _evaluation_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an evaluation row across runs.jsonl, run.json and evaluations.csv."""
    return row.get("run_id") or None, row.get("evaluator_id") or None, row.get("metric_name") or None


# -- study.yaml ------------------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases, of at most :data:`MAX_VALUES` nodes: ``*name`` lets a few bytes
    expand into an exponential tree, and a dense flow collection (``[{}, {}, ...]``) costs
    about 250 bytes of memory per byte of input (4 MiB of it took 1.1 GB and 41 s)."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped in stubs
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", mark)
        self.nodes += 1
        if self.nodes > MAX_VALUES:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped in stubs
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_VALUES:,} values (at most as many as in a line)", mark)
        return super().compose_node(parent, index)


def _study(path: Path, root: Path) -> tuple[str, NewEvent]:
    text = _whole_text(path, root, "utf-8")
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # safe: a SafeLoader without aliases
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyFolderError(f"{path}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise StudyFolderError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise StudyFolderError(f"{path}: must be a mapping of keys to values, not {type(data).__name__}")
    study_id = data.get("study_id")
    if not isinstance(study_id, str) or not study_id:
        raise StudyFolderError(f"{path}: 'study_id' must be non-empty text")
    texts = {}
    for key in ("title", "description"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise StudyFolderError(f"{path}: '{key}' must be text, not {type(value).__name__}")
        texts[key] = (value or "").strip()
    budget = data.get("run_budget", data.get("budget"))
    extra = {key: value for key, value in data.items() if key not in _STUDY_FIELDS}
    try:
        body = study_registered(
            study_id,
            title=texts["title"],
            description=texts["description"],
            seed_policy=_build(SeedPolicy, data.get("seed_policy"), "seed_policy"),
            run_budget=_build(RunBudget, budget, "run_budget"),
            extra=extra,
        )
        event = make_event(EventKind.STUDY_REGISTERED, body, source=f"file:{path}:1:0")
    except (ValueError, TypeError, RecursionError) as exc:
        raise StudyFolderError(f"{path}: {exc}") from None
    return study_id, event


def _build(cls: type[Any], value: Any, key: str) -> Any:
    """A SeedPolicy or RunBudget from its study.yaml mapping, with a reason when it is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a mapping, not {type(value).__name__}")
    try:
        return cls(**value)
    except TypeError as exc:
        raise ValueError(f"'{key}': {exc}") from None


# -- CSV files -------------------------------------------------------------------------


def _csv_rows(path: Path, root: Path) -> Iterator[tuple[int, int, dict[str, str]]]:
    """Rows of a CSV file with the line and byte offset where each starts.

    Lines are split as the csv module expects (``newline=""``) as the rows are read, so a
    file of a million short rows is never a list of a million lines.

    Raises:
        StudyFolderError: the file cannot be read (see :func:`_read_whole`), is not UTF-8,
            not CSV, its header has more than :data:`MAX_VALUES` fields, or a row's field
            count differs from the header's; the message names the file and line.
    """
    text = _whole_text(path, root, "utf-8-sig")
    starts: dict[int, int] = {}  # line number -> byte offset, of the lines the reader holds

    def lines() -> Iterator[str]:
        offset = 0
        for number, line in enumerate(io.StringIO(text, newline=""), start=1):
            starts[number] = offset
            offset += len(line) if line.isascii() else len(line.encode("utf-8"))
            yield line

    reader = csv.reader(lines(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(header) > MAX_VALUES:
            raise _too_many_values(f"{path}:1")
        row_start = reader.line_num
        for values in reader:
            if len(values) != len(header):
                raise StudyFolderError(f"{path}:{row_start + 1}: {len(values)} fields, the header has {len(header)}")
            yield row_start + 1, starts[row_start + 1], dict(zip(header, values, strict=True))
            for number in range(row_start + 1, reader.line_num + 1):
                del starts[number]
            row_start = reader.line_num
    except csv.Error as exc:
        raise StudyFolderError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from None


class _Cells:
    """Counts the cells of the CSV rows a scan imports: each row becomes an event, so a
    file of short rows is bounded as a line's values are (a 16 MiB conditions.csv of
    short rows took 2.3 GB and 76 s). Rows a scan skips are not counted."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, row: dict[str, str], where: str) -> None:
        self.count += len(row)
        if self.count > MAX_VALUES:
            raise _too_many_values(where)


def _conditions(path: Path, root: Path, study_id: str | None) -> list[NewEvent]:
    if not os.path.lexists(path):
        return []
    events = []
    cells = _Cells()
    for line, offset, row in _csv_rows(path, root):
        where = f"{path}:{line}"
        cells.add(row, where)
        condition_id = row.get("condition_id", "")
        if not condition_id:
            raise StudyFolderError(f"{where}: 'condition_id' is empty")
        condition_study = row.get("study_id") or study_id
        if not condition_study:
            raise StudyFolderError(f"{where}: 'study_id' is empty and no study.yaml names the study")
        factors = {}
        blocks = {}
        for name, value in row.items():
            if name.startswith("block_"):
                blocks[name[len("block_"):]] = _cell(value)
            elif name not in {"study_id", "condition_id", "admissible", "constraint_messages",
                              "assignment_meta_json"}:
                factors[name] = _cell(value)
        meta = _json_cell(row.get("assignment_meta_json", ""), f"{where}: 'assignment_meta_json'", {})
        if not isinstance(meta, dict):
            raise StudyFolderError(f"{where}: 'assignment_meta_json' must be a JSON object")
        body = condition_registered(
            condition_study,
            condition_id,
            factors=factors,
            blocks=blocks,
            admissible=_admissible(row.get("admissible", ""), where),
            constraint_messages=_messages(row.get("constraint_messages", ""), where),
            assignment_meta=meta,
        )
        events.append(make_event(EventKind.CONDITION_REGISTERED, body, source=f"file:{path}:{line}:{offset}"))
    return events


def _admissible(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise StudyFolderError(f"{where}: 'admissible' must be true or false, not {value!r}")


def _messages(value: str, where: str) -> list[str]:
    """Constraint messages: a JSON list, or plain text holding one message."""
    if not value.strip():
        return []
    if value.lstrip().startswith("["):
        parsed = _json_cell(value, f"{where}: 'constraint_messages'", [])
        if isinstance(parsed, list):
            return [item if isinstance(item, str) else json.dumps(item) for item in parsed]
    return [value]


def _cell(value: str) -> Any:
    """A factor level: a number, boolean or null when the cell is JSON for one, else the text."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value


def _json_cell(value: str, what: str, empty: Any) -> Any:
    if not value.strip():
        return empty
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise StudyFolderError(f"{what} is not JSON: {exc}") from None


def _metric(value: str) -> int | float | str | None:
    """A metric value from CSV text, typed as the JSON it was written from."""
    if value == "":
        return None
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            continue
    return value


def _evaluations(path: Path, root: Path, study_id: str | None, stated: set[tuple[Any, ...]]) -> list[NewEvent]:
    """Evaluation rows not already stated by runs.jsonl or a run's record.

    Those hold the same rows with their exact JSON values (a CSV cell cannot tell a NaN
    from the text "nan", 1 from 1.0, or True from the text "True"), so a row they state is
    taken from there and skipped here; rows only the CSV holds are imported.
    """
    if not os.path.lexists(path):
        return []
    events = []
    cells = _Cells()
    for line, offset, row in _csv_rows(path, root):
        if _evaluation_key(row) in stated:
            continue
        cells.add(row, f"{path}:{line}")
        cleaned: dict[str, Any] = {name: (value or None) for name, value in row.items()}
        cleaned["metric_value"] = _metric(row.get("metric_value", ""))
        try:
            body = evaluation_body(cleaned, f"{path}:{line}", run_id=None, study_id=study_id)
        except LineRejected as exc:
            raise StudyFolderError(str(exc)) from None
        events.append(make_event(EventKind.EVALUATION_RECORDED, body, source=f"file:{path}:{line}:{offset}"))
    return events


# -- runs.jsonl and run.json -----------------------------------------------------------


@dataclass(slots=True)
class _Checkpoints:
    """What the scan needs from runs.jsonl, and how far into which file it was read."""

    run_ids: set[str] = field(default_factory=set)
    trace_refs: list[tuple[str, str]] = field(default_factory=list)
    evaluations: set[tuple[Any, ...]] = field(default_factory=set)
    study_id: str | None = None
    identity: tuple[int, int] = (0, 0)
    offset: int = 0
    lines: int = 0
    prefix: Any = field(default_factory=hashlib.sha256)  # of the file's bytes before offset

    def copy(self) -> _Checkpoints:
        return _Checkpoints(set(self.run_ids), list(self.trace_refs), set(self.evaluations), self.study_id)


@dataclass(frozen=True, slots=True)
class _Record:
    """What a scan needs of a run record file besides its events: small enough to keep."""

    run_id: str
    references: list[tuple[str, str]]
    study_id: str | None
    evaluations: frozenset[tuple[Any, ...]]


_Signature = tuple[int, int, int, int]


class CheckpointCache:
    """Summaries of runs.jsonl files, continued scan after scan, and of run record files.

    A watcher re-scans its study folders every few seconds while runs.jsonl grows; reading
    the file from the start each time would make every scan as slow as the file is long.
    Each file's summary is kept and continued from where it stopped, if the file is still
    the one it read: same device and inode, not shorter, and the same digest of every byte
    before the stop (hashing is many times quicker than reading the lines again, and a
    file truncated and written again agrees with the old one in its last bytes as often
    as not).

    Likewise a study of thousands of runs rewrites only a few of its run.json and
    checkpoint files between two scans: a record file whose signature (device, inode, size,
    modification time) is the one whose events were appended is not read again, and its
    events are not appended again. A scan's record summaries become that only when its
    events were appended (:meth:`confirm`), so a busy ledger costs a re-read, never a fact.
    The watcher that owns the cache drops it with itself.
    """

    def __init__(self) -> None:
        self.summaries: dict[str, _Checkpoints] = {}
        self.records: dict[str, tuple[_Signature, _Record]] = {}
        self.lock = threading.Lock()

    def confirm(self, scan: StudyFolderScan) -> None:
        """The scan's events are in the ledger: skip its unchanged record files from now on."""
        with self.lock:
            self.records.update(scan.read_records)
            for key in scan.gone_records:
                self.records.pop(key, None)


def _read_checkpoints(path: Path, root: Path, cache: CheckpointCache | None) -> _Checkpoints:
    """Run ids, trace references and evaluation keys from runs.jsonl, streamed.

    Only what the scan needs is kept, so memory does not grow with the lines' size. Lines
    that cannot be read are skipped here: the tailer reads the same file and records each
    of them as a rejected line with its reason (a line over the line limit is read past in
    chunks), and says why a file it cannot read is refused. A last line without its newline
    is left for the next scan, as the tailer leaves it.
    """
    try:
        handle = open_regular(str(path), within=str(root))
    except OSError:
        return _Checkpoints()
    key = os.path.abspath(path)
    cache = cache or CheckpointCache()
    with handle, cache.lock:
        info = os.fstat(handle.fileno())
        identity = (info.st_dev, info.st_ino)
        found = cache.summaries.get(key)
        if found is None or not _still_same(handle, found, identity, info.st_size):
            found = _Checkpoints(identity=identity)
        handle.seek(found.offset)
        while (line := _next_line(handle, found.prefix)) is not None:
            data, length, found.prefix = line
            found.lines += 1
            found.offset += length
            if data is not None:
                _collect(found, data, f"{path}:{found.lines}")
        cache.summaries[key] = found
        return found.copy()


def _next_line(handle: IO[bytes], prefix: Any) -> tuple[bytes | None, int, Any] | None:
    """The next complete line: ``(its bytes, or None when it is over the line limit; its
    length; the digest of the file up to its end, continued from prefix's)``, or None when
    no complete line is left."""
    raw = handle.readline(WHOLE_FILE_LIMIT + 1)
    if not raw.endswith(b"\n") and len(raw) <= WHOLE_FILE_LIMIT:
        return None
    digest, length = prefix.copy(), len(raw)
    digest.update(raw)
    if raw.endswith(b"\n"):
        return raw, length, digest
    while chunk := handle.readline(CHUNK):
        length += len(chunk)
        digest.update(chunk)
        if chunk.endswith(b"\n"):
            return None, length, digest
    return None


def _still_same(handle: IO[bytes], found: _Checkpoints, identity: tuple[int, int], size: int) -> bool:
    if found.identity != identity or size < found.offset:
        return False
    return bool(hash_prefix(handle.fileno(), found.offset).hash.digest() == found.prefix.digest())


def _collect(found: _Checkpoints, raw: bytes, where: str) -> None:
    try:
        line = parse_line(raw)
    except BadLine:
        return
    if not isinstance(line, dict) or not isinstance(line.get("run_id"), str):
        return
    found.run_ids.add(line["run_id"])
    found.trace_refs.extend((where, ref) for ref in _trace_refs(line))
    spec = line.get("run_spec")
    if found.study_id is None and isinstance(spec, dict) and isinstance(spec.get("study_id"), str):
        found.study_id = spec["study_id"] or None
    for row in line.get("evaluator_outputs") or []:
        if isinstance(row, dict):
            found.evaluations.add(_evaluation_key({**row, "run_id": row.get("run_id") or line["run_id"]}))


def _trace_refs(data: dict[str, Any]) -> list[str]:
    """Trace paths a run's record names: ``trace_refs`` and the provenance's ``trace_path``
    (a checkpoint line's top level and ``provenance_info``, a run.json's ``observed``)."""
    found: list[str] = []
    observed = data.get("observed")
    for holder in (data, observed, data.get("provenance_info"),
                   observed.get("provenance") if isinstance(observed, dict) else None):
        if not isinstance(holder, dict):
            continue
        refs = holder.get("trace_refs")
        if isinstance(refs, list):
            found.extend(ref for ref in refs if isinstance(ref, str))
        if isinstance(holder.get("trace_path"), str):
            found.append(holder["trace_path"])
    return found


def _run_records(root: Path, paths: list[Path], study_id: str | None, scan: StudyFolderScan,
                 cache: CheckpointCache | None, events: list[NewEvent]) -> list[_Record]:
    """Summaries of the run record files; the events of those read are added to ``events``.

    With a cache, a file unchanged since its events were appended is not read again.
    """
    kept: dict[str, tuple[_Signature, _Record]] = {}
    if cache is not None:
        with cache.lock:
            kept = dict(cache.records)
        prefix = os.path.join(os.path.abspath(root), "")
        scan.gone_records = {key for key in kept if key.startswith(prefix)}
    summaries = []
    for path in paths:
        key = os.path.abspath(path)
        scan.gone_records.discard(key)
        try:
            info = path.stat()
            signature: _Signature | None = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            signature = None  # gone or unreadable: reading it says which
        known = kept.get(key)
        if known is not None and known[0] == signature:
            summaries.append(known[1])
            continue
        found = _run_record(path, root, study_id, scan)
        if found is None:
            continue
        run_id, references, record_events = found
        record = _Record(run_id, references, next((e.study_id for e in record_events if e.study_id), None),
                         frozenset(_evaluation_key(json.loads(event.body)) for event in record_events
                                   if event.kind == EventKind.EVALUATION_RECORDED))
        events.extend(record_events)
        summaries.append(record)
        if signature is not None:
            scan.read_records[key] = (signature, record)
    return summaries


def _run_record(path: Path, root: Path, study_id: str | None,
                scan: StudyFolderScan) -> tuple[str, list[tuple[str, str]], list[NewEvent]] | None:
    """Events of one run record file (a run.json, or a checkpoint's ``<run_id>.json``).

    The record is parsed as a line is (:func:`~studyledger.ingestion.lines.parse_line`),
    with a line's limits. Returns its run id, trace references and events, or None (with
    the reason in ``scan.problems``) when the file cannot be used.
    """
    try:
        raw = _read_whole(path, root)
        if len(raw) > MAX_VALUES and (count := values_in(raw)) > MAX_VALUES:
            raise BadLine(f"too many JSON values ({count:,}; at most {MAX_VALUES:,}, as in a line)")
        data = parse_line(raw)
    except BadLine as exc:
        scan.problems.append(f"{path}: {exc}; not read (the run may still come from its other records)")
        return None
    except OSError as exc:
        # open_regular's refusal of a link already ends in "not read".
        why = (exc.strerror or str(exc)).removesuffix(": not read")
        scan.problems.append(f"{path}: {why}; not read (the run may still come from its other records)")
        return None
    if not isinstance(data, dict):
        scan.problems.append(f"{path}: must be a JSON object; not read (the run may still come from its other records)")
        return None
    expected = path.parent.name if path.name == "run.json" else path.stem
    run_id = data.get("run_id") or expected
    if not isinstance(run_id, str):
        scan.problems.append(f"{path}: 'run_id' must be text; not read (the run may still come from its other records)")
        return None
    if run_id != expected:
        scan.problems.append(f"{path}: run_id {run_id!r} differs from its file's name")
    source = f"file:{path}:1:0"
    try:
        if data.get("record_type") == RUN_EVIDENCE or path.name != "run.json":
            found = events_from_line(data, source=source)
        else:
            found = _legacy_run_json(data, run_id, study_id, source)
    except LineRejected as exc:
        scan.problems.append(f"{path}: {exc}; not read (the run may still come from its other records)")
        return None
    return run_id, [(str(path), ref) for ref in _trace_refs(data)], found


def _legacy_run_json(data: dict[str, Any], run_id: str, study_id: str | None, source: str) -> list[NewEvent]:
    """A run.json in the checkpoint line's shape, as studyledger's exports before 0.2 wrote it.

    A finished run (with ``run_spec``) goes through the checkpoint adapter; a pending run
    is registered; a running one also moves to running at its ``started_at``.
    """
    spec = data.get("run_spec")
    status = data.get("status", RunStatus.PENDING.value)
    if isinstance(spec, dict) and status in TERMINAL_STATUSES:
        return events_from_line({**data, "run_id": run_id}, source=source)
    if status not in {"pending", "running"}:
        raise LineRejected(f"status {status!r} is not a run status (or a finished run without run_spec)")
    spec = spec if isinstance(spec, dict) else data
    registration = run_registration(run_id, spec)
    registration["study_id"] = registration["study_id"] or study_id
    events = [make_event(EventKind.RUN_REGISTERED, registration, source=source)]
    started_at = data.get("started_at")
    if status == "running":
        if not isinstance(started_at, str):
            raise LineRejected("a running run needs 'started_at' as text")
        body = run_status_changed(run_id, RunStatus.RUNNING, at=started_at, study_id=registration["study_id"])
        events.append(make_event(EventKind.RUN_STATUS_CHANGED, body, source=source))
    return events


# -- traces ----------------------------------------------------------------------------


def _traces(root: Path, run_ids: set[str], references: list[tuple[str, str]], scan: StudyFolderScan) -> None:
    """List referenced and orphan traces; report references that lead nowhere.

    A trace counts as referenced when a run names its path, or when its file name carries
    a known run id (``run_<time>_<run_id>.jsonl``): a running run's trace is being written
    before any checkpoint names it, and a run that raised names none.
    """
    base = root.resolve()
    referenced: dict[Path, Path] = {}
    for where, ref in references:
        found = _find_reference(root, base, ref)
        if isinstance(found, Path):
            referenced.setdefault(found.resolve(), found)
        else:
            scan.problems.append(f"{where}: trace {ref!r} {found}")
    for trace in sorted((root / TRACES_DIR).rglob("*.jsonl")):
        resolved = trace.resolve()
        if resolved in referenced:
            continue
        match = TRACE_NAME.match(trace.name)
        if match and match["request_id"] in run_ids:
            referenced[resolved] = trace
        else:
            scan.orphan_traces.append(trace)
    scan.jsonl_files.extend(sorted(referenced.values()))
    scan.jsonl_files.extend(scan.orphan_traces)


def _find_reference(root: Path, base: Path, ref: str) -> Path | str:
    """The file a trace reference names inside the study folder, or why there is none.

    Upstream writes a reference relative to the runner's working directory
    (``agents_traced/traces/run_….jsonl``) or absolute, not relative to the study folder,
    and a folder may have been copied since. So the reference is looked up by its longest
    trailing part that names a file in the folder (``traces/run_….jsonl``); nothing outside
    the folder is read.
    """
    parts = [part for part in Path(ref).parts if part not in (Path(ref).anchor, "")]
    if ".." not in parts:
        for start in range(len(parts)):
            candidate = root.joinpath(*parts[start:])
            resolved = candidate.resolve()
            if resolved.is_relative_to(base) and resolved.is_file():
                return candidate
    if not (root / ref).resolve().is_relative_to(base):
        return "is outside the study folder; not imported"
    return "does not exist"
