"""One run: its status timeline, metrics, outputs, provenance and anomalies over its observations.

The run's figures are one table in three groups: what its evaluators measured, the
runner's own metrics (latency, cost, tokens, process counts, what the agent reported)
and the run's outputs, nested values spelled out as dotted paths, NaN and Infinity as
such. ``d`` hides the details, ``D`` gives them the whole screen (arrows scroll them).
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.widgets import Static

from ...query import flatten, is_stale, provenance_fields, run_duration, value_text
from ..data import ObservationFilter, Row, SpanDepths
from ..format import duration, full_time, metric_cell, status_text
from ..literal import clean, literal, shorten
from ..observation_list import ObservationList
from ..widgets import LedgerFooter, LedgerHeader, SearchBar
from .base import LiveScreen
from .filter import FilterScreen


class RunScreen(LiveScreen):
    """A run and its observations; enter opens one observation."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.go_back", "Back"),
        Binding("f", "filter", "Filter"),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match(False)", "Next", show=False),
        Binding("N", "next_match(True)", "Prev", show=False),
        Binding("F", "follow", "Follow"),
        Binding("d", "details", "Details"),
        Binding("D", "all_details", "All details", show=False),
    ]

    def __init__(self, run_id: str, *, at_seq: int | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.at_seq = at_seq  # put the cursor on this observation once the list is counted
        self._at_index: int | None = None
        self.search = ""
        self.searching = False  # A search over a huge run takes a moment: say so meanwhile.
        self.run_row: Row | None = None

    def compose(self) -> ComposeResult:
        yield LedgerHeader()
        with VerticalScroll(id="run-details"):
            yield Static(id="run-summary")
            yield Figures(id="run-figures")
            yield Static(id="run-history")
            yield Static(id="run-provenance")
        yield Static(id="list-status", classes="summary")
        yield ObservationList(self.source, self.run_id, id="observations")
        yield SearchBar("search text, event type, tool name (n / N: next / previous)")
        yield LedgerFooter()

    def on_mount(self) -> None:
        self.sub_title = f"run {self.run_id}"
        observations = self.query_one(ObservationList)
        observations.focus()
        source, run_id = self.source, self.run_id
        self.load(lambda: source.span_tree(run_id), self._spans, group="spans")
        if self.at_seq is not None:
            seq = self.at_seq
            self.load(lambda: source.index_of(run_id, ObservationFilter(), seq), self._go_to, group="at")

    def _go_to(self, index: int) -> None:
        self._at_index = index
        self.on_observation_list_changed(ObservationList.Changed())

    def _spans(self, depths: SpanDepths) -> None:
        if depths.parents:
            self.query_one(ObservationList).set_depths(depths)

    def refresh_data(self) -> None:
        source, run_id = self.source, self.run_id
        self.load(lambda: source.run_detail(run_id), self._show_run, group="run")
        observations = self.query_one(ObservationList)
        observations.grow()

    def _show_run(self, run: Row | None) -> None:
        self.run_row = run
        summary = self.query_one("#run-summary", Static)
        if run is None:
            summary.update(Text(f"No run {clean(self.run_id)} in this ledger.", "bold"))
            return
        now = self.now()
        stale = is_stale(run, now, self.ledger_app.stale_after)
        text = Text(no_wrap=False, end="")
        text.append_text(literal(run["run_id"], "bold"))
        text.append("  ")
        text.append_text(status_text(run["status"], stale=stale))
        if run.get("latency_s") is not None and (run.get("result") or {}).get("latency_s") is not None:
            text.append(f"  {duration(run['latency_s'])}")
            text.append(" the runner's latency", "dim")
        else:
            text.append(f"  {duration(run_duration(run, now, self.ledger_app.stale_after))}", "dim")
        text.append("\nstudy ")
        text.append_text(literal(run.get("study_id")))
        text.append("  condition ")
        text.append_text(literal(run.get("condition_id")))
        text.append(f"  rep {value_text(run.get('replicate'))}  seed {value_text(run.get('seed'))}")
        if run.get("agent_id") or run.get("problem_id"):
            text.append("  agent ")
            text.append_text(literal(run.get("agent_id")))
            text.append("  problem ")
            text.append_text(literal(run.get("problem_id")))
        if stale:
            text.append(f"\n no event for over {duration(self.ledger_app.stale_after)}: "
                        "probably crashed (stale is derived, not recorded)", "#b146c2")
        for anomaly in run["anomalies"]:
            text.append("\n ⚠ ", "#c27c0e")
            text.append_text(literal(anomaly.get("message"), "#c27c0e"))
        summary.update(text)
        self.query_one("#run-history", Static).update(_history(run["transitions"]))
        self.query_one(Figures).show(figure_groups(run))
        provenance = self.query_one("#run-provenance", Static)
        provenance.display = bool(run["provenance"])
        if run["provenance"]:
            line = Text("provenance ", no_wrap=False, end="")
            line.append_text(literal(_provenance_line(run["provenance"][-1]), "dim"))
            provenance.update(line)

    def on_observation_list_changed(self, event: ObservationList.Changed) -> None:
        observations = self.query_one(ObservationList)
        if self._at_index is not None and observations.counted and observations.total > self._at_index:
            observations.move_to(self._at_index)
            self._at_index = None
        state = observations.status()
        text = Text(no_wrap=True, end="")
        text.append(f"{min(state['cursor'] + 1, state['total']):,}/{state['total']:,} observations")
        where = observations.where
        if where.level or where.event_type:
            text.append(f"  filter: {clean(where.level or 'any level')}, {clean(where.event_type or 'any type')}",
                        "italic")
        if self.search:
            text.append(f"  search: {clean(self.search)}", "italic")
        if self.searching:
            text.append("  searching…", "italic")
        if state["following"]:
            text.append("  ● following", "bold #2e9e44")
        elif state["new"]:
            text.append(f"  +{state['new']:,} new (G to follow)", "bold #3a7bd5")
        self.query_one("#list-status", Static).update(text)

    def on_observation_list_opened(self, event: ObservationList.Opened) -> None:
        self.ledger_app.open_observation(event.seq)

    def action_follow(self) -> None:
        """Toggle following the end of the run, like ``tail -f``."""
        observations = self.query_one(ObservationList)
        if observations.following:
            observations.following = False
        else:
            observations.action_last()

    def action_details(self) -> None:
        """Hide or show the run's details (more room for observations on small terminals)."""
        details = self.query_one("#run-details", VerticalScroll)
        if details.has_class("-full"):
            self.action_all_details()
        details.display = not details.display

    def action_all_details(self) -> None:
        """Give the run's details the whole screen (arrows scroll them), or give it back."""
        details = self.query_one("#run-details", VerticalScroll)
        details.display = True
        details.toggle_class("-full")
        full = details.has_class("-full")
        self.query_one(ObservationList).display = self.query_one("#list-status").display = not full
        (details if full else self.query_one(ObservationList)).focus()

    def action_filter(self) -> None:
        observations = self.query_one(ObservationList)
        source, run_id = self.source, self.run_id

        def ask(types: list[str]) -> None:
            self.app.push_screen(FilterScreen(observations.where, types), self.apply_filter)

        self.load(lambda: source.event_types(run_id), ask, group="types")

    def apply_filter(self, where: ObservationFilter | None) -> None:
        """Show only observations passing ``where`` (None: keep the current filter), from the top."""
        if where is not None and where != self.query_one(ObservationList).where:
            observations = self.query_one(ObservationList)
            observations.following = False
            observations.cursor = 0
            observations.scroll_to(y=0, animate=False)
            observations.reload(where)

    def action_search(self) -> None:
        self.query_one(SearchBar).open(self.search)

    def on_search_bar_done(self, event: SearchBar.Done) -> None:
        self.query_one(ObservationList).focus()
        if event.text is not None and event.text.strip():
            self.search = event.text.strip()
            self.action_next_match(False)

    def action_next_match(self, backwards: bool) -> None:
        """Move to the next (or previous) observation containing the search text."""
        if not self.search:
            self.notify("Nothing to search for: press / first.", severity="warning")
            return
        observations = self.query_one(ObservationList)
        current = observations.loaded_row(observations.cursor)
        here = int(current["seq"]) if current else 0
        if not backwards and current is None:
            here = 0
        source, run_id, where, text = self.source, self.run_id, observations.where, self.search

        def fetch() -> int | None:
            seq = source.find(run_id, where, text, from_seq=here, backwards=backwards)
            return None if seq is None else source.index_of(run_id, where, seq)

        def go(index: int | None) -> None:
            self.searching = False
            if index is None:
                self.notify(f"No {'earlier' if backwards else 'later'} match for {clean(text)!r}.",
                            severity="warning")
            else:
                observations.move_to(index)
            self.on_observation_list_changed(ObservationList.Changed())

        self.searching = True
        self.on_observation_list_changed(ObservationList.Changed())
        self.load(fetch, go, group="search")


def _history(transitions: list[Row]) -> Text:
    """The run's status changes in the order they happened, one per line."""
    text = Text(no_wrap=False, end="")
    for step in transitions:
        text.append(f"{chr(10) if text else ''} {full_time(step.get('at'))[:19]}  ")
        text.append_text(literal(step.get("from_status") or "·", "dim"))
        text.append(" → ")
        text.append_text(status_text(step.get("shown_status") or step.get("to_status")))
        if not step.get("legal"):
            text.append(f" (source said {clean(step.get('to_status'))}: illegal)", "#d13438")
        elif step.get("shown_status") and step.get("to_status") != step["shown_status"]:
            # Another source confirming an earlier status: recorded, changes nothing.
            text.append(f" (a source reported {clean(step.get('to_status'))} from earlier)", "dim")
        if step.get("reason"):
            text.append("  ")
            text.append_text(literal(step["reason"], "italic"))
        if step.get("error"):
            text.append("  error: ", "#d13438")
            text.append_text(literal(shorten(step["error"], 200), "#d13438"))
    return text


FigureGroup = tuple[str, list[tuple[str, Text]]]


def figure_groups(run: Row) -> list[FigureGroup]:
    """The run's figures as ``(group, [(name, value)])``: its evaluators' outputs, the
    runner's metrics and the run's outputs (nested values as dotted paths), groups without
    values left out."""
    evaluated = [row for row in run["metrics"] if row["source"] == "evaluator"]
    several = len({row["evaluator_id"] for row in evaluated}) > 1
    evaluators = []
    for row in evaluated:
        name = f"{row['evaluator_id']}/{row['metric_name']}" if several else row["metric_name"]
        value = metric_cell(row["value"])
        if row["metric_unit"] and row["metric_unit"] != "unitless":
            value.append(f" {clean(row['metric_unit'])}", "dim")
        evaluators.append((clean(name), value))
    recorded = [(clean(name), value) for row in run["metrics"] if row["source"] == "run"
                for name, value in _leaves(row["metric_name"], row["value"])]
    result = run.get("result") or {}
    outputs = [(clean(name), value) for name, value in _leaves("", result.get("outputs"))]
    return [(title, pairs) for title, pairs in (("evaluators", evaluators), ("run metrics", recorded),
                                                ("outputs", outputs)) if pairs]


def _leaves(prefix: str, value: object) -> list[tuple[str, Text]]:
    """``(dotted name, cell)`` of each leaf of a value (the value itself when it is one)."""
    leaves = flatten(value, f"{prefix}." if prefix else "") if isinstance(value, (dict, list)) and value else []
    pairs = leaves or ([(prefix, value)] if prefix else [])
    return [(name, metric_cell(leaf) if not isinstance(leaf, str) else literal(shorten(leaf, 300)))
            for name, leaf in pairs]


class Figures(Static):
    """The run's figures (:func:`figures_table`), laid out again whenever its own width
    changes: the keys panel opened beside it narrows it without resizing the screen, and
    a table laid out for the old width would drop values."""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.groups: list[FigureGroup] = []

    def show(self, groups: list[FigureGroup]) -> None:
        """Show these groups (hidden when there are none)."""
        self.groups = groups
        self.display = bool(groups)
        self._draw()

    def _draw(self) -> None:
        # Before its first layout it has no width: the screen's, less the pane's padding.
        width = self.content_size.width or self.app.size.width - 4
        self.update(figures_table(self.groups, max(20, width)) if self.groups else "")

    def on_resize(self, event: Resize) -> None:
        self._draw()


def figures_table(groups: list[FigureGroup], width: int) -> Table:
    """The groups as one table: a label column, then each group's names and values in as
    many name/value column pairs as the width holds (one pair per row, values wrapped, for
    a group whose values are long)."""
    label_width = max(len(title) for title, _ in groups)
    room = max(10, width - label_width - 2)
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), expand=False)
    table.add_column(no_wrap=True, style="bold", width=label_width + 1)
    table.add_column()
    for title, pairs in groups:
        widest = max(len(name) + 1 + value.cell_len for name, value in pairs) + 3
        per_row = max(1, room // min(room, widest))
        grid = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
        for _ in range(per_row):
            grid.add_column(no_wrap=True, style="dim")
            grid.add_column(no_wrap=per_row > 1, overflow="fold", max_width=None if per_row > 1 else room - 1)
        for start in range(0, len(pairs), per_row):
            grid.add_row(*[cell for name, value in pairs[start:start + per_row] for cell in (name, value)])
        table.add_row(title, grid)
    return table


def _provenance_line(row: Row) -> str:
    """A snapshot as ``field value`` pairs: host, platform, Python, git, packages, then every
    extra field with nested JSON decoded (``execution_metadata.model_name echo-model``)."""
    parts = [f"{name} {value_text(value)}" for name, value in provenance_fields(row) if name != "captured_at"]
    return "  ".join(parts) or "(empty snapshot)"
