"""A client machine and a server machine back to back, as h11's ConnectionPair.

Every byte one machine writes goes to the other, cut into reads of the sizes
given for that direction; an application callable answers the server's
events. Both sides' events and every write are recorded, so a test can
check that the server saw what the client sent and that each reply reached
the command it answers, however the network cut the bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from smtpcore import NEED_DATA, PAUSED, pop3, smtp
from smtpcore.address import Mailbox
from smtpcore.testing._drive import (
    POP3Answer,
    SMTPAnswer,
    permissive_pop3_answer,
    permissive_smtp_answer,
    run_pop3_server,
    run_server,
)
from smtpcore.testing._pop3_strategies import POP3Session
from smtpcore.testing._smtp_sessions import ClientSession

__all__ = ["Answered", "ConnectionPair", "POP3ConnectionPair"]


class _Machine(Protocol):
    def receive_data(self, data: bytes) -> None: ...


_Client = TypeVar("_Client", smtp.ClientConnection, pop3.ClientConnection)
_Server = TypeVar("_Server", smtp.ServerConnection, pop3.ServerConnection)
_Event = TypeVar("_Event", smtp.Event, pop3.Event)


class _Link(Generic[_Client, _Server, _Event]):
    """What both pairs share: the wires, the chunking, the records."""

    client: _Client
    server: _Server

    def __init__(
        self,
        client: _Client,
        server: _Server,
        client_chunks: Sequence[int],
        server_chunks: Sequence[int],
    ) -> None:
        self.client = client
        self.server = server
        self._up = _sizes(client_chunks)
        self._down = _sizes(server_chunks)
        self._to_server = bytearray()
        self._to_client = bytearray()
        self.client_events: list[_Event] = []
        """Every event the client machine gave, in order."""
        self.server_events: list[_Event] = []
        """Every event the server machine gave, in order."""
        self.client_closed = False
        """Whether the client machine gave ``ConnectionClosed`` (recorded once)."""
        self.server_closed = False
        """Whether the server machine gave ``ConnectionClosed`` (recorded once)."""
        self.transcript: list[tuple[str, bytes]] = []
        """Each write, as ``("C", bytes)`` from the client or ``("S", bytes)`` from the server."""

    def _client_wrote(self, data: bytes) -> None:
        if data:
            self._to_server += data
            self.transcript.append(("C", data))

    def _server_wrote(self, data: bytes) -> None:
        if data:
            self._to_client += data
            self.transcript.append(("S", data))

    def run(self) -> None:
        """Deliver everything in flight, both ways, until both sides are quiet."""
        self._pump_client()
        while self._to_server or self._to_client:
            if self._to_server:
                self._deliver(self._to_server, self.server, next(self._up))
                self._pump_server()
            if self._to_client:
                self._deliver(self._to_client, self.client, next(self._down))
                self._pump_client()

    @staticmethod
    def _deliver(wire: bytearray, machine: _Machine, size: int) -> None:
        piece = bytes(wire[:size])
        del wire[:size]
        machine.receive_data(piece)

    def close(self) -> None:
        """The client closes its side, then the server its side."""
        self.run()
        self.server.receive_data(b"")
        self._pump_server()
        self.run()
        self.client.receive_data(b"")
        self._pump_client()

    def starttls(self) -> None:
        """Both sides finished the TLS handshake after STARTTLS or STLS."""
        self.run()
        self.server.tls_started()
        self.client.tls_started()
        self.run()

    def _pump_client(self) -> None:
        raise NotImplementedError  # each protocol reads its own events

    def _pump_server(self) -> None:
        raise NotImplementedError


def _sizes(sizes: Sequence[int]) -> Iterator[int]:
    if any(size < 1 for size in sizes):
        raise ValueError("chunk sizes must be positive")
    return itertools.cycle(sizes) if sizes else itertools.repeat(1 << 30)


@dataclass(frozen=True, slots=True)
class Answered:
    """One reply the client machine read, and what it answered."""

    reply: smtp.Reply
    command: smtp.Event | None
    """The command or end of content it answers; None for the greeting."""
    recipient: Mailbox | None
    """For RCPT and LMTP's end of content, the recipient it concerns."""


_CHUNK_STATES = frozenset({smtp.State.RCPT, smtp.State.BDAT})


def _is_content(event: smtp.Event) -> bool:
    return isinstance(event, smtp.MessageData | smtp.EndOfMessage)


class ConnectionPair(_Link[smtp.ClientConnection, smtp.ServerConnection, smtp.Event]):
    """An SMTP client machine and server machine talking to each other.

    The server greets on construction. ``answer`` plays the server's
    application (by default :func:`permissive_smtp_answer`); a BDAT is
    answered once its octets are in. ``client_chunks`` and
    ``server_chunks`` are the read sizes each way, cycled (``[1]`` feeds
    byte by byte; empty delivers each write whole).

    >>> from smtpcore.address import parse_mailbox
    >>> from smtpcore.smtp import Ehlo, Mail, Rcpt, Data, MessageData, EndOfMessage
    >>> pair = ConnectionPair(client_chunks=[1])
    >>> pair.send(Ehlo("client.test"))
    >>> pair.send(Mail(None), Rcpt(parse_mailbox("bob@pqr.example")), Data())
    >>> pair.send(MessageData(b"Subject: hi\\r\\n"), EndOfMessage())
    >>> pair.messages
    [b'Subject: hi\\r\\n']
    """

    def __init__(
        self,
        client: smtp.ClientConnection | None = None,
        server: smtp.ServerConnection | None = None,
        *,
        answer: SMTPAnswer = permissive_smtp_answer,
        client_chunks: Sequence[int] = (),
        server_chunks: Sequence[int] = (),
        greeting: smtp.Reply | None = None,
    ) -> None:
        super().__init__(
            client or smtp.ClientConnection("client.test"),
            server or smtp.ServerConnection("mx.test"),
            client_chunks,
            server_chunks,
        )
        self.answer = answer
        self.answers: list[Answered] = []
        """Each reply the client read, with the command it was matched to."""
        self._content: list[bytes] = []
        self.messages: list[bytes] = []
        """The content of each message the server read to its end, unstuffed."""
        self._server_wrote(self.server.send(greeting or smtp.Reply(220, "mx.test ESMTP")))
        self.run()

    def send(self, *events: smtp.Event) -> None:
        """The client sends ``events`` (one pipelined group); run until quiet."""
        for event in events:
            self._client_wrote(self.client.send(event))
        self.run()

    def play(self, session: ClientSession) -> None:
        """Play a :func:`~smtpcore.testing.strategies.sessions` session group by group.

        Content is left out when the server did not answer DATA with 354 (so
        the client is not in the DATA state), and the commands pipelined
        behind its end still go (RFC 2920 §3.1), as
        :func:`~smtpcore.testing.play_smtp_session` sends them; an AUTH
        response is skipped when AUTH got no 334 challenge; after STARTTLS
        both sides finish the handshake. Hostile (bytes) items are for servers
        reached over a socket, not for a pair: they raise ``ValueError``.
        """
        for group in session.groups:
            if any(isinstance(item, bytes) for item in group):
                raise ValueError("a ConnectionPair plays only valid sessions")
            events = [item for item in group if not isinstance(item, bytes)]
            state = self.client.state
            if state is smtp.State.CLOSED:
                return
            if state is not smtp.State.DATA:  # DATA was refused: no content
                events = list(itertools.dropwhile(_is_content, events))
            if not events:
                continue
            first = events[0]
            if isinstance(first, smtp.Bdat) and state not in _CHUNK_STATES:
                continue  # every recipient was refused: no chunks
            if isinstance(first, smtp.AuthResponse) and state is not smtp.State.AUTH:
                continue  # AUTH was refused or ended: no challenge to answer
            self.send(*events)
            if isinstance(first, smtp.StartTls) and self.client.state is smtp.State.TLS_PENDING:
                self.starttls()

    def _pump_client(self) -> None:
        client = self.client
        while not self.client_closed:
            event = client.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            self.client_events.append(event)
            self.client_closed = isinstance(event, smtp.ConnectionClosed)
            if isinstance(event, smtp.Reply):
                self.answers.append(Answered(event, client.answered, client.answered_recipient))

    def _pump_server(self) -> None:
        if self.server_closed:
            return
        events, out = run_server(self.server, answer=self.answer)
        self.server_events += events
        self.server_closed = any(isinstance(e, smtp.ConnectionClosed) for e in events)
        for event in events:
            if isinstance(event, smtp.MessageData):
                self._content.append(event.data)
            elif isinstance(event, smtp.EndOfMessage):
                self.messages.append(b"".join(self._content))
            if isinstance(event, smtp.Mail | smtp.Rset | smtp.RejectedMessage | smtp.EndOfMessage):
                self._content = []
        self._server_wrote(out)


class POP3ConnectionPair(_Link[pop3.ClientConnection, pop3.ServerConnection, pop3.Event]):
    """A POP3 client machine and server machine talking to each other.

    As :class:`ConnectionPair`; ``answer`` plays the maildrop (by default
    :func:`permissive_pop3_answer`, which runs AUTH PLAIN and LOGIN
    exchanges). Create the server machine with the options the session
    needs (``stls=True``, ``sasl_mechanisms=[...]``). In :attr:`client_events` the pieces of
    a multi-line response are joined into one ``ResponseData``, whose
    boundaries depend only on the chunking.
    """

    def __init__(
        self,
        client: pop3.ClientConnection | None = None,
        server: pop3.ServerConnection | None = None,
        *,
        answer: POP3Answer = permissive_pop3_answer,
        client_chunks: Sequence[int] = (),
        server_chunks: Sequence[int] = (),
        greeting: pop3.Ok | None = None,
    ) -> None:
        super().__init__(
            client or pop3.ClientConnection("client.test"),
            server or pop3.ServerConnection("pop.test"),
            client_chunks,
            server_chunks,
        )
        self.answer = answer
        self._server_wrote(self.server.send(greeting or pop3.Ok("ready <1.2@pop.test>")))
        self.run()

    def send(self, *events: pop3.Command | pop3.AuthResponse) -> None:
        """The client sends ``events`` (pipelined if more than one); run until quiet."""
        for event in events:
            self._client_wrote(self.client.send(event))
        self.run()

    def play(self, session: POP3Session) -> None:
        """Play a :func:`~smtpcore.testing.strategies.pop3_sessions` session group by group.

        After STLS's ``+OK`` both sides finish the TLS handshake. A group the
        server's earlier answers made impossible is skipped: a SASL response
        when the server did not answer AUTH with a ``+`` challenge, PASS
        when it refused USER.
        """
        for group in session.groups:
            state = self.client.state
            if state is pop3.State.CLOSED:
                return
            first = group[0]
            if isinstance(first, pop3.AuthResponse) and state is not pop3.State.SASL:
                continue
            if isinstance(first, pop3.Pass) and state is not pop3.State.USER:
                continue
            self.send(*group)
            if isinstance(first, pop3.Stls) and self.client.state is pop3.State.TLS_PENDING:
                self.starttls()

    def _pump_client(self) -> None:
        client = self.client
        while not self.client_closed:
            event = client.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            self.client_closed = isinstance(event, pop3.ConnectionClosed)
            if (
                isinstance(event, pop3.ResponseData)
                and self.client_events
                and isinstance(self.client_events[-1], pop3.ResponseData)
            ):
                previous = self.client_events[-1]
                self.client_events[-1] = pop3.ResponseData(previous.data + event.data)
            elif not (isinstance(event, pop3.ResponseData) and not event.data):
                self.client_events.append(event)

    def _pump_server(self) -> None:
        if self.server_closed:
            return
        events, out = run_pop3_server(self.server, answer=self.answer)
        self.server_events += events
        self.server_closed = any(isinstance(e, pop3.ConnectionClosed) for e in events)
        self._server_wrote(out)
