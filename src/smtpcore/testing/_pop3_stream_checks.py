"""The POP3 checks of the response stream: ``dot-stuffing`` and ``pipelining``.

A client reads responses one after another, and takes one for another when a
multi-line response is framed wrong (a bare LF, a dot not doubled, RFC 1939
§3), ends short of the size LIST gives, or when pipelined commands are not
answered one response each, in order (RFC 2449 §6.6). The POP3 counterpart of
``_smtp_stream_checks``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from smtpcore.testing._battery import Failed, Skipped, unjudged
from smtpcore.testing._pop3_probe import POP3Probe, mail_needed
from smtpcore.testing._pop3_responses import (
    POP3Response,
    ask,
    has_multi_line_response,
    lines_of,
    read_response,
)
from smtpcore.testing._wire import WireClient

__all__ = ["MAX_MESSAGES", "MAX_MESSAGE_OCTETS", "check_dot_stuffing", "check_pipelining"]


# -- dot-stuffing --------------------------------------------------------------------------

MAX_MESSAGES: Final = 20
"""The messages ``dot-stuffing`` reads at most, from the first."""
MAX_MESSAGE_OCTETS: Final = 1 << 20
"""Larger messages (by LIST) are not read: the transcript keeps every octet."""
_SESSION_BUDGET: Final = 6 << 20


_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
_UNDOUBLED_DOT: Final = re.compile(rb"^\.(?!\.)", re.MULTILINE)
_STUFFED_LINE: Final = re.compile(rb"^\.\.", re.MULTILINE)
_ADDED_LINE_END: Final = 2
"""Octets a server may add to a message: the CRLF that ends a last line that had
none, before the terminating dot (RFC 1939 §3); LIST counts the message as stored."""


def _framing_problem(probe: POP3Probe, what: str, answer: POP3Response) -> str | None:
    """What is wrong with how a multi-line response is framed (RFC 1939 §3), or None.
    The line that shows it is quoted by :meth:`POP3Probe.line_said`, the password
    hidden before the cut: the end of a line that ends in a bare LF, the start of one
    whose dot is not doubled."""
    body = answer.body
    if bare := _BARE_LF.search(body):
        line = body.count(b"\n", 0, bare.start()) + 1
        start = body.rfind(b"\n", 0, bare.start()) + 1
        shown = probe.line_said(body[start : bare.end()], tail=True)
        return f"line {line} of {what} ends in a bare LF: {shown}"
    if dot := _UNDOUBLED_DOT.search(body):
        line = body.count(b"\n", 0, dot.start()) + 1
        end = body.find(b"\n", dot.start()) + 1 or len(body)
        shown = probe.line_said(body[dot.start() : end])
        return f"line {line} of {what} starts with a dot not doubled: {shown}"
    return None


def _top_expected(content: bytes, lines: int) -> bytes | None:
    """What ``TOP n lines`` must give: the header, the blank line, ``lines`` body lines
    (RFC 1939 §7); None where the message has no blank line to count from."""
    end = content.find(b"\r\n\r\n")
    if content.startswith(b"\r\n"):
        end = -2
    elif end < 0:
        return None
    body = lines_of(content[end + 4 :])
    return content[: end + 4] + b"".join(body[:lines])


def _top_counts(content: bytes) -> list[int]:
    """The line counts TOP is asked for: 0, 1, and every body line, so that the
    stuffing of each body line is checked in TOP too."""
    end = content.find(b"\r\n\r\n")
    body_lines = content.count(b"\n", end + 4) if end >= 0 else 0
    return sorted({0, 1, body_lines})


def _size_problem(number: int, content: bytes, size: int) -> str | None:
    if len(content) in (size, size + _ADDED_LINE_END) and (
        len(content) == size or content.endswith(b"\r\n")
    ):
        return None
    return (
        f"RETR {number} gave {len(content)} octets where LIST says {size} (RFC 1939 §5: "
        "the exact size; §11: counted with CRLF line ends; §3: a CRLF added after a "
        "last line without one is the only difference allowed)"
    )


class _Seen:
    """What ``dot-stuffing`` saw that decides what it could judge."""

    def __init__(self) -> None:
        self.stuffed_lines = False
        self.added_line_ends = 0


def _message_problems(
    probe: POP3Probe, client: WireClient, number: int, size: int, top: bool, seen: _Seen
) -> list[str]:
    answer = ask(client, b"RETR %d" % number)
    if not answer.ok:
        return [f"RETR {number} got {answer}, though LIST lists it"]
    framing = _framing_problem(probe, f"RETR {number}", answer)
    if framing:
        return [framing]
    content = answer.content()
    size_problem = _size_problem(number, content, size)
    if size_problem:  # or the response ended early: what follows is out of step
        return [size_problem]
    seen.stuffed_lines = seen.stuffed_lines or bool(_STUFFED_LINE.search(answer.body))
    seen.added_line_ends += len(content) != size
    problems = []
    for lines in _top_counts(content) if top else ():
        expected = _top_expected(content, lines)
        got = ask(client, b"TOP %d %d" % (number, lines))
        if expected is not None and (not got.ok or got.content() != expected):
            problems.append(
                f"TOP {number} {lines} gave {got} and {len(got.content())} octets, not "
                f"RETR's header, blank line and {lines} body lines ({len(expected)} octets, "
                "stuffed as RETR's)"
            )
    return problems


def check_dot_stuffing(probe: POP3Probe) -> str:
    """Every message comes framed and stuffed right, at the size LIST gives (RFC 1939 §3).

    RETR of each message (the first :data:`MAX_MESSAGES` of at most
    :data:`MAX_MESSAGE_OCTETS`): every line ends in CRLF, every line that
    starts with a dot has it doubled, so no line of the message ends the
    response early (a server that forgets, as some did with a message line
    that is a lone dot, has its client read the rest as responses); after
    unstuffing the octets are as many as LIST says, which RFC 1939 §5 calls
    the exact size (§11 says how a server counts it), or two more where the
    server ended a last line that had no line end with CRLF (§3), so any
    other mismatch fails; ``TOP n 0``, ``TOP n 1`` and TOP of every body line
    give RETR's header, the blank line and as many body lines, stuffed as
    RETR's (where TOP is offered). Where no line starting with a dot was
    seen, the stuffing goes unjudged, and the summary says so. Each session
    ends with RSET and a NOOP that must get the only response left: the rest
    of a message that ended early shows up there.
    """
    client = probe.session()
    offered = probe.capabilities(client)
    top = offered is None or "TOP" in offered
    listing = probe.listing(client)
    mail_needed(listing)
    read = [(n, s) for n, s in sorted(listing.items()) if s <= MAX_MESSAGE_OCTETS][:MAX_MESSAGES]
    seen = _Seen()
    for number, size in read:
        if client.received + 4 * size > _SESSION_BUDGET:
            probe.end(client)
            client = probe.session()
        problems = _message_problems(probe, client, number, size, top, seen)
        if problems:  # what follows may be the rest of the message: the transcript shows it
            raise Failed("; ".join(problems))
    probe.end(client)
    return _dot_stuffing_summary(client, len(read), len(listing) - len(read), seen)


def _dot_stuffing_summary(client: WireClient, read: int, left: int, seen: _Seen) -> str:
    summary = f"{read} messages framed and sized right"
    if seen.stuffed_lines:
        summary = f"{read} messages framed, stuffed and sized right"
    else:
        why = "no line starting with a dot was seen, so the stuffing was not judged"
        unjudged(client, why)
        summary += f"; {why}"
    if seen.added_line_ends:
        summary += (
            f"; {seen.added_line_ends} with a CRLF added after a last line without one "
            "(RFC 1939 §3)"
        )
    if left:
        summary += f" ({left} not read: too many or over {MAX_MESSAGE_OCTETS} octets)"
    return summary


# -- pipelining ----------------------------------------------------------------------------


def _pipelined_group(first: int) -> list[bytes]:
    return [
        b"STAT",
        b"LIST %d" % first,
        b"RETR %d" % first,
        b"XSMTPCORE",
        b"LIST",
        b"NOOP",
        b"RSET",
    ]


def _shape(answers: Sequence[POP3Response]) -> list[tuple[bool, bytes]]:
    return [(answer.ok, answer.content()) for answer in answers]


def check_pipelining(probe: POP3Probe) -> str:
    """Pipelined commands get one response each, in order (RFC 2449 §6.6).

    A group of accepted and refused commands, with multi-line responses among
    them, is sent one at a time on one session and in one write on another;
    the responses must match, and a NOOP after them get the only response left.
    A server that answers only the first command of a read, or reorders,
    fails (a reader of its responses would take one for another).
    """
    client = probe.session()
    offered = probe.capabilities(client)
    if offered is None or "PIPELINING" not in offered:
        raise Skipped("PIPELINING is not offered in CAPA")
    listing = probe.listing(client)
    mail_needed(listing)
    group = _pipelined_group(min(listing))
    lock_step = [ask(client, line) for line in group]
    probe.end(client)
    client = probe.session()
    client.send(b"".join(line + b"\r\n" for line in group))
    pipelined: list[POP3Response] = []
    for line in group:
        try:
            answer = read_response(client, multi_line=has_multi_line_response(line))
        except TimeoutError:
            answer = None
        if answer is None:
            raise Failed(
                f"{len(group)} commands in one write got {len(pipelined)} responses before "
                f"the server closed or fell silent for {probe.timeout:g} s"
            )
        pipelined.append(answer)
    if _shape(pipelined) != _shape(lock_step):
        shown = [str(answer) for answer in pipelined]
        raise Failed(
            f"pipelined, the group got {shown}; one at a time {[str(a) for a in lock_step]}"
        )
    probe.end(client)
    return f"{len(group)} pipelined commands got one response each, in order"
