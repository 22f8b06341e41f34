"""Commands of the audit area: checkpoint, replay, diff, export, merge, audits.

``verify --checkpoint`` and ``verify --record`` live on the core ``verify`` command and
call :mod:`studyledger.audit.verify`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import query
from ..audit import checkpoint as checkpoints
from ..audit.diff import diff_runs
from ..audit.export_canonical import export_canonical
from ..audit.export_jsonl import export_jsonl
from ..audit.merge import merge as merge_ledgers
from ..audit.record import audits as recorded_audits
from ..audit.record import record_audit
from ..audit.replay import parse_as_of, replay as replay_store
from ..audit.restore import restore as restore_export
from ..store import Head, Target
from .common import (Context, LedgerTargetType, cli, echo_json, echo_result, json_option, pass_context, printable, say,
                     user_errors)

# Plain paths: a directory or a missing file gets our own one-line error, not a usage screen.
FILE = click.Path(path_type=Path)


@cli.command()
@click.option("--out", "out", type=FILE, help="Write a checkpoint of the ledger's head to this file.")
@click.option("--compare", nargs=2, type=FILE, metavar="OLD NEW",
              help="Check that one checkpoint extends another (RFC 6962 consistency proof).")
@json_option
@pass_context
@user_errors
def checkpoint(ctx: Context, out: Path | None, compare: tuple[Path, Path] | None, as_json: bool) -> None:
    """Pin the ledger's history in a small file kept elsewhere, or compare two such files.

    A checkpoint holds the head sequence number, its chain value, the event count and a
    Merkle root over the event ids. Later, `studyledger verify --checkpoint FILE` proves the
    ledger still extends it: it catches a cut-off tail and a consistently rewritten
    history, which the hash chain alone cannot. With --compare, checkpoints of different
    sizes need the ledger (--db) to compute the proof; the proof is checked against the
    two files' roots only, so a tampered ledger cannot make it pass.
    """
    if (out is None) == (compare is None):
        raise click.UsageError("give either --out FILE or --compare OLD NEW")
    if out is not None:
        with ctx.reader(tables=False) as ledger:
            taken = checkpoints.take(ledger.store)
        checkpoints.write(taken, out)
        echo_result(as_json, {"path": str(out), **taken.to_dict()},
                    f"checkpoint {out}: {taken.tree_size} events, head seq {taken.head_seq}, "
                    f"root {taken.merkle_root[:16]}…")
        return
    assert compare is not None
    first, second = checkpoints.load(compare[0]), checkpoints.load(compare[1])
    if first.tree_size == second.tree_size or min(first.tree_size, second.tree_size) == 0:
        result = checkpoints.compare(None, first, second)
    else:
        with ctx.reader(tables=False) as ledger:
            result = checkpoints.compare(ledger.store, first, second)
    if as_json:
        echo_json(result.to_dict())
    else:
        verdict = "consistent" if result.consistent else "INCONSISTENT"
        say(f"{verdict}: {result.reason}", err=not result.consistent)
    raise SystemExit(0 if result.consistent else 1)


@cli.command()
@click.option("--as-of", "as_of", metavar="SEQ|TIMESTAMP",
              help="Report the state after this sequence number, or of the events recorded at or "
                   "before this ISO-8601 time (UTC when no offset is given).")
@click.option("--record", is_flag=True, help="Record this audit in the ledger (an audit_recorded event).")
@json_option
@pass_context
@user_errors
def replay(ctx: Context, as_of: str | None, record: bool, as_json: bool) -> None:
    """Rebuild every derived table from the events and compare it with the stored ones.

    Also re-checks every stored status transition against the state machine. Exits 1 when
    the rebuilt tables differ from the stored ones. With --as-of it reports the state at
    that point instead and compares nothing (identical is null).
    """
    seq, at = parse_as_of(as_of) if as_of is not None else (None, None)
    # Read-only, and without the tables check: stale or edited tables are what replay finds.
    with ctx.reader(tables=False) as ledger:
        report = replay_store(ledger, seq=seq, at=at)
    if record:
        with ctx.ledger() as ledger:
            record_audit(ledger, "replay", report.identical, {
                "events": report.events, "as_of": report.as_of, "difference_count": report.difference_count,
                "transitions": report.transitions, "runs_by_status": report.runs_by_status,
                "anomaly_count": report.anomaly_count}, head=Head(report.head["seq"], report.head["chain"]))
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_replay(report.to_dict())
    raise SystemExit(1 if report.identical is False else 0)


def _print_replay(data: dict[str, Any]) -> None:
    if data["as_of"] is not None:
        point = data["as_of"]["at"] or f"seq {data['as_of']['seq']}"
        say(f"state as of {point}: {data['events']} events, head seq {data['head']['seq']}")
    else:
        verdict = "identical" if data["identical"] else f"DIFFERENT ({data['difference_count']} differences)"
        say(f"replayed {data['events']} events: rebuilt tables {verdict}")
        for table, counts in data["tables"].items():
            mark = "" if not counts["differences"] else f"  {counts['differences']} differ"
            say(f"  {table:<17} stored {counts['stored']:>8}  rebuilt {counts['rebuilt']:>8}{mark}")
    for entry in data["differences"]:
        say(f"  {entry['table']} {entry['problem']} {entry['key']}: "
            f"{entry.get('message') or {'stored': entry['stored'], 'rebuilt': entry['rebuilt']}}")
    t = data["transitions"]
    say(f"transitions: {t['checked']} checked, {t['flagged']} flagged as anomalies, {t['invalid']} invalid")
    by_status = ", ".join(f"{k} {v}" for k, v in data["runs_by_status"].items()) or "none"
    say(f"runs by status: {by_status}")
    kinds = ", ".join(f"{k} {v}" for k, v in data["anomalies_by_kind"].items()) or "none"
    say(f"anomalies: {data['anomaly_count']} ({kinds})")


@cli.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--changed", is_flag=True, help="Only show fields whose values differ.")
@json_option
@pass_context
@user_errors
def diff(ctx: Context, run_a: str, run_b: str, changed: bool, as_json: bool) -> None:
    """Two runs side by side: provenance, configuration and outcome ('*' marks a difference)."""
    with ctx.reader() as ledger:
        data = diff_runs(ledger, run_a, run_b)
    if as_json:
        echo_json(data)
        return
    sections = ("provenance", "configuration", "outcome")
    width = max([5, *(len(row["field"]) for section in sections for row in data[section])])
    say(f"{'':<2}{'field':<{width}} {'A: ' + run_a:<30} {'B: ' + run_b}")
    for section in sections:
        say(f"{section}")
        for row in data[section]:
            if changed and row["same"]:
                continue
            mark = " " if row["same"] else "*"
            say(f"{mark} {row['field']:<{width}} {_short(row['a']):<30} {_short(row['b'])}")
    say(f"{data['differences']} field(s) differ")


def _short(value: Any) -> str:
    text = query.value_text(value)
    return text if len(text) <= 28 else text[:27] + "…"


@cli.command()
@click.argument("directory", type=FILE)
@click.option("--format", "fmt", type=click.Choice(["canonical", "jsonl"]), default="canonical",
              show_default=True,
              help="canonical: the design-research-experiments artifact files (schema 0.2.0), one "
                   "folder per study. jsonl: every event in studyledger's own line format.")
@json_option
@pass_context
@user_errors
def export(ctx: Context, directory: Path, fmt: str, as_json: bool) -> None:
    """Write the ledger out for other tools (canonical) or other ledgers (jsonl)."""
    if directory.exists() and not directory.is_dir():
        raise click.ClickException(printable(f"{directory}: exists and is not a folder; export writes a folder"))
    with ctx.reader(tables=fmt != "jsonl") as ledger:
        result = (export_jsonl if fmt == "jsonl" else export_canonical)(ledger, directory)
    if as_json:
        echo_json(result)
    elif fmt == "jsonl":
        say(f"wrote {result['events']} events to {result['path']}")
    else:
        for study in result["studies"]:
            say(f"{study['folder']}: {study['runs']} runs, {study['events']} events, "
                f"{study['evaluations']} evaluations")


@cli.command()
@click.argument("other", type=LedgerTargetType(FILE))
@click.option("--trust-source", is_flag=True,
              help="Merge even when OTHER fails verify; the merge is recorded in this ledger.")
@json_option
@pass_context
@user_errors
def merge(ctx: Context, other: Target, trust_source: bool, as_json: bool) -> None:
    """Append the events of another ledger that this one lacks, in the other's order.

    OTHER is a ledger file or a postgresql:// URL, so events move between backends either
    way. It is verified first and refused when it fails (unless --trust-source); every event
    is checked against its id and its kind's shape. Merging again, or in the other
    direction, never duplicates an event.
    """
    with ctx.ledger(create=True) as ledger:
        report = merge_ledgers(ledger, other, trust_source=trust_source)
    echo_result(as_json, report, f"merged {other}: {report.appended} new events, {report.already_present} "
                                 f"already here; head seq {report.head.seq}")


@cli.command()
@click.argument("export", type=FILE)
@click.option("--checkpoint", "checkpoint_file", type=FILE,
              help="A checkpoint of the exported ledger, kept elsewhere: the export must extend it.")
@json_option
@pass_context
@user_errors
def restore(ctx: Context, export: Path, checkpoint_file: Path | None, as_json: bool) -> None:
    """Restore a ledger from its JSONL export (the folder or its events.jsonl) into an empty --db.

    The export is checked whole first (ids, shapes, seqs, the hash chain, and the
    checkpoint if given); then every event is restored with its recording time and
    source, so the ledger has the exported ids, order and head chain. Complete or absent.
    """
    pinned = checkpoints.load(checkpoint_file) if checkpoint_file is not None else None
    with ctx.ledger(create=True) as ledger:
        report = restore_export(ledger, export, checkpoint=pinned)
    echo_result(as_json, report, f"restored {report.events} events from {report.source}; "
                                 f"head seq {report.head.seq}, chain {report.head.chain[:16]}…")


@cli.command()
@json_option
@pass_context
@user_errors
def audits(ctx: Context, as_json: bool) -> None:
    """Audits recorded in the ledger (verify --record, replay --record)."""
    with ctx.reader(tables=False) as ledger:
        rows = recorded_audits(ledger.conn)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        say("no recorded audits", err=True)
    for row in rows:
        verdict = {True: "ok", False: "FAILED", None: "-"}[row["ok"]]
        head = row["head"]["seq"] if row["head"] else "?"
        say(f"seq {row['seq']:>8}  {row['at'] or '?'}  {row['check'] or '?':<18} {verdict:<6} at head seq {head}")
