"""A real, throwaway PostgreSQL server for the test suite (no mocks).

One cluster per test run: ``initdb`` into a fresh temporary folder (about half a second;
in ``/dev/shm`` when there is one), then ``pg_ctl start`` listening on a Unix socket in
that folder only (no TCP port unless asked for), so nothing else on the machine can
reach it or clash with it. Each test gets its own database, cloned from ``template1``
(about 10 ms), and dropped afterwards.

Fixtures (import them into ``conftest.py``)::

    from .pg_server import pg_server, pg_database, pg_url

- ``pg_server`` (session): the :class:`PgServer` handle. ``stop()``, ``start()`` and
  ``restart(mode=...)`` stop and start the same cluster on the same socket, so URLs stay
  valid: that is how a test restarts the server mid-ingest.
- ``pg_database`` (function): a :class:`PgDatabase` (``.url``, ``.conninfo``, ``.name``,
  ``.connect()``), a new empty database for this test.
- ``pg_url`` (function): just ``pg_database.url``.

When no server binaries are found (see :func:`find_pg_bin`), or psycopg is not installed,
or the suite runs as root and there is no unprivileged ``postgres`` user to run the server
as, the tests that use these fixtures are skipped with a message saying how to get them;
with ``CI`` set they fail instead, because in CI they must run.

Cleanup: :meth:`PgServer.close` stops the server and removes the folder. It runs at the
end of the session, at interpreter exit (``atexit``), and, should the test process be
killed outright (SIGKILL, an OOM kill), from a small watchdog process that notices its
parent is gone (its stdin pipe closes) and stops the server and removes the folder.

Settings, chosen for speed without weakening what the tests check:

- ``fsync = off`` and ``full_page_writes = off``: these only protect against an operating
  system crash or power loss, which no test simulates. A *server* crash (``restart(
  mode="immediate")``, a killed backend) still finds every committed transaction in the
  WAL, because the WAL is still written to the kernel at commit.
- ``synchronous_commit`` stays ``on``: with it off a commit is acknowledged before its WAL
  is written, and an immediate stop right after would lose acknowledged commits, which
  would make "restart the server mid-ingest loses nothing" tests lie.
- ``autovacuum = off``: no background worker connects to ``template1`` while ``CREATE
  DATABASE`` copies it (that fails with "source database is being accessed by other
  users"), and two cores stay free for the tests.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

try:
    import psycopg
except ImportError:  # pragma: no cover - reported by the fixtures
    psycopg = None  # type: ignore[assignment]

INSTALL_HINT = (
    "install the server with `apt-get install postgresql` (Debian/Ubuntu: the binaries land in "
    "/usr/lib/postgresql/<version>/bin, found automatically), or set STUDYLEDGER_PG_BIN to a "
    "folder holding initdb, pg_ctl and postgres"
)
SUPERUSER = "postgres"
SOCKET_PORT = 5432  # with no TCP listener the port only names the socket file
START_TIMEOUT = 60
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.NNNNN" must fit too

TEST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "autovacuum": "off",
    "max_connections": "100",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
    "timezone": "UTC",
    "lc_messages": "C",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %d ",
}


class PgUnavailable(RuntimeError):
    """No PostgreSQL server can be run here (missing binaries, driver or user)."""


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (to anything but a false value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path)) or (0,)


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first.

    Looked for in ``$STUDYLEDGER_PG_BIN``, next to a ``pg_ctl`` on ``PATH``, then in the
    usual install places: Debian/Ubuntu ``/usr/lib/postgresql/<ver>/bin`` (not on PATH),
    RHEL ``/usr/pgsql-<ver>/bin``, source builds ``/usr/local/pgsql/bin``, Homebrew.
    """
    candidates: list[str] = []
    if configured := os.environ.get("STUDYLEDGER_PG_BIN"):
        candidates.append(configured)
    if on_path := shutil.which("pg_ctl"):
        candidates.append(str(Path(on_path).resolve().parent))
    for pattern in (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/usr/local/pgsql/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
    ):
        candidates.extend(sorted(glob.glob(pattern), key=_version_key, reverse=True))
    for folder in candidates:
        path = Path(folder)
        if all(os.access(path / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    return None


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the server: ourselves, or the ``postgres`` user when we are root.

    The server refuses to run as root. The Debian package creates the ``postgres``
    system user; nothing here creates one.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get("STUDYLEDGER_PG_USER", SUPERUSER)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PgUnavailable(
            f"running as root, and PostgreSQL refuses to run as root, but there is no "
            f"{name!r} user to run it as (the Debian postgresql package creates one; or set "
            f"STUDYLEDGER_PG_USER to an unprivileged user)"
        ) from None


def _world_traversable(path: Path) -> bool:
    """Whether every folder from ``/`` down to ``path`` lets others pass through."""
    for folder in (path, *path.parents):
        if not os.stat(folder).st_mode & 0o001:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_WATCHDOG = r"""
import json, os, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
if os.path.exists(os.path.join(spec["datadir"], "postmaster.pid")):
    kw = {"user": spec["uid"], "group": spec["gid"], "extra_groups": []} if spec["uid"] is not None else {}
    subprocess.run([spec["pg_ctl"], "stop", "-D", spec["datadir"], "-m", "immediate", "-w"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd="/", **kw)
shutil.rmtree(spec["base"], ignore_errors=True)
"""


class PgServer:
    """One throwaway cluster in a temporary folder.

    Args:
        bindir: Folder of ``initdb``/``pg_ctl``/``postgres`` (default: :func:`find_pg_bin`).
        tcp: Also listen on ``127.0.0.1`` on a free port, with password authentication
            (``scram-sha-256``) for TCP; the Unix socket stays trusted.
        settings: Extra or overriding ``postgresql.conf`` settings.
        parent: Where to make the temporary folder (default: ``$STUDYLEDGER_PG_TMP``, else
            ``/dev/shm`` when it is a writable tmpfs, else the system temp folder, or ``/tmp``
            when that is not reachable by the server's user or too long a path).

    Call :meth:`init` then :meth:`start` (or use :func:`start_pg_server`).
    """

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        tcp: bool = False,
        settings: dict[str, str] | None = None,
        parent: str | os.PathLike[str] | None = None,
    ) -> None:
        found = bindir or find_pg_bin()
        if found is None:
            raise PgUnavailable(f"no PostgreSQL server binaries found; {INSTALL_HINT}")
        self.bindir = Path(found)
        self.account = _server_account()
        self.tcp = tcp
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.user = SUPERUSER
        self.password = secrets.token_hex(12)
        self.host = "127.0.0.1" if tcp else None
        self.port = _free_port() if tcp else SOCKET_PORT
        self.parent = Path(parent) if parent else None
        self.base: Path | None = None
        self._owner_pid = os.getpid()
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self.timings: dict[str, float] = {}

    # -- paths ----------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.base is not None, "PgServer.init() first"
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        assert self.base is not None, "PgServer.init() first"
        return self.base / "sock"

    @property
    def logfile(self) -> Path:
        assert self.base is not None, "PgServer.init() first"
        return self.base / "server.log"

    def _pick_parent(self) -> Path:
        if self.parent is not None:
            return self.parent
        if configured := os.environ.get("STUDYLEDGER_PG_TMP"):
            return Path(configured)
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_mode & 0o1777 == 0o1777:
            # tmpfs: CREATE DATABASE takes ~10 ms there against ~250 ms on this machine's
            # ext4 /tmp (fsync=off or not), and initdb ~0.4 s against 0.5-1.3 s.
            return shm
        parent = Path(tempfile.gettempdir()).resolve()
        too_long = len(str(parent)) + len("/studyledger-pg-XXXXXXXX/sock/.s.PGSQL.65535") > _SOCKET_PATH_MAX
        if too_long or (self.account is not None and not _world_traversable(parent)):
            parent = Path("/tmp")
        return parent

    # -- running the server's tools -------------------------------------------------

    def _run(self, tool: str, *args: str, check: bool = True, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run one of the server's tools as the server's user."""
        extra: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self.account is not None:
            extra = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
            env.update(HOME=self.account.pw_dir, USER=self.account.pw_name, LOGNAME=self.account.pw_name)
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # Ctrl-C on the terminal must not reach the postmaster
            **extra,
        )
        if check and result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-3000:] if self.base and self.logfile.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"--- server log tail ---\n{log}"
            )
        return result

    # -- lifecycle ------------------------------------------------------------------

    def init(self) -> PgServer:
        """Make the folder and ``initdb`` the cluster into it; start the cleanup watchdog."""
        started = time.perf_counter()
        self.base = Path(tempfile.mkdtemp(prefix="studyledger-pg-", dir=self._pick_parent()))
        self.sockdir.mkdir()
        if self.account is not None:
            for path in (self.base, self.sockdir):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        self._start_watchdog()
        atexit.register(self._atexit_close)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.account is not None:
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
        try:
            self._run(
                "initdb", "-D", str(self.datadir), "-U", self.user, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = dict(self.settings)
        conf["listen_addresses"] = f"'{self.host}'" if self.tcp else "''"
        conf["port"] = str(self.port)
        conf["unix_socket_directories"] = f"'{self.sockdir}'"
        lines = [f"{key} = {_conf_value(value)}" for key, value in conf.items()]
        with open(self.datadir / "postgresql.conf", "a") as conf_file:
            conf_file.write("\n# studyledger test cluster\n" + "\n".join(lines) + "\n")
        self.timings["initdb"] = time.perf_counter() - started
        return self

    def _start_watchdog(self) -> None:
        assert self.base is not None
        spec = {
            "pg_ctl": str(self.bindir / "pg_ctl"),
            "datadir": str(self.base / "data"),
            "base": str(self.base),
            "uid": self.account.pw_uid if self.account else None,
            "gid": self.account.pw_gid if self.account else None,
        }
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survives Ctrl-C to the test run's process group
            cwd="/",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        started = time.perf_counter()
        self._run("pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                  "-t", str(START_TIMEOUT))
        self.timings["start"] = time.perf_counter() - started

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data: :meth:`start` brings it back.

        ``mode``: ``fast`` (clients are disconnected, transactions rolled back, a clean
        shutdown), ``immediate`` (no shutdown checkpoint: the next start runs crash
        recovery, as after a server crash) or ``smart`` (waits for clients to leave).
        """
        if self.base is None or not (self.datadir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", str(START_TIMEOUT))

    def restart(self, mode: str = "fast") -> None:
        """Stop (see :meth:`stop` for ``mode``) and start again on the same socket/port."""
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        """Whether the postmaster is running (``pg_ctl status``)."""
        if self.base is None:
            return False
        return self._run("pg_ctl", "status", "-D", str(self.datadir), check=False).returncode == 0

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, or None when it is not running."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError, AssertionError):
            return None

    def close(self) -> None:
        """Stop the server (immediately: it is thrown away) and remove its folder."""
        if self.base is None:
            return
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
            if self._watchdog is not None:
                if self._watchdog.stdin is not None:
                    self._watchdog.stdin.close()
                try:
                    self._watchdog.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._watchdog.kill()
                self._watchdog = None

    def _atexit_close(self) -> None:
        if os.getpid() == self._owner_pid:  # not in a forked child (multiprocessing)
            self.close()

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connecting -----------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        """A ``postgresql://`` URL libpq and psycopg 3 accept.

        Unix socket: ``postgresql://postgres@/DB?host=/tmp/studyledger-pg-x/sock&port=5432``.
        TCP (``tcp=True``): ``postgresql://postgres:PASSWORD@127.0.0.1:PORT/DB``.
        """
        who = quote(user or self.user, safe="")
        if self.tcp:
            secret = password if password is not None else (self.password if user is None else None)
            auth = f"{who}:{quote(secret, safe='')}" if secret else who
            return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"
        return f"postgresql://{who}@/{quote(dbname, safe='')}?host={quote(str(self.sockdir), safe='/')}&port={self.port}"

    def conninfo(self, dbname: str = "postgres", *, user: str | None = None) -> str:
        """The same as :meth:`url` in ``key=value`` form (always the Unix socket)."""
        return f"host={self.sockdir} port={self.port} user={user or self.user} dbname={dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection to ``dbname`` over the Unix socket (superuser by default)."""
        user = kwargs.pop("user", None)
        return psycopg.connect(self.conninfo(dbname, user=user), **kwargs)

    # -- databases ------------------------------------------------------------------

    def create_database(self, name: str | None = None, *, template: str = "template1") -> str:
        """Create a new empty database (a copy of ``template``) and return its name."""
        name = name or f"test_{os.getpid()}_{next(self._names)}"
        sql = f'CREATE DATABASE "{name}" TEMPLATE "{template}"'
        with self.connect(autocommit=True) as conn:
            if conn.info.server_version >= 150000:
                sql += " STRATEGY FILE_COPY"  # a few ms faster than WAL_LOG for an empty template
            for attempt in range(50):
                try:
                    conn.execute(sql)  # type: ignore[arg-type]
                    break
                except psycopg.errors.ObjectInUse:  # someone is connected to the template
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
        return name

    def terminate_connections(self, dbname: str | None = None) -> int:
        """Cut every client connection (to ``dbname``, or to any database) as a dropped network
        would, without stopping the server; returns how many were cut. The clients get
        ``psycopg.errors.AdminShutdown`` (57P01) on their next use."""
        with self.connect(autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND (%s::text IS NULL OR datname = %s::text)",
                (dbname, dbname),
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        with self.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _conf_value(value: str) -> str:
    if value.startswith("'") or re.fullmatch(r"[A-Za-z0-9_.]+", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def start_pg_server(**kwargs: Any) -> PgServer:
    """``initdb`` and start a throwaway cluster; ``close()`` it when done.

    Raises:
        PgUnavailable: no binaries, or root without a ``postgres`` user.
    """
    server = PgServer(**kwargs)
    try:
        server.init()
        server.start()
    except BaseException:
        server.close()
        raise
    return server


@dataclass
class PgDatabase:
    """One test's database on the session's server."""

    server: PgServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def conninfo(self) -> str:
        return self.server.conninfo(self.name)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return self.server.connect(self.name, **kwargs)

    def unique(self, name: str) -> str:
        """A cluster-wide name for this test (roles are shared by all databases)."""
        return f"{self.name}_{name}"


# -- pytest fixtures ------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL tests need a real server: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so these tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The test run's throwaway PostgreSQL server (skipped, or failed in CI, when unavailable)."""
    if psycopg is None:
        _unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    try:
        server = start_pg_server()
    except PgUnavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable skips or fails
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh, empty database for one test, dropped afterwards.

    A test that stopped the server gets it started again before the drop.
    """
    database = PgDatabase(pg_server, pg_server.create_database())
    try:
        yield database
    finally:
        if not pg_server.is_running():
            pg_server.start()
        pg_server.drop_database(database.name)


@pytest.fixture
def pg_url(pg_database: PgDatabase) -> str:
    """The URL of a fresh, empty database for one test."""
    return pg_database.url
