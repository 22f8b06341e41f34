"""The throwaway PostgreSQL server fixture works: connect, isolate, restart."""

from __future__ import annotations

import time

import pytest

from .pg_server import PgDatabase, PgServer, in_ci, start_pg_server

try:
    import psycopg
except ImportError:
    if in_ci():
        raise
    pytest.skip("psycopg is not installed (pip install 'psycopg[binary]')", allow_module_level=True)


def test_connect_and_create_table(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.url) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, body jsonb NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, %s::jsonb)", ('{"a": 1}',))
        conn.commit()
        assert conn.execute("SELECT body->>'a' FROM t").fetchone() == ("1",)
        assert conn.info.server_version >= 130000  # DROP DATABASE ... WITH (FORCE)


def test_url_and_conninfo_reach_the_same_database(pg_database: PgDatabase, pg_url: str) -> None:
    with psycopg.connect(pg_url) as by_url, psycopg.connect(pg_database.conninfo) as by_conninfo:
        assert by_url.info.dbname == by_conninfo.info.dbname == pg_database.name
        assert by_url.info.host == str(pg_database.server.sockdir)


def test_no_tcp_listener_by_default(pg_server: PgServer) -> None:
    with pg_server.connect() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_two_databases_are_isolated(pg_server: PgServer) -> None:
    first, second = pg_server.create_database(), pg_server.create_database()
    try:
        with pg_server.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with pg_server.connect(second) as conn:
            found = conn.execute("SELECT to_regclass('only_here')").fetchone()
            assert found == (None,)
    finally:
        pg_server.drop_database(first)
        pg_server.drop_database(second)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_mid_test_keeps_committed_data(pg_server: PgServer, pg_database: PgDatabase, mode: str) -> None:
    conn = pg_database.connect(autocommit=True)
    conn.execute("CREATE TABLE t (x int)")
    conn.execute("INSERT INTO t VALUES (1)")
    pid = pg_server.pid
    pg_server.restart(mode=mode)
    assert pg_server.pid != pid
    with pytest.raises(psycopg.OperationalError):  # the old connection was cut
        conn.execute("SELECT 1")
    conn.close()
    with pg_database.connect() as again:
        assert again.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_terminate_connections_cuts_clients_only(pg_server: PgServer, pg_database: PgDatabase) -> None:
    conn = pg_database.connect(autocommit=True)
    assert pg_server.terminate_connections(pg_database.name) == 1
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    assert conn.broken
    with pg_database.connect() as again:
        assert again.execute("SELECT 1").fetchone() == (1,)


def test_stop_then_start(pg_server: PgServer, pg_database: PgDatabase) -> None:
    pg_server.stop()
    assert not pg_server.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_database.url, connect_timeout=2)
    pg_server.start()
    assert pg_server.is_running()
    with psycopg.connect(pg_database.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_own_server_over_tcp_and_close_removes_the_folder(pg_server: PgServer) -> None:
    started = time.perf_counter()
    server = start_pg_server(tcp=True)
    try:
        elapsed = time.perf_counter() - started
        base = server.base
        assert base is not None and base.exists()
        with psycopg.connect(server.url()) as conn:  # TCP with the generated password
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.url(password="wrong"))
    finally:
        server.close()
    assert not base.exists()
    assert elapsed < 30
