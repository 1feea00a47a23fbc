"""What the POP3 helpers say when handed what they cannot read.

A fetcher of its own hands a helper the ``Ok`` event rather than its text, a
list of chunks rather than their content, one message rather than an iterable
of its chunks: each would fail deep inside with a ``TypeError`` or an
``AttributeError`` that names neither the helper nor what it takes, or, for a
str where an iterable of lines goes, quietly write one line per character.
Misuse is a ``LocalProtocolError`` (DESIGN.md), built by the shared
:func:`~smtpcore._errors.wrong_type`, with a hint for the likely mistake.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore.pop3._events import Err, Ok, ResponseData

__all__ = ["check_iterable", "checked_text", "decoded", "likely_mistake"]

_OCTETS = (bytes, bytearray, memoryview)


def likely_mistake(value: object) -> str:
    """What to give instead of ``value``, where it is an event handed over whole."""
    if isinstance(value, Ok | Err):
        return "give it the response's .text"
    if isinstance(value, ResponseData):
        return "give it the .data of the ResponseData chunks, joined"
    return ""


def decoded(data: bytes | bytearray | memoryview, name: str) -> str:
    """``data`` as text, undecodable octets replaced, with no copy where the buffer is
    contiguous (``str()`` reads no other)."""
    try:
        if isinstance(data, memoryview) and not data.c_contiguous:
            data = data.tobytes()
        return str(data, "utf-8", "replace")
    except ValueError as exc:  # a released memoryview
        raise LocalProtocolError(f"{name} is a released memoryview: {exc}") from exc


def checked_text(value: object, name: str, *, octets: bool = False) -> str:
    """``value`` as text: a str as it is, bytes-like content decoded where ``octets``,
    anything else a :class:`LocalProtocolError` saying what ``name`` takes."""
    if isinstance(value, str):
        return value
    if octets and isinstance(value, _OCTETS):
        return decoded(value, name)
    expected = "bytes or a str" if octets else "a str"
    raise wrong_type(name, value, expected, hint=likely_mistake(value))


def check_iterable(value: object, name: str, expected: str, *, kind: type = Iterable) -> None:
    """Refuse what is not an iterable (of ``kind``, :class:`~collections.abc.Iterable`
    or :class:`~collections.abc.AsyncIterable`) of items, and a str or bytes, which
    iterated gives one character or one int at a time."""
    asynchronous = kind is AsyncIterable
    if isinstance(value, (str, *_OCTETS)):
        hint = (
            "yield it from an async generator" if asynchronous else "wrap a single one in a list"
        )
        raise wrong_type(name, value, expected, hint=hint)
    if not isinstance(value, kind):
        plain = asynchronous and isinstance(value, Iterable)
        raise wrong_type(name, value, expected, hint="it is not async" if plain else "")
