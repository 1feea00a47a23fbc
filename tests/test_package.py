"""The package's shape: exported names, typing marker, and the sans-I/O import rule.

DESIGN.md: nothing below the adapters may import an I/O, clock, randomness or
concurrency module, nor any third-party package.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.resources
import sys
import types
from pathlib import Path

import pytest

import smtpcore

PACKAGE_DIR = Path(smtpcore.__file__).resolve().parent

#: Modules allowed to do I/O or use optional extras. A pattern also covers the
#: submodules of a package it names. Extend this list when an adapter is added.
IO_MODULES: tuple[str, ...] = (
    "smtpcore.asyncio",
    "smtpcore._asyncio_runner",  # the asyncio adapter's session runner
    "smtpcore._asyncio_clock",  # the asyncio adapter's deadlines and watchdog
    "smtpcore._asyncio_timers",  # the asyncio adapter's shared connection timer
    "smtpcore._asyncio_alarm",  # the asyncio client's timer, kept by a thread
    "smtpcore._asyncio_raw",  # the asyncio server's connections on the raw socket
    "smtpcore._asyncio_raw_watch",  # their socket in the loop's selector
    "smtpcore._asyncio_raw_writes",  # their writes, and the waits for room
    "smtpcore._asyncio_raw_close",  # their close
    "smtpcore._asyncio_raw_held",  # their replies held for the loop's next pass
    "smtpcore._asyncio_raw_accept",  # the asyncio server's listening sockets
    "smtpcore._asyncio_tls",  # their TLS, over the raw socket's reads and writes
    "smtpcore._asyncio_client_socket",  # the asyncio client's TCP transport
    "smtpcore._asyncio_close",  # when the asyncio client's TLS close may close its socket
    "smtpcore._asyncio_beneath_tls",  # the TCP transport beneath asyncio's TLS transport
    "smtpcore._asyncio_stream",  # the asyncio adapter's transport over a stream pair
    "smtpcore._asyncio_transport",  # its transport on asyncio's own connections
    "smtpcore._asyncio_client",  # how the asyncio clients connect and read replies
    "smtpcore._asyncio_listener",  # the asyncio servers' accept loop and shutdown
    "smtpcore.trio",
    "smtpcore._trio_held",  # the trio server's replies held to the end of a batch
    "smtpcore._trio_deadlines",  # trio's deadlines and the sessions' watchdog
    "smtpcore._trio_clock",  # trio's timing for a session
    "smtpcore._trio_transport",  # the trio adapter's transport over any trio stream
    "smtpcore._trio_client",  # how the trio clients connect
    "smtpcore._trio_listener",  # the trio servers' accept loop and shutdown
    "smtpcore.sync",
    "smtpcore.transport",
    "smtpcore._driver*",
    "smtpcore.adapters*",
    "smtpcore.server*",
    "smtpcore.__main__",
    "smtpcore.routing.dnspython",
    # The Maildir mailstore: files, and a worker thread of the running framework
    # for the work that touches many of them.
    "smtpcore.maildrop",
    "smtpcore._maildrop_flight",  # one piece of a maildrop's work in a thread at a time
    "smtpcore._maildir_folders",  # a Maildir's folders, released by that rule
    "smtpcore._maildir_listed",  # a Maildir's listing, its sizes kept under a thread lock
    "smtpcore._maildir_find_again",  # a Maildir message found again, on its listing
    "smtpcore._maildir_content",  # a Maildir message's content, on its listing
    "smtpcore._maildir_update_step",  # a Maildir's UPDATE, on its listing
    "smtpcore._threads",
    # The testing toolkit: Hypothesis (the testing extra), and tools that talk to
    # servers over sockets or drive a fuzzer's clock and randomness.
    "smtpcore.testing*",
)

#: Standard-library modules the sans-I/O layers must not import (time and
#: randomness are passed in; sockets, TLS and concurrency belong to adapters).
FORBIDDEN_STDLIB: frozenset[str] = frozenset(
    {"asyncio", "socket", "ssl", "time", "random", "select", "selectors", "threading"}
)


def _is_io_module(name: str) -> bool:
    return any(
        fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")
        for pattern in IO_MODULES
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _all_modules() -> list[tuple[str, Path]]:
    return sorted((_module_name(p), p) for p in PACKAGE_DIR.rglob("*.py"))


CORE_MODULES = [(name, path) for name, path in _all_modules() if not _is_io_module(name)]


def _imported_modules(module: str, path: Path) -> list[tuple[int, str]]:
    """Absolute names of everything ``path`` imports, with line numbers."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_bytes(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                found.append((node.lineno, node.module))
                continue
            base = module.split(".")
            if not is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
            found.append((node.lineno, target))
            if node.module is None:
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def _violation(imported: str) -> str | None:
    top = imported.partition(".")[0]
    if top == "smtpcore":
        if _is_io_module(imported):
            return "an adapter-level module"
        return None
    if top in FORBIDDEN_STDLIB or top == "trio":
        return "an I/O, clock, randomness or concurrency module"
    if top == "__future__" or top in sys.stdlib_module_names:
        return None
    return "a third-party package"


def test_core_module_list_is_not_empty() -> None:
    assert "smtpcore" in {name for name, _ in CORE_MODULES}


@pytest.mark.parametrize(("module", "path"), CORE_MODULES, ids=[n for n, _ in CORE_MODULES])
def test_core_layers_import_no_io(module: str, path: Path) -> None:
    problems = [
        f"{path.name}:{line}: imports {imported} ({reason})"
        for line, imported in _imported_modules(module, path)
        if (reason := _violation(imported)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_forbidden_import_detection() -> None:
    assert _violation("socket") is not None
    assert _violation("asyncio.streams") is not None
    assert _violation("trio") is not None
    assert _violation("dns.resolver") is not None
    assert _violation("typing_extensions") is not None
    assert _violation("smtpcore.server.queue") is not None
    assert _violation("smtpcore._errors") is None
    assert _violation("dataclasses") is None
    assert _is_io_module("smtpcore._driver")
    assert _is_io_module("smtpcore.adapters.asyncio")
    assert not _is_io_module("smtpcore.routing")


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    source = "from . import a\nfrom .b import c\nfrom ..d import e\nimport f.g\n"
    init = tmp_path / "__init__.py"
    init.write_text(source)
    mod = tmp_path / "mod.py"
    mod.write_text(source)
    assert [n for _, n in _imported_modules("smtpcore.pkg", init)] == [
        "smtpcore.pkg",
        "smtpcore.pkg.a",
        "smtpcore.pkg.b",
        "smtpcore.d",
        "f.g",
    ]
    assert [n for _, n in _imported_modules("smtpcore.pkg.mod", mod)] == [
        "smtpcore.pkg",
        "smtpcore.pkg.a",
        "smtpcore.pkg.b",
        "smtpcore.d",
        "f.g",
    ]


def test_all_matches_public_names() -> None:
    exported = list(smtpcore.__all__)
    assert len(exported) == len(set(exported)), "duplicates in smtpcore.__all__"
    for name in exported:
        assert hasattr(smtpcore, name), f"smtpcore.__all__ lists missing {name!r}"
    public = {
        name
        for name, value in vars(smtpcore).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(exported), f"public but not in __all__: {sorted(public - set(exported))}"


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from smtpcore import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(smtpcore.__all__)


@pytest.mark.parametrize("module", [n for n, _ in _all_modules()])
def test_every_all_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    if names is None:
        return
    missing = [name for name in names if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ lists missing names {missing}"


def test_version_is_a_string() -> None:
    assert isinstance(smtpcore.__version__, str)
    assert smtpcore.__version__


def test_py_typed_marker_ships() -> None:
    assert importlib.resources.files("smtpcore").joinpath("py.typed").is_file()
