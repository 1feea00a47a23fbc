"""The ``command-line-length`` check: an over-long command line is one line (RFC 2449 §4).

Kept apart for its long USER line, with a NOOP at each offset where servers
cut lines, and for how the three responses to it are read: the POP3
counterpart of the line-length checks of ``_smtp_limit_checks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from smtpcore.testing._battery import Failed, unjudged
from smtpcore.testing._pop3_probe import POP3Probe
from smtpcore.testing._pop3_responses import ask
from smtpcore.testing._pop3_session_end import QUIT_BEFORE_LOGIN_RULE, QUIT_UNMARKED_RULE
from smtpcore.testing._pop3_wire import POP3Wire

__all__ = ["check_command_line_length"]


_COMMAND_LINE_MINIMUM: Final = 255
"""The command line a server with CAPA must take, CRLF included (RFC 2449 §4)."""

_CUTS: Final = (255, 512, 1024, 2048, 4096, 8192)


def _long_user_line() -> bytes:
    """A 10,000-octet USER line with ``NOOP`` at each offset where servers cut lines:
    a server that cut there and read on would run a NOOP from inside the line."""
    line = bytearray(b"USER " + b"x" * 9995)
    for cut in _CUTS:
        line[cut : cut + 5] = b"NOOP "
    return bytes(line)


def _longest_line_taken(probe: POP3Probe) -> str:
    """A 255-octet USER line gets the status an 8-octet one gets, or the check fails.

    USER is the command that takes a long argument before login and touches no
    mail (NOOP takes none in POP3, RFC 1939 §5); a user name of 250 octets is
    allowed by RFC 2449 §4. Where the short name is refused (a server that
    says at USER whether the user exists), a refused long one proves nothing,
    and the minimum goes unjudged: the transcript says so.
    """
    answers = []
    for octets in (8, _COMMAND_LINE_MINIMUM - len(b"USER \r\n")):
        client = probe.connect()
        answers.append(ask(client, b"USER " + b"x" * octets))
        probe.end(client)
    short, long = answers
    if not short.ok:
        why = (
            f"an 8-octet USER got {short}, so a refused {_COMMAND_LINE_MINIMUM}-octet one "
            "proves nothing"
        )
        unjudged(client, why)
        return f"the {_COMMAND_LINE_MINIMUM}-octet minimum was not judged ({why})"
    if not long.ok:
        raise Failed(
            f"a {_COMMAND_LINE_MINIMUM}-octet USER line (CRLF included) got {long}, where "
            f"an 8-octet user name got {short}: a server with CAPA MUST take command lines "
            f"of {_COMMAND_LINE_MINIMUM} octets (RFC 2449 §4)"
        )
    return f"the {_COMMAND_LINE_MINIMUM}-octet USER line got {long}"


def _long_line_answers(probe: POP3Probe, client: POP3Wire, *, logged_in: bool) -> str | None:
    """The long line, NOOP and QUIT in one write, read to the close; what is wrong, or
    None. A server answers in order, one status line a command (none of the three
    has a multi-line response, RFC 1939 §3), so three lines are read as the long
    line's, NOOP's and QUIT's, each judged as what its command gets
    (:func:`_unlike_their_commands`); fewer than two are the long line's answer (or
    none) and the close, which a server may choose over reading on; more are
    responses to pieces of the line run as commands."""
    client.send(_long_user_line() + b"\r\nNOOP\r\nQUIT\r\n")
    lines = client.read_lines_until_closed()
    if not client.closed:
        got = f"after {probe.lines_said(lines)}" if lines else "with nothing answered"
        return f"the server did not close within {client.timeout:g} s of QUIT, {got}"
    if len(lines) <= 1:
        return None
    got = f"a 10,000-octet line, NOOP and QUIT got {probe.lines_said(lines)}"
    if len(lines) != 3:
        return f"{got}: a piece of the long line was run as a command"
    wrong = _unlike_their_commands(lines, logged_in=logged_in)
    return f"{got}: {wrong}" if wrong else None


def _unlike_their_commands(lines: Sequence[bytes], *, logged_in: bool) -> str | None:
    """Which of three lines, read as the long line's, NOOP's and QUIT's responses, is
    not what its command gets, and the two readings left: a piece of the long line
    run as a command answered in its place, or the command answered wrong. The
    long line gets a status line (``-ERR``, or ``+OK`` from a server that takes a
    long USER); NOOP ``+OK`` once logged in (§5), and before login either (RFC 1939
    lists it in no state but TRANSACTION, and ``state-order`` leaves it out); QUIT,
    on a session that marked nothing, ``+OK`` alone (§4, §6)."""
    status = (b"+OK", b"-ERR")
    if not lines[0].startswith(status):
        return "the first, the long line's, is no status line (RFC 1939 §3)"
    if not lines[1].startswith(b"+OK" if logged_in else status):
        return (
            "the second is no +OK: a piece of the long line was run as a command, or NOOP "
            "was refused (RFC 1939 §5: NOOP after login gets +OK)"
        )
    if not lines[2].startswith(b"+OK"):
        rule = QUIT_UNMARKED_RULE if logged_in else QUIT_BEFORE_LOGIN_RULE
        return (
            "the third is no +OK: a piece of the long line was run as a command, or QUIT "
            f"was refused ({rule})"
        )
    return None


def check_command_line_length(probe: POP3Probe) -> str:
    """An over-long command line is one line: one ``-ERR``, or the close (RFC 2449 §4).

    First the minimum (:func:`_longest_line_taken`). Then a 10,000-octet
    line with ``NOOP`` at 255, 512, 1024, 2048, 4096 and 8192 octets, a
    command and ``QUIT`` in one write, before login and again after: a server
    that cuts lines at a buffer's size and reads the rest as the next command
    answers too often (the class of bug of Qpopper's and Dovecot's early line
    readers, and of any ``fgets`` into a fixed buffer).
    """
    minimum = _longest_line_taken(probe)
    problems = probe.problems  # a session refused after a problem found keeps it
    before_login = _long_line_answers(probe, probe.connect(), logged_in=False)
    if before_login:
        problems.append(f"before login, {before_login}")
    after_login = _long_line_answers(probe, probe.session(), logged_in=True)
    if after_login:
        problems.append(f"after login, {after_login}")
    if problems:
        raise Failed("; ".join(problems))
    return f"{minimum}; a 10,000-octet line was one line, before login and after"
