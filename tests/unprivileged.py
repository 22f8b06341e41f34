"""Running CLI commands as a user that cannot write, for tests of read-only files and folders.

The suite runs as root in CI, and root writes whatever a file's mode says. So the commands
run in one child that loads studyledger first (the interpreter lives under /root, which an
unprivileged user cannot enter), then drops to ``nobody`` and only then opens the ledger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

NOBODY = 65534

_SCRIPT = """
import importlib, json, os, pkgutil, sys
from click.testing import CliRunner
import studyledger
for module in pkgutil.walk_packages(studyledger.__path__, "studyledger."):
    if ".tui" not in module.name and not module.name.endswith("__main__"):
        importlib.import_module(module.name)
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(%(uid)d)
    os.setuid(%(uid)d)
from studyledger.cli import cli
results = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args)
    error = "" if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception)
    results.append([result.exit_code, result.stdout, result.stderr + error])
print(json.dumps(results))
"""


def run_cli_unprivileged(commands: list[list[str]], timeout: float = 120) -> list[tuple[int, str, str]]:
    """Each ``studyledger ARGS`` of ``commands``, as a user without write access.

    As root the child drops to ``nobody``; as anyone else it runs as that user, for whom
    the modes of the test's files already bind.

    Returns:
        ``(exit code, stdout, stderr)`` per command; an exception escaping a command shows
        at the end of its stderr.
    """
    result = subprocess.run([sys.executable, "-c", _SCRIPT % {"uid": NOBODY}, json.dumps(commands)],
                            capture_output=True, text=True, timeout=timeout, check=True)
    return [(code, out, err) for code, out, err in json.loads(result.stdout)]


_PYTHON = """
import json, os, sys
import studyledger.tui.data
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(%(uid)d)
    os.setuid(%(uid)d)
namespace = {}
exec(sys.argv[1], namespace)
print(json.dumps(namespace["result"]))
"""


def run_python_unprivileged(code: str, timeout: float = 120) -> Any:
    """Run ``code`` (which sets ``result``, a JSON value) as a user without write access,
    with the dashboard's read side loaded first; returns ``result``."""
    found = subprocess.run([sys.executable, "-c", _PYTHON % {"uid": NOBODY}, code],
                           capture_output=True, text=True, timeout=timeout, check=False)
    assert found.returncode == 0, found.stderr
    return json.loads(found.stdout)
