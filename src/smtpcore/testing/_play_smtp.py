"""Play a strategy-made SMTP session against any server over a socket, in bounded time.

Replies are framed by the check battery's :class:`WireClient` (a session's
hostile lines are bytes no client machine would send), and each is paired with
the line it answers (:mod:`smtpcore.testing._in_step`), so that replies out of
step are found where they show. The player returns what it read and what was
missing: the server's behaviour never raises, so the property states what it
expects and Hypothesis shrinks in seconds (why each group has one short
deadline: :mod:`smtpcore.testing._play_common`). Apart from the POP3 player,
whose responses the POP3 client machine frames. Nothing here imports
Hypothesis: the sessions are only read.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smtpcore import smtp
from smtpcore.testing._accepted import Fate, MessageFates, ends_message, stored_content
from smtpcore.testing._group_bytes import group_write
from smtpcore.testing._in_step import Line, Lines, Pairing, impossible, shown
from smtpcore.testing._play_common import (
    DEFAULT_TIMEOUT,
    _flooded,
    _insecure_context,
    _named,
    _sendable,
)
from smtpcore.testing._recipients_seen import RecipientsSeen
from smtpcore.testing._wire import (
    Exchange,
    ServerFlood,
    ServerReply,
    WireClient,
    checked_host,
    format_transcript,
)

if TYPE_CHECKING:
    import smtpcore.testing.strategies

__all__ = ["PlayedSMTPSession", "play_smtp_session"]


def _ends_session(
    code: int, line: Line, *, owed: bool, quit_written: bool, web_request: bool = False
) -> bool:
    """Whether a close right after reply ``code``, paired with ``line`` (where
    ``owed``), is the server ending the session, so that the replies due after it are
    owed no more. 421 may end it after any command (RFC 5321 §3.8), but once QUIT was
    written a 421 paired with another line may be QUIT's own, a reply before it
    dropped. 221 answers QUIT (RFC 5321 §4.1.1.10), and Postfix gives it to a line its
    ``smtpd_forbidden_commands`` name (``web_request``: ``GET``, ``POST``, ``CONNECT``,
    no letter first); paired with any other line, a reply before it was dropped. A
    221 owed to no command is counted there, so the server is blamed all the same."""
    if isinstance(line, smtp.Quit) or (not owed and code == 221):
        return code in (221, 421)
    if code == 421:
        return not quit_written
    return code == 221 and line is None and web_request


@dataclass(frozen=True, slots=True)
class PlayedSMTPSession:
    """What an SMTP server answered to a session :func:`play_smtp_session` played.

    Compare :attr:`owed` with the replies read: :attr:`missing` counts replies
    that did not come (the player stopped at the first), :attr:`surplus` those
    the server sent beyond what was owed (a command read from inside a
    message, a line answered twice). ``str()`` shows it all, with the bytes on
    the wire.
    """

    replies: tuple[ServerReply, ...]
    """Every whole reply read, in order, each a
    :class:`smtpcore.testing.check.ServerReply`: the greeting first, and those that
    came after the last one due, until the server closed."""
    owed: int
    """The replies the server owed for what was written: the greeting, and one per
    :meth:`~smtpcore.testing.strategies.ClientSession.answer_points` offset of each
    group sent (of the part sent, where a refusal left its head out). When the server
    closed right after a 221 or 421 that ends the session (RFC 5321 §3.8, see
    :func:`play_smtp_session`), the replies due after that one are not owed."""
    closed: bool
    """Whether the server ended the stream (after QUIT, if it came to that): a read
    found its end, or a reset. False when the play stopped reading first (a flood, a
    failed write, a deadline)."""
    stopped: str
    """Why the play ended, in words."""
    transcript: tuple[Exchange, ...]
    """Every write and read, byte for byte, and what was not bytes (a TLS handshake,
    a deadline passed), each a :class:`smtpcore.testing.check.Exchange`."""
    unowed: tuple[int, ...] = ()
    """Where in :attr:`replies` those owed to no command are: replies already waiting
    when every reply owed so far was in and a group was about to go out, those
    after the reply to the last group, and a reply that showed the replies out of
    step (one no correct server gives the line it was paired with, where no line
    later in its group could take it: the extra reply came before it)."""
    accepted: tuple[bytes, ...] = ()
    """The content of each message the server accepted, in the order of
    :attr:`~smtpcore.testing.strategies.ClientSession.messages`, as a correct server
    stores it (DATA content not ending in CRLF with the CRLF that ends its last line
    before the final dot, RFC 5321 §4.1.1.4): its end (DATA's final dot, ``BDAT ...
    LAST``) got a 250, read in step, in a transaction whose MAIL got a 2yz, at least
    one RCPT a 2yz, and every BDAT chunk before it a 2yz, none written before that
    MAIL. What a correct server stored from the session is exactly these. A message
    refused (its end got a 4yz or 5yz, or it was never written whole: DATA got no
    354, the play ended first) is in neither this nor :attr:`unknown`."""
    unknown: tuple[bytes, ...] = ()
    """The content of each message written whose fate the play cannot tell: the reply
    to its end did not come in step (missing, out of step, the session ended before
    it), it was a 250 where the transaction was not whole, held a chunk written before
    its MAIL (left from a transaction reset or failed) or a line the player cannot
    read was accepted inside it, or it was neither a 250 nor a 4yz or 5yz (another
    2yz such as 221, a garbled line, code 0). Where a reply owed to no command was read
    (:attr:`surplus`), every message written is here: one extra reply may put every
    later one a step behind.
    A server may have stored any of these, or none."""

    @property
    def codes(self) -> list[int]:
        """The code of each reply (0 where a reply does not start with three digits)."""
        return [reply.code for reply in self.replies]

    @property
    def missing(self) -> int:
        """Replies owed and not read: a server that swallowed a command, or stalled."""
        return max(0, self.owed - (len(self.replies) - len(self.unowed)))

    @property
    def surplus(self) -> int:
        """Replies read beyond those owed: a server that ran a command no one sent."""
        return len(self.unowed)

    @property
    def received(self) -> bytes:
        """Every octet the server sent, joined."""
        return b"".join(entry.data for entry in self.transcript if entry.side == "server")

    def __str__(self) -> str:
        return (
            f"{self.stopped}; replies {self.codes}, {self.owed} owed\n"
            f"{format_transcript(self.transcript)}"
        )


def _smtp_may_lead(item: object, last: ServerReply | None) -> bool:
    """Whether ``item`` may go at the head of a group after the reply ``last``: content
    only after 354 (RFC 5321 §4.1.1.4), an AUTH response only after a 334 challenge
    (RFC 4954 §4)."""
    if isinstance(item, smtp.MessageData | smtp.EndOfMessage):
        return last is not None and last.code == 354
    if isinstance(item, smtp.AuthResponse):
        return last is not None and last.code == 334
    return True


def play_smtp_session(
    host: str,
    port: int,
    session: smtpcore.testing.strategies.ClientSession,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls_context: ssl.SSLContext | None = None,
) -> PlayedSMTPSession:
    """Play ``session`` (from :func:`~smtpcore.testing.strategies.sessions`) to the
    SMTP server at ``host``, ``port``, and return what it answered.

    Each group goes out in one write once the replies to the one before are in
    (RFC 2920 §3.1), and the replies its
    :meth:`~smtpcore.testing.strategies.ClientSession.answer_points` make due are
    read. Content is left out when DATA did not get 354, an AUTH response when
    AUTH got no 334, and the commands pipelined behind them (a QUIT after the
    end of a refused message) still go. Whole replies already waiting when a
    group is about to go out are owed to no command, and counted in
    :attr:`~PlayedSMTPSession.surplus`. A reply that no correct server gives the
    line it is paired with (354 to anything but DATA, say) shows the replies out
    of step, whatever their timing: the play stops there and says so. After 220
    to STARTTLS the TLS handshake is made with ``tls_context`` (by default, one
    that checks no certificate).
    After the last group the player reads until the server closes. A server that
    closes right after a 221 or 421 reply, before the session's end, ended the
    session (RFC 5321 §3.8; Postfix answers ``GET``, ``POST``, ``CONNECT`` and a
    line that does not start with a letter so): the replies due after that one are
    not owed, and :attr:`~PlayedSMTPSession.stopped` names the reply. Only a 221
    paired with QUIT or a line the player cannot read (or owed to no command), and
    a 421 paired with QUIT or read before any QUIT was written, end it so: any
    other may be QUIT's reply after a dropped one. A close after any other reply,
    or a 221 with no close, leaves them missing.

    Time is given by deadlines, each ``timeout`` seconds: one for the connection
    and the greeting, one per group written (its write, all its replies and a
    TLS handshake), one for the close. The first reply that does not come by its
    deadline ends the play, and the result says how many were missing; so the
    whole takes at most ``timeout`` times the groups written plus two, whatever
    the server does.

    Nothing the server does makes it raise: a flood, a reset, a stall or a failed
    handshake ends the play with :attr:`~PlayedSMTPSession.stopped` saying so.
    Raises ``OSError`` only when no connection can be made; LMTP sessions, whose
    replies at the end of content depend on the recipients accepted, are refused
    with ``ValueError``.
    """
    if session.lmtp:
        raise ValueError("play_smtp_session plays SMTP sessions, not LMTP ones")
    greeting_deadline = time.monotonic() + timeout
    wire = WireClient(checked_host(host), port, timeout=timeout)
    player = _SMTPPlayer(wire, tls_context, MessageFates(len(session.messages)))
    try:
        stopped = player.play(session, greeting_deadline)
    except ServerFlood as exc:
        stopped = _flooded(exc)
    except OSError as exc:  # the TLS handshake failed (ssl.SSLError is an OSError)
        stopped = f"the TLS handshake failed: {exc}"
    finally:
        wire.close()
    return PlayedSMTPSession(
        tuple(player.replies),
        player.owed,
        wire.server_closed,
        stopped + player.unowed_note(),
        tuple(wire.transcript),
        tuple(player.unowed),
        *player.outcome(session),
    )


class _SMTPPlayer:
    """The socket, the replies read, and which of them were owed."""

    def __init__(
        self, wire: WireClient, tls_context: ssl.SSLContext | None, fates: MessageFates
    ) -> None:
        self.wire = wire
        self.tls_context = tls_context
        self.replies: list[ServerReply] = []
        self.owed = 0
        self.answer: ServerReply | None = None
        """The last reply owed so far: the one the head of the next group follows."""
        self.unowed: list[int] = []
        self.first_unowed = ""
        """Where the first reply owed to no command was found."""
        self.quit_written = False
        self.ending_at = -1
        """Where in :attr:`replies` the last reply after which a close ends the session is."""
        self.lines = Lines()
        """What each reply due answers, to see replies out of step."""
        self.fates = fates
        self.first_ends: list[int] = []
        """For each line in :attr:`lines`, the index of the first message it ends."""
        self.out_of_step: Pairing | None = None
        self.out_of_step_at = -1
        """Where in :attr:`replies` the reply that showed them out of step is."""
        self.recipients = RecipientsSeen()
        self.data_without_recipient: Line | bool = False
        """The first line a 354 answered where no recipient could be held, if any."""

    def play(
        self, session: smtpcore.testing.strategies.ClientSession, greeting_deadline: float
    ) -> str:
        """Play every group, each by one deadline for its write, its replies and a TLS
        handshake, then wait for the close; why the play ended. A flood may come at
        any read and raises :class:`ServerFlood`, a failed handshake ``OSError``."""
        if not self.read_owed([None], greeting_deadline, judged=False):
            return self.stop("the greeting")
        for number, group in enumerate(session.groups, 1):
            sendable = _sendable(group, lambda item: _smtp_may_lead(item, self.answer))
            self.fates.left_out(group[: len(group) - len(sendable)])
            if not sendable:
                continue
            where = f"group {number} ({_named(sendable)})"
            self.take_unowed(f"before {where}")
            deadline = time.monotonic() + self.wire.timeout
            self.wire.send(group_write(sendable), deadline=deadline)
            self.quit_written |= any(isinstance(item, smtp.Quit) for item in sendable)
            lines = self.lines.write(sendable)
            self.first_ends += map(
                self.fates.written, self.lines.message_ends[len(self.first_ends) :]
            )
            whole = self.read_owed(lines, deadline)
            self.fates.group_read(trusted=whole or self.ended_by_server())
            if not whole:
                if self.out_of_step is not None:
                    return self.no_recipient() + self.out_of_step.reason(where)
                return self.no_recipient() + self.stop(where)
            if isinstance(sendable[0], smtp.StartTls) and self.answer_code() == 220:
                self.wire.start_tls(self.tls_context or _insecure_context(), deadline)
        self.take_unowed("after the last group's replies", self.wire.read_until_closed())
        return self.ended()

    def read_owed(self, lines: list[Line], deadline: float, *, judged: bool = True) -> bool:
        """Read the replies a write made due, one for each of its ``lines``, by
        ``deadline``; False if one did not come (the server closed, a write failed,
        or the deadline passed) or, where ``judged``, one cannot answer its line: the
        replies are out of step, and :attr:`out_of_step` says how."""
        self.owed += len(lines)
        first = len(self.lines.written) - len(lines)
        for number, line in enumerate(lines):
            try:
                reply = self.wire.read_reply(deadline)
            except TimeoutError:
                return False
            if reply is None:
                if self.closed_with() is not None:  # the session ended: none owed after
                    self.owed -= len(lines) - number
                return False
            before = (self.answer, *self.replies[-1:])
            previous = [earlier.code for earlier in before if earlier is not None]
            web_request = first + number in self.lines.web_requests
            if _ends_session(
                reply.code,
                line,
                owed=True,
                quit_written=self.quit_written,
                web_request=web_request,
            ):
                self.ending_at = len(self.replies)
            self.replies.append(reply)
            self.answer = reply
            if judged:
                index = first + number
                ends = self.lines.message_ends[index]
                self.fates.answered(line, self.first_ends[index], ends, reply.code)
            earned = not judged or self.recipients.answered(line, reply.code)
            if not earned and self.data_without_recipient is False:
                self.data_without_recipient = line
            if judged and not self.judge(first + number, line, reply.code, previous):
                return False
        return True

    def no_recipient(self) -> str:
        """The 354 that no recipient could have earned, the likely cause of the stop
        that follows (the server read the commands after it as content), or ""."""
        line = self.data_without_recipient
        if line is False or line is True:
            return ""
        return (
            f"the server accepted DATA with no recipient ({shown(line)} got 354 where no"
            " RCPT had been accepted since the transaction began; 503 or 554 expected,"
            " RFC 5321 §3.3, §4.1.4), so it read what followed as content: "
        )

    def judge(self, index: int, line: Line, code: int, previous: list[int]) -> bool:
        """Whether reply ``code`` can answer ``line``, the ``index``-th written; if not,
        the replies are out of step: the reply owed to no command is counted here,
        where it showed, when no line written after ``line`` could take ``code``."""
        pairing = impossible(self.lines, index, code, previous)
        self.lines.answered(line, code)
        if pairing is None:
            return True
        self.out_of_step = pairing
        if not pairing.owed_before:
            self.out_of_step_at = len(self.replies) - 1
            self.unowed.append(self.out_of_step_at)
        return False

    def take_unowed(self, where: str, replies: list[ServerReply] | None = None) -> None:
        """Count as owed to no command ``replies``, by default the whole replies
        already waiting: every reply owed so far is in, so these are answers to no
        line written (a line answered twice, a command read from inside a message).
        Taken for the next group's, they would put every later reply out of step."""
        if replies is None:
            replies = self.wire.read_waiting_replies()
        if replies and not self.unowed:
            self.first_unowed = where
        self.unowed += range(len(self.replies), len(self.replies) + len(replies))
        for reply in replies:
            if _ends_session(reply.code, None, owed=False, quit_written=self.quit_written):
                self.ending_at = len(self.replies)
            self.replies.append(reply)

    def ended_by_server(self) -> bool:
        """Whether the server ended the session (RFC 5321 §3.8) after replies read in step."""
        return self.out_of_step is None and self.closed_with() is not None

    def outcome(
        self, session: smtpcore.testing.strategies.ClientSession
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """The content of the messages accepted, and of those whose fate is unknown, as
        a correct server stores it (:func:`~smtpcore.testing._accepted.stored_content`)."""
        ends = [item for item in session.events if ends_message(item)]
        stored = [
            stored_content(content, by_data=isinstance(end, smtp.EndOfMessage))
            for content, end in zip(session.messages, ends, strict=True)
        ]

        def contents(fate: Fate) -> tuple[bytes, ...]:
            indexes = self.fates.indexes(fate, surplus=bool(self.unowed))
            return tuple(stored[index] for index in indexes)

        return contents(Fate.ACCEPTED), contents(Fate.UNKNOWN)

    def answer_code(self) -> int:
        return self.answer.code if self.answer is not None else 0

    def closed_with(self) -> ServerReply | None:
        """The reply with which the server ended the session, if it closed right after
        one that can end it (:func:`_ends_session`), with nothing after it."""
        wire = self.wire
        if not wire.server_closed or wire.unread or self.ending_at != len(self.replies) - 1:
            return None
        return self.replies[-1]

    def stop(self, what: str) -> str:
        wire = self.wire
        closing = self.closed_with()
        if closing is not None:  # before a failed write: the close made it fail
            text = str(closing)
            text = text if len(text) <= 80 else text[:79] + "…"
            return (
                f"the server ended the session with {closing.code} ({text}) and closed"
                f" the connection; the replies to {what} after it are owed no more"
                " (RFC 5321 §3.8)"
            )
        if wire.write_failed:  # the cause, where the read after it then found the close
            return f"the write of {what} failed"
        if wire.server_closed:
            return f"the server closed the connection before its replies to {what}"
        return f"no whole reply within {wire.timeout:g} s to {what}"

    def ended(self) -> str:
        """Why the play ended once every group was answered."""
        if self.wire.server_closed:
            return "the server closed the connection after the session"
        after = "QUIT" if self.quit_written else "the last group (no QUIT was written)"
        return f"the server did not close within {self.wire.timeout:g} s after {after}"

    def unowed_note(self) -> str:
        """The replies owed to no command, for :attr:`PlayedSMTPSession.stopped`."""
        unowed = [index for index in self.unowed if index != self.out_of_step_at]
        if not unowed:
            return ""
        count = len(unowed)
        replies = "reply" if count == 1 else "replies"
        return f"; {count} {replies} owed to no command, the first {self.first_unowed}"
