"""Commands of the demo area: ``simulate`` and ``demo``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from ..demo import EXAMPLES_ENV, Demo, find_examples
from ..simulate import STUDY_ID, Simulator
from .common import Context, cli, echo_json, echo_result, json_option, printable, say, user_errors
from .core import stats as stats_command



@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seconds", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="How long the study takes to unfold.")
@click.option("--runs", type=click.IntRange(min=1), default=12, show_default=True, help="Runs in the study.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same lines.")
@click.option("--study", "study_id", default=STUDY_ID, show_default=True,
              help="The study's id (machines of a lab each simulate their own).")
@json_option
@user_errors
def simulate(folder: Path, seconds: float, runs: int, seed: int, study_id: str, as_json: bool) -> None:
    """Write a live simulated study into FOLDER, the way real programs do.

    One agent trace file per run under FOLDER/traces/ and studyledger's own lines in
    FOLDER/ledger.jsonl, appended line by line at a realistic pace: runs start, call models
    and tools, some fail, one hangs and never finishes. Point `studyledger watch` (or the
    dashboard) at FOLDER to see it arrive. Ctrl-C stops it.
    """
    simulator = Simulator(folder, runs=runs, seconds=seconds, seed=seed, study_id=study_id)
    thread = simulator.start()
    try:
        # Joined in slices so Ctrl-C reaches the main thread promptly.
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        simulator.stop.set()
        thread.join()
    if simulator.error is not None:
        raise simulator.error  # one line on stderr, exit 1 (user_errors)
    result = {"folder": str(folder), "lines": simulator.stats.lines, "files": simulator.stats.files}
    echo_result(as_json, result, f"wrote {result['lines']} line(s) to {result['files']} file(s) in {folder}")


@cli.command()
@click.option("--tui/--no-tui", default=True, show_default=True,
              help="Open the dashboard; --no-tui runs for --seconds and prints the stats.")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=None,
              help="How long the simulated study runs [default: 120 with the dashboard, 10 without].")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch folder to use (kept afterwards) [default: a new temporary folder].")
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help=f"Example inputs to ingest first [default: ledger_examples/ of the checkout, or ${EXAMPLES_ENV}].")
@click.option("--runs", type=click.IntRange(min=1), default=12, show_default=True, help="Runs in the simulated study.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated study.")
@json_option
@user_errors
def demo(tui: bool, seconds: float | None, folder: Path | None, examples: Path | None, runs: int, seed: int,
         as_json: bool) -> None:
    """See studyledger work: examples ingested, a live study flowing in, the dashboard on top.

    Creates a ledger in a scratch folder, ingests ledger_examples/, starts a simulated
    study writing into a drop folder with a watcher tailing it, and opens the dashboard.
    Quitting the dashboard stops everything. With --no-tui it runs for --seconds and
    prints the ledger's stats (for CI, or without a terminal).
    """
    examples = examples or find_examples()
    if examples is None:
        say(f"note: ledger_examples/ not found (installed from a wheel?); set ${EXAMPLES_ENV} or "
            "pass --examples DIR to include them. Running with the simulated study only.", err=True)
    work = folder or Path(tempfile.mkdtemp(prefix="studyledger-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    duration = seconds if seconds is not None else (120.0 if tui else 10.0)
    app_run = _dashboard(work / "demo.db") if tui else None
    with Demo(work, seconds=duration, runs=runs, seed=seed, examples=examples) as running:
        if not as_json:
            say(f"demo ledger {running.db}; simulated study writing into {running.drop}", err=True)
        try:
            if app_run is not None:
                app_run()
            else:
                running.wait(duration)
        except KeyboardInterrupt:
            pass
    if running.watcher_error is not None:
        raise click.ClickException(printable(f"the watcher stopped: {running.watcher_error}"))
    if as_json:
        echo_json(running.summary())
        return
    if not tui:
        with click.Context(stats_command, obj=Context(running.db)) as sub:
            sub.invoke(stats_command, as_json=False)
    say(err=True)
    say(f"explore it again: studyledger --db {running.db} tui", err=True)


def _dashboard(db: Path) -> Callable[[], None]:
    """A function that runs ``studyledger tui`` on ``db`` in this process until it quits.

    Goes through the registered command rather than the app's classes, so the demo opens
    the dashboard exactly as a user would and depends on nothing inside it.
    """
    command = cli.get_command(click.get_current_context(), "tui")
    if command is None:
        raise click.ClickException("the dashboard is not available in this install; run with --no-tui")

    def run() -> None:
        with command.make_context("tui", [], obj=Context(db)) as sub:
            command.invoke(sub)

    return run
