"""Commands of the dashboard area (registered on the ``studyledger`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import Context, cli, user_errors

pass_context = click.make_pass_decorator(Context)


@cli.command()
@click.option("--watch", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Also ingest this folder (recursively) while the dashboard runs, off the UI thread.")
@click.option("--stale-after", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds without an event after which a running run is shown as stale.")
@pass_context
@user_errors
def tui(ctx: Context, folder: Path | None, stale_after: float) -> None:
    """Open the terminal dashboard on the ledger: studies, runs and observations, live.

    New events appear within a second while other processes (watchers, running
    experiments) write. Press ? for the keys, ctrl+p to jump to a study or run by id,
    q to quit.
    """
    # Imported here so every other command starts without loading Textual.
    from ..tui.app import StudyLedgerApp

    StudyLedgerApp(ctx.db, watch=folder, stale_after=stale_after).run()
