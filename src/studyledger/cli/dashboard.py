"""Commands of the dashboard area (registered on the ``studyledger`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from ..ingestion.adapters import LineAdapter
from .common import Context, cli, pass_context, user_errors
from .ingest import watch_options, watched_folder



@cli.command()
@click.option("--watch", "folder", type=click.Path(path_type=Path), default=None, metavar="FOLDER",
              help="Also ingest this folder (recursively) while the dashboard runs, off the UI thread, "
                   "as `studyledger watch` does (with its options below).")
@watch_options
@click.option("--stale-after", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds without an event after which a running run is shown as stale.")
@pass_context
@user_errors
def tui(ctx: Context, folder: Path | None, poll: float | None, reconcile: float, line_limit: int,
        adapter: LineAdapter | None, stale_after: float) -> None:
    """Open the terminal dashboard on the ledger: studies, runs and observations, live.

    New events appear within a second while other processes (watchers, running
    experiments) write. Press ? for the keys, ctrl+p to jump to a study or run by id,
    q to quit.
    """
    if folder is not None:
        watched_folder(folder)
    # Imported here so every other command starts without loading Textual.
    from ..tui.app import StudyLedgerApp

    options = {"poll": poll, "reconcile": reconcile, "line_limit": line_limit, "adapter": adapter}
    StudyLedgerApp(ctx.db, watch=folder, watch_options=options, stale_after=stale_after).run()
