"""Strategies for SMTP command lines as a client writes them, broken ones most of all.

:func:`command_lines` writes a valid command with its verb in any case, or
with ``hostile=True`` a line a server must refuse in any state (fixed broken
lines, broken paths and parameters, numbers that are none) or may take
(near-valid lines). A broken line is no event, so these are bytes, kept apart
from the events of ``_smtp_commands``; :func:`session_lines`, those that
leave a session going, are what ``sessions(hostile=True)`` slips in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from typing import Final

from hypothesis import strategies as st

from smtpcore.smtp._commands import chunk_after, format_command
from smtpcore.testing._addresses import ODD_PATHS, broken_paths
from smtpcore.testing._smtp_commands import commands
from smtpcore.testing._smtp_parameters import (
    EXTENSIONS,
    HOSTILE_MAIL_PARAMETERS,
    HOSTILE_RCPT_PARAMETERS,
    hostile_numbers,
    parameters_from,
)

__all__ = [
    "command_lines",
]


_HOSTILE_LINES: Final = (
    b"EHLO\r\n",
    b"HELO\r\n",
    b"MAIL FROM:\r\n",  # no path at all: the null one is <>
    b"MAIL TO:<john@abc.example>\r\n",
    b"RCPT TO:<brendon@pqr.example> NOTIFY\r\n",
    b"RCPT TO:<brendon@pqr.example> =1\r\n",
    b"MAIL FROM:<john@abc.example> ENVID=a=b\r\n",
    b"DATA extra\r\n",
    b"BDAT\r\n",
    b"BDAT -1\r\n",
    b"BDAT 0 2\r\n",  # refused with no chunk to skip: the next line is a command
    b"BDAT 99999999999999999999999\r\n",
    b"BDAT 0 LAS\r\n",
    b"QUIT now\r\n",
    b"NOOP\nNOOP\r\n",  # a bare LF inside a line: only CRLF ends one (RFC 5321 §2.3.8)
    b"NOOP\rNOOP\r\n",
    b"NOOP\r\r\n",
    b"NOOP \x00\r\n",
    b"\x00\r\n",
    b"\r\n",
    b" \r\n",
    b"\xff\xfe\r\n",
    b"EHLO \xc3\x28\r\n",
    b"AUTH\r\n",
    b"AUTH PLAIN not-base64!\r\n",
    b"AUTH PLAIN =\r\n",
    b"STARTTLS now\r\n",
    b"XEXCH50 1 2\r\n",
    b"GET / HTTP/1.1\r\n",
    b"VRFY\r\n",
    b"EXPN\r\n",
    b"x" * 510 + b"\r\n",
    b"x" * 511 + b"\r\n",
)
"""Broken lines: each one, in any state, a server must refuse with a 5xx reply."""
_LENIENT_LINES: Final = (
    # RFC 5321 §3.3 allows no space around the colon, but it "has been a common
    # error": Postfix (and smtpcore) take these, stricter servers refuse them.
    b"MAIL FROM: <john@abc.example>\r\n",
    b"MAIL  FROM:<john@abc.example>\r\n",
    # A path without its brackets: RFC 5321 §4.1.2 refuses it, Postfix takes it
    # (strict_rfc821_envelopes = no, its default), as smtpcore's reference server does.
    b"MAIL FROM:john@abc.example\r\n",
    b"MAIL FROM: john@abc.example SIZE=100\r\n",
    # Over 512 octets: the extensions in force may add room (§4.5.3.1.4), and a
    # server may take longer lines still.
    b"NOOP " + b"x" * 600 + b"\r\n",
)
"""Near-valid lines a server may take or refuse (one reply each, either way)."""


def _broken_lines(offered: Collection[str]) -> st.SearchStrategy[bytes]:
    """Lines a server must refuse with a 5xx reply wherever they come, the only
    ones :func:`sessions` slips in: its refusals must not change the session."""
    return st.one_of(
        st.sampled_from(_HOSTILE_LINES),
        st.builds(
            lambda verb, path: f"{verb}:{path}\r\n".encode("utf-8", "surrogateescape"),
            st.sampled_from(["MAIL FROM", "RCPT TO"]),
            broken_paths(),
        ),
        st.builds(
            lambda verb, params: f"{verb} {params}\r\n".encode(),
            st.just("MAIL FROM:<john@abc.example>"),
            parameters_from(HOSTILE_MAIL_PARAMETERS, min_size=1),
        ),
        st.builds(
            lambda verb, params: f"{verb} {params}\r\n".encode(),
            st.just("RCPT TO:<brendon@pqr.example>"),
            parameters_from(HOSTILE_RCPT_PARAMETERS, min_size=1),
        ),
        _number_lines(),
        _number_lines(),  # twice the weight: numbers on the wire are where parsers crash
    )


def _near_valid_lines() -> st.SearchStrategy[bytes]:
    """Lines a server may take or refuse: lenient syntax, and paths that are
    valid in one place and not in another (source routes, ``<Postmaster>``, ``<>``,
    non-ASCII ones that need SMTPUTF8)."""
    return st.one_of(
        st.sampled_from(_LENIENT_LINES),
        st.builds(
            lambda verb, path: f"{verb}:{path}\r\n".encode(),
            st.sampled_from(["MAIL FROM", "RCPT TO"]),
            st.sampled_from(ODD_PATHS),
        ),
    )


_VERB: Final = re.compile(rb"MAIL FROM:|RCPT TO:|[A-Z]+")
_CASES: Final[tuple[Callable[[bytes], bytes], ...]] = (
    bytes.upper,
    bytes.upper,
    bytes.lower,
    bytes.title,
)


def _in_case(line: bytes, case: Callable[[bytes], bytes]) -> bytes:
    """``line`` with its verb (and MAIL's ``FROM:``, RCPT's ``TO:``) in another case:
    verbs are case-insensitive (RFC 5321 §2.4)."""
    verb = _VERB.match(line)
    assert verb is not None  # format_command writes verbs in upper case
    return case(verb.group()) + line[verb.end() :]


@functools.cache
def session_lines(offered: frozenset[str]) -> st.SearchStrategy[bytes]:
    """Broken lines that leave a session going, and its transaction as it was: no BDAT
    line at all. One whose size cannot be read ends the session (no one knows where its
    chunk ends, RFC 3030 §2); any other refused inside a transaction fails the
    transaction (§2 again), so the commands after it in the group get 503, not the
    replies the group's answer points count. Built once per offer, as :func:`sessions`
    draws from it inside its own draws."""
    return _broken_lines(offered).filter(
        lambda line: chunk_after(line) == 0 and line[:4].upper() != b"BDAT"
    )


def _number_lines() -> st.SearchStrategy[bytes]:
    """Lines that carry a number a server must read as ASCII digits only."""
    return st.builds(
        lambda line, digits: line.format(digits).encode(),
        st.sampled_from(
            ["BDAT {}\r\n", "BDAT {} LAST\r\n", "MAIL FROM:<john@abc.example> SIZE={}\r\n"]
        ),
        hostile_numbers(),
    )


def command_lines(
    *, extensions: Collection[str] = EXTENSIONS, hostile: bool = False
) -> st.SearchStrategy[bytes]:
    """One command line as a client writes it, CRLF included.

    Valid by default: the wire form of :func:`commands`, its verb in upper,
    lower or mixed case (verbs are case-insensitive, RFC 5321 §2.4).

    ``hostile=True`` adds broken lines, which a server must refuse with a
    5xx reply in any state and survive: missing arguments, bare CR or LF
    inside a line, NUL, invalid UTF-8, unknown verbs at and over the
    512-octet limit, broken paths, ESMTP parameters a server must refuse,
    and in ``SIZE=`` and BDAT's chunk size numbers that are none (signed as
    ``-1`` or ``-0``, digits that are not ASCII, trailing garbage, over 20
    digits), the same hostile numbers :func:`hostile_bytes` and
    :func:`pop3_command_lines` use. A ``BDAT`` line whose chunk size cannot be
    read is among them: no one knows where its chunk ends, so a server may
    instead answer ``421`` and close (RFC 3030 §2; Postfix, smtpcore), and
    :func:`sessions` leaves such lines out. And a few near-valid lines a server may
    take or refuse, as long as it answers each once: a space after the
    colon (§3.3 forbids it, many servers allow it), a NOOP over 512 octets
    (extensions add room, §4.5.3.1.4), and paths valid in one place only: a
    source route (accepted and ignored, §4.1.1.3), ``<Postmaster>`` (RCPT
    only), ``<>`` (MAIL only), non-ASCII paths (with SMTPUTF8 only).

    >>> sst.command_lines(hostile=True).example()  # doctest: +SKIP
    b'MAIL FROM:<john@abc.example> SIZE=\\xd9\\xa3\\r\\n'
    """
    valid = st.builds(
        _in_case, commands(extensions=extensions).map(format_command), st.sampled_from(_CASES)
    )
    if not hostile:
        return valid
    return st.one_of(valid, _broken_lines(extensions), _near_valid_lines())
