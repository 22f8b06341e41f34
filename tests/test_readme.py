"""The README's promises: its CLI reference is the real --help, its commands are the CI's; docs/api.md is current."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from .conftest import REPO


def load_updater():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("update_docs", REPO / "scripts" / "update_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_help() -> None:
    readme = (REPO / "README.md").read_text()
    assert load_updater().render(readme) == readme, "run: python scripts/update_docs.py"


def test_the_api_page_documents_every_public_name_and_is_current() -> None:
    import studyledger

    page = (REPO / "docs" / "api.md").read_text()
    assert load_updater().api_reference() == page, "run: python scripts/update_docs.py"
    documented = set(re.findall(r"^### `(\w+)`", page, re.M))
    assert documented == set(studyledger.__all__)
    for name in studyledger.__all__:  # every name has words, not only a signature
        section = page.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        assert len(re.sub(r"```.*?```", "", section, flags=re.S).split()) >= 4, name


def test_every_command_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    from studyledger.cli import cli

    for name in cli.commands:
        assert f"### studyledger {name}" in readme


def test_first_lines_are_the_two_commands_and_ci_runs_the_second() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert lines[0] == "```sh"
    demo, tests = lines[1], lines[2]
    assert demo.endswith("studyledger demo") and "pip install" in demo
    assert tests.endswith("pytest -q") and "'.[test]'" in tests
    assert tests in Path(REPO / ".ci" / "run").read_text()


def code_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_python_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks("python")
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # our own README, in order
    from studyledger import IngestReport, Ledger, run_id_for

    # The API example ingests what the DropWriter example wrote: both record the same
    # observation, one fact, so one event.
    report = namespace["report"]
    assert isinstance(report, IngestReport)
    assert (report.lines_rejected, report.events_appended, report.duplicates) == (0, 4, 1)
    with Ledger.open(tmp_path / "studyledger.db", readonly=True) as ledger:
        assert [run["status"] for run in ledger.runs()] == ["success"]
        assert [run["run_id"] for run in ledger.runs()] == [run_id_for("s1", "cond-a", 1, None, None)]


def test_shell_examples_name_real_commands_and_options() -> None:
    from studyledger.cli import cli

    lines = [line.split("#")[0].strip() for block in code_blocks("sh") for line in block.splitlines()]
    commands = [shlex.split(line) for line in lines if line.startswith("studyledger ")]
    assert len(commands) >= 10
    for words in commands:
        words = words[1:]
        if words[0] == "--db":
            words = words[2:]
        name, options = words[0], [w.split("=")[0] for w in words[1:] if w.startswith("--")]
        assert name in cli.commands, name
        params = {opt for p in cli.commands[name].params for opt in getattr(p, "opts", [])}
        assert set(options) <= params, (name, set(options) - params)
