"""The README's promises: its CLI reference is the real --help, its commands are the CI's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .conftest import REPO


def load_updater():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_help() -> None:
    readme = (REPO / "README.md").read_text()
    assert load_updater().render(readme) == readme, "run: python scripts/update_readme.py"


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
