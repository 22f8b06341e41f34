"""Every audit command answers a user's mistake with one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from .audit_helpers import fill, invoke


@pytest.mark.parametrize("command", [
    ["replay"], ["replay", "--as-of", "3"], ["checkpoint", "--out", "cp.json"], ["audits"],
    ["diff", "a", "b"], ["export", "out"], ["verify", "--checkpoint", "cp.json"],
])
def test_missing_ledger(tmp_path: Path, command: list[str]) -> None:
    code, _, err = invoke("--db", str(tmp_path / "nothing.db"), *command)
    assert code != 0 and "no ledger here" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.parametrize("command", [["replay"], ["audits"], ["export", "out", "--format", "jsonl"]])
def test_not_a_ledger(tmp_path: Path, command: list[str]) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00\xffnot sqlite at all" * 50)
    code, _, err = invoke("--db", str(garbage), *command)
    assert code != 0 and "not a studyledger ledger" in err and len(err.strip().splitlines()) == 1


def test_bad_as_of(tmp_path: Path) -> None:
    fill(tmp_path / "l.db", runs=1)
    code, _, err = invoke("--db", str(tmp_path / "l.db"), "replay", "--as-of", "soon")
    assert code != 0 and "--as-of 'soon'" in err and len(err.strip().splitlines()) == 1


def test_export_into_a_file_is_refused(tmp_path: Path) -> None:
    fill(tmp_path / "l.db", runs=1)
    target = tmp_path / "file.txt"
    target.write_text("x")
    for fmt in ("canonical", "jsonl"):
        code, _, err = invoke("--db", str(tmp_path / "l.db"), "export", str(target), "--format", fmt)
        assert code != 0 and "file.txt" in err and len(err.strip().splitlines()) == 1


def test_every_audit_command_has_help_and_json() -> None:
    for command in ("checkpoint", "replay", "diff", "export", "merge", "audits", "verify"):
        code, out, _ = invoke(command, "--help")
        assert code == 0 and "--json" in out
