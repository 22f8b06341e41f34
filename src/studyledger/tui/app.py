"""The studyledger dashboard: studies -> runs -> one run -> one observation, live.

The app owns three things the screens share: the read side of the ledger
(:class:`~studyledger.tui.data.Source`), an optional in-process :class:`Watcher` for
``--watch``, and one background thread that polls SQLite's ``data_version`` (a counter
that moves only when another connection commits) and tells the visible screen to refresh.
An idle dashboard therefore runs one pragma per poll and nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.await_complete import AwaitComplete
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import get_current_worker

from ..errors import LedgerError
from ..ingestion.watcher import Watcher
from ..store import DatabaseURL, ledger_target
from .commands import LedgerCommands
from .data import Source, SourceClosed, now_utc
from .literal import clean
from .screens.audit import AuditScreen
from .screens.base import LiveScreen
from .screens.conditions import ConditionsScreen
from .screens.diff import DiffScreen
from .screens.ingestion import IngestionScreen
from .screens.no_ledger import NoLedgerScreen
from .screens.observation import ObservationScreen
from .screens.run import RunScreen
from .screens.runs import RunsScreen
from .screens.search import SearchScreen
from .screens.studies import StudiesScreen

DEFAULT_STALE_AFTER = 300.0
POLL_SECONDS = 0.25
# How often derived, time-based state (stale flags, "3m ago") is redrawn without new data.
TICK_SECONDS = 5.0
WATCHER_CHECK_SECONDS = 0.5


class StudyLedgerApp(App[None]):
    """The dashboard over one ledger (a SQLite file or a PostgreSQL server).

    Args:
        db: The ledger (with ``watch`` it is created when missing).
        watch: A folder to ingest in this process, off the UI thread, while the app runs.
        watch_options: The :class:`Watcher`'s options (``poll``, ``reconcile``, ...), as
            ``studyledger watch`` takes them.
        stale_after: Seconds without an event after which a running run is shown as stale.
        clock: Returns "now" (tests and screenshots pass a fixed clock).
        poll: Seconds between change checks.
    """

    CSS_PATH = "app.tcss"
    TITLE = "studyledger"
    COMMANDS = App.COMMANDS | {LedgerCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Keys"),
        # Every screen has these; the studies screen shows i and a in its footer, so the
        # others' keys fit in 80 columns.
        Binding("i", "ingestion", "Ingestion", show=False),
        Binding("a", "audit", "Audit", show=False),
        # Its own action name: the footer shows one key per action, and screens search with /.
        Binding("s", "search_all", "Search all"),
        Binding("t", "toggle_theme", "Theme", show=False),
    ]

    def __init__(
        self,
        db: str | Path | DatabaseURL,
        *,
        watch: str | Path | None = None,
        watch_options: Mapping[str, Any] | None = None,
        stale_after: float = DEFAULT_STALE_AFTER,
        clock: Callable[[], datetime] = now_utc,
        poll: float = POLL_SECONDS,
    ) -> None:
        super().__init__()
        self.db = ledger_target(db)
        self.watch_folder = Path(watch) if watch is not None else None
        self.watch_options = dict(watch_options or {})
        self.stale_after = stale_after
        self.clock = clock
        self.poll = poll
        self.source: Source | None = None
        self.watcher: Watcher | None = None
        self._watcher_state: str | None = None
        self._stop = threading.Event()

    # -- start and stop ---------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.watch_folder is not None:
            self.watcher = Watcher(self.db, self.watch_folder, **self.watch_options).start()
            self.set_interval(WATCHER_CHECK_SECONDS, self._check_watcher)
        self._open()
        self.set_interval(TICK_SECONDS, self._tick)

    def _open(self) -> None:
        """Open the ledger in a worker (catching up old projections can take a moment)."""

        def work() -> None:
            try:
                source: Source | str = Source(self.db)
            except LedgerError as exc:
                source = str(exc)
            self.call_from_thread(self._opened, source)

        self.run_worker(work, thread=True, group="open", exclusive=True)

    def _opened(self, source: Source | str) -> None:
        if isinstance(source, str):
            if not isinstance(self.screen, NoLedgerScreen):
                self.push_screen(NoLedgerScreen(str(self.db), source))
            self.set_timer(1.0, self._open)
            return
        self.source = source
        if isinstance(self.screen, NoLedgerScreen):
            self.pop_screen()
        self.push_screen(StudiesScreen())
        self.run_worker(self._watch_changes, thread=True, group="poll")

    def _watch_changes(self) -> None:
        """Poll ``data_version`` until the app exits; tell the UI when it moves."""
        assert self.source is not None
        worker = get_current_worker()
        try:
            last = self.source.data_version()
            while not self._stop.wait(self.poll) and not worker.is_cancelled:
                version = self.source.data_version()
                if version != last:
                    last = version
                    self.call_from_thread(self._changed)
        except (SourceClosed, RuntimeError):  # Shutting down.
            return

    def _changed(self) -> None:
        if isinstance(self.screen, LiveScreen):
            self.screen.refresh_data()

    def _check_watcher(self) -> None:
        """Say on every screen when the ``--watch`` watcher waits for its folder or has
        stopped: in the title while it lasts, and in a notification when it changes."""
        watcher = self.watcher
        assert watcher is not None
        if not watcher.running:
            state, short = f"watcher stopped{f': {watcher.error}' if watcher.error else ''}", "watcher stopped"
        elif watcher.waiting is not None:
            state, short = watcher.waiting, f"waiting for its folder {watcher.folder.name}"
        else:
            state, short = None, None
        if state == self._watcher_state:
            return
        self._watcher_state = state
        self.title = self.TITLE if short is None else f"{self.TITLE} [{clean(short)}]"
        if state is None:
            self.notify(clean(f"{watcher.folder}: back; watching it again"), markup=False)
        else:
            self.notify(clean(state), severity="error" if not watcher.running else "warning", markup=False)

    def _tick(self) -> None:
        if isinstance(self.screen, (StudiesScreen, RunsScreen)):
            self.screen.refresh_data()

    def on_unmount(self) -> None:
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop()
        if self.source is not None:
            self.source.close()

    # -- navigation -------------------------------------------------------------------------

    def open_study(self, study_id: str | None, condition_id: str | None = None) -> None:
        """Show the runs of a study (None: every run), or of one of its conditions."""
        if self.source is not None:
            self.push_screen(RunsScreen(study_id, condition_id=condition_id))

    def open_runs_without_study(self) -> None:
        """Show the runs no source tied to a study (trace-only runs)."""
        if self.source is not None:
            self.push_screen(RunsScreen(None, without_study=True))

    def open_conditions(self, study_id: str) -> None:
        """Show a study's conditions side by side."""
        if self.source is not None:
            self.push_screen(ConditionsScreen(study_id))

    def open_diff(self, run_a: str, run_b: str) -> None:
        """Show two runs side by side."""
        if self.source is not None:
            self.push_screen(DiffScreen(run_a, run_b))

    def open_run_at(self, run_id: str, seq: int) -> None:
        """Show a run with the cursor on one of its observations."""
        if self.source is not None:
            self.push_screen(RunScreen(run_id, at_seq=seq))

    def open_run(self, run_id: str) -> AwaitComplete | None:
        """Show one run; awaiting the result waits until its screen is mounted."""
        if self.source is None:
            return None
        return AwaitComplete(self._push(RunScreen(run_id)))

    async def _push(self, screen: Screen[None]) -> None:
        await self.push_screen(screen)

    def open_observation(self, seq: int) -> None:
        """Show one observation in full."""
        self.push_screen(ObservationScreen(seq))

    def action_go_back(self) -> None:
        """Go back one screen (never past the studies screen)."""
        if len(self.screen_stack) > 2:
            self.pop_screen()

    def action_search_all(self) -> None:
        """Search every run (observations, rejected lines, run errors)."""
        if self.source is not None and not isinstance(self.screen, SearchScreen):
            self.push_screen(SearchScreen())

    def action_ingestion(self) -> None:
        if self.source is not None and not isinstance(self.screen, IngestionScreen):
            self.push_screen(IngestionScreen())

    def action_audit(self) -> None:
        if self.source is not None and not isinstance(self.screen, AuditScreen):
            self.push_screen(AuditScreen())

    def action_help(self) -> None:
        """Show or hide the panel listing every key of the current screen."""
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"
