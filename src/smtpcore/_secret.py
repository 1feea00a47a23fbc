"""Reprs that leave secrets out: a password, a SASL answer, a token, stored keys.

A repr ends up in logs, tracebacks and bug reports, so an object that carries a
secret must not print it. A dataclass marks each such field with
``field(metadata=SECRET)`` and takes :func:`secret_repr` as its ``__repr__``;
only the repr changes: equality and the fields themselves keep the secret, which
the application needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any, Final

__all__ = ["HIDDEN", "SECRET", "secret_repr"]

SECRET: Final[Mapping[str, bool]] = MappingProxyType({"secret": True})
"""The ``metadata`` of a dataclass field whose value :func:`secret_repr` hides."""


class _Hidden:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<hidden>"


HIDDEN: Final = _Hidden()
"""What a repr shows in place of a secret: ``<hidden>``."""


def _hidden(value: object) -> object:
    """A secret as a repr shows it: a mapping (users to passwords) by its keys alone;
    None and an empty value as they are, since there is nothing to hide."""
    if value is None or (isinstance(value, str | bytes) and not value):
        return value
    if isinstance(value, Mapping):
        return dict.fromkeys(value, HIDDEN)
    return HIDDEN


def secret_repr(self: Any, hide: bool = True) -> str:
    """A dataclass's repr, as the dataclass would write it, with the fields marked
    :data:`SECRET` hidden (unless ``hide`` is false)."""
    shown = []
    for item in fields(self):
        if item.repr:
            value = getattr(self, item.name)
            if hide and item.metadata.get("secret"):
                value = _hidden(value)
            shown.append(f"{item.name}={value!r}")
    return f"{type(self).__qualname__}({', '.join(shown)})"
