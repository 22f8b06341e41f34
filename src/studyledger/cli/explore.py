"""Commands that look across a study or the whole ledger: conditions and search."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import click

from .. import query, search as search_index
from ..errors import StudyLedgerError, UnknownStudyError
from ..ledger import Ledger
from ..store import Target
from .common import Context, LIMIT, cli, echo_json, json_option, pass_context, printable, say, user_errors
from .core import STATUSES



@cli.command()
@click.argument("study_id")
@json_option
@pass_context
@user_errors
def conditions(ctx: Context, study_id: str, as_json: bool) -> None:
    """A study's conditions: factor levels, progress against the budget, success rate, metrics.

    Metrics are the evaluators' outputs and the runner's own metrics (latency_s, cost_usd,
    tokens, primary_outcome...; one named like an evaluator's is run:NAME), the study's
    primary outcome first. Each is the mean of each run's latest value with a 95% interval
    (Student's t; for true/false metrics the share that is true, Wilson's interval) and n;
    NaN and Infinity values are counted beside it, never averaged. duration_s is the
    runner's latency, else end minus start.
    """
    with ctx.reader() as ledger:
        if query.study(ledger.conn, study_id) is None:
            raise UnknownStudyError(f"unknown study {study_id!r}")
        rows = query.condition_summaries(ledger.conn, study_id)
        primary = query.primary_metric(ledger.conn, study_id)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        say("no conditions and no runs", err=True)
        return
    for row in rows:
        factors = ", ".join(f"{name}={query.value_text(level)}" for name, level in row["factors"].items())
        by_status = ", ".join(f"{count} {status}" for status, count in row["runs_by_status"].items()) or "no runs"
        planned = f" of {row['planned']} planned" if row["planned"] is not None else ""
        admissible = "  (inadmissible)" if row["admissible"] is False else ""
        say(f"{row['condition_id']}  {factors or '-'}{admissible}")
        rate = "-" if row["success_rate"] is None else f"{row['success_rate'] * 100:.0f}%"
        say(f"  runs     {row['runs']}{planned}: {by_status}; success {rate}")
        figures = [(name, row["metrics"][name]) for name in sorted(row["metrics"], key=lambda name: name != primary)]
        figures += [("duration_s", row["duration_s"])] if row["duration_s"]["n"] else []
        width = max([8, *(len(name) for name, _ in figures)])
        for name, summary in figures:
            say(f"  {name:<{width}} {query.summary_text(summary)}")


@cli.command()
@click.argument("text")
@click.option("--study", "study_id", help="Only hits in runs of this study.")
@click.option("--status", type=STATUSES, help="Only hits in runs with this status.")
@click.option("--kind", type=click.Choice(sorted(search_index.KINDS)),
              help="Only observations, rejected lines or run errors.")
@click.option("--event-type", help="Only observations of this event type.")
@click.option("--tool", help="Only observations of this tool.")
@click.option("--limit", type=LIMIT, default=50, show_default=True, help="Show at most this many hits, newest first.")
@json_option
@pass_context
@user_errors
def search(ctx: Context, text: str, study_id: str | None, status: str | None, kind: str | None,
           event_type: str | None, tool: str | None, limit: int, as_json: bool) -> None:
    """Find TEXT in every run: observations, rejected lines and run errors, newest first.

    TEXT's words are found in this order, the last one as a prefix (`unknown mater` finds
    "unknown material"); on a terminal they are in bold in each snippet. The first search
    builds the ledger's search index (once; every ingest keeps it current from then on).
    A ledger this user cannot write is searched with a temporary index, built for the one
    search (as long as a first search takes) and not kept.
    """
    filters = search_index.Filters(study_id=study_id, status=status, kind=kind, event_type=event_type, tool=tool)
    if search_index.match_expression(text) is None:
        raise click.UsageError("TEXT has no word to search for")
    kept = _ready_index(ctx)
    with ctx.reader() as ledger:
        if not kept:
            # The index cannot be written into this ledger: one for this search alone.
            search_index.build_temporary(ledger.conn)
        hits = search_index.search(ledger.conn, text, filters=filters, limit=limit)
        total = search_index.count(ledger.conn, text, filters=filters)
    if as_json:
        echo_json(hits)
        return
    for hit in hits:
        where = hit["run_id"] or "-"
        what = hit["event_type"] or hit["kind"]
        # The snippet is escaped part by part, so the bold the marks add is the only style.
        click.echo(f"{printable(str(hit['seq'])):>8} {printable(where):<20} {printable(what):<24} "
                   f"{_marked(hit['snippet'], hit['marks'])}")
    more = f"{total:,}+" if total >= search_index.COUNT_CAP else f"{total:,}"
    say(f"{more} hit(s){f', newest {len(hits)} shown' if len(hits) < total else ''}", err=True)


def _marked(snippet: str, marks: list[tuple[int, int]]) -> str:
    """The snippet with the searched words in bold (on a terminal; click drops the styles
    when the output is not one)."""
    parts, last = [], 0
    for start, end in marks:
        parts += [printable(snippet[last:start]), click.style(printable(snippet[start:end]), bold=True)]
        last = end
    return "".join(parts) + printable(snippet[last:])


def _ready_index(ctx: Context) -> bool:
    """Build or catch up the ledger's search index, a writer's step done once per ledger.

    Returns:
        Whether the ledger has a current index; False when it cannot be written (a
        read-only file or folder, another user's ledger, a lock held too long), said in
        one line on stderr.
    """
    with ctx.reader() as ledger:
        if search_index.is_current(ledger.conn):
            return True
    reason = _unwritable(ctx.db)
    if reason is None:
        try:
            with Ledger.open(ctx.db, create=False, source="cli") as ledger, ledger.store.transaction():
                if not search_index.exists(ledger.conn):
                    say("building the search index (first search of this ledger)…", err=True)
                search_index.build(ledger.conn)
            return True
        except (StudyLedgerError, OSError, sqlite3.Error) as exc:
            reason = str(exc).removeprefix(f"{ctx.db}: ")
    say(f"cannot write the search index into {ctx.db} ({reason}): searching with a temporary index, "
               "built for this search and not kept", err=True)
    return False


def _unwritable(db: Target) -> str | None:
    """Why this user cannot write the ledger (SQLite also writes beside it), or None (a
    server decides by role: the write is tried)."""
    if not isinstance(db, Path):
        return None
    if not os.access(db, os.W_OK):
        return "the file is read-only for this user"
    if not os.access(db.parent, os.W_OK | os.X_OK):
        return "its folder is read-only for this user"
    return None
