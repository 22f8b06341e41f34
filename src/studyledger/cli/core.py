"""Core commands: init, stats, runs, show, events, verify."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .. import query
from ..audit import checkpoint as checkpoints
from ..audit.record import record_audit
from ..audit.verify import VerifyReport, verify as verify_ledger
from ..ingestion.tailer import ensure_state_table
from ..ledger import Ledger
from ..schema import RunStatus
from ..store import DatabaseURL, Head
from .common import Context, LIMIT, cli, echo_json, echo_result, json_option, pass_context, say, user_errors

STATUSES = click.Choice([status.value for status in RunStatus])
# SQLite integers are 64-bit: a larger bound would overflow in the query, not be refused.
SEQ = click.IntRange(0, 2**63 - 1)


@cli.command()
@click.option("--roles", "role_prefix", metavar="PREFIX",
              help="PostgreSQL only, as the ledger's owner: create (or update) the group roles PREFIX_writer "
                   "(appends; no UPDATE, DELETE or TRUNCATE of events) and PREFIX_reader (SELECT only).")
@json_option
@pass_context
@user_errors
def init(ctx: Context, role_prefix: str | None, as_json: bool) -> None:
    """Create an empty ledger (or check that an existing one opens).

    On a PostgreSQL URL it creates the schema in the (existing, empty) database; see
    docs/postgres.md for setting up a lab's server.
    """
    if role_prefix is not None and not isinstance(ctx.db, DatabaseURL):
        raise click.UsageError("--roles needs a PostgreSQL ledger (--db postgresql://...)")
    roles = None
    with ctx.ledger(create=True) as ledger:
        if isinstance(ctx.db, DatabaseURL):
            from ..store_postgres import PostgresStore  # only with psycopg installed

            assert isinstance(ledger.store, PostgresStore)
            # Writers then find every table in place and need no CREATE privilege.
            ensure_state_table(ledger)
            if role_prefix is not None:
                roles = {"writer": f"{role_prefix}_writer", "reader": f"{role_prefix}_reader"}
                ledger.store.create_roles(roles["writer"], roles["reader"])
        head, created = ledger.head(), ledger.store.created
    echo_result(as_json, {"db": str(ctx.db), "created": created, "head": head, "roles": roles},
                f"{'created' if created else 'opened existing'} ledger {ctx.db} (head seq {head.seq})")
    if roles is not None and not as_json:
        say(f"roles: {roles['writer']} (writers), {roles['reader']} (readers); "
            f"grant them to login roles, e.g. GRANT {roles['writer']} TO alice")


@cli.command()
@json_option
@pass_context
@user_errors
def stats(ctx: Context, as_json: bool) -> None:
    """Counts of events, studies, runs (by status), observations, rejections and anomalies."""
    with ctx.reader() as ledger:
        data = ledger.stats()
    if as_json:
        echo_json(data)
        return
    by_status = ", ".join(f"{k} {v}" for k, v in data["runs_by_status"].items()) or "none"
    say(f"ledger        {ctx.db}")
    for name in ("events", "studies", "runs", "observations", "evaluations", "rejected", "anomalies"):
        say(f"{name:<13} {data[name]}")
    say(f"runs by status {by_status}")
    say(f"head          seq {data['head']['seq']}  chain {data['head']['chain'][:16]}…")
    if data["unfolded_events"]:
        say(f"{data['unfolded_events']} event(s) not folded into the derived tables yet; "
            f"`studyledger --db {ctx.db} init` folds them", err=True)


@cli.command()
@click.option("--study", "study_id", help="Only runs of this study.")
@click.option("--status", type=STATUSES, help="Only runs with this status.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Add each run's latest value of this metric (repeatable); JSON rows get "
                   "\"metrics\": {NAME: value}, null when the run has none.")
@json_option
@pass_context
@user_errors
def runs(ctx: Context, study_id: str | None, status: str | None, metrics: tuple[str, ...], as_json: bool) -> None:
    """List runs, optionally of one study and one status."""
    with ctx.reader() as ledger:
        rows = ledger.runs(study_id=study_id, status=status)
        values = query.run_metrics(ledger.conn, study_id=study_id) if metrics else {}
    for row in rows if metrics else []:
        found = values.get(row["run_id"], {})
        row["metrics"] = {name: found.get(name) for name in metrics}
    known = sorted({name for found in values.values() for name in found})
    for name in metrics:
        if name not in known:
            # A typo and a metric no run has reported yet read alike: say so, and go on.
            say(f"Warning: no run here has a metric {name!r}; "
                f"{'these have: ' + ', '.join(known) if known else 'no run has any metric yet'}", err=True)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        say("no runs", err=True)
        return
    extra = "".join(f" {name[:12]:>12}" for name in metrics)
    say(f"{'run_id':<20} {'study':<16} {'condition':<18} {'rep':>3} {'status':<8} {'obs':>6}{extra}")
    for row in rows:
        shown = "".join(f" {query.value_text(row['metrics'][name]):>12}" for name in metrics)
        say(
            f"{row['run_id']:<20} {str(row['study_id'] or '-'):<16} {str(row['condition_id'] or '-'):<18} "
            f"{row['replicate'] if row['replicate'] is not None else '-':>3} {row['status']:<8} "
            f"{row['observation_count']:>6}{shown}"
        )


@cli.command()
@click.argument("run_id")
@json_option
@pass_context
@user_errors
def show(ctx: Context, run_id: str, as_json: bool) -> None:
    """One run: its fields, status history, metrics, outputs, provenance and anomalies.

    Metrics are the evaluators' outputs and the runner's own metrics (latency, cost,
    tokens...); "metrics" in --json has both by the names `conditions` and `runs --metric`
    use (a runner's metric named like an evaluator's is run:NAME).
    """
    with ctx.reader() as ledger:
        data: dict[str, Any] = {
            "run": ledger.run(run_id),
            "transitions": ledger.transitions(run_id),
            "provenance": ledger.provenance(run_id),
            "anomalies": ledger.anomalies(run_id),
            "evaluations": query.evaluations(ledger.conn, run_id),
        }
        values = query.metric_values(ledger.conn, run_id=run_id)
        data["metrics"] = query.latest_metrics(values).get(run_id, {})
    run = data["run"]
    result = query.run_result(run)
    if as_json:
        echo_json({**data, "run": {**run, "result": result}})
        return
    for key, value in run.items():
        if key != "result":
            say(f"{key:<18} {query.value_text(value)}")
    if result is not None:
        # The runner's record of the latest attempt, in one line: the whole record is in --json.
        say(f"{'runner recorded':<18} {result.get('status')} at {query.value_text(result.get('at'))}, "
            f"latency {query.value_text(result.get('latency_s'))} s, "
            f"{len(result.get('metrics') or {})} metric(s)")
    say()
    say("status history")
    for t in data["transitions"]:
        flag = "" if t["legal"] else "  (anomaly)"
        extra = f" — {t['error']}" if t["error"] else ""
        say(f"  {t['at'] or '?'}  {t['from_status'] or '-'} -> {t['to_status']}  {t['reason'] or ''}{extra}{flag}")
    evaluated = [(f"{e['evaluator_id'] or '-'}/{e['metric_name'] or '-'}",
                  query.value_text(e["value"]) + (f" {e['metric_unit']}" if e["metric_unit"] else ""))
                 for e in values if e["source"] == "evaluator"]
    recorded = [(e["name"], query.value_text(e["value"])) for e in values if e["source"] == "run"]
    outputs = [(name, query.value_text(value))
               for name, value in query.flatten((result or {}).get("outputs") or {})]
    provenance = [(name, query.value_text(value))
                  for name, value in query.provenance_fields(data["provenance"][-1])] if data["provenance"] else []
    for title, pairs in (("evaluator outputs", evaluated), ("run metrics (the runner's)", recorded),
                         ("outputs", outputs), ("provenance", provenance)):
        if pairs:
            say()
            say(title)
            width = max(len(name) for name, _ in pairs)
            for name, shown in pairs:
                say(f"  {name:<{width}} {shown}")
    for a in data["anomalies"]:
        say(f"anomaly (seq {a['seq']}, {a['severity']}): {a['kind']}: {a['message']}")


@cli.command()
@click.option("--run", "run_id", help="Only events of this run.")
@click.option("--after", type=SEQ, default=0, show_default=True, help="Only events after this sequence number.")
@click.option("--limit", type=LIMIT, help="At most this many events.")
@json_option
@pass_context
@user_errors
def events(ctx: Context, run_id: str | None, after: int, limit: int | None, as_json: bool) -> None:
    """Stored events in sequence order, optionally of one run or after a sequence number."""
    with ctx.reader(tables=False) as ledger:
        rows = ledger.events(after=after, run_id=run_id, limit=limit)
    if as_json:
        echo_json([row.to_dict() for row in rows])
        return
    if not rows:
        say("no events", err=True)
        return
    for row in rows:
        say(f"{row.seq:>8} {row.event_id} {row.kind:<22} {row.run_id or row.study_id or '-':<20} {row.source}")


@cli.command()
@click.option("--checkpoint", "checkpoint_file", type=click.Path(path_type=Path),
              help="Also prove the ledger still extends this checkpoint (studyledger checkpoint --out).")
@click.option("--record", is_flag=True, help="Record this audit in the ledger (an audit_recorded event).")
@json_option
@pass_context
@user_errors
def verify(ctx: Context, checkpoint_file: Path | None, record: bool, as_json: bool) -> None:
    """Check ids, sequence, hash chain and triggers; exit 1 when anything is wrong."""
    with ctx.reader(tables=False) as ledger:
        pinned = checkpoints.load(checkpoint_file) if checkpoint_file is not None else None
        report = verify_ledger(ledger, checkpoint=pinned)
    if record:
        with ctx.ledger() as ledger:
            _record_verify(ledger, report, checkpoint_file)
    if as_json:
        echo_json(report.to_dict())
    elif report.ok:
        say(f"ok: {report.events} events, head seq {report.head_seq}, chain {report.head_chain[:16]}…")
    else:
        first = report.first_failure
        assert first is not None
        say(f"FAILED: first failing seq {first.seq}: {first.check}: {first.message}", err=True)
        for problem in report.problems:
            say(f"  seq {problem.seq}: {problem.check}: {problem.message}", err=True)
    raise SystemExit(0 if report.ok else 1)


def _record_verify(ledger: Ledger, report: VerifyReport, checkpoint_file: Path | None) -> None:
    """Append the audit just made as an ``audit_recorded`` event."""
    first = report.first_failure
    record_audit(ledger, "verify" if checkpoint_file is None else "verify+checkpoint", report.ok, {
        "events": report.events,
        "problems": len(report.problems),
        "checks_failed": sorted({p.check for p in report.problems}),
        "first_problem": None if first is None else asdict(first),
        "checkpoint": None if checkpoint_file is None else str(checkpoint_file),
    }, head=Head(report.head_seq, report.head_chain))
