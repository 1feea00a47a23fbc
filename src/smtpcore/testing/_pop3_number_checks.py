"""The ``number-edges`` check: only a message number in ASCII digits names a message.

Kept apart for its tables of what no message number is (signs, wrapping
sizes, digits of other scripts, a tab for the SPACE): the POP3 counterpart of
the SMTP battery's ``ascii-digits`` (``_smtp_digit_checks``).
"""

from __future__ import annotations

from typing import Final

from smtpcore.testing._battery import Failed
from smtpcore.testing._pop3_probe import POP3Probe, mail_needed
from smtpcore.testing._pop3_refusals import RefusalSessions
from smtpcore.testing._pop3_responses import POP3Response, ask

__all__ = ["check_number_edges"]


_NOT_NUMBERS: Final = (
    "0",
    "-1",
    "+1",
    "1.5",
    "1e0",
    str(2**32 + 1),
    str(2**64 + 1),
    "\u0661",  # Arabic-Indic one
    "\uff11",  # fullwidth one
)
"""Message numbers a server must refuse. Not ``01``: RFC 1939 gives a message number
no grammar but decimal digits, and leading zeros are digits, so ``01`` names message 1."""

_NOT_SEPARATED: Final = (b"RETR\t1", b"LIST\t1", b"RETR\xc2\xa01", b"TOP 1\t0")
"""A tab or a no-break space where RFC 1939 §3 has one SPACE between words."""

_OVER_LONG_NUMBER: Final = b"RETR 1" + b"0" * 999
"""A thousand digits: a line over 255 octets too, so closing at it is allowed."""


def _edge_lines() -> list[bytes]:
    """The lines ``number-edges`` sends, the DELE lines last (they are undone after)."""
    lines = []
    for text in _NOT_NUMBERS:
        number = text.encode()
        lines += [b"RETR " + number, b"LIST " + number, b"TOP " + number + b" 0"]
        lines.append(b"UIDL " + number)
    lines += [b"TOP 1 -1", b"TOP 1 +0", b"TOP 1 \xd9\xa0", *_NOT_SEPARATED, _OVER_LONG_NUMBER]
    lines += [b"DELE " + text.encode() for text in _NOT_NUMBERS] + [b"DELE\t1"]
    return lines


def _edge_problem(line: bytes, answer: POP3Response | None) -> str | None:
    if answer is None:
        if line == _OVER_LONG_NUMBER:
            return None  # a line over the limit may be refused by closing (RFC 2449 §4)
        return f"{line!r} was answered by closing the connection, twice"
    if answer.err:
        return None
    return f"{line!r} got {answer}, not -ERR"


def check_number_edges(probe: POP3Probe) -> str:
    """Only a message number in ASCII digits names a message (RFC 1939 §3, §5).

    ``0``, ``-1``, ``+1``, ``1.5``, ``1e0``, 2**32+1 and 2**64+1 (which wrap to
    1 in a fixed-size integer), Arabic-Indic and fullwidth one (which Python's
    ``int()`` reads), a thousand digits, ``TOP 1 -1``, ``TOP 1 +0``, and a tab
    or a no-break space for the SPACE, with RETR, LIST, TOP, UIDL and DELE:
    each must get ``-ERR``, never content or ``+OK`` (a server that parses
    with ``atoi``, ``strtoul`` or ``int()`` hands out message 1, or deletes
    it). Then NOOP gets ``+OK`` and LIST is whole: no refused DELE marked a
    message. RETR 1 and LIST 1 go first, as the control: a server that takes
    them refuses the edges for what they are. Problems found before a login or
    a connection refused on a later session still fail the check, and so does a
    session closed at a line where no new one opens to try it again.
    """
    sessions = RefusalSessions(probe)
    client = sessions.current()
    before = probe.listing(client)
    mail_needed(before)
    first = min(before)
    for control in (b"RETR %d" % first, b"LIST %d" % first):
        answer = ask(client, control)
        if not answer.ok:
            raise Failed(f"{control!r} got {answer}, though LIST lists message {first}")
    edges = _edge_lines()
    problems = probe.problems
    for line in edges:
        problem = _edge_problem(line, sessions.answer(line, may_close=line == _OVER_LONG_NUMBER))
        if problem:
            problems.append(problem)
            sessions.drop()
    client = sessions.current()
    noop = ask(client, b"NOOP")
    after = probe.listing(client)
    if not noop.ok:
        problems.append(f"NOOP after the refusals got {noop}, not +OK")
    if after != before:
        problems.append(
            f"after the refusals LIST gave {after}, not {before}: a message was marked"
        )
    probe.restore(client, before)
    if problems:
        raise Failed("; ".join(problems))
    probe.end(client)
    return f"{len(edges)} malformed numbers and separators got -ERR; nothing was marked deleted"
