"""The POP3 battery's connection: a :class:`~smtpcore.testing._wire.WireClient` that
knows whether its session may have touched a message, and keeps the credentials out
of its transcript.

A server deletes a message only in the UPDATE state, after ``QUIT`` (RFC 1939 §6).
Once a line that may mark or hand out a message is written (``RETR``, ``TOP``,
``DELE``, or any line a server might read as one), :class:`POP3Wire` refuses to
write ``QUIT`` (:class:`UnsafeQuit`), and the probe ends the session without it
(:meth:`~smtpcore.testing._pop3_probe.POP3Probe.end`). The transcript shows
:data:`HIDDEN` for the password written, and the answer to a login line by its
status only. These are rules of every line written, whoever writes it, so they
live with the connection, apart from the probe, which decides when to log in and
how a session ends.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from smtpcore.testing._pop3_responses import POP3Response, read_answer, status_and_code
from smtpcore.testing._wire import Exchange, WireClient

__all__ = [
    "HIDDEN",
    "NOT_KEPT",
    "POP3Wire",
    "UnsafeQuit",
    "ask_login",
    "shown_login_answer",
    "touches_no_message",
]

_MESSAGE_FREE_VERBS: Final = frozenset(
    {b"CAPA", b"USER", b"PASS", b"APOP", b"AUTH", b"STLS", b"STAT", b"LIST", b"UIDL"}
    | {b"NOOP", b"RSET", b"QUIT", b"UTF8"}
)
"""Commands that neither mark a message deleted nor hand one out (RFC 1939 §5-§7)."""
_MESSAGE_VERB: Final = re.compile(rb"RETR|TOP|DELE", re.IGNORECASE)
_LINE_ENDS: Final = re.compile(rb"\r\n|\r|\n")


_LOGIN_VERBS: Final = frozenset({b"PASS", b"APOP", b"AUTH"})
"""Commands whose answer may quote the credentials just sent (RFC 1939 §7, RFC 5034 §4)."""
NOT_KEPT: Final = b"<text not shown: it may quote the password>"
"""What a transcript holds in place of the text of an answer to a login line."""
_MAX_PARTIAL: Final = 64 << 10
HIDDEN: Final = b"<hidden>"
"""What a result shows in place of the password, in whatever form it was sent."""


def shown_login_answer(answer: bytes, *, head: bool = True) -> bytes:
    """How a transcript records ``answer``, the octets of an answer to a login line (a
    whole line, or the part of one that came): its status and registered code only
    (where ``head``, else nothing of it), :data:`NOT_KEPT`, and its line end."""
    shown = status_and_code(answer) if head else b""
    ending = answer[len(answer.rstrip(b"\r\n")) :]
    return (shown + b" " if shown else b"") + NOT_KEPT + ending


def ask_login(client: POP3Wire, command: bytes, secret: bytes = b"") -> POP3Response:
    """Send a login line, ``command`` then ``secret`` (see :meth:`POP3Wire.send_login`),
    and read its response; a failure names the command with :data:`HIDDEN` for
    ``secret``, so that the summary never holds the password."""
    client.send_login(command, secret)
    return read_answer(client, command + HIDDEN if secret else command)


def touches_no_message(line: bytes) -> bool:
    """Whether ``line`` can neither mark a message deleted nor hand one out, however a
    server reads it: its verb touches none, and no piece of it names a verb that
    does (a server that cuts long lines runs the pieces). Empty lines touch none."""
    verb = line.split(b" ", 1)[0].upper()
    return not line or (verb in _MESSAGE_FREE_VERBS and not _MESSAGE_VERB.search(line))


class UnsafeQuit(RuntimeError):
    """A check wrote ``QUIT`` on a session that may have touched a message: a bug in
    the check, never the server's doing (end sessions with
    :meth:`~smtpcore.testing._pop3_probe.POP3Probe.end`)."""


class POP3Wire(WireClient):
    """A POP3 connection that knows whether it may have touched a message, and so
    whether ``QUIT`` may end it (see the module's docstring)."""

    def __init__(self, host: str, port: int, *, timeout: float, pause: float = 0.0) -> None:
        super().__init__(host, port, timeout=timeout, pause=pause)
        self.touched = False
        """Whether a line written may have marked or handed out a message."""
        self._partial = b""
        self._login_answer: int | None = None
        """Where in the transcript the reads of a login line's answer begin, while it is due."""
        self._answer_begun = False
        """Whether part of that answer came before, and is recorded with its status."""
        self._continuing = False
        """Whether the last answer to a login line was an AUTH continuation (``+``): the
        next line written is then a step of the exchange (RFC 5034 §4)."""

    def send(
        self, data: bytes, pieces: Sequence[bytes] | None = None, *, deadline: float | None = None
    ) -> None:
        """Write ``data`` as :meth:`WireClient.send` does; raises :class:`UnsafeQuit`,
        writing nothing, where ``QUIT`` would follow a line that touched a message."""
        touched, partial, lines = self._classify(data)
        super().send(data, pieces, deadline=deadline)
        self.touched, self._partial = touched, partial
        self._wrote(lines)

    def send_login(self, command: bytes, secret: bytes = b"") -> None:
        """Send one of the user's own login lines, ``command`` then ``secret`` (CRLF
        added): whatever the name or the password spell, the server takes it whole as
        a credential. The transcript shows :data:`HIDDEN` for ``secret``: the
        password (PASS, RFC 1939 §7) or a SASL response (AUTH, RFC 5034 §4)."""
        at = len(self.transcript)
        super().send(command + secret + b"\r\n")
        if secret and at < len(self.transcript) and self.transcript[at].side == "client":
            self.transcript[at] = Exchange("client", command + HIDDEN + b"\r\n")
        self._wrote([command])

    def _classify(self, data: bytes) -> tuple[bool, bytes, list[bytes]]:
        """Whether the session has touched a message once ``data`` is written, the line
        left incomplete, and the lines ``data`` ends; a line end is CR, LF or both, as
        some server may read it."""
        *lines, partial = _LINE_ENDS.split(self._partial + data)
        touched = self.touched or len(partial) > _MAX_PARTIAL
        for line in lines:
            if touched and line.split(b" ", 1)[0].upper() == b"QUIT":
                raise UnsafeQuit("QUIT after a line that may have touched a message")
            touched = touched or not touches_no_message(line)
        return touched, partial[:_MAX_PARTIAL], lines

    def _wrote(self, lines: Sequence[bytes]) -> None:
        """Note that ``lines`` went out: where one is PASS, APOP, AUTH or a step of an
        AUTH exchange, the answer now due may quote the credentials, and the reads from
        here to its line end are recorded by :func:`shown_login_answer`."""
        verbs = {line.split(b" ", 1)[0].upper() for line in lines}
        login = (bool(lines) and self._continuing) or not verbs.isdisjoint(_LOGIN_VERBS)
        if lines:
            self._continuing = False
        if login and self._login_answer is None:
            self._login_answer, self._answer_begun = len(self.transcript), False

    def read_line(
        self, deadline: float | None = None, *, limit: int | None = None
    ) -> bytes | None:
        """:meth:`WireClient.read_line`; where the line answers a login line, the reads
        that hold it are recorded by status and registered code only (RFC 2449 §8.1):
        a server may quote there the password, in forms the battery cannot all
        foresee. The battery itself reads the whole line."""
        if self._login_answer is None:
            return super().read_line(deadline, limit=limit)
        line = None
        try:
            line = super().read_line(deadline, limit=limit)
        finally:
            self._record_login_answer(line)
        return line

    def _record_login_answer(self, line: bytes | None) -> None:
        """Put the login answer in place of the server reads since it was due: ``line``
        where it came whole (the octets read after it are kept as they are), else what
        came of it, the rest still due."""
        start = self._login_answer
        assert start is not None
        kept = self.transcript[start:]
        reads = b"".join(entry.data for entry in kept if entry.side == "server")
        cut = len(reads) if line is None else len(reads) - min(len(self.unread), len(reads))
        answer, after = reads[:cut], reads[cut:]
        shown = [Exchange("server", shown_login_answer(answer, head=not self._answer_begun))]
        notes = [entry for entry in kept if entry.side != "server"]
        tail = [Exchange("server", after)] if after else []
        self.transcript[start:] = (shown if answer else []) + notes + tail
        if line is None:
            self._answer_begun = self._answer_begun or bool(answer)
            self._login_answer = len(self.transcript)
        else:
            self._login_answer = None
            self._continuing = status_and_code(line) == b"+"
