"""The ``f`` dialog: which level and which event type the observation list shows."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Select

from ...schema import ObservationLevel
from ..data import ObservationFilter
from ..literal import clean


class FilterScreen(ModalScreen[ObservationFilter | None]):
    """Pick a level and an event type; escape keeps the current filter."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: ObservationFilter, event_types: list[str]) -> None:
        super().__init__()
        self.current = current
        self.event_types = event_types

    def compose(self) -> ComposeResult:
        levels = [level.value for level in ObservationLevel]
        with Vertical(id="filter-dialog"):
            yield Label("Show observations of")
            yield Select([(lvl, lvl) for lvl in levels], prompt="any level", id="level",
                         value=self.current.level if self.current.level in levels else Select.NULL)
            types = self.event_types
            yield Select([(clean(t), t) for t in types], prompt="any event type", id="event-type",
                         value=self.current.event_type if self.current.event_type in types else Select.NULL)
            with Horizontal(id="filter-buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Clear", id="clear")

    def on_mount(self) -> None:
        self.query_one("#level", Select).focus()

    def _value(self, selector: str) -> str | None:
        value = self.query_one(selector, Select).value
        return value if isinstance(value, str) else None

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "clear":
            self.dismiss(ObservationFilter())
        else:
            self.dismiss(ObservationFilter(self._value("#level"), self._value("#event-type")))

    def action_cancel(self) -> None:
        self.dismiss(None)
