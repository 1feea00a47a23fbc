"""The parts of the POP3 server session (``smtpcore._driver._pop3_server_*``) each
stand on the parts they use: a base class is a claim that the part needs it, and
the module docstrings describe the chain the bases make."""

from __future__ import annotations

import ast
import inspect
import textwrap

from smtpcore._driver._pop3_server_session import POP3ServerSession


def _layers() -> list[type]:
    return [
        cls
        for cls in POP3ServerSession.__mro__
        if cls.__module__.startswith("smtpcore._driver._pop3_server")
    ]


def _read_on_self(cls: type) -> set[str]:
    """The attributes ``cls``'s own code reads or sets on ``self`` (or ``cls``)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("self", "cls")
    }


def _own_members(cls: type) -> set[str]:
    """What ``cls`` itself defines or declares, dunders aside."""
    names = set(vars(cls)) | set(vars(cls).get("__annotations__", {}))
    return {name for name in names if not name.startswith("__")}


def test_each_part_of_the_session_uses_every_part_it_is_built_on() -> None:
    """``Update`` was built on ``Transaction`` and used nothing of it (QUIT and
    UPDATE read the marks DELE made from the fields every part shares); the
    docstrings described that chain."""
    layers = _layers()
    assert len(layers) > 5
    for layer in layers:
        used = _read_on_self(layer)
        for base in layer.__bases__:
            if base in layers:
                assert used & _own_members(base), (layer.__name__, base.__name__)
