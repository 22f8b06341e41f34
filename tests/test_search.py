"""Search across every run, on both backends: the index built on first use and kept current,
exact filters, any text a user types, and the same words found on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger import Ledger, search
from studyledger.cli import cli

from .pg_server import PgDatabase, PgServer
from .study_helpers import build_study, study_events
from .tui_helpers import observation, register, status


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new ledger on each backend: a file, or a database on the suite's server."""
    if request.param == "sqlite":
        return str(tmp_path / "l.db")
    return str(request.getfixturevalue("pg_url"))


def cli_json(target: str, *args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(cli, ["--db", target, *args, "--json"])
    assert result.exit_code == 0, result.output
    hits: list[dict[str, object]] = json.loads(result.stdout)
    return hits


def test_search_index_is_built_on_first_use_then_kept_current_by_ingestion(target: str) -> None:
    build_study(target, conditions=2, replicates=3)  # type: ignore[arg-type]  # a URL opens as a path does
    with Ledger.open(target, readonly=True) as ledger:
        assert not search.exists(ledger.conn)
    result = CliRunner().invoke(cli, ["--db", target, "search", "unknown material", "--json"])
    assert "building the search index" in result.stderr
    first = json.loads(result.stdout)
    assert first and all(hit["kind"] == "run_error" for hit in first)
    with Ledger.open(target) as ledger:  # a later ingest: the new event is found without a rebuild
        ledger.append([status("study-000-001", "study", "failed", 999, error="ValueError: zirconium")])
        assert search.is_current(ledger.conn)
    later = cli_json(target, "search", "zirconium")
    assert [hit["run_id"] for hit in later] == ["study-000-001"]
    assert "building" not in CliRunner().invoke(cli, ["--db", target, "search", "zirconium"]).stderr


def test_search_filters_are_exact(target: str) -> None:
    with Ledger.open(target) as ledger:
        ledger.append(study_events("alpha", conditions=2, replicates=7))
        ledger.append(study_events("alpha-beta", conditions=2, replicates=7, seed=3))
        with ledger.store.transaction():
            search.build(ledger.conn)
        hits = search.search(ledger.conn, "unknown", filters=search.Filters(study_id="alpha"), limit=1000)
        assert hits and {hit["study_id"] for hit in hits} == {"alpha"}
        failed = search.search(ledger.conn, "unknown", filters=search.Filters(status="success"))
        assert failed == []  # run errors belong to failed runs
        assert search.count(ledger.conn, "unknown", filters=search.Filters(kind="observation")) == 0


SYNTAX = ['"', "unknown AND", "NEAR(a b)", "col:value", "a*", "'); DROP TABLE events; --", "{body}", "^x", "NOT",
          "\x1b[2J", "a:*", "x & y | !z", "<->", "\\", "'"]
NO_WORDS = ["", "_", "___", " - ", "—", "“”", "!?", "\u0301"]


def test_search_text_is_never_read_as_query_syntax(target: str) -> None:
    """Review item 3: `search _` ended in a traceback on PostgreSQL (an empty phrase became
    the query ``:*``). Text without a word finds nothing; no text raises."""
    with Ledger.open(target) as ledger:
        ledger.append(study_events("study", conditions=2, replicates=3))
        with ledger.store.transaction():
            search.build(ledger.conn)
        for text in SYNTAX:
            search.search(ledger.conn, text)  # must not raise
            search.count(ledger.conn, text)
        for text in NO_WORDS:
            assert (search.search(ledger.conn, text), search.count(ledger.conn, text)) == ([], 0), text
    result = CliRunner().invoke(cli, ["--db", target, "search", "_"])
    assert result.exit_code == 2 and "TEXT has no word to search for" in result.output, result.output


TEXTS = ["Café crème brûlée", "NAÏVE résumé", "“Quoted” words—with dashes…", "ΑΒΓ Ωμέγα", "cafe\u0301 decomposed",
         "Straße İstanbul ſ", "l'été don’t", "x²y 3.14 run-42_b"]
QUERIES = {"cafe": 2, "CAFÉ": 2, "creme brulee": 1, "naive resume": 1, "quoted words": 1, "with dashes": 1,
           "αβγ": 1, "ωμέγα": 1, "ωμεγα": 0, "decomposed": 1, "strasse": 0, "straße": 1, "istanbul": 1, "ete": 1,
           "don t": 1, "x²y": 1, "3 14": 1, "run 42 b": 1, "42_b": 1}


def test_case_diacritics_and_punctuation_fold_alike_on_both_backends(target: str) -> None:
    """Review item 3: SQLite's index folds diacritics and PostgreSQL's did not (`cafe` found
    "café" on SQLite only), and PostgreSQL's C locale kept “quotes” inside words. Both fold
    what SQLite's tokenizer folds: case, and the diacritics of Latin letters only (ω is not
    ώ, ß is not ss)."""
    with Ledger.open(target) as ledger:
        ledger.append([register("s", "run-1", "c", 1, 1)]
                      + [observation("run-1", n, text=text) for n, text in enumerate(TEXTS)])
        with ledger.store.transaction():
            search.build(ledger.conn)
        found = {query: search.count(ledger.conn, query) for query in QUERIES}
    assert found == QUERIES


@pytest.fixture(scope="module")
def fts5() -> sqlite3.Connection:
    """An FTS5 table with the index's tokenizer, to ask SQLite itself how it reads a text."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(b, tokenize='unicode61 remove_diacritics 2')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    return conn


def sqlite_words(conn: sqlite3.Connection, text: str) -> list[str]:
    conn.execute("DELETE FROM t")
    conn.execute("INSERT INTO t(rowid, b) VALUES (1, ?)", (text,))
    return [term for term, _ in sorted(conn.execute("SELECT term, offset FROM v"), key=lambda row: row[1])]


LATIN = st.characters(min_codepoint=0, max_codepoint=0x24F, exclude_categories=("Cs",))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.one_of(LATIN, st.characters(exclude_categories=("Cs",))), max_size=40))
def test_words_are_the_sqlite_tokenizers_words(fts5: sqlite3.Connection, text: str) -> None:
    """search.words is SQLite's tokenizer in Python (its tables are read off SQLite by
    scripts/make_search_tokens.py): for any text it gives the words FTS5 indexes."""
    assert search.words(text) == sqlite_words(fts5, text)


def test_the_token_tables_are_this_sqlites(fts5: sqlite3.Connection) -> None:
    """Every character the tables name reads as they say on the SQLite the suite runs on."""
    from studyledger import search_tokens

    points = [low for low, _ in search_tokens.SEPARATORS] + [high for _, high in search_tokens.SEPARATORS]
    points += [ord(ch) for ch in search_tokens.FOLD_FROM + search_tokens.REMOVED]
    text = " ".join(f"a{chr(point)}a" for point in points)
    assert search.words(text) == sqlite_words(fts5, text)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> dict[str, str]:
    """One empty ledger on each backend, shared by the examples of one hypothesis test."""
    name = "search_both"
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return {"sqlite": str(tmp_path_factory.mktemp("both") / "l.db"), "postgres": pg_server.url(name)}


WORDY = st.text(alphabet=st.sampled_from("aAbBéÉèçÇßœ ΩωЖж-_.“”’'\u0301\u00a0x1"), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(WORDY, min_size=1, max_size=4), query=WORDY)
def test_both_backends_find_the_same_hits(both: dict[str, str], texts: list[str], query: str) -> None:
    answers = []
    for target in both.values():
        with Ledger.open(target) as ledger:
            start = ledger.stats()["events"]
            ledger.append([observation("run-h", start + n, text=text) for n, text in enumerate(texts)])
            with ledger.store.transaction():
                search.build(ledger.conn)
            answers.append(([hit["seq"] for hit in search.search(ledger.conn, query, limit=10_000)],
                            search.count(ledger.conn, query)))
    assert answers[0] == answers[1]


def test_an_index_built_before_words_is_built_again(pg_database: PgDatabase) -> None:
    """A PostgreSQL index from before search.words holds the server's own words (`café`
    with its accent): the next search builds it again, so old events are found too."""
    with Ledger.open(pg_database.url) as ledger:
        ledger.append([register("s", "run-1", "c", 1, 1), observation("run-1", 1, text="Café crème")])
        with ledger.store.transaction():
            search.build(ledger.conn)
    with pg_database.connect(autocommit=True) as conn:  # as the old build left it
        conn.execute("DELETE FROM search_state WHERE name = 'words'")
        conn.execute("UPDATE search_index SET words = to_tsvector('simple', 'Café crème')")
    with Ledger.open(pg_database.url, readonly=True) as ledger:
        assert not search.is_current(ledger.conn) and search.count(ledger.conn, "cafe") == 0
    assert [hit["run_id"] for hit in cli_json(pg_database.url, "search", "cafe creme")] == ["run-1"]
