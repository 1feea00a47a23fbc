"""The error of a configuration mistake (:class:`ConfigError`), and the values of single
options read and checked: durations, sizes, numbers, host and port.

Apart from the server's configuration and the users file, which both refuse with
:class:`ConfigError`, and from the command line, which parses its options with these.
Every public name is still imported from :mod:`smtpcore.server.config`.
"""

from __future__ import annotations

import re

from smtpcore._numbers import is_digits, parse_number
from smtpcore.smtp._ext.size import MAX_MESSAGE_SIZE

__all__ = [
    "MAX_DURATION",
    "MAX_SIZE",
    "ConfigError",
    "option_number",
    "parse_duration",
    "parse_host_port",
    "parse_server",
    "parse_size",
]


class ConfigError(ValueError):
    """A configuration mistake, worded for the operator."""


# [0-9], not \d: a str pattern's \d, and float(), take every script's digits.
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*\Z", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = 100 * 365 * 86400.0
"""A hundred years: longer is a typing mistake, and far longer no float at all (inf)."""


def parse_duration(text: str) -> float:
    """Seconds, or a number with a unit as Postfix writes them: ``90s``, ``30m``, ``5d``;
    at most :data:`MAX_DURATION`. Its digits are ASCII ones, as every number the
    project reads (``5m`` in Arabic-Indic digits is no duration)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (seconds, or like 30m, 12h, 5d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not seconds <= MAX_DURATION:  # inf too
        raise ValueError(f"{text.strip()!r} is over 100 years")
    return seconds


def option_number(text: str, *, max_digits: int) -> int | None:
    """The value of a number an option gives: ASCII digits alone, else None, as
    :func:`~smtpcore._numbers.parse_number` reads one, up to ``max_digits`` digits. Leading
    zeros are not counted toward them: they add nothing to the value, nor to the work, and
    ``int()``, which the options used, took them (``--smtp-port 000025`` is 25)."""
    if not is_digits(text):
        return None
    return parse_number(text.lstrip("0") or "0", max_digits=max_digits)


_SIZE = re.compile(r"\s*([0-9]+)\s*([kmg]?)i?b?\s*\Z", re.IGNORECASE)
_SIZE_DIGITS = 20
"""Digits a size may have before its suffix: RFC 1870's ``size-value``, and a bound on
the work."""
MAX_SIZE = MAX_MESSAGE_SIZE
"""The largest size an option takes, in octets (2**63-1): the machine's own bound on
``max_message_size`` (``MAX_MESSAGE_SIZE`` of the SIZE extension's entry), which keeps
the EHLO reply's ``SIZE`` within RFC 1870's 20 digits."""


def parse_size(text: str) -> int:
    """Octets, or with a binary suffix: ``512k``, ``10M``, ``1G``; in ASCII digits
    (:func:`~smtpcore._numbers.parse_number`), at most :data:`MAX_SIZE`."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (octets, or like 512k, 10M)")
    number = option_number(match.group(1), max_digits=_SIZE_DIGITS)
    exponent = " kmg".index(match.group(2).lower() or " ")
    if number is None or number * 1024**exponent > MAX_SIZE:
        raise ValueError(f"{text!r} is too large (at most {MAX_SIZE} octets)")
    size: int = number * 1024**exponent
    return size


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[HOST]:PORT`` or ``[IPv6]:PORT``; the brackets of a name are kept,
    since to a smart host they mean "no MX lookup" as in Postfix.

    An IPv6 address with a port must be in brackets, as Postfix and URIs (RFC 3986
    §3.2.2) write it: in ``2001:db8::1:25`` the port cannot be told from the last
    group of the address, so a host with a colon outside brackets is refused.
    """
    host, sep, port = text.rpartition(":")
    number = option_number(port, max_digits=5)
    if not sep or not host or number is None:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError(
            f"{text!r}: write an IPv6 address with a port in brackets, as [2001:db8::1]:25"
        )
    if not 0 < number < 65536:
        raise ValueError(f"port {number} out of range")
    if host.startswith("[") and host.endswith("]") and ":" in host:
        host = host[1:-1]  # an IPv6 address in brackets
    return host, number


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of a server connected to as it is (``send --server``, ``fetch
    --server``): ``[HOST]:PORT`` is taken too, its brackets dropped, since no MX
    lookup is made there for them to turn off."""
    host, port = parse_host_port(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port
