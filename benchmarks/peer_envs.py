"""The peers' virtualenvs: made by the benchmark, cached, never project dependencies.

Each peer gets its own venv (MLflow, eventsourcing and Aim pin different versions of
SQLAlchemy, numpy and friends), created with the same Python as the harness and cached under
``$XDG_CACHE_HOME/studyledger-bench/peers`` (``~/.cache`` by default) in a folder named after
the peer, the Python version and a hash of the pinned requirements: change a pin and a new
venv is built beside the old one. A venv is used only once its install finished (a
``.complete`` marker); a half-built one is rebuilt. A failed install is remembered
(``.failed`` holds the reason shown in the table) and retried only with ``--retry-peers``,
so a peer that cannot be installed here costs one attempt, not one per run.

    python benchmarks/peer_envs.py [NAME ...]    # build (or show) the venvs without benchmarking
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    """A peer library measured by ``peers.py``, with the pins of its venv."""

    name: str              # the ``peers.py`` measurement name
    label: str             # what the table calls it
    requirements: tuple[str, ...]
    target: float          # studyledger's goal, as a multiple of the peer's rate (issue 13)


PEERS: tuple[Peer, ...] = (
    Peer("eventsourcing", "the eventsourcing library's SQLite recorder (insert_events)",
         ("eventsourcing==9.5.6",), 1.0),
    Peer("aim", "Aim Run.track", ("aim==3.29.1",), 2.0),
    Peer("mlflow", "MLflow log_batch (SQLite backend)", ("mlflow==3.17.2",), 10.0),
)

INSTALL_TIMEOUT_S = 1200


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "studyledger-bench" / "peers"


def venv_dir(peer: Peer, root: Path) -> Path:
    """``<root>/<name>-py3.11-<hash of the pins>``: a new pin is a new venv."""
    key = hashlib.sha256("\n".join(sorted(peer.requirements)).encode()).hexdigest()[:10]
    return root / f"{peer.name}-py{sys.version_info[0]}.{sys.version_info[1]}-{key}"


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


def _base_python() -> str:
    """The interpreter venvs are made from: the harness's own, or the one its venv wraps."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure(peer: Peer, *, root: Path | None = None, retry: bool = False,
           log: bool = True) -> tuple[Path | None, str]:
    """The venv's interpreter for ``peer``, building the venv if needed.

    Returns ``(python, note)``: ``python`` is None when the peer cannot be installed here,
    and ``note`` then says why (the end of pip's error); otherwise ``note`` names the pins.
    Never raises for an install failure: the table reports it instead.
    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = venv_dir(peer, root)
    complete, failed = folder / ".complete", folder.with_name(folder.name + ".failed")
    pins = " ".join(peer.requirements)
    # One builder at a time per venv (two harness runs started together share the cache).
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.exists() and _python(folder).exists():
            return _python(folder), pins
        if failed.exists() and not retry:
            return None, failed.read_text(encoding="utf-8").strip()
        shutil.rmtree(folder, ignore_errors=True)
        failed.unlink(missing_ok=True)
        if log:
            print(f"  installing {pins} into {folder} (once; cached) ...", flush=True)
        started = time.perf_counter()
        reason = _build(folder, peer.requirements)
        if reason is not None:
            failed.write_text(reason + "\n", encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            return None, reason
        complete.write_text(f"{pins}\n{time.perf_counter() - started:.0f} s\n", encoding="utf-8")
        return _python(folder), pins


def _build(folder: Path, requirements: tuple[str, ...]) -> str | None:
    """Create the venv and pip-install the pins; None on success, else the reason."""
    logfile = folder.with_name(folder.name + ".log")
    try:
        made = subprocess.run([_base_python(), "-m", "venv", str(folder)], capture_output=True, text=True,
                              check=False, timeout=300)
        if made.returncode != 0:
            return f"venv creation failed: {_last_line(made.stderr)}"
        installed = subprocess.run(
            [str(_python(folder)), "-m", "pip", "install", "--disable-pip-version-check", "-q", *requirements],
            capture_output=True, text=True, check=False, timeout=INSTALL_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"install failed: {exc}"
    logfile.write_text(installed.stdout + installed.stderr, encoding="utf-8")
    if installed.returncode != 0:
        return f"pip install {' '.join(requirements)} failed: {_last_line(installed.stderr)} (log: {logfile})"
    return None


def _last_line(text: str) -> str:
    """The most telling line of pip's output: its last ERROR, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING")]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def main() -> None:
    wanted = set(sys.argv[1:])
    for peer in PEERS:
        if wanted and peer.name not in wanted:
            continue
        python, note = ensure(peer, retry=True)
        print(f"{peer.name}: {python or 'not installed'} ({note})")


if __name__ == "__main__":
    main()
