"""Regenerate the documentation that is derived from the code (tests/test_readme.py checks both).

Run: ``python scripts/update_docs.py``.

* The README's CLI reference is the ``--help`` text itself, as sqlite-utils does, so the
  two cannot drift apart.
* docs/api.md is every public name of ``studyledger``, by section, with its signature and
  its docstring.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import studyledger
from studyledger.cli import cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
API_DOC = REPO / "docs" / "api.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def help_text(*args: str) -> str:
    """The help output of ``studyledger ARGS --help`` at a fixed width."""
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="studyledger", terminal_width=100)
    return result.output.rstrip()


def cli_reference() -> str:
    """Markdown: the group's help, then each command's, in name order."""
    parts = ["```", help_text(), "```"]
    for name in sorted(cli.commands):
        parts += ["", f"### studyledger {name}", "", "```", help_text(name), "```"]
    return "\n".join(parts)


def render(readme: str) -> str:
    """The README with its CLI reference section replaced by the current one."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{cli_reference()}\n{END}", readme)


def signature(name: str, value: Any) -> str:
    """``name(parameters) -> return``, with annotations as written in the source."""
    try:
        found = inspect.signature(value)
    except (TypeError, ValueError):
        return name
    parts, marked_keywords = [], False
    for parameter in found.parameters.values():
        if parameter.name in ("self", "cls"):
            continue
        if parameter.kind is parameter.KEYWORD_ONLY and not marked_keywords:
            parts.append("*")
            marked_keywords = True
        text = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        text += parameter.name
        if parameter.annotation is not parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    shown = found.return_annotation not in (found.empty, None, "None") or not inspect.isclass(value)
    returns = f" -> {_annotation(found.return_annotation)}" if shown and found.return_annotation is not found.empty else ""
    return f"{name}({', '.join(parts)}){returns}"


def _annotation(value: Any) -> str:
    if isinstance(value, str):
        return value
    return getattr(value, "__forward_arg__", None) or getattr(value, "__name__", None) or repr(value)


def _doc(value: Any) -> str:
    return inspect.cleandoc(value.__doc__ or "").strip()


def _members(cls: type) -> list[tuple[str, Any]]:
    """The public methods and properties a class defines itself, in source order."""
    found = []
    for member, value in vars(cls).items():
        if member.startswith("_") or not (inspect.isfunction(value) or isinstance(value, (property, classmethod))):
            continue
        found.append((member, value))
    return found


def entry(name: str, value: Any, module: str) -> list[str]:
    """The markdown of one public name (defined in ``module``)."""
    lines = [f"### `{name}`", ""]
    if inspect.isclass(value) and issubclass(value, enum.Enum):
        members = ", ".join(f"`{member.value}`" for member in value)
        return lines + [f"An enumeration: {members}.", "", _doc(value), ""]
    if not inspect.isclass(value) and not inspect.isfunction(value):
        return lines + ["```python", f"{name} = {_alias_source(module, name)}", "```", "",
                        _alias_doc(module, name), ""]
    kind = "class " if inspect.isclass(value) else "def "
    lines += ["```python", kind + signature(name, value), "```", "", _doc(value), ""]
    if inspect.isclass(value) and not issubclass(value, BaseException):
        for member, attribute in _members(value):
            target = attribute.__func__ if isinstance(attribute, classmethod) else attribute
            if isinstance(target, property):
                lines += [f"#### `{name}.{member}` (property)", "", _doc(target), ""]
            else:
                lines += [f"#### `{name}.{member}`", "", "```python", signature(member, target), "```", "",
                          _doc(target), ""]
    return lines


def _alias_match(module: str, name: str) -> re.Match[str] | None:
    """A module-level alias and the docstring written under it (``NAME = ...`` then a string)."""
    source = inspect.getsource(importlib.import_module(module))
    return re.search(rf'^{name} = (.*?)\n"""(.*?)"""', source, re.S | re.M)


def _alias_source(module: str, name: str) -> str:
    match = _alias_match(module, name)
    return match.group(1).strip() if match else "..."


def _alias_doc(module: str, name: str) -> str:
    match = _alias_match(module, name)
    return inspect.cleandoc(match.group(2)) if match else ""


def api_reference() -> str:
    """docs/api.md: every public name, by section."""
    lines = [
        "# The Python API",
        "",
        "Everything `import studyledger` offers, by section: generated from the docstrings by",
        "`python scripts/update_docs.py` (a test checks it is current). Names load on first use.",
        "",
    ]
    for section, names in studyledger._API.items():
        lines += [f"## {section}", ""]
        for name, (module, _) in names.items():
            lines += entry(name, getattr(studyledger, name), module)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = README.read_text()
    updated = render(text)
    README.write_text(updated)
    sys.stdout.write("README.md CLI reference " + ("updated\n" if updated != text else "already current\n"))
    before = API_DOC.read_text() if API_DOC.exists() else ""
    API_DOC.write_text(api_reference())
    sys.stdout.write("docs/api.md " + ("updated\n" if api_reference() != before else "already current\n"))
