"""The public surface, checked (issue 15 item 5).

A module is public when no part of its dotted path after ``smtpcore``
starts with ``_``; its public names are its ``__all__``. The list of modules
is read from the package, so a module added later is checked as soon as it
exists. The reference server (``smtpcore.server`` and below) is an
application whose public face is the CLI (docs/tutorials/operator.rst), so
its modules are not held to the library's rules.

- Nothing in docs/ or examples/ (nor the README) imports a private name.
- Every public module has ``__all__`` and a docstring; every public class,
  function and module has a docstring of its own.
- Every public name is on an API page: the documentation, built once here,
  lists it at a public path (``smtpcore.asyncio.SMTPError`` counts for the
  same class under ``smtpcore.trio``; ``smtpcore._driver.SMTPError`` does not).
- ``smtpcore.asyncio`` and ``smtpcore.trio`` export the same names, but for
  their transport class, and the shared ones are the same objects.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import posixpath
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from sphinx.util.inventory import InventoryFile

import smtpcore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"

#: The reference mail server: an application, documented by its CLI.
APPLICATION = "smtpcore.server"


def is_private(name: str) -> bool:
    """``_x`` is private; ``__x__`` (``__version__``, ``__future__``) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def public_modules() -> list[str]:
    names = ["smtpcore"]
    for info in pkgutil.walk_packages(smtpcore.__path__, "smtpcore."):
        parts = info.name.split(".")[1:]
        if any(is_private(part) or part == "__main__" for part in parts):
            continue
        if info.name == APPLICATION or info.name.startswith(APPLICATION + "."):
            continue
        names.append(info.name)
    return names


PUBLIC_MODULES = public_modules()


def public_names() -> list[tuple[str, str, object]]:
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            found.append((module_name, name, getattr(module, name)))
    return found


# -- private imports in docs/ and examples/ -------------------------------------------

_CODE_BLOCK = re.compile(r"^(\s*)\.\. (?:code-block|code|testcode)::\s*(?:python|pycon)?\s*$")
_IMPORT_LINE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+\(?([^)#]*)|import\s+([\w., ]+))")


def rst_code_blocks(text: str) -> list[str]:
    """The Python code blocks of a reStructuredText page, and its ``::`` literal blocks."""
    lines = text.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        match = _CODE_BLOCK.match(line)
        if match is None and not (line.rstrip().endswith("::") and ".. " not in line):
            continue
        indent = len(match.group(1)) if match else len(line) - len(line.lstrip())
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        while body and (not body[0].strip() or body[0].lstrip().startswith(":")):
            body.pop(0)  # the blank line and the directive's options
        blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


def markdown_code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def imported_names(code: str) -> list[str]:
    """Each module imported, and each ``module.name`` imported from one."""
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a shell session or an excerpt: read the import lines alone
        found = []
        for line in code.splitlines():
            match = _IMPORT_LINE.match(line.removeprefix(">>> "))
            if match is None:
                continue
            if match.group(3):
                found += [part.split()[0] for part in match.group(3).split(",") if part.strip()]
            else:
                names = [part.split()[0] for part in match.group(2).split(",") if part.strip()]
                found += [f"{match.group(1)}.{name}" for name in names]
        return found
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def user_facing_code() -> list[tuple[str, str]]:
    """(where, code) for every example and every code block in docs/ and the README."""
    code = [(str(path.relative_to(ROOT)), path.read_text()) for path in EXAMPLES.rglob("*.py")]
    for page in sorted(DOCS.rglob("*.rst")):
        where = str(page.relative_to(ROOT))
        code += [(where, block) for block in rst_code_blocks(page.read_text())]
    code += [
        ("README.md", block) for block in markdown_code_blocks((ROOT / "README.md").read_text())
    ]
    code += [(str(path.relative_to(ROOT)), path.read_text()) for path in DOCS.rglob("*.py")]
    return code


def test_the_code_scan_finds_code() -> None:
    places = {where for where, _ in user_facing_code()}
    assert "examples/threaded_server.py" in places
    assert "docs/adapters.rst" in places and "README.md" in places
    assert "smtpcore._driver.Transport" in imported_names("from smtpcore._driver import Transport")
    assert imported_names("$ python -c 'x'\nfrom smtpcore.smtp import (Reply,\n") == [
        "smtpcore.smtp.Reply"
    ]
    page = "Text::\n\n   from smtpcore._x import y\n\n.. code-block:: python\n\n   import _z\n"
    assert rst_code_blocks(page) == ["from smtpcore._x import y\n", "import _z"]


def test_docs_and_examples_import_no_private_name() -> None:
    problems = [
        f"{where}: imports {name}"
        for where, code in user_facing_code()
        for name in imported_names(code)
        if any(is_private(part) for part in name.split("."))
    ]
    assert not problems, "\n".join(problems)


# -- docstrings -----------------------------------------------------------------------


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_module_has_all_and_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no docstring"
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"


def own_docstring(value: object) -> str:
    if isinstance(value, type):
        return str(value.__dict__.get("__doc__") or "")
    return str(getattr(value, "__doc__", None) or "")


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = [
        f"{module}.{name}"
        for module, name, value in public_names()
        if isinstance(value, type | types.FunctionType | types.ModuleType)
        # Before 3.11 a parameterised alias (``Callable[[str], bool]``) passes for a type.
        and not isinstance(value, types.GenericAlias)
        and not own_docstring(value).strip()
    ]
    assert not missing, f"no docstring: {missing}"


# -- private names in what readers are shown ------------------------------------------

_DIRECTIVE_TARGET = re.compile(
    r"^\s*\.\. (?:auto\w+|module|py:module|currentmodule)::\s+(smtpcore[\w.]*)", re.M
)
#: A cross-reference: ``:meth:`~x.y```, ``:py:func:`title <x.y>```; group 1 is the target.
_ROLE = re.compile(r":(?:\w+:)?\w+:`(?:[^`<]*<)?[~!]?([^`<>]+)>?`")
#: An inline literal (double backquotes) or interpreted text (single); group 1 or 2.
_LITERAL = re.compile(r"``(.+?)``|(?<![`:\w])`([^`]+)`(?!`)", re.S)
#: ``_x``, ``obj._x`` or ``f(_x)``: a leading underscore, not one inside a word
#: (``a_b``), nor a dunder (``__init__``), nor a folder of a file path (``smtp/_ext/``).
_PRIVATE_IDENTIFIER = re.compile(r"(?:^|(?<=[.\s(]))_[A-Za-z0-9]\w*")
_PRIVATE_DOTTED = re.compile(r"\bsmtpcore(?:\.\w+)*\._[A-Za-z0-9]\w*")


def private_references(text: str, *, literals: bool = True) -> list[str]:
    """The private names a piece of reStructuredText points a reader at: role
    targets, dotted ``smtpcore._x`` paths and, with ``literals``, names in
    backquotes. A docstring renders into the API reference, where ``_x`` can only
    send a reader to a private name (DESIGN.md, "Public names")."""
    found = [target for target in _ROLE.findall(text) if any(map(is_private, target.split(".")))]
    found += _PRIVATE_DOTTED.findall(text)
    if literals:
        for double, single in _LITERAL.findall(_ROLE.sub("", text)):
            found += _PRIVATE_IDENTIFIER.findall(double or single)
    return sorted(set(found))


def test_private_references_are_found_precisely() -> None:
    text = (
        "See :meth:`_line_limit`, :py:func:`~smtpcore.smtp._x.y`, ``conn._buffer``, "
        ":class:`the store <smtpcore._store.Store>`, `_hidden` and smtpcore._driver."
    )
    assert private_references(text) == [
        "_buffer",
        "_hidden",
        "_line_limit",
        "smtpcore._driver",
        "smtpcore._store",
        "smtpcore._store.Store",
        "smtpcore.smtp._x",
        "smtpcore.smtp._x.y",
    ]
    public = "``__init__``, ``max_line_length``, :meth:`send`, ``a_b``, ``smtp/_ext/``, _x"
    assert private_references(public) == []
    assert private_references("``_x`` and :meth:`_y`", literals=False) == ["_y"]


def documented_modules_and_objects() -> list[tuple[str, object]]:
    """(full name, object) for each module and object an API page documents with an
    ``auto`` directive or a ``module`` directive, and each ``__all__`` name of those
    modules."""
    targets: set[str] = set()
    for page in DOCS.rglob("*.rst"):
        targets |= set(_DIRECTIVE_TARGET.findall(page.read_text()))
    found: list[tuple[str, object]] = []
    for target in sorted(targets):
        try:
            module = importlib.import_module(target)
        except ImportError:
            parent, _, name = target.rpartition(".")
            found.append((target, getattr(importlib.import_module(parent), name)))
            continue
        found.append((target, module))
        found += [(f"{target}.{name}", getattr(module, name)) for name in module.__all__]
    return found


def rendered_docstrings(name: str, value: object) -> list[tuple[str, str]]:
    """(name, docstring) of an object and, for a class of ours, of every public
    method, property and nested class it or a base class of ours defines."""
    docs = [(name, own_docstring(value))]
    if not isinstance(value, type):
        return docs
    for base in value.__mro__:
        if not base.__module__.startswith("smtpcore"):
            continue
        for member_name, member in vars(base).items():
            if is_private(member_name) or member_name.startswith("__"):
                continue
            if isinstance(member, property):
                member = member.fget
            elif isinstance(member, staticmethod | classmethod):
                member = member.__func__
            if inspect.isfunction(member) or isinstance(member, type):
                docs.append((f"{name}.{member_name}", own_docstring(member)))
    return docs


def test_no_documented_docstring_names_a_private_name() -> None:
    """A docstring that renders into the API reference names no private method,
    attribute or module: it says what the code does, or which public name gives it."""
    documented = documented_modules_and_objects()
    assert any(name == "smtpcore.smtp.ServerConnection" for name, _ in documented)
    problems = {
        f"{name}: {', '.join(private)}"
        for target, value in documented
        for name, text in rendered_docstrings(target, value)
        if (private := private_references(text))
    }
    assert not problems, "\n".join(sorted(problems))


def test_no_docs_page_points_at_a_private_name() -> None:
    """The pages' prose, not only their imports: no ``smtpcore._x`` path and no
    cross-reference to a private target. A note for contributors names the source
    file (``src/smtpcore/_lines.py``), which no reader mistakes for an import."""
    problems = [
        f"{page.relative_to(ROOT)}: {', '.join(private)}"
        for page in sorted([*DOCS.glob("*.rst"), *DOCS.glob("tutorials/*.rst")])
        if (private := private_references(page.read_text(), literals=False))
    ]
    assert not problems, "\n".join(problems)


# -- API pages ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every Python object the built documentation describes, by its full name, with
    the name of the entry that describes it (another name for an alias that Sphinx
    records under the class's own module)."""
    out = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-q", "-b", "html", "-d", str(out / "doctrees")]
    done = subprocess.run(
        [*command, str(DOCS), str(out / "html")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with (out / "html" / "objects.inv").open("rb") as stream:
        inventory = InventoryFile.load(stream, "", posixpath.join)
    return {
        name: _uri(entry).rpartition("#")[2]
        for kind, entries in inventory.items()
        if kind.startswith("py:")
        for name, entry in entries.items()
    }


def _uri(entry: Any) -> str:
    """An inventory entry's address: an attribute from Sphinx 8.2 on, the third
    item of a tuple before (the newest Sphinx for Python 3.10 is 8.1)."""
    return str(entry.uri if hasattr(entry, "uri") else entry[2])


def _key(name: str, value: object) -> object:
    """Classes and functions are the same wherever they are exported; data by name too."""
    if isinstance(value, type | types.FunctionType):
        return id(value)
    return (name, id(value))


@pytest.mark.timeout(900)  # the documentation is built first: slow on a loaded machine
def test_every_public_name_is_on_an_api_page(documented: dict[str, str]) -> None:
    paths: dict[object, set[str]] = {}
    for module, name, value in public_names():
        paths.setdefault(_key(name, value), set()).add(f"{module}.{name}")
    missing = sorted(
        f"{module}.{name}"
        for module, name, value in public_names()
        if not paths[_key(name, value)] & documented.keys()
    )
    assert not missing, f"on no API page at a public path: {missing}"


@pytest.mark.timeout(900)
def test_the_store_classes_fields_are_on_the_api_page(documented: dict[str, str]) -> None:
    """The fields a mailstore's author reads are described: autodoc reads a class's
    attribute docstrings from the module its ``__module__`` names, so the classes
    defined in a private module (``__module__`` set to ``smtpcore.maildrop``) lost
    every one of them."""
    from dataclasses import fields

    from smtpcore.maildrop import MessageInfo, POP3Session

    wanted = [
        f"smtpcore.maildrop.{cls.__name__}.{field.name}"
        for cls in (MessageInfo, POP3Session)
        for field in fields(cls)
    ]
    wanted.append("smtpcore.maildrop.Mailstore.apop")
    assert [name for name in wanted if name not in documented] == []


def test_no_api_page_describes_a_private_name(documented: dict[str, str]) -> None:
    """A reader finds every class and method at the path to import it from: an
    entry under ``smtpcore._driver`` would send them to a private import."""
    private = sorted(
        entry for entry in set(documented.values()) if any(map(is_private, entry.split(".")))
    )
    assert not private, f"described at a private path: {private}"


# -- what the adapters export ---------------------------------------------------------


def test_both_adapters_export_the_same_names() -> None:
    """The same names from either framework; the errors, timeouts and handler types
    are the very same classes, so code catching them works with both."""
    on_asyncio = importlib.import_module("smtpcore.asyncio")
    on_trio = importlib.import_module("smtpcore.trio")
    shared = {name for name in on_asyncio.__all__ if not name.startswith("Asyncio")}
    assert shared == {name for name in on_trio.__all__ if not name.startswith("Trio")}
    bound = {"SMTPServer", "SMTPClient", "POP3Server", "POP3Client"}
    different = {
        name
        for name in shared - bound
        if inspect.isclass(getattr(on_asyncio, name))
        and getattr(on_asyncio, name) is not getattr(on_trio, name)
    }
    assert not different


def test_the_adapters_export_every_class_of_the_handler_and_the_store() -> None:
    """docs/adapters.rst: the classes a server is written with come through both
    adapters; the aliases and the Maildir size helpers stay in their modules."""
    helpers = {"MessageReply", "MechanismFactory", "pop3_size", "WireSize"}
    helpers |= {"delivery_order", "READ_SIZE", "MAX_SIZED_BY_READING"}
    for source in ("smtpcore.handler", "smtpcore.maildrop"):
        module = importlib.import_module(source)
        for adapter in ("smtpcore.asyncio", "smtpcore.trio"):
            exported = set(importlib.import_module(adapter).__all__)
            assert set(module.__all__) - exported == helpers & set(module.__all__)
