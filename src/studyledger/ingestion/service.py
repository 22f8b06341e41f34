"""Ingesting paths: the one service behind ``studyledger ingest``, ``watch``, the demo and the API.

Ingesting is two steps whatever the caller. :func:`plan` walks the paths once and finds
the study output folders (study.yaml, or the ``artifacts/`` layout a killed study leaves)
and the plain JSONL files outside them.
:func:`import_study_folder` appends what a study folder's whole files state (study.yaml,
the CSVs, each run.json) and lists the JSONL files it holds; the tailer then reads every
JSONL file from its committed offset. :func:`ingest` does both once; the watcher does the
same on every change and every reconcile scan.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import StudyFolderError, ValidationError
from ..events import check_body, is_unicode
from ..ledger import Ledger
from .adapters import LineAdapter
from .lines import DEFAULT_LINE_LIMIT, path_text
from .study_folder import CheckpointCache, is_study_folder, scan_study_folder
from .tailer import FileStats, LineCounts, Tailer, is_jsonl_name

Progress = Callable[[int, int], None]
"""Called with ``(bytes done, bytes in all)`` as files are read."""


@dataclass(kw_only=True)
class IngestReport(LineCounts):
    """What an ingestion did (``studyledger ingest --json`` prints it).

    Attributes:
        files: Files read (present when their pass ran).
        errors: One line per file that could not be read.
        studies: Study ids of the study folders imported.
        orphan_traces: Trace files in study folders that no run references (still read).
        problems: One line per thing in a study folder found wrong but not fatal.
    """

    files: int = 0
    errors: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    orphan_traces: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, item: FileStats) -> None:
        """Fold one file's pass into the totals."""
        if not item.missing:
            self.files += 1
        for counter in fields(LineCounts):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(item, counter.name))

    def to_dict(self) -> dict[str, Any]:
        """The report as a plain mapping, ``files`` first; study keys only when a study folder
        was seen (a folder without a study id still reports its problems)."""
        data = asdict(self)
        ordered = {"files": data.pop("files"), **data}
        if not (self.studies or self.orphan_traces or self.problems):
            for name in ("studies", "orphan_traces", "problems"):
                del ordered[name]
        return ordered


@dataclass
class Plan:
    """What a set of paths holds.

    Attributes:
        studies: Study output folders, each once, in the order found.
        files: JSONL files outside study folders, each once, in the order found.
        within: For each file and study folder found under a given folder (by absolute
            path), that folder: what is read from it must be in it (no symbolic link out).
    """

    studies: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    within: dict[str, str] = field(default_factory=dict)

    def root_of(self, path: Path) -> str | None:
        """The given folder a path was found under (None for a path named directly)."""
        return self.within.get(os.path.abspath(path))


def plan(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> Plan:
    """Walk the paths once: study folders (:func:`~studyledger.ingestion.study_folder.is_study_folder`:
    study.yaml, or upstream's ``artifacts/`` layout) and the JSONL files outside them.

    A file named directly is taken whatever its name; under a folder, the JSONL names
    (:func:`~studyledger.ingestion.tailer.is_jsonl_name`) in sorted order, so runs are
    reproducible. Hidden folders and symbolic links to folders are not entered. Every
    entry with a JSONL name that is not a folder is listed (a link, a FIFO): the tailer
    reads it if it is a regular file inside the given folder and says why not otherwise.

    Raises:
        FileNotFoundError: a named path does not exist (checked before anything is read).
    """
    paths = list(paths)  # walked twice: a generator would be spent by the first walk
    found = Plan()
    studies: set[str] = set()
    files: set[str] = set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(2, "no such file or folder", str(path))
    for given in paths:
        path = Path(given)
        if path.is_dir():
            _walk(path, os.path.abspath(path), found, studies, files, recursive)
        elif os.path.abspath(path) not in files:
            files.add(os.path.abspath(path))
            found.files.append(path)
    return found


def _walk(folder: Path, root: str, found: Plan, studies: set[str], files: set[str], recursive: bool) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    if is_study_folder(folder):
        key = os.path.abspath(folder)
        if key not in studies:
            studies.add(key)
            found.studies.append(folder)
            found.within[key] = root
        return  # a study folder's JSONL files are the ones its scan lists
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if recursive and not entry.name.startswith("."):
                _walk(Path(entry.path), root, found, studies, files, recursive)
        elif is_jsonl_name(entry.name):
            key = os.path.abspath(entry.path)
            if key not in files:
                files.add(key)
                found.files.append(Path(entry.path))
                found.within[key] = root


def import_study_folder(ledger: Ledger, folder: Path, report: IngestReport, *,
                        cache: CheckpointCache | None = None) -> list[Path]:
    """Append what a study folder's whole files state; return the JSONL files it holds.

    Events are content-addressed, so importing a folder again appends only new facts.
    Every event is checked against its kind's shape before any is appended: a value that
    cannot be stored (a title holding a lone surrogate) rejects this folder, not the others.

    Raises:
        StudyFolderError: study.yaml or a CSV file cannot be read, or states a value that
            cannot be stored (the message names the folder).
    """
    scan = scan_study_folder(folder, cache=cache)
    events = []
    for event in scan.events:
        try:
            check_body(event.kind, json.loads(event.body), event.body)
        except ValidationError as exc:
            raise StudyFolderError(f"{path_text(str(folder))}: {exc} (from {path_text(event.source)}); "
                                   "the study folder is not imported") from None
        events.append(event if is_unicode(event.source) else replace(event, source=path_text(event.source)))
    result = ledger.append(events)
    if cache is not None:
        cache.confirm(scan)
    report.events_appended += len(result.appended)
    report.duplicates += result.duplicates
    if scan.study_id is not None and scan.study_id not in report.studies:
        report.studies.append(scan.study_id)
    report.orphan_traces.extend(str(trace) for trace in scan.orphan_traces)
    report.problems.extend(scan.problems)
    return scan.jsonl_files


def ingest(
    ledger: Ledger,
    paths: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    line_limit: int = DEFAULT_LINE_LIMIT,
    adapter: LineAdapter | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest files and folders once: study folders' facts, then every JSONL line exactly once.

    Re-running it reads only what was appended since. A line that cannot be used is kept
    as a rejected line; a file that cannot be read is reported in ``errors`` and the
    others are still read.

    Args:
        ledger: The ledger, open for writing.
        paths: Files and folders (folders recursively, unless ``recursive`` is false).
        line_limit: Longest line parsed, in bytes; longer lines are rejected and skipped.
        adapter: A line adapter of the user's, tried before the built-in formats.
        progress: Told ``(bytes done, bytes in all)`` as files are read.

    Raises:
        FileNotFoundError: a named path does not exist (nothing is read then).
    """
    found = plan(paths, recursive=recursive)
    report = IngestReport()
    to_read = _import_studies(ledger, found, report)
    _read_files(ledger, found, to_read, report, line_limit=line_limit, adapter=adapter, progress=progress)
    return report


def _import_studies(ledger: Ledger, found: Plan, report: IngestReport) -> dict[str, Path]:
    """Append every study folder's facts; return the files to read by absolute path: the
    plain JSONL files found, then those the study folders list (each read within its folder)."""
    to_read: dict[str, Path] = {os.path.abspath(file): file for file in found.files}
    for folder in found.studies:
        try:
            listed = import_study_folder(ledger, folder, report)
        except StudyFolderError as exc:
            # One broken study folder is reported; every other path is still read.
            report.errors.append(str(exc))
            continue
        for file in listed:
            key = os.path.abspath(file)
            if key not in to_read:
                to_read[key] = file
                found.within[key] = found.within[os.path.abspath(folder)]
    return to_read


@dataclass
class _ByteProgress:
    """Bytes done out of the bytes of every file to read, told to the caller as they grow."""

    total: int
    progress: Progress | None
    done: int = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)


def _read_files(ledger: Ledger, found: Plan, to_read: dict[str, Path], report: IngestReport, *,
                line_limit: int, adapter: LineAdapter | None, progress: Progress | None) -> None:
    """Read every file from its committed offset, reporting the ones that cannot be read."""
    sizes = [_size(file) for file in to_read.values()]
    meter = _ByteProgress(sum(sizes), progress)
    tailer = Tailer(ledger, line_limit=line_limit, adapter=adapter, on_progress=meter.advance)
    finished = 0
    for file, size in zip(to_read.values(), sizes, strict=True):
        try:
            report.add(tailer.ingest_path(file, within=found.root_of(file)))
        except OSError as exc:
            report.errors.append(f"{exc.filename or file}: {exc.strerror or exc}")
        # Bytes read before (an earlier ingest) count as done: jump to the file's end.
        finished += size
        meter.advance(max(0, finished - meter.done))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
