"""The types of the command line's options: a wrapper that turns a parser's
``ValueError`` into an argparse error that reads well, and the ports and counts
that only the command line reads.

Apart from the commands' options, which all use them (``serve``'s, and ``send``'s
and ``fetch``'s), so that each command's options can live in a module of their own.
The values the configuration checks too (sizes, durations, hosts) are parsed in
:mod:`smtpcore.server.config`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from smtpcore._numbers import is_digits
from smtpcore.server.config import option_number

__all__ = ["COUNT_DIGITS", "option_type", "parse_count", "parse_port"]

T = TypeVar("T")


def option_type(convert: Callable[[str], T], what: str) -> Callable[[str], T]:
    """An argparse type whose errors read well."""

    def parse(text: str) -> T:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"bad {what}: {text!r}") from None

    parse.__name__ = what
    return parse


def parse_port(text: str) -> int:
    """A port, 0 to 65535, in ASCII digits: Python's ``int()`` also reads other scripts'
    digits (Arabic-Indic ones bound a port nobody asked for), and says so in its own
    words (``invalid literal for int() with base 10``)."""
    port = option_number(text, max_digits=5)
    if port is None or port > 65535:
        raise ValueError(f"{text!r} is not a port (0 to 65535)")
    return port


COUNT_DIGITS = 9
"""Digits a count may have: far past any session, recipient or bit count, and a bound
on the work."""


def parse_count(text: str) -> int:
    """A count (sessions, recipients, bits) in ASCII digits, as :func:`parse_port`."""
    number = option_number(text, max_digits=COUNT_DIGITS)
    if number is not None:
        return number
    if is_digits(text):
        raise ValueError(f"{text!r} is too large (at most {'9' * COUNT_DIGITS})")
    raise ValueError(f"{text!r} is not a whole number (digits 0-9)")
