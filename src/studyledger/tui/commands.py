"""Command palette (ctrl+p) entries: jump to any study or run by id, or to a screen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .data import Row
from .literal import clean

if TYPE_CHECKING:
    from .app import StudyLedgerApp


class LedgerCommands(Provider):
    """Studies and runs by id (ids are read once per palette opening, off the UI thread)."""

    studies: list[Row]
    runs: list[Row]

    @property
    def ledger_app(self) -> StudyLedgerApp:
        """The app, typed."""
        from .app import StudyLedgerApp

        assert isinstance(self.app, StudyLedgerApp)
        return self.app

    async def startup(self) -> None:
        source = self.ledger_app.source
        if source is None:
            self.studies, self.runs = [], []
        else:
            self.studies, self.runs = await asyncio.to_thread(source.ids)

    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.ledger_app
        entries: list[tuple[str, str, Callable[[], object]]] = [
            ("screen: ingestion", "watched files, offsets, rejected lines", partial(app.action_ingestion)),
            ("screen: audit", "verify the chain, anomalies", partial(app.action_audit)),
        ]
        for study in self.studies:
            entries.append((f"study {clean(study['study_id'])}", clean(study["title"]),
                            partial(app.open_study, study["study_id"])))
        for run in self.runs:
            entries.append((f"run {clean(run['run_id'])}",
                            f"{clean(run['study_id'])} · {clean(run['condition_id'])} · {clean(run['status'])}",
                            partial(app.open_run, run["run_id"])))
        return entries

    async def discover(self) -> Hits:
        for name, help_text, action in self._entries()[:50]:
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, text=name, help=help_text)
