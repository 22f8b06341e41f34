"""The Python 3.12 venv with the released upstream packages, for the interop tests.

``upstream_python()`` returns the interpreter of a cached venv holding
design-research-experiments 0.4.0, design-research-agents 0.7.0 and
design-research-analysis 0.4.0 (building it the first time), or ``None`` when the interop
tests should be skipped; ``run_check(folders)`` runs ``tests/interop/check_upstream.py``
with it and returns the parsed JSON document.

When to build:

- with the environment variable ``CI`` set (non-empty), always: a failure raises
  ``UpstreamVenvError`` saying what is missing;
- otherwise only when ``STUDYLEDGER_INTEROP=1``; a venv already in the cache is used unless
  ``STUDYLEDGER_INTEROP=0``. ``SKIP_MESSAGE`` says how to run the tests.

The venv lives in ``$STUDYLEDGER_CACHE`` (default ``$XDG_CACHE_HOME/studyledger``, else
``~/.cache/studyledger``) as ``upstream-venv-<hash of the pins>``; it is built beside
that name and renamed into place, so an interrupted build is never taken for a good one.
The 3.12 interpreter is ``$STUDYLEDGER_PYTHON312`` when set, else
``PYENV_VERSION=3.12.1 pyenv which python3.12``, else ``python3.12`` on PATH.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PINS: tuple[str, ...] = (
    "design-research-experiments==0.4.0",
    "design-research-agents==0.7.0",
    "design-research-analysis==0.4.0",
)
PYTHON_VERSION = "3.12"
PYENV_VERSION = "3.12.1"
HARNESS = Path(__file__).resolve().parent / "interop" / "check_upstream.py"
MARKER = "studyledger-upstream.json"
SKIP_MESSAGE = (
    "interop with the released upstream packages is skipped: run with STUDYLEDGER_INTEROP=1 "
    f"(needs Python {PYTHON_VERSION}, e.g. `pyenv install {PYENV_VERSION}`, and PyPI access; "
    "builds a cached venv once, about 30 s)"
)


class UpstreamVenvError(RuntimeError):
    """The upstream venv cannot be built or the harness failed."""


def cache_root() -> Path:
    """Where cached venvs live.

    Returns:
        ``$STUDYLEDGER_CACHE``, else ``$XDG_CACHE_HOME/studyledger``, else ``~/.cache/studyledger``.
    """
    explicit = os.environ.get("STUDYLEDGER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "studyledger"


def venv_dir() -> Path:
    """The venv's folder: its name carries a hash of the Python version and the pins."""
    digest = hashlib.sha256(json.dumps([PYTHON_VERSION, *PINS]).encode("utf-8")).hexdigest()[:12]
    return cache_root() / f"upstream-venv-{digest}"


def _venv_python(venv: Path) -> Path:
    posix = venv / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv / "Scripts" / "python.exe"


def _is_complete(venv: Path) -> bool:
    marker = venv / MARKER
    if not marker.is_file() or not _venv_python(venv).exists():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("pins") == list(PINS)


def find_python312() -> Path | None:
    """Find a Python 3.12 interpreter to build the venv with.

    Returns:
        ``$STUDYLEDGER_PYTHON312``, pyenv's 3.12.1, or ``python3.12`` on PATH; ``None`` if none.
    """
    explicit = os.environ.get("STUDYLEDGER_PYTHON312")
    candidates: list[str] = [explicit] if explicit else []
    if shutil.which("pyenv"):
        try:
            found = subprocess.run(
                ["pyenv", "which", "python3.12"],
                env={**os.environ, "PYENV_VERSION": PYENV_VERSION},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            found = None
        if found is not None and found.returncode == 0 and found.stdout.strip():
            candidates.append(found.stdout.strip())
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        try:
            version = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version.returncode == 0 and version.stdout.strip() == PYTHON_VERSION:
            return Path(candidate)
    return None


def build_venv(target: Path) -> Path:
    """Build the venv at ``target`` (beside it first, then renamed into place).

    Args:
        target: The final venv folder.

    Returns:
        The venv's python.

    Raises:
        UpstreamVenvError: No Python 3.12, or venv creation or ``pip install`` failed.
    """
    python312 = find_python312()
    if python312 is None:
        raise UpstreamVenvError(
            f"no Python {PYTHON_VERSION} found for the upstream interop venv: install it "
            f"(`pyenv install {PYENV_VERSION}`) or point STUDYLEDGER_PYTHON312 at one"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    steps = [
        [str(python312), "-m", "venv", str(staging)],
        [str(_venv_python(staging)), "-m", "pip", "install", "--disable-pip-version-check", "-q", *PINS],
    ]
    for command in steps:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise UpstreamVenvError(f"building the upstream venv failed: {' '.join(command)}: {exc}") from exc
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise UpstreamVenvError(
                f"building the upstream venv failed (exit {done.returncode}): {' '.join(command)}\n"
                f"{done.stderr.strip()[-2000:]}"
            )
    marker = {"pins": list(PINS), "python": str(python312), "build_seconds": round(time.monotonic() - started, 1)}
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    try:
        staging.rename(target)
    except OSError:
        # another process finished the same venv first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_complete(target):
            raise
    return _venv_python(target)


@functools.cache
def upstream_python() -> Path | None:
    """The upstream venv's interpreter, built once and cached; ``None`` means skip.

    Returns:
        The venv's python, or ``None`` outside CI when it is not cached and
        ``STUDYLEDGER_INTEROP`` is not ``1`` (or is ``0``).

    Raises:
        UpstreamVenvError: In CI, or with ``STUDYLEDGER_INTEROP=1``, when it cannot be built.
    """
    in_ci = bool(os.environ.get("CI"))
    wanted = os.environ.get("STUDYLEDGER_INTEROP", "")
    target = venv_dir()
    if not in_ci and wanted == "0":
        return None
    if _is_complete(target):
        return _venv_python(target)
    if not in_ci and wanted != "1":
        return None
    return build_venv(target)


def run_check(
    folders: Sequence[Path | str],
    *,
    metrics: Sequence[str] = (),
    condition_columns: Sequence[str] = (),
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Run upstream's readers on ``folders`` with the upstream venv.

    Args:
        folders: Study output folders (ours or upstream's); relative ones are taken from ``cwd``.
        metrics: Metrics for the metric tables (harness default: ``primary_outcome``).
        condition_columns: Condition columns for the condition table (default: ``condition_id``).
        cwd: Working directory of the harness (default: the current one).

    Returns:
        The harness's JSON document: ``{"folders": {folder: {"readers": {...}, "accepted":
        [...], "refused": [...]}}, "packages": {...}, ...}``, folders keyed as passed.

    Raises:
        UpstreamVenvError: No venv (call ``upstream_python()`` first and skip on ``None``),
            or the harness itself failed.
    """
    python = upstream_python()
    if python is None:
        raise UpstreamVenvError(SKIP_MESSAGE)
    command = [str(python), str(HARNESS)]
    for metric in metrics:
        command += ["--metric", metric]
    for column in condition_columns:
        command += ["--condition-column", column]
    command += [str(folder) for folder in folders]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)
    if done.returncode != 0:
        raise UpstreamVenvError(f"{HARNESS.name} exited {done.returncode}:\n{done.stderr.strip()[-4000:]}")
    document: dict[str, Any] = json.loads(done.stdout)
    return document


if __name__ == "__main__":
    # `python tests/upstream_venv.py FOLDER...`: build if needed and print the harness output.
    os.environ.setdefault("STUDYLEDGER_INTEROP", "1")
    print(json.dumps(run_check(sys.argv[1:]), indent=1, sort_keys=True))
