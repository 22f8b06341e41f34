"""A benchmark process's own peak memory, shared by the scripts in this folder.

Stdlib only and never imports studyledger: ``peers.py`` imports it under each peer's own
interpreter. Every script here runs as ``python benchmarks/NAME.py``, which puts this folder
on ``sys.path``, so ``from rss import peak_rss_mb`` finds it.
"""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM``, the high-water mark of its own memory map.

    Not ``ru_maxrss``: Linux carries that over from the parent when a subprocess is spawned
    (vfork + exec), so a child of a 300 MB harness would report at least 300 MB.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
