"""Commands of the ingest area: ``ingest``, ``watch`` and ``rejects``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from .. import query
from ..errors import ValidationError
from ..ingestion.adapters import LineAdapter, load_adapter
from ..ingestion.lines import DEFAULT_LINE_LIMIT
from ..ingestion.service import IngestReport, Progress, ingest as ingest_into
from ..ingestion.watcher import DEFAULT_RECONCILE, Watcher
from .common import LIMIT, Context, cli, echo_json, json_option, pass_context, printable, say, user_errors

F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_MIN_BYTES = 8 * 1024 * 1024
"""Inputs smaller than this finish too fast for a progress bar to help."""

STATUS_INTERVAL = 0.25

line_limit_option = click.option(
    "--line-limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LINE_LIMIT,
    show_default=True,
    metavar="BYTES",
    help="Longest line parsed; longer lines are kept as rejected and skipped.",
)


def _load_adapter(_ctx: click.Context, _param: click.Parameter, value: str | None) -> LineAdapter | None:
    if value is None:
        return None
    # A module beside the user is found as `python -m` would find it (uvicorn's --app-dir does
    # the same): the console script's path holds only its own folder.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return load_adapter(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


adapter_option = click.option(
    "--adapter",
    metavar="MODULE:FUNCTION",
    callback=_load_adapter,
    help="Your own line adapter for a format studyledger does not know, tried before the built-in "
         "ones; MODULE is found on the Python path or in the current folder (docs/formats.md).",
)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@line_limit_option
@adapter_option
@json_option
@pass_context
@user_errors
def ingest(ctx: Context, paths: tuple[Path, ...], line_limit: int, adapter: LineAdapter | None,
           as_json: bool) -> None:
    """Import JSONL files and folders (recursively), each line exactly once.

    A study output folder (holding study.yaml, or upstream's artifacts/ of a study still
    running or killed) brings its study, conditions, runs and evaluations too. Re-running it reads only what was appended since. A line that cannot
    be used is kept as a rejected line (see `studyledger rejects`); nothing read is dropped.
    """
    with ctx.ledger(create=True) as ledger, _progress() as advance:
        totals = ingest_into(ledger, paths, line_limit=line_limit, adapter=adapter, progress=advance)
    orphans, problems = totals.orphan_traces, totals.problems
    if as_json:
        echo_json(totals.to_dict())
    else:
        say(
            f"{totals.files} file(s): {totals.lines_read} line(s) read, {totals.lines_accepted} accepted, "
            f"{totals.lines_rejected} rejected; {totals.events_appended} event(s) appended, "
            f"{totals.duplicates} already stored"
        )
        if orphans:
            say(f"{len(orphans)} trace file(s) no run references, kept as orphans")
        for problem in problems:
            say(f"Warning: {problem}", err=True)
        if totals.lines_rejected:
            say("rejected lines are listed by `studyledger rejects`", err=True)
    for message in totals.errors:
        say(f"Error: {message}", err=True)
    if totals.errors:
        sys.exit(1)


@contextmanager
def _progress() -> Iterator[Progress]:
    """A progress bar over the input bytes on a terminal, for inputs big enough to need one.

    The bar appears at the first report, when the total is known.
    """
    bar: Any = None
    shown = 0
    with ExitStack() as stack:

        def advance(done: int, total: int) -> None:
            nonlocal bar, shown
            if bar is None:
                if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
                    return
                bar = stack.enter_context(click.progressbar(length=total, label="ingesting", file=sys.stderr))
            bar.update(done - shown)
            shown = done

        yield advance


def watch_options(func: F) -> F:
    """``--poll``, ``--reconcile``, ``--line-limit`` and ``--adapter``: how a folder is
    watched, by ``watch`` and ``tui --watch`` alike."""
    options = (
        click.option("--poll", type=click.FloatRange(min=0.01), default=None, metavar="SECONDS",
                     help="Poll every SECONDS instead of using filesystem events (network filesystems)."),
        click.option("--reconcile", type=click.FloatRange(min=0.05), default=DEFAULT_RECONCILE, show_default=True,
                     metavar="SECONDS", help="Full rescan interval that catches anything the events missed."),
        line_limit_option,
        adapter_option,
    )
    for option in reversed(options):
        func = option(func)
    return func


def watched_folder(folder: Path) -> Path:
    """The folder to watch, or the one line ``watch`` and ``tui --watch`` both give (exit 1)."""
    if not folder.is_dir():
        what = "a file; watch takes a folder" if folder.exists() else "no such folder"
        raise click.ClickException(printable(f"{folder}: {what}"))
    return folder


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@watch_options
@json_option
@pass_context
@user_errors
def watch(
    ctx: Context, folder: Path, poll: float | None, reconcile: float, line_limit: int,
    adapter: LineAdapter | None, as_json: bool
) -> None:
    """Tail every JSONL file under FOLDER into the ledger until Ctrl-C or SIGTERM.

    Each batch of lines is committed with its file offsets, so stopping (or being
    killed) at any moment loses nothing and duplicates nothing on the next start.
    """
    watched_folder(folder)
    stop = threading.Event()
    with _stop_on_signals(stop):
        watcher = Watcher(ctx.db, folder, poll=poll, reconcile=reconcile, line_limit=line_limit,
                          adapter=adapter).start()
        say(f"watching {folder} into {ctx.db} (Ctrl-C to stop)", err=True)
        live = sys.stderr.isatty() and not as_json
        waiting: str | None = None
        try:
            while watcher.running and not stop.wait(STATUS_INTERVAL):
                if watcher.waiting != waiting:  # said once each way, on its own line
                    waiting = watcher.waiting
                    click.echo("\r" if live else "", nl=False, err=True)
                    say(waiting or f"{watcher.folder}: back; watching it again", err=True)
                if live:
                    # The carriage return is ours (it redraws the line); the rest is escaped.
                    click.echo("\r", nl=False, err=True)
                    say(_status(watcher.stats), nl=False, err=True)
        finally:
            totals = watcher.stop()
    if live:
        say("", err=True)
    if watcher.error is not None:
        raise click.ClickException(printable(f"watcher stopped: {watcher.error}"))
    if as_json:
        echo_json(totals.to_dict())
    else:
        say(f"stopped: {_status(totals)}")
    for message in totals.errors:
        say(f"Error: {message}", err=True)


def _status(stats: IngestReport) -> str:
    return (
        f"files {stats.files}  lines {stats.lines_read}  events {stats.events_appended}  "
        f"rejected {stats.lines_rejected}"
    )


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM ask for a clean stop instead of interrupting a commit."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@cli.command()
@click.option("--limit", type=LIMIT, default=None, help="Show at most this many.")
@json_option
@pass_context
@user_errors
def rejects(ctx: Context, limit: int | None, as_json: bool) -> None:
    """List lines the ingester could not use: FILE:LINE:OFFSET and the reason."""
    with ctx.reader() as ledger:
        rows = query.rejections(ledger.conn, limit=limit)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        say("no rejected lines", err=True)
        return
    for row in rows:
        say(f"{row['file']}:{row['line']}:{row['offset']} {row['reason']}")
