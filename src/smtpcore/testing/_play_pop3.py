"""Play a strategy-made POP3 session against any server over a socket, in bounded time.

The responses are framed by :class:`smtpcore.pop3.ClientConnection`, which knows
which commands a multi-line response answers (RFC 1939, RFC 2449 §5, RFC 5034
§4), so the player needs no grammar of its own: it writes each group, records
what the machine reads, and turns whatever the server does into a
:class:`PlayedPOP3Session` that says why the play ended. Apart from the SMTP
player because the two share only the deadline, the group's head, the words for a
failure and the TLS context (:mod:`smtpcore.testing._play_common`), not their
framing or their record.
Nothing here imports Hypothesis: the sessions are only read.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, ProtocolError, pop3
from smtpcore.testing._play_common import (
    DEFAULT_TIMEOUT,
    _flooded,
    _insecure_context,
    _named,
    _sendable,
)
from smtpcore.testing._wire import (
    MAX_RECEIVED,
    Exchange,
    ServerFlood,
    WireClient,
    checked_host,
    format_transcript,
)

if TYPE_CHECKING:
    import smtpcore.testing.strategies

__all__ = ["PlayedPOP3Session", "PlayedResponse", "play_pop3_session"]

POP3Sent: TypeAlias = pop3.Command | pop3.AuthResponse


@dataclass(frozen=True, slots=True)
class PlayedResponse:
    """One POP3 response as the client machine read it."""

    command: POP3Sent | None
    """What it answers; None for the greeting."""
    status: pop3.Ok | pop3.Err | pop3.Continue
    """The status line: ``+OK``, ``-ERR``, or a ``+`` SASL challenge (RFC 5034 §4)."""
    content: bytes | None = None
    """The multi-line content after ``+OK`` (RFC 1939 §3), dot-unstuffed, without
    the final dot line; None for a single-line response."""
    ended: bool = True
    """False when the deadline passed inside the content: its end never came."""


@dataclass(frozen=True, slots=True)
class PlayedPOP3Session:
    """What a POP3 server answered to a session :func:`play_pop3_session` played.

    ``str()`` shows it all, with the bytes on the wire.
    """

    responses: tuple[PlayedResponse, ...]
    """Every response read, in order, the greeting first."""
    sent: tuple[POP3Sent, ...]
    """Every command and SASL response written, in order."""
    unanswered: tuple[POP3Sent, ...]
    """Those written and not (wholly) answered when the play ended."""
    closed: bool
    """Whether the server ended the stream: a read found its end, or a reset. False
    when the play stopped reading first (a flood, a failed write, a deadline)."""
    error: str | None
    """How the server broke the protocol, if it did: what the client machine raised
    (a response no command asked for, an over-long line), or bytes after QUIT."""
    stopped: str
    """Why the play ended, in words."""
    transcript: tuple[Exchange, ...]
    """Every write and read, byte for byte, each a
    :class:`smtpcore.testing.check.Exchange`."""

    def __str__(self) -> str:
        statuses = [type(response.status).__name__ for response in self.responses]
        return f"{self.stopped}; responses {statuses}\n{format_transcript(self.transcript)}"


class _POP3Stop(Exception):
    """The play ends here: ``stopped`` says why, ``error`` how the server broke POP3."""

    def __init__(self, stopped: str, error: str | None = None) -> None:
        super().__init__(stopped)
        self.stopped = stopped
        self.error = error

    @classmethod
    def refused(cls, exc: ProtocolError, group: Sequence[POP3Sent]) -> _POP3Stop:
        """What the client machine raised, as the reason the play ends. A
        ``RemoteProtocolError`` (from ``next_event``, or from ``send`` over a
        response no command asked for) is the server's breach; a
        ``LocalProtocolError`` means the server's earlier answers left no state
        ``group`` is valid in (a refused login, say)."""
        if isinstance(exc, LocalProtocolError):
            return cls(f"{_named(group)} cannot be sent: {exc}")
        return cls(f"the server broke the protocol: {exc}", str(exc))


class _POP3Player:
    """The client machine and the socket, and what the server has answered so far."""

    def __init__(self, wire: WireClient, tls_context: ssl.SSLContext | None) -> None:
        # Groups are pipelined only when the session drew them from a PIPELINING
        # server; each is answered before the next goes out (RFC 2449 §6.6).
        self.client = pop3.ClientConnection("client.test", pipelining=True)
        self.wire = wire
        self.tls_context = tls_context
        self.responses: list[PlayedResponse] = []
        self.sent: list[POP3Sent] = []
        self.content: bytearray | None = None
        """The multi-line content under way, if any."""

    def play(
        self, session: smtpcore.testing.strategies.POP3Session, greeting_deadline: float
    ) -> str:
        """Play every group, each by one deadline for its write, its answers and a TLS
        handshake; why the play ended. Raises :class:`_POP3Stop` earlier."""
        groups = session.groups
        self.read_answers(greeting_deadline)
        self.stop_if_closed_early(0, groups)
        for number, group in enumerate(groups, 1):
            if self.client.state is pop3.State.CLOSED:
                break
            sendable = _sendable(group, self.may_lead)
            if not sendable:
                continue
            deadline = time.monotonic() + self.wire.timeout
            self.write(sendable, deadline)
            self.read_answers(deadline)
            self.stop_if_closed_early(number, groups)
            if isinstance(sendable[0], pop3.Stls) and self.client.state is pop3.State.TLS_PENDING:
                self.wire.start_tls(self.tls_context or _insecure_context(), deadline)
                self.client.tls_started()
        return self.await_close()

    def stop_if_closed_early(self, number: int, groups: Sequence[tuple[POP3Sent, ...]]) -> None:
        """Stop, saying where, if the server ended the stream with something written
        left unanswered or before the last group (0: the greeting): the session ended
        there, not after QUIT (RFC 1939 §6)."""
        if not self.wire.server_closed:
            return
        if not self.responses:
            raise _POP3Stop("the server closed the connection before its greeting")
        where = "the greeting"
        if number:
            where = f"group {number} of {len(groups)} ({_named(groups[number - 1])})"
        if self.unanswered():
            raise _POP3Stop(f"the server closed the connection before answering {where}")
        if number < len(groups):
            raise _POP3Stop(
                f"the server closed the connection after {where}, before the session ended"
            )

    def may_lead(self, item: POP3Sent) -> bool:
        """Whether ``item`` may go at the head of a group after the answers so far: a
        SASL response only after a ``+`` challenge (RFC 5034 §4), PASS only after
        USER's ``+OK`` (RFC 1939 §7)."""
        state = self.client.state
        if isinstance(item, pop3.AuthResponse):
            return state is pop3.State.SASL
        if isinstance(item, pop3.Pass):
            return state is pop3.State.USER
        return True

    def write(self, group: tuple[POP3Sent, ...], deadline: float) -> None:
        try:
            data = b"".join(self.client.send(command) for command in group)
        except ProtocolError as exc:
            raise _POP3Stop.refused(exc, group) from None
        self.sent += group
        self.wire.send(data, deadline=deadline)
        if self.wire.write_failed:
            raise _POP3Stop(f"the write of {_named(group)} failed")

    def read_answers(self, deadline: float) -> None:
        """Read until everything written is answered, by ``deadline`` (one for all
        the group's responses, however their bytes trickle in)."""
        client = self.client
        # Each event holds an octet at least, or ends a response: the octets a
        # connection may bring (MAX_RECEIVED) bound the events.
        for _ in range(MAX_RECEIVED + 2 * len(self.sent) + 2):
            event = self.next_event(deadline)
            if event is PAUSED or isinstance(event, pop3.ConnectionClosed):
                return
            self.take(event)
            if self.content is None and not client.outstanding:
                return
        raise _POP3Stop("the client machine gave more events than the server sent octets")

    def next_event(self, deadline: float) -> pop3.Event | object:
        """The machine's next event other than NEED_DATA, reading by ``deadline``."""
        client, wire = self.client, self.wire
        for _ in range(MAX_RECEIVED + 2):  # each read brings an octet, or the close
            try:
                event = client.next_event()
            except ProtocolError as exc:
                raise _POP3Stop.refused(exc, ()) from None
            if event is not NEED_DATA:
                return event
            try:
                client.receive_data(wire.receive(deadline))
            except TimeoutError:
                raise _POP3Stop(self.timed_out()) from None
        raise _POP3Stop("the client machine asked for more than the server sent")

    def take(self, event: object) -> None:
        """Record ``event``: a status line, or a piece or the end of content."""
        if isinstance(event, pop3.ResponseData):
            assert self.content is not None
            self.content += event.data
            return
        if isinstance(event, pop3.EndOfResponse):
            last = self.responses[-1]
            self.responses[-1] = PlayedResponse(
                last.command, last.status, bytes(self.content or b"")
            )
            self.content = None
            return
        assert isinstance(event, pop3.Ok | pop3.Err | pop3.Continue)
        command = self.client.answered if self.responses else None
        if isinstance(event, pop3.Ok) and isinstance(command, pop3.Command) and command.multiline:
            self.content = bytearray()
            self.responses.append(PlayedResponse(command, event, b"", ended=False))
            return
        self.responses.append(PlayedResponse(command, event))

    def timed_out(self) -> str:
        what = "the greeting"
        if self.content is not None:
            what = f"the end of the answer to {_named([self.responses[-1].command])}"
        elif self.client.outstanding:
            what = f"the answer to {_named(self.client.outstanding[:1])}"
        return f"no whole response within {self.wire.timeout:g} s: {what}"

    def read(self) -> tuple[PlayedResponse, ...]:
        """The responses, the last one holding the content under way, if any."""
        if self.content is None:
            return tuple(self.responses)
        last = self.responses[-1]
        partial = PlayedResponse(last.command, last.status, bytes(self.content), ended=False)
        return (*self.responses[:-1], partial)

    def unanswered(self) -> tuple[POP3Sent, ...]:
        ending = self.responses[-1].command if self.content is not None else None
        return (*([ending] if ending is not None else []), *self.client.outstanding)

    def await_close(self) -> str:
        """After QUIT's answer, the server closes (RFC 1939 §6): wait for it once.
        Whatever comes after the last answer was asked for by no command, whether it
        came in the answer's own read (which the client machine dropped unread at the
        session's end, and counted) or later."""
        wire = self.wire
        deadline = time.monotonic() + wire.timeout
        after = self.client.unread_after_end
        stopped = "the server closed the connection after the session"
        try:
            for _ in range(MAX_RECEIVED + 1):  # each read brings an octet, or the close
                if wire.closed:
                    break
                after += len(wire.receive(deadline))
        except TimeoutError:
            stopped = f"the server did not close within {wire.timeout:g} s after the session"
        if after:
            raise _POP3Stop(stopped, f"the server sent {after} octets no command asked for")
        return stopped


def play_pop3_session(
    host: str,
    port: int,
    session: smtpcore.testing.strategies.POP3Session,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls_context: ssl.SSLContext | None = None,
) -> PlayedPOP3Session:
    """Play ``session`` (from :func:`~smtpcore.testing.strategies.pop3_sessions`) to
    the POP3 server at ``host``, ``port``, and return what it answered.

    Each group goes out in one write once the one before is answered. The
    responses are read by :class:`smtpcore.pop3.ClientConnection`, which knows
    which commands a multi-line response answers: LIST and UIDL without an
    argument, RETR, TOP (RFC 1939), CAPA (RFC 2449 §5), a bare AUTH; and that a
    ``+`` line is a SASL challenge (RFC 5034 §4). Each response must be whole
    within ``timeout`` seconds. A SASL response is left out when AUTH got no
    challenge, PASS when USER was refused, and the commands pipelined behind them
    still go; after STLS's ``+OK`` the TLS handshake is made with ``tls_context``
    (by default, one that checks no certificate).
    After the last group the player waits for the server to close.

    Time is given by deadlines, each ``timeout`` seconds: one for the connection
    and the greeting, one per group written (its write, all its responses and a
    TLS handshake), one for the close; so the whole takes at most ``timeout``
    times the groups written plus two, whatever the server does.

    The first response that does not come by its deadline, a response that breaks
    POP3 (one no command asked for, an over-long line), a close before the last
    group, or a group that the server's answers made impossible to send (a
    refused login) ends the play: :attr:`~PlayedPOP3Session.stopped` says why and
    where. Nothing the server does makes it raise; ``OSError`` means no
    connection could be made.
    """
    greeting_deadline = time.monotonic() + timeout
    wire = WireClient(checked_host(host), port, timeout=timeout)
    player = _POP3Player(wire, tls_context)
    error: str | None = None
    try:
        stopped = player.play(session, greeting_deadline)
    except _POP3Stop as stop:
        stopped, error = stop.stopped, stop.error
    except ServerFlood as exc:
        stopped = error = _flooded(exc)
    except OSError as exc:  # the TLS handshake failed (ssl.SSLError is an OSError)
        stopped = f"the TLS handshake failed: {exc}"
    finally:
        wire.close()
    return PlayedPOP3Session(
        player.read(),
        tuple(player.sent),
        player.unanswered(),
        wire.server_closed,
        error,
        stopped,
        tuple(wire.transcript),
    )
