"""Searching a ledger the user cannot write: answered with a temporary index, said in one
line, the ledger untouched; and where the words are in each snippet."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from studyledger import Ledger, search
from studyledger.cli import cli

from .conftest import copy_ledger
from .test_readonly import fingerprint
from .unprivileged import run_cli_unprivileged, run_python_unprivileged

QUERIES = (["draft rejected"], ["check", "--status", "failed"], ["echo model", "--kind", "observation", "--limit", "3"])


@pytest.fixture
def shared(upstream_ledgers: dict[str, Path]) -> Iterator[Path]:
    """A folder another user can enter, holding the agents_traced study's ledger (never
    searched yet, so it has no index) as a read-only file."""
    folder = Path(tempfile.mkdtemp(prefix="studyledger-search-"))
    folder.chmod(0o755)
    copy_ledger(upstream_ledgers["agents_traced"], folder).rename(folder / "study.db")
    yield folder
    for path in folder.rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o666)
    shutil.rmtree(folder)


def searched(db: Path, *args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(cli, ["--db", str(db), "search", *args, "--json"])
    assert result.exit_code == 0, result.output
    hits: list[dict[str, object]] = json.loads(result.stdout)
    return hits


@pytest.mark.parametrize("folder_too", [False, True], ids=["read-only file", "read-only folder"])
def test_search_answers_on_a_ledger_the_user_cannot_write(shared: Path, folder_too: bool) -> None:
    db = shared / "study.db"
    writable = shared / "copy.db"
    shutil.copy(db, writable)
    expected = [searched(writable, *query) for query in QUERIES]  # a writer builds the index for real
    assert all(expected)
    writable.unlink()
    db.chmod(0o444)
    if folder_too:
        shared.chmod(0o555)
    before = fingerprint(shared)
    try:
        results = run_cli_unprivileged([["--db", str(db), "search", *query, "--json"] for query in QUERIES]
                                       + [["--db", str(db), "search", "draft rejected"]])
    finally:
        shared.chmod(0o755)
    assert fingerprint(shared) == before  # no index, no journal, nothing written
    for want, (code, out, err) in zip(expected, results, strict=False):
        assert code == 0, err
        assert json.loads(out) == want
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "temporary index" in lines[0] and "read-only for this user" in lines[0], err
    code, out, err = results[-1]
    assert code == 0 and "draft rejected" in out and "Traceback" not in err
    with Ledger.open(db, readonly=True) as ledger:
        assert not search.exists(ledger.conn)


def test_the_dashboard_searches_a_ledger_it_cannot_write(shared: Path) -> None:
    db = shared / "study.db"
    db.chmod(0o444)
    before = fingerprint(shared)
    found = run_python_unprivileged(
        "from studyledger.tui.data import Source\n"
        "from studyledger.search import Filters\n"
        f"source = Source({str(db)!r})\n"
        "first = source.search('draft rejected', Filters())\n"
        "again = source.search('draft rejected', Filters(status='failed'))\n"
        "result = [[hit['run_id'] for hit in first[0]], first[1], again[1], source.temporary_index]\n"
        "source.close()\n")
    assert fingerprint(shared) == before
    runs, total, failed, temporary = found
    assert temporary and total == len(runs) == 8 and failed == total
    with Ledger.open(db, readonly=True) as ledger:
        assert not search.exists(ledger.conn)


def test_a_temporary_index_follows_new_events(tmp_path: Path, upstream_ledgers: dict[str, Path]) -> None:
    db = copy_ledger(upstream_ledgers["runner_raises"], tmp_path)
    with Ledger.open(db, readonly=True) as reader:
        assert search.build_temporary(reader.conn) > 0
        first = search.count(reader.conn, "ValueError")
        with Ledger.open(db) as writer:  # another process appends a failure
            writer.append([writer_failure(writer)])
        assert search.build_temporary(reader.conn) == 1
        assert search.count(reader.conn, "ValueError") == first + 1
        assert search.count(reader.conn, "zirconium") == 1
        assert reader.conn.execute("PRAGMA query_only").fetchone()[0] == 1  # still a reader


def writer_failure(ledger: Ledger) -> object:
    from studyledger.events import EventKind, make_event, run_status_changed

    run_id = ledger.runs(status="failed")[0]["run_id"]
    return make_event(EventKind.RUN_STATUS_CHANGED, run_status_changed(
        run_id, "failed", error="ValueError: zirconium", at="2030-01-01T00:00:00+00:00"), source="api")


@given(st.text(alphabet="aAbB é-_.", max_size=40), st.lists(st.text(alphabet="abé", min_size=1, max_size=3),
                                                          min_size=1, max_size=3))
def test_marks_are_where_the_words_begin(text: str, words: list[str]) -> None:
    marks = search.marks(text, words)
    folded = text.casefold()
    assert marks == sorted(marks)
    assert all(end < following for (_, end), (following, _) in zip(marks, marks[1:], strict=False))
    for start, _ in marks:
        assert any(folded[start:].startswith(word.casefold()) for word in words)
        assert start == 0 or not folded[start - 1].isalnum() and folded[start - 1] != "_"
    for word in words:
        for index in range(len(folded)):
            if folded.startswith(word.casefold(), index) and (index == 0 or not (folded[index - 1].isalnum()
                                                                                 or folded[index - 1] == "_")):
                assert any(start <= index < end for start, end in marks)


def test_search_json_marks_the_words_in_each_snippet(tmp_path: Path, upstream_ledgers: dict[str, Path]) -> None:
    db = copy_ledger(upstream_ledgers["agents_traced"], tmp_path)
    hits = searched(db, "draft rej")
    assert hits
    for hit in hits:
        snippet = str(hit["snippet"])
        marked = [snippet[start:end].casefold() for start, end in hit["marks"]]  # type: ignore[union-attr]
        assert "draft" in marked and "rej" in marked
