"""The dashboard driven through Textual's pilot on real ledger files."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, HelpPanel, Select, Static

from studyledger import Ledger
from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.observation_list import ObservationList
from studyledger.tui.screens.audit import AuditScreen
from studyledger.tui.screens.conditions import ConditionsScreen
from studyledger.tui.screens.filter import FilterScreen
from studyledger.tui.screens.ingestion import IngestionScreen
from studyledger.tui.screens.no_ledger import NoLedgerScreen
from studyledger.tui.screens.observation import ObservationScreen
from studyledger.tui.screens.run import RunScreen
from studyledger.tui.screens.runs import RunsScreen
from studyledger.tui.screens.studies import StudiesScreen
from studyledger.tui.widgets import LedgerHeader

from .tui_helpers import CLOCK, build, sync, until


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build(tmp_path / "ledger.db")


def make_app(db: Path, **options: object) -> StudyLedgerApp:
    options.setdefault("clock", CLOCK)
    options.setdefault("stale_after", 60.0)
    return StudyLedgerApp(db, **options)  # type: ignore[arg-type]


def column(table: DataTable[object], key: str) -> list[str]:
    """The plain text of one column, top to bottom."""
    values = []
    for row in table.ordered_rows:
        cell = table.get_cell(row.key, key)
        values.append(cell.plain if isinstance(cell, Text) else str(cell))
    return values


def details_text(screen: object) -> str:
    """Everything a run screen's details pane shows, as plain text."""
    query = screen.query_one
    return "\n".join(static_text(query(f"#run-{part}", Static)) for part in ("summary", "figures", "history", "provenance"))


def static_text(widget: Static) -> str:
    """What a Static shows, as plain text."""
    content = widget.content
    if isinstance(content, (str, Text)) or hasattr(content, "plain"):
        return str(getattr(content, "plain", content))
    console = Console(width=200, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(content)
    return capture.get()


def list_lines(app: StudyLedgerApp) -> list[str]:
    observations = app.screen.query_one(ObservationList)
    return [observations.render_line(y).text for y in range(min(observations.total, observations.size.height))]


async def open_runs(app: StudyLedgerApp, pilot: object, study: str = "bracket") -> DataTable[object]:
    await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)
    app.open_study(study)
    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count)
    return app.screen.query_one(DataTable)


@sync
async def test_studies_show_run_counts_and_status_breakdown(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and app.screen.query_one(DataTable).row_count == 2)
        table = app.screen.query_one(DataTable)
        assert column(table, "study") == ["bracket", "smoke"]
        assert column(table, "runs") == ["5", "1"]
        # run-live has been silent for 30 minutes: stale
        words = "1 pending 1 running 1 success 1 failed 1 skipped (1 stale)"
        assert column(table, "status")[0] == words
        assert column(table, "last") == ["1h29m ago", "1h29m ago"]  # source times, 09:00:30 and 09:00:45
        await open_runs(app, pilot)  # the runs screen says it in the same words
        assert static_text(app.screen.query_one("#summary", Static)).startswith(words)


@sync
async def test_a_missing_value_is_a_dash_in_every_column(db: Path) -> None:
    """Review item 14: missing values were blank in some columns and `-` in others."""
    app = make_app(db)
    async with app.run_test(size=(160, 30)) as pilot:
        table = await open_runs(app, pilot)
        waiting = column(table, "run").index("run-wait")  # pending: never started, no metric
        cells = {str(key.value): column(table, str(key.value))[waiting] for key in table.columns}
        assert cells["status"] == "pending" and all(cells.values()), cells
        assert [key for key, value in cells.items() if value == "-"] == ["metric", "duration", "started"], cells


@sync
async def test_every_key_of_every_footer_fits_in_80_columns(db: Path) -> None:
    """Review item 14: at 80 columns the footer cut off "s Search all"."""
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:

        async def footer(screen: type[object]) -> list[str]:
            await until(pilot, lambda: isinstance(app.screen, screen) and app.screen.query("FooterKey"))
            await pilot.pause()
            keys = sorted(app.screen.query("FooterKey"), key=lambda key: key.region.x)
            assert any(key.description == "Search all" for key in keys)  # type: ignore[attr-defined]
            ends = [0, *(key.region.right for key in keys)]
            return [key.description for key, end in zip(keys, ends, strict=False)  # type: ignore[attr-defined]
                    if key.region.right > 80 or key.region.x < end]  # cut off, or under another key

        assert await footer(StudiesScreen) == []
        app.open_conditions("bracket")
        assert await footer(ConditionsScreen) == []
        app.open_study("bracket")
        assert await footer(RunsScreen) == []
        await app.open_run("run-fail")
        assert await footer(RunScreen) == []
        app.open_observation(app.screen.query_one(ObservationList).loaded_row(0)["seq"])  # type: ignore[index]
        assert await footer(ObservationScreen) == []
        for key, screen in (("i", IngestionScreen), ("a", AuditScreen)):
            await pilot.press(key)
            assert await footer(screen) == []


@sync
async def test_enter_opens_and_escape_or_backspace_goes_back(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and app.screen.query_one(DataTable).row_count == 2)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count)
        assert app.screen.study_id == "bracket"
        await pilot.press("j", "enter")  # second run: run-fail
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_id == "run-fail"
        await until(pilot, lambda: app.screen.query_one(ObservationList).loaded_row(0) is not None)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ObservationScreen) and app.screen.row is not None)
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("backspace")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, StudiesScreen)
        await pilot.press("escape")  # never past the first screen
        assert isinstance(app.screen, StudiesScreen)


@sync
async def test_runs_filter_by_status_with_single_keys_sort_and_search(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_runs(app, pilot)
        assert column(table, "run") == ["run-ok", "run-fail", "run-live", "run-skip", "run-wait"]
        await pilot.press("4")
        assert column(table, "run") == ["run-fail"]
        await pilot.press("2")
        assert column(table, "run") == ["run-live"]
        await pilot.press("6")  # stale (derived)
        assert column(table, "run") == ["run-live"]
        await pilot.press("0")
        assert len(column(table, "run")) == 5
        await pilot.press("o")  # sort by run id
        assert column(table, "run") == sorted(["run-ok", "run-fail", "run-live", "run-skip", "run-wait"])
        await pilot.press("O")
        assert column(table, "run") == sorted(["run-ok", "run-fail", "run-live", "run-skip", "run-wait"],
                                              reverse=True)
        await pilot.press("slash", *"scaffold", "enter")
        assert column(table, "run") == ["run-wait", "run-skip", "run-live"]
        assert app.screen.focused is table
        await pilot.press("slash", "escape")  # cancelling keeps the search
        assert len(column(table, "run")) == 3


@sync
async def test_sorting_by_clicking_a_column_header(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_runs(app, pilot)
        seeds = table.columns["seed"]
        assert seeds is not None
        await pilot.press("o", "O")  # run id descending, then a header click sorts by seed
        index = list(table.columns).index("seed")  # type: ignore[arg-type]
        app.screen.post_message(DataTable.HeaderSelected(table, "seed", index, seeds.label))  # type: ignore[arg-type]
        await until(pilot, lambda: column(table, "seed") == ["101", "102", "103", "104", "105"])
        app.screen.post_message(DataTable.HeaderSelected(table, "seed", index, seeds.label))  # type: ignore[arg-type]
        await until(pilot, lambda: column(table, "seed") == ["105", "104", "103", "102", "101"])  # again: reversed


@sync
async def test_stale_runs_are_flagged_only_after_the_configured_silence(db: Path) -> None:
    app = make_app(db, stale_after=60.0)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_runs(app, pilot)
        statuses = dict(zip(column(table, "run"), column(table, "status"), strict=True))
        assert statuses["run-live"] == "running stale"
        assert statuses["run-ok"] == "success"
    patient = make_app(db, stale_after=3600.0)
    async with patient.run_test(size=(120, 30)) as pilot:
        table = await open_runs(patient, pilot)
        statuses = dict(zip(column(table, "run"), column(table, "status"), strict=True))
        assert statuses["run-live"] == "running"


@sync
async def test_run_screen_shows_timeline_provenance_and_call_structure(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-ok")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.total == 7 and observations.loaded_row(6) is not None)
        summary = details_text(app.screen)
        assert "pending → running" in summary and "running → success" in summary and "completed" in summary
        assert "host lab-7" in summary and "numpy 2.1.0" in summary
        await pilot.pause(0.2)
        lines = list_lines(app)
        indent = {name: next(line for line in lines if f" {name}" in line).index(name)
                  for name in ("RunStarted", "AgentRunStarted", "ModelCallStarted", "ToolCallFinished")}
        assert indent["RunStarted"] < indent["AgentRunStarted"] < indent["ModelCallStarted"]
        assert indent["ModelCallStarted"] == indent["ToolCallFinished"]


@sync
async def test_run_screen_shows_errors_of_a_failed_run(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-fail")
        await until(pilot, lambda: "error" in details_text(app.screen))
        summary = details_text(app.screen)
        assert "RuntimeError: beam solver diverged" in summary and "tool error" in summary


@sync
async def test_level_and_event_type_filters(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-ok")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.total == 7)
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FilterScreen) and app.screen.query("#apply"))
        app.screen.query_one("#level", Select).value = "tool-call"
        await pilot.click("#apply")
        await until(pilot, lambda: observations.total == 2 and observations.loaded_row(1) is not None)
        assert [observations.loaded_row(i)["event_type"] for i in range(2)] == ["ToolCallStarted", "ToolCallFinished"]
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FilterScreen) and app.screen.query("#apply"))
        app.screen.query_one("#level", Select).value = Select.NULL
        app.screen.query_one("#event-type", Select).value = "ModelCallFinished"
        await pilot.click("#apply")
        await until(pilot, lambda: observations.total == 1)
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FilterScreen) and app.screen.query("#apply"))
        await pilot.click("#clear")
        await until(pilot, lambda: observations.total == 7)


@sync
async def test_search_then_n_and_N(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-ok")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.loaded_row(6) is not None)
        await pilot.press("slash", *"BEAM", "enter")  # case-insensitive, matches the tool name
        await until(pilot, lambda: observations.cursor == 4)
        await pilot.press("n")
        await until(pilot, lambda: observations.cursor == 5)
        await pilot.press("n")  # no later match: the cursor stays
        await until(pilot, lambda: not app.screen.searching)  # the search has answered
        assert observations.cursor == 5
        await pilot.press("N")
        await until(pilot, lambda: observations.cursor == 4)
        assert app.screen.focused is observations


@sync
async def test_observation_detail_and_copy(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-ok")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.loaded_row(3) is not None)
        await pilot.press("j", "j", "j", "enter")
        await until(pilot, lambda: isinstance(app.screen, ObservationScreen) and app.screen.row is not None)
        fields = static_text(app.screen.query_one("#fields", Static))
        assert "run-ok-3" in fields and "ModelCallFinished" in fields
        meta = static_text(app.screen.query_one("#meta", Static))
        assert '"total_tokens": 120' in meta and '"span_id": "s-model"' in meta
        await pilot.press("y")
        assert '"record_id": "run-ok-3"' in app.clipboard
        assert '"total_tokens": 120' in app.clipboard


@sync
async def test_empty_ledger_says_how_to_ingest(tmp_path: Path) -> None:
    Ledger.open(tmp_path / "empty.db").close()
    app = make_app(tmp_path / "empty.db")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and "ingest" in static_text(app.screen.query_one("#empty", Static)))
        assert "--watch" in static_text(app.screen.query_one("#empty", Static))


@sync
async def test_missing_ledger_says_how_to_create_one_and_opens_it_when_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.db"
    app = make_app(path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, NoLedgerScreen)
                    and f"studyledger --db {path} init" in static_text(app.screen.query_one("#no-ledger", Static)))
        build(path)
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and app.screen.query_one(DataTable).row_count == 2)


@sync
async def test_not_a_ledger_is_explained_not_crashed(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("hello")
    app = make_app(path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, NoLedgerScreen)
                    and "not a studyledger ledger" in static_text(app.screen.query_one("#no-ledger", Static)))


@sync
async def test_command_palette_jumps_to_a_run_by_id(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen))
        await pilot.press("ctrl+p")
        await pilot.press(*"run-skip")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_id == "run-skip"


@sync
async def test_help_lists_keys_and_theme_toggles(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen))
        await pilot.press("question_mark")
        assert app.screen.query(HelpPanel)
        await pilot.press("question_mark")
        assert not app.screen.query(HelpPanel)
        dark = app.current_theme.dark
        await pilot.press("t")
        assert app.current_theme.dark is not dark


@sync
async def test_audit_screen_shows_verify_and_anomalies(db: Path) -> None:
    with Ledger.open(db) as ledger:  # a fact from a file that breaks the state machine
        from .tui_helpers import status
        ledger.append([status("run-ok", "bracket", "running", 50)])
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen))
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AuditScreen)
                    and "intact" in static_text(app.screen.query_one("#verify", Static))
                    and app.screen.query_one(DataTable).row_count == 1)
        assert "success -> running" in column(app.screen.query_one(DataTable), "message")[0]


@sync
async def test_audit_screen_reports_tampering(db: Path) -> None:
    conn = sqlite3.connect(db)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE events SET body = replace(body, 'lab-7', 'lab-8') WHERE kind = 'provenance_captured'")
    conn.commit()
    conn.close()
    app = make_app(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AuditScreen)
                    and "tampered" in static_text(app.screen.query_one("#verify", Static)))


@sync
async def test_usable_at_80x24(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.source is not None)
        await app.open_run("run-ok")
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.loaded_row(6) is not None)
        assert observations.size.height >= 5  # the header leaves room for the list
        await pilot.press("d")
        assert observations.size.height >= 15
        screen_text = app.export_screenshot()
        assert "Filter" in screen_text and "Search" in screen_text  # footer keys


@sync
async def test_ingestion_screen_with_watch_ingests_in_process(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    path = tmp_path / "watched.db"
    app = make_app(path, watch=folder)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.source is not None)
        (folder / "trace.jsonl").write_text(
            '{"timestamp": "2026-03-02T09:00:00+00:00", "record_id": "r1", "event_type": "note", '
            '"text": "hello", "run_id": null}\n'
            '{"broken": \n')
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, IngestionScreen)
                    and app.screen.query_one("#files", DataTable).row_count == 1
                    and app.screen.query_one("#rejected", DataTable).row_count == 1)
        files = app.screen.query_one("#files", DataTable)
        assert column(files, "file")[0].endswith("trace.jsonl")
        assert column(files, "rejected") == ["1"]
        assert "invalid JSON" in column(app.screen.query_one("#rejected", DataTable), "reason")[0]
        assert "watching" in static_text(app.screen.query_one("#watcher", Static))
    assert app.watcher is not None and not app.watcher.running


@sync
async def test_every_screen_says_when_the_watcher_waits_or_stops(tmp_path: Path) -> None:
    """Review item 8: a watcher waiting for its folder, or stopped, showed only on the
    ingestion screen. The header of every screen says so, and a notification when it changes."""
    folder = tmp_path / "drop"
    folder.mkdir()
    app = make_app(tmp_path / "watched.db", watch=folder, watch_options={"reconcile": 0.1})

    def header() -> str:
        return app.screen.query_one(LedgerHeader).format_title().plain

    def notified(text: str) -> bool:
        return any(text in " ".join(str(toast.render()).split()) for toast in app.screen.query("Toast"))

    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await until(pilot, lambda: header() == "studyledger — studies")
        folder.rename(tmp_path / "drop.gone")
        await until(pilot, lambda: header() == "studyledger [waiting for its folder drop] — studies")
        await until(pilot, lambda: notified("the folder is gone; waiting for it to come back"))
        await pilot.press("s")  # another screen says it too
        await until(pilot, lambda: header() == "studyledger [waiting for its folder drop] — search every run")
        (tmp_path / "drop.gone").rename(folder)
        await until(pilot, lambda: header() == "studyledger — search every run")
        await until(pilot, lambda: notified("back; watching it again"))
        assert app.watcher is not None
        app.watcher.stop()
        await until(pilot, lambda: header() == "studyledger [watcher stopped] — search every run")
        await until(pilot, lambda: notified("watcher stopped"))


@sync
async def test_the_mouse_selects_and_opens(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_runs(app, pilot)
        await pilot.click(DataTable, offset=(3, 3))  # header row, then run-ok, run-fail, run-live
        await until(pilot, lambda: table.cursor_row == 2)
        await pilot.click(DataTable, offset=(3, 3))  # a click on the cursor row opens it
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_id == "run-live"
        observations = app.screen.query_one(ObservationList)
        await until(pilot, lambda: observations.loaded_row(3) is not None)
        await pilot.click(ObservationList, offset=(10, 2))
        assert observations.cursor == 2
        await pilot.click(ObservationList, offset=(10, 2), times=2)
        await until(pilot, lambda: isinstance(app.screen, ObservationScreen))


@pytest.mark.parametrize("command", [["watch"], ["tui", "--watch"]])
def test_watch_and_the_dashboards_watch_refuse_what_is_not_a_folder_alike(tmp_path: Path, command: list[str]) -> None:
    """Review item 14: `watch FILE` said "no such folder", and `tui --watch nope` spoke
    click's words with status 2 where `watch nope` said its own with status 1."""
    from click.testing import CliRunner

    from studyledger.cli import cli

    file = tmp_path / "a.jsonl"
    file.write_text("{}\n")
    for path, message in ((tmp_path / "nope", "no such folder"), (file, "a file; watch takes a folder")):
        result = CliRunner().invoke(cli, ["--db", str(tmp_path / "x.db"), *command, str(path)])
        assert (result.exit_code, result.stderr) == (1, f"Error: {path}: {message}\n")
    assert not (tmp_path / "x.db").exists()


def test_the_dashboards_watch_takes_the_options_of_watch() -> None:
    from click.testing import CliRunner

    from studyledger.cli import cli

    def options(*command: str) -> dict[str, str]:
        text = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200).stdout
        return {line.split()[0]: " ".join(line.split()) for line in text.splitlines()
                if line.strip().startswith(("--poll", "--reconcile", "--line-limit", "--adapter"))}

    assert options("tui") == options("watch") and len(options("watch")) == 4


@sync
async def test_each_screen_reads_the_ledger_once_when_it_opens(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: dict[str, int] = {}
    for screen in (StudiesScreen, RunScreen, IngestionScreen):
        original = screen.refresh_data

        def counted(self: object, _original=original, _name=screen.__name__) -> None:  # type: ignore[no-untyped-def]
            loads[_name] = loads.get(_name, 0) + 1
            _original(self)

        monkeypatch.setattr(screen, "refresh_data", counted)
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.source is not None and "StudiesScreen" in loads)
        await app.open_run("run-ok")
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, IngestionScreen))
        await pilot.pause(0.5)
    assert loads == {"StudiesScreen": 1, "RunScreen": 1, "IngestionScreen": 1}


@sync
async def test_the_header_title_is_drawn_at_once_so_quitting_leaves_nothing_queued(tmp_path: Path) -> None:
    # Textual's own Header redraws its title in a queued coroutine; when the app quit before
    # the queue ran (a test ending, a user pressing q as a screen appeared), the title widget
    # was already gone and the app died with NoMatches: HeaderTitle.
    from textual.widgets._header import HeaderTitle

    path = tmp_path / "notes.db"
    path.write_text("hello")
    app = make_app(path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, NoLedgerScreen) and app.screen.query_one(HeaderTitle))
        title = app.screen.query_one(HeaderTitle)
        app.screen.sub_title = "changed"
        assert "changed" in str(title.content)
