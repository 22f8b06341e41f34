"""Running a command as a user that file permissions bind, from a suite that runs as root.

CI runs the suite as root, for whom a file's mode bits do not bind. The commands that must
work on (or refuse) a read-only file are run in a subprocess without the capabilities that
make root exempt (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, dropped from the bounding set so
exec cannot give them back): the kernel then checks the mode bits for it as for any owner.
``setuid(nobody)`` would do too, where the interpreter is readable by nobody, which it is
not when Python lives under root's 0700 home. As another user, nothing needs dropping.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_exemptions() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def bound_by_permissions() -> Callable[[], None] | None:
    """A ``preexec_fn`` under which file permissions bind (None when they already do)."""
    if os.geteuid() != 0:
        return None
    if not sys.platform.startswith("linux"):
        pytest.skip("dropping root's file-permission exemption needs Linux capabilities")
    return _drop_exemptions


def run_bound(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``studyledger ARGS`` in a subprocess that file permissions bind."""
    return subprocess.run([sys.executable, "-m", "studyledger", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=bound_by_permissions())
