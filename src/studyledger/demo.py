"""The demo: a ledger that fills itself, to show the three uses in one command.

In a scratch folder it creates a ledger, ingests the committed example inputs
(``ledger_examples/``: a finished study with its failures, crashes and malformed lines),
then starts the simulator writing a live study into a drop folder while a watcher tails that
folder into the ledger. The dashboard (or, without one, a timer) runs on top; stopping the
demo stops the simulator first and the watcher second, so every line written is committed.

This module never imports the dashboard: ``studyledger demo`` opens it, ``--no-tui`` does
not, and CI runs the latter.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from . import query
from .ingestion.service import IngestReport, ingest
from .ingestion.watcher import Watcher
from .ledger import Ledger
from .simulate import Simulator

EXAMPLES_ENV = "STUDYLEDGER_EXAMPLES"
EXAMPLES_NAME = "ledger_examples"


def find_examples() -> Path | None:
    """Where the example inputs are: ``$STUDYLEDGER_EXAMPLES``, else the source checkout.

    An editable install runs from the checkout (``src/studyledger`` -> the repository
    root holds ``ledger_examples/``). A wheel carries no examples: then this returns None
    and the demo says so and runs with the simulated study only.
    """
    configured = os.environ.get(EXAMPLES_ENV)
    if configured:
        return Path(configured)
    candidate = Path(__file__).resolve().parents[2] / EXAMPLES_NAME
    return candidate if candidate.is_dir() else None


class Demo:
    """A scratch ledger, the examples ingested, a simulated study flowing in live.

    Use as a context manager: entering ingests the examples and starts the watcher and
    the simulator; leaving stops them (simulator first, so the watcher's final pass reads
    every line the simulator wrote).

    Args:
        folder: The scratch folder; the ledger is ``demo.db`` and the drop folder ``drop/``.
        seconds: How long the simulated study takes to unfold.
        runs: Runs in the simulated study.
        seed: Seed of the simulated study.
        examples: Example inputs to ingest first (None: none).
        poll: Use watchdog's polling observer with this interval (None: native events).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        seconds: float = 120.0,
        runs: int = 12,
        seed: int = 0,
        examples: Path | None = None,
        poll: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.db = self.folder / "demo.db"
        self.drop = self.folder / "drop"
        self.examples = examples
        self.examples_ingested = IngestReport()
        self.watched = IngestReport()
        self._stop = threading.Event()
        self.simulator = Simulator(self.drop, runs=runs, seconds=seconds, seed=seed, stop=self._stop)
        self._watcher = Watcher(self.db, self.drop, poll=poll)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Demo:
        self.drop.mkdir(parents=True, exist_ok=True)
        with Ledger.open(self.db, source="demo") as ledger:
            if self.examples is not None:
                self.examples_ingested = ingest(ledger, [self.examples])
        self._watcher.start()
        self._thread = self.simulator.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the simulator, then the watcher (whose final pass commits what is left)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.watched = self._watcher.stop()

    def wait(self, seconds: float) -> None:
        """Let the demo run for ``seconds`` (returns early once :meth:`stop` was called)."""
        self._stop.wait(seconds)

    @property
    def running(self) -> bool:
        """Whether anything the demo started (simulator, watcher) is still running."""
        simulating = self._thread is not None and self._thread.is_alive()
        return simulating or self._watcher.running

    @property
    def watcher_error(self) -> BaseException | None:
        """Why the watcher stopped, if it failed."""
        return self._watcher.error

    def summary(self) -> dict[str, Any]:
        """Where things are and what the ledger holds (the ``--no-tui`` report)."""
        with Ledger.open(self.db, create=False) as ledger:
            stats = query.stats(ledger.conn)
        return {
            "folder": str(self.folder),
            "db": str(self.db),
            "drop": str(self.drop),
            "examples": str(self.examples) if self.examples is not None else None,
            "examples_ingested": self.examples_ingested.to_dict(),
            "watched": self.watched.to_dict(),
            "simulator": {"lines": self.simulator.stats.lines, "files": self.simulator.stats.files},
            "ledger": stats,
        }
