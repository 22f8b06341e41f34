"""Writing export and checkpoint files so that no reader ever sees half of one."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The tail of a name this module makes from an unsafe id: an id that ends like one is named
# the same way, so that no id can take the folder another id was given.
_HASHED = re.compile(r"-[0-9a-f]{8}$")


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """A text handle on a temporary file that replaces ``path`` only when the block succeeds.

    Readers see the previous file or the whole new one, never a part: the data reaches the
    disk (fsync) before the rename, and the rename before this returns. An error mid-write
    removes the temporary file; a process killed mid-write leaves a hidden
    ``.NAME.tmp-PID`` beside the previous file, never in its place.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _sync_folder(path.parent)
    except OSError as exc:
        raise named_for_user(exc, temporary, path) from None
    finally:
        temporary.unlink(missing_ok=True)


def named_for_user(error: OSError, temporary: Path, target: Path) -> OSError:
    """The same error, naming where the user asked to write instead of our temporary name.

    Exports and checkpoints are written beside their target under a hidden name first; a
    message about ``.out.export-x1y2/study`` would send a user looking for a file that never
    existed.
    """
    name = error.filename
    if name is None:
        return error
    text = os.fspath(name)
    hidden = os.fspath(temporary)
    shown = os.fspath(target) + text[len(hidden):] if text.startswith(hidden) else text
    return OSError(error.errno, error.strerror, shown)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a crash after it cannot bring the old name back)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    with atomic_writer(path) as out:
        out.write(text)


NAME_LIMIT = 100
"""Longest id used as a folder name as it is: file systems refuse names over 255 bytes, and
an export adds its own prefixes and suffixes to temporary names."""


def folder_name(identifier: str) -> str:
    """A file-system-safe folder name for a study or run id.

    A safe id (letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit) of at
    most :data:`NAME_LIMIT` characters is its own name. Otherwise unsafe characters become
    ``_``, the name is cut to 80 characters and 8 hex digits of the id's sha256 are
    appended, so two ids never share a folder, no name is too long, and no id lands on a
    reserved name such as ``_unassigned``. A safe id that already ends in ``-`` and 8 hex
    digits is named the hashed way too, or ``a_b-c8687a08`` would take the folder of ``a b``.
    """
    if len(identifier) <= NAME_LIMIT and _SAFE.fullmatch(identifier) and not _HASHED.search(identifier):
        return identifier
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).strip("._") or "id"
    return f"{cleaned[:80]}-{hashlib.sha256(identifier.encode('utf-8')).hexdigest()[:8]}"
