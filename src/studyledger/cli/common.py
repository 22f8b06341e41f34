"""What every command shares: the ``--db`` option, JSON output and user-error handling."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import StudyLedgerError, ValidationError
from ..events import is_unicode
from ..ledger import Ledger
from ..schema import to_jsonable
from ..store import DatabaseURL, Target, ledger_target

F = TypeVar("F", bound=Callable[..., Any])


if TYPE_CHECKING:
    _TargetParam = click.ParamType[Target]
else:  # click before 8.3 has no generic ParamType
    _TargetParam = click.ParamType


class LedgerTargetType(_TargetParam):
    """``--db``: a ledger file, or a ``postgresql://`` URL (kept whole, printed without its password)."""

    name = "FILE|URL"

    def __init__(self, file: click.Path | None = None) -> None:
        self.file = file or click.Path(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Target:
        if isinstance(value, DatabaseURL):
            return value
        try:
            target = ledger_target(value)
        except ValidationError as exc:
            self.fail(str(exc), param, ctx)
        if isinstance(target, DatabaseURL):
            return target
        return Path(os.fsdecode(self.file.convert(value, param, ctx)))


class Context:
    """Options given before the command name."""

    def __init__(self, db: Target) -> None:
        self.db = db

    @contextmanager
    def ledger(self, *, create: bool = False) -> Iterator[Ledger]:
        """Open the ledger named by ``--db`` for writing (not creating it unless asked)."""
        with Ledger.open(self.db, create=create, source="cli") as ledger:
            yield ledger

    @contextmanager
    def reader(self, *, tables: bool = True) -> Iterator[Ledger]:
        """Open the ledger named by ``--db`` read-only: the command never changes it.

        Args:
            tables: The command reads the derived tables, so they must be this version's.
        """
        with Ledger.open(self.db, readonly=True, source="cli") as ledger:
            if tables:
                ledger.check_readable()
            yield ledger


pass_context = click.make_pass_decorator(Context)
"""Hands a command the :class:`Context` the group made from the options before it."""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    type=LedgerTargetType(),
    default="studyledger.db",
    show_default=True,
    envvar="STUDYLEDGER_DB",
    show_envvar=True,
    help="The ledger: a file, or a PostgreSQL database postgresql://USER@HOST:PORT/DBNAME "
         "(password from the URL, PGPASSWORD or ~/.pgpass; never printed).",
)
@click.version_option(package_name="studyledger")
@click.pass_context
def cli(ctx: click.Context, db: Target) -> None:
    """studyledger: an append-only ledger of experiment runs.

    Record runs through the Python API or by dropping JSONL files into a watched folder,
    watch them live in a terminal dashboard, and replay the ledger to audit it.
    """
    ctx.obj = Context(db)


def user_errors(func: F) -> F:
    """Turn a user's mistake into one line on stderr and exit status 1, never a traceback.

    (A mistake in the command line itself, caught by click, exits 2.)
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as other command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
        except (StudyLedgerError, OSError) as exc:
            raise click.ClickException(printable(_describe(exc))) from None
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
            # Only a raw writer stores text that is not UTF-8; verify names the rows.
            raise click.ClickException(f"the ledger holds text that is not valid UTF-8 ({exc}); "
                                       "`studyledger verify` names the events") from None

    return wrapper  # type: ignore[return-value]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _plain(value: Any) -> Any:
    """A JSON-ready copy: objects by their ``to_dict``, the rest by the seed's to_jsonable
    (which also tags NaN, so the output stays strict JSON)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return to_jsonable(value)


def echo_json(value: Any) -> None:
    """Print one JSON document (strict JSON: no NaN tokens).

    Text is written as it is, except when it holds what UTF-8 cannot encode (a lone
    surrogate a raw writer stored): then the document is written with ``\\u`` escapes,
    which is the same JSON.
    """
    plain = _plain(value)
    text = json.dumps(plain, indent=2, ensure_ascii=False, allow_nan=False)
    if not is_unicode(text):
        text = json.dumps(plain, indent=2, ensure_ascii=True, allow_nan=False)
    click.echo(text)


def printable(text: str) -> str:
    """Text with every character that is not printable escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    Ids, paths, reasons and messages come from files anyone can write: escaped, an OSC 52
    sequence cannot write the clipboard nor ``ESC [2J`` clear the screen, a newline cannot
    forge an output line, and a lone surrogate cannot stop the output.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def say(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print one line for a person, escaped by :func:`printable`: every human-readable
    output of every command goes through here (``--json`` output is exact JSON instead)."""
    click.echo(printable(text), err=err, nl=nl)


def echo_result(as_json: bool, value: Any, line: str) -> None:
    """A command's result: its JSON with ``--json``, else one line for a person."""
    if as_json:
        echo_json(value)
    else:
        say(line)


LIMIT = click.IntRange(min=1)
"""The ``--limit`` of every listing (events, rejects, search): at least 1; a number larger
than a ledger holds is everything (:func:`~studyledger.query.sql_limit`)."""


def json_option(func: F) -> F:
    """The ``--json`` flag every command has."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def is_terminal() -> bool:
    """Whether stdout is a terminal (for progress bars and live lines)."""
    return sys.stdout.isatty()
