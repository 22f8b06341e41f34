"""What the README claims of the code itself: strict types, no lint, the layering, a light import."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "studyledger"
BIN = Path(sys.executable).parent


def test_mypy_strict_is_clean() -> None:
    from mypy import api

    stdout, stderr, status = api.run(["--config-file", str(REPO / "pyproject.toml")])
    assert status == 0, stdout + stderr


def test_ruff_finds_no_mistakes() -> None:
    """Unused or undefined names and bugbear's patterns, in everything we ship and test."""
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "src", "tests", "scripts", "benchmarks",
                             "ledger_examples"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_import_contracts_hold() -> None:
    """Layers import only downwards; only the dashboard loads Textual; the core is stdlib."""
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache", "--config", str(REPO / "pyproject.toml")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_sits_in_a_layer() -> None:
    """A new module must be placed in the layering, or the contracts would not see it."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    present = {f"studyledger.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem not in ("__init__", "__main__")}
    present |= {f"studyledger.{path.name}" for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert present == set(layers)


def test_importing_the_package_loads_nothing_heavy(tmp_path: Path) -> None:
    """``import studyledger`` and a Ledger never load the CLI, the watcher, YAML or the dashboard."""
    script = (
        "import sys, studyledger\n"
        "with studyledger.Ledger.open(sys.argv[1]) as ledger:\n"
        "    ledger.stats()\n"
        "print(sorted(m for m in ('click', 'watchdog', 'yaml', 'textual') if m in sys.modules))\n"
        "import studyledger.cli\n"
        "print(sorted(m for m in ('click', 'watchdog', 'yaml', 'textual') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "light.db")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    light, cli = result.stdout.splitlines()
    assert light == "[]"
    # The probe sees what is loaded: the CLI brings click in, but never the dashboard.
    assert "click" in cli and "textual" not in cli


def test_every_error_is_exported_from_the_error_module() -> None:
    """A user catches what they can name: every error class is in errors.__all__."""
    import inspect

    from studyledger import errors

    defined = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, errors.StudyLedgerError)}
    assert defined == set(errors.__all__)
