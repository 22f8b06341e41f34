"""Live ingestion of a folder: watchdog events as hints, a periodic reconcile scan as truth.

Filesystem notifications are fast but not reliable: inotify queues overflow, network
filesystems deliver nothing, and a file created before the observer started never raises
an event. So an event only says "look at this file soon"; every ``reconcile`` seconds the
whole folder is scanned and any file whose size, inode or mtime changed is read too. The
tailer's committed offsets make reading a file twice harmless, so the two paths never
need to agree with each other.

A pass on a hint reads only what was appended: the tailer holds the digest of what it read
before. The reconcile scan reads every file that changed, or was read that way since, with
the bytes before its offset hashed again, so a file truncated and regrown in between is
found within one reconcile interval and read again from its start (nothing is lost; the
cost of hashing a file is paid at most once per interval, not once per appended line).

The watcher runs in its own thread with its own ledger connection, so a dashboard or a
CLI can own the main thread.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..errors import EventConflictError, LedgerBusyError, StudyFolderError
from ..ledger import Ledger
from ..store import DatabaseURL, ledger_target
from .adapters import LineAdapter
from .lines import DEFAULT_LINE_LIMIT
from .service import IngestReport, import_study_folder, plan
from .study_folder import CheckpointCache
from .tailer import FileStats, Tailer, is_jsonl_name, open_regular

DEFAULT_RECONCILE = 2.0
"""Seconds between full scans that catch whatever the observer missed."""

MAX_ERRORS = 100
"""Distinct unreadable-file messages kept (a folder of 10k unreadable files must not grow memory)."""

MAX_HANDLES = 128
"""Files kept open, so the last lines of a file deleted or moved out of the folder are read."""

_Signature = tuple[int, int, int, int]

# watchdog's inotify observer warns when a folder tree created in one go (a study folder
# copied in) makes it watch a subfolder twice: its recursive add and the subfolder's own
# creation event race. The watch is reused and nothing is missed; the warning would only
# reach the user's terminal as noise.
warnings.filterwarnings("ignore", message=r"Callback with id .* already exists for watch", category=RuntimeWarning)


class _StoppedEmitter(logging.Filter):
    """Drops watchdog's log line of an emitter stopped between two of its reads (as when
    the folder it watched is gone and the watcher points the observer elsewhere): it read
    nothing more, and the line would reach the user's terminal as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_StoppedEmitter())


class _Hints(FileSystemEventHandler):
    """Collects the paths watchdog says changed; runs in the observer's thread."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        if event.is_directory:
            if kind in ("created", "moved"):
                # A folder moved in brings files that raise no events of their own.
                self.watcher.request_scan()
            return
        # A deleted or moved-away path is hinted too: the watcher may still hold the file
        # open and reads its last lines through that handle before letting go.
        paths = [_text(event.src_path)]
        if kind == "moved":
            paths.append(_text(event.dest_path))
        if any(is_jsonl_name(os.path.basename(path)) for path in paths):
            self.watcher.hint(paths)


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


_FolderSignature = frozenset[tuple[str, _Signature | None]]

# A file changed this recently may change again within the same timestamp tick (the
# kernel's clock is coarse) without its size changing: such a folder is imported at every
# scan until it has been still this long, as git treats "racily clean" files.
_SETTLED_NS = 2_000_000_000


def _folder_signature(folder: Path) -> _FolderSignature | None:
    """What a study folder's import depends on: every entry under it with the signature of
    what it leads to, except the JSONL files the tailer follows (traces, observations),
    whose names alone the import reads; runs.jsonl's content it reads too. None while
    something in it changed too recently for its signature to be trusted."""
    found: set[tuple[str, _Signature | None]] = set()
    unsettled = time.time_ns() - _SETTLED_NS
    pending = [str(folder)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            if entry.name.endswith(".jsonl") and entry.name != "runs.jsonl":
                found.add((entry.path, None))
                continue
            try:
                info = entry.stat()
            except OSError:
                found.add((entry.path, None))
                continue
            if info.st_mtime_ns > unsettled:
                return None
            found.add((entry.path, (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)))
    return frozenset(found)


class Watcher:
    """Tail every JSONL file under a folder into a ledger until stopped.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        db: The ledger: its file (created when missing), or a server's URL.
        folder: The folder to watch, recursively.
        poll: Seconds between polls with watchdog's polling observer (for network
            filesystems); None uses the native observer (inotify on Linux).
        reconcile: Seconds between full scans of the folder.
        line_limit: Longest line parsed, in bytes.
        adapter: A user's line adapter, tried before the built-in formats.

    Study output folders (holding study.yaml or upstream's ``artifacts/``) anywhere under the folder are imported as
    ``ingest`` imports them, at every scan, so their run.json files and CSVs are followed
    while a study runs.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | DatabaseURL,
        folder: str | os.PathLike[str],
        *,
        poll: float | None = None,
        reconcile: float = DEFAULT_RECONCILE,
        line_limit: int = DEFAULT_LINE_LIMIT,
        adapter: LineAdapter | None = None,
    ) -> None:
        self.db = ledger_target(db)
        self.folder = Path(os.path.abspath(folder))
        self.poll = poll
        self.reconcile = reconcile
        self.line_limit = line_limit
        self.adapter = adapter
        self.error: BaseException | None = None
        self.waiting: str | None = None
        """What the watcher waits for while its folder is gone (moved away, deleted), else None."""
        self._watched: tuple[int, int] | None = None  # the folder the observer watches
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._dirty: set[str] = set()
        self._scan_requested = True
        self._seen: dict[str, _Signature] = {}
        self._unverified: set[str] = set()  # read on hints since their prefix was last hashed
        self._handles: OrderedDict[str, IO[bytes]] = OrderedDict()
        self._files: set[str] = set()
        self._totals = IngestReport()
        # What the latest scan of each study folder found wrong: a file caught while a
        # runner rewrites it is a problem of one scan, gone at the next.
        self._study_findings: dict[Path, tuple[list[str], list[str], str | None]] = {}
        # Each study folder's files as its last import saw them, and the JSONL files it listed.
        self._imported: dict[Path, tuple[_FolderSignature | None, list[Path]]] = {}
        self._checkpoints = CheckpointCache()
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------------

    def start(self) -> Watcher:
        """Start watching; returns once the observer is running (or failed to start).

        Raises:
            NotADirectoryError: the folder does not exist or is not a folder.
        """
        if not self.folder.is_dir():
            raise NotADirectoryError(20, "not a folder", str(self.folder))
        self._thread = threading.Thread(target=self._run, name=f"studyledger-watch {self.folder}", daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    def stop(self, timeout: float | None = 30.0) -> IngestReport:
        """Stop after committing what was read; returns the totals.

        Every batch is committed as it is read, so stopping loses nothing: lines not yet
        read stay in their files and are read by the next watcher.
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.stats

    @property
    def running(self) -> bool:
        """Whether the watching thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> IngestReport:
        """A snapshot of the totals since start (``files``: distinct files read).

        ``problems``, ``orphan_traces`` and the study folders' ``errors`` are those of each
        study folder's latest scan; the other errors (files that could not be read) are kept.
        """
        with self._lock:
            totals = self._totals
            findings = list(self._study_findings.values())
            return replace(totals, files=len(self._files),
                           errors=[*totals.errors, *(error for _, _, error in findings if error),
                                   *([self.waiting] if self.waiting else [])],
                           studies=list(totals.studies),
                           orphan_traces=[trace for _, orphans, _ in findings for trace in orphans],
                           problems=[problem for problems, _, _ in findings for problem in problems])

    def hint(self, paths: Iterable[str]) -> None:
        """Mark files as worth reading soon (called from the observer's thread)."""
        with self._lock:
            self._dirty.update(paths)
        self._wake.set()

    def request_scan(self) -> None:
        """Ask for a full scan of the folder at the next wake-up."""
        with self._lock:
            self._scan_requested = True
        self._wake.set()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the watching thread ----------------------------------------------------------

    def _make_observer(self) -> BaseObserver:
        if self.poll is not None:
            return PollingObserver(timeout=self.poll)
        return Observer()

    def _run(self) -> None:
        observer: BaseObserver | None = None
        ledger: Ledger | None = None
        try:
            ledger = Ledger.open(self.db, source="watch")
            tailer = Tailer(ledger, line_limit=self.line_limit, adapter=self.adapter, worker_min_bytes=None)
            observer = self._make_observer()
            # Scheduled before the first scan: a change during the scan raises a hint.
            self._follow_folder(observer)
            observer.start()
            self._ready.set()
            next_scan = 0.0
            while True:
                stopping = self._stopping.is_set()
                with self._lock:
                    dirty, self._dirty = self._dirty, set()
                    scan, self._scan_requested = self._scan_requested, False
                for path in sorted(dirty):
                    self._read(tailer, path)
                if scan or stopping or time.monotonic() >= next_scan:
                    if self._follow_folder(observer):
                        self._scan(tailer)
                    next_scan = time.monotonic() + self.reconcile
                if stopping:
                    return
                self._wake.wait(max(0.0, next_scan - time.monotonic()))
                self._wake.clear()
        except BaseException as exc:  # reported through .error, not lost with the thread
            self.error = exc
        finally:
            self._ready.set()
            if observer is not None:
                observer.stop()
                observer.join(5)
            self._close_handles()
            if ledger is not None:
                ledger.close()

    def _follow_folder(self, observer: BaseObserver) -> bool:
        """Whether the folder is there to scan.

        While it is gone (moved away, deleted) the watcher waits for it, saying so in
        :attr:`waiting`, and looks again at each scan. When it is back, or a new folder
        took its name, the observer is pointed at it: it watched the folder's inode.
        """
        try:
            info = os.stat(self.folder)
            found = (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None
        except OSError:
            found = None
        if found != self._watched:
            observer.unschedule_all()
            if found is not None:
                observer.schedule(_Hints(self), str(self.folder), recursive=True)
            self._watched = found
        self.waiting = None if found is not None else f"{self.folder}: the folder is gone; waiting for it to come back"
        return found is not None

    def _scan(self, tailer: Tailer) -> None:
        """Import the study folders found, then read every file whose signature changed."""
        try:
            found = plan([self.folder])
        except FileNotFoundError:
            return  # gone since it was looked for: the next scan waits for it
        files = list(found.files)
        with self._lock:
            for moved in set(self._study_findings) - set(found.studies):
                del self._study_findings[moved]  # a study folder moved away has no problems left here
        for moved in set(self._imported) - set(found.studies):
            del self._imported[moved]
        for study in found.studies:
            files.extend(self._scan_study(tailer.ledger, study))
        present: set[str] = set()
        for file in files:
            path = str(file)
            present.add(path)
            try:
                info = file.stat()
            except FileNotFoundError:
                continue
            signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if self._seen.get(path) != signature or path in self._unverified:
                self._read(tailer, path, signature, verify=True)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        self._unverified &= present

    def _scan_study(self, ledger: Ledger, folder: Path) -> list[Path]:
        """Append what a study folder's whole files state (study.yaml, CSVs, run.json);
        return the JSONL files it holds.

        Runner processes rewrite them while a study runs, so a scan imports the folder
        again whenever one of its files changed since its last import (events are
        content-addressed: unchanged facts append nothing). A folder whose files are as
        its last import saw them is not imported again, so an idle watch over many
        finished studies costs next to nothing.
        """
        signature = _folder_signature(folder)  # taken first: a change during the import shows next scan
        kept = self._imported.get(folder)
        if kept is not None and signature is not None and kept[0] == signature:
            return kept[1]
        found = IngestReport()
        try:
            files = import_study_folder(ledger, folder, found, cache=self._checkpoints)
        except (StudyFolderError, OSError) as exc:
            # Often a file caught mid-rewrite: the scan after its rewrite reads it again.
            self._note_study(folder, [], [], str(exc))
            self._imported[folder] = (signature, [])
            return []
        except (LedgerBusyError, EventConflictError) as exc:
            # Busy: the next scan appends them. A conflict means the ledger was edited:
            # say so, and keep tailing the rest of the folder.
            self._note_study(folder, [], [], f"{folder}: study folder facts not appended: {exc}")
            return []
        self._note_study(folder, found.problems, found.orphan_traces, None)
        with self._lock:
            totals = self._totals
            totals.events_appended += found.events_appended
            totals.duplicates += found.duplicates
            totals.studies.extend(study for study in found.studies if study not in totals.studies)
        self._imported[folder] = (signature, files)
        return files

    def _note_study(self, folder: Path, problems: list[str], orphans: list[str], error: str | None) -> None:
        with self._lock:
            self._study_findings[folder] = (problems, orphans, error)

    def _note_error(self, message: str) -> None:
        with self._lock:
            if message not in self._totals.errors and len(self._totals.errors) < MAX_ERRORS:
                self._totals.errors.append(message)

    def _read(self, tailer: Tailer, path: str, signature: _Signature | None = None, *,
              verify: bool = False) -> None:
        """Read one file, keeping the watcher alive through unreadable files and busy locks.

        ``verify`` hashes the bytes before the committed offset first (the scan's passes);
        a hint's pass reads on from the digest the tailer holds, and the file is then
        verified at the next scan.
        """
        try:
            self._finish_replaced(tailer, path)
            handle = self._handle(path)
            if handle is None:
                return
            if signature is None:
                info = os.fstat(handle.fileno())
                signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            result = tailer.ingest_file(handle, os.path.abspath(path), verify=verify)
        except LedgerBusyError:
            self.hint([path])
            return
        except OSError as exc:
            self._drop_handle(path)
            self._note_error(f"{exc.filename or path}: {exc.strerror or exc}")
            if signature is not None:
                self._seen[path] = signature
            return
        if result.raced:
            self.hint([path])
            return
        self._seen[path] = signature
        if verify:
            self._unverified.discard(path)
        else:
            self._unverified.add(path)
        self._count(result)

    def _count(self, result: FileStats) -> None:
        with self._lock:
            self._files.add(result.path)
            self._totals.add(result)

    def _handle(self, path: str) -> IO[bytes] | None:
        """The open handle of a path (kept open, up to :data:`MAX_HANDLES`), or None if gone."""
        handle = self._handles.get(path)
        if handle is not None:
            self._handles.move_to_end(path)
            return handle
        try:
            # Never out of the watched folder, whatever a link in it says.
            handle = open_regular(path, within=str(self.folder))
        except FileNotFoundError:
            return None
        self._handles[path] = handle
        while len(self._handles) > MAX_HANDLES:
            _, oldest = self._handles.popitem(last=False)
            oldest.close()
        return handle

    def _finish_replaced(self, tailer: Tailer, path: str) -> None:
        """Read a held file to its end when its name now leads elsewhere (rotated, deleted)."""
        handle = self._handles.get(path)
        if handle is None:
            return
        held = os.fstat(handle.fileno())
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return
        result = tailer.ingest_file(handle, os.path.abspath(path))
        if not result.raced:
            self._count(result)
        self._drop_handle(path)

    def _drop_handle(self, path: str) -> None:
        handle = self._handles.pop(path, None)
        if handle is not None:
            handle.close()

    def _close_handles(self) -> None:
        for path in list(self._handles):
            self._drop_handle(path)
