"""What an application writes to receive mail: a :class:`Handler` and the objects it sees.

The asyncio and trio adapters drive a :class:`~smtpcore.smtp.ServerConnection`
and call the handler's hooks at each step of a session (RFC 5321 §3). Every
hook may answer with a :class:`~smtpcore.smtp.Reply`; ``None`` takes the
default. The defaults accept a session, a sender and a message, but refuse
every recipient: a server that accepts every recipient is an open relay, so
the application has to say which recipients it takes (RFC 5321 §7.1).

This module does no I/O and imports no framework: one handler class serves
both adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from smtpcore.address import Mailbox
from smtpcore.smtp import Ehlo, Helo, Lhlo, Mail, Parameters, Rcpt, Reply

__all__ = ["Envelope", "Handler", "MessageReply", "Recipient", "Session", "TLSInfo"]

MessageReply: TypeAlias = "Reply | Sequence[Reply] | None"
"""What :meth:`Handler.handle_message` returns: one reply, one per recipient
(LMTP, RFC 2033 §4.2), or None for the default."""


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """The TLS state of a connection, as the handshake left it."""

    version: str | None
    """Protocol version, such as ``"TLSv1.3"``."""
    cipher: str | None
    """Cipher suite name."""
    peer_certificate: dict[str, Any] | None = None
    """The peer's certificate as :meth:`ssl.SSLSocket.getpeercert` gives it, if it sent one
    that was verified."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """One accepted ``RCPT TO``: the mailbox and its ESMTP parameters (RFC 5321 §4.1.1.3)."""

    mailbox: Mailbox
    params: Parameters = field(default_factory=Parameters)


@dataclass(slots=True, eq=False)
class Envelope:
    """One mail transaction: sender, accepted recipients and, once read, the content.

    A new envelope starts with each accepted ``MAIL``. ``content`` holds the
    message (without dot-stuffing) when the handler lets the adapter collect
    it in memory; a streaming handler leaves it empty.
    """

    sender: Mailbox | None
    """The reverse-path; ``None`` is the null path ``<>`` of a bounce (RFC 5321 §4.5.5)."""
    mail_params: Parameters = field(default_factory=Parameters)
    recipients: list[Recipient] = field(default_factory=list)
    content: bytes = b""
    """The message as received, once :meth:`Handler.handle_message` is called."""
    size: int = 0
    """Octets of content received so far (after unstuffing)."""
    chunks: list[bytes] = field(default_factory=list, repr=False)
    """Where the default :meth:`Handler.handle_data_chunk` collects content."""


@dataclass(slots=True, eq=False)
class Session:
    """One SMTP connection, as far as the handler needs to know it."""

    hostname: str
    """This server's own name, as used in the greeting."""
    peer: tuple[str, int] | None = None
    """The client's address and port."""
    local: tuple[str, int] | None = None
    """The address and port the client connected to."""
    helo_name: str | None = None
    """The name given in EHLO, HELO or LHLO; reset by STARTTLS (RFC 3207 §4.2)."""
    extended: bool = False
    """True after EHLO or LHLO, False after HELO."""
    tls: TLSInfo | None = None
    """Set once TLS is up, by STARTTLS or on connect."""
    authenticated: str | None = None
    """The authenticated identity; ``None`` until AUTH succeeds (RFC 4954)."""
    envelope: Envelope | None = None
    """The open mail transaction, if any."""
    transactions: int = 0
    """Messages that reached the end of their content in this session."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Room for the application's own state about this session."""


class Handler:
    """Base class of an application's mail handling; override the hooks you need.

    Hooks are coroutines, called one at a time per session, in the order of
    the client's commands. An exception in a hook is logged and the client
    gets ``451 4.3.0`` (a transient local error), so a bug never loses a
    message silently.

    Message content reaches the handler in one of two ways. By default the
    adapter collects it in :attr:`Envelope.content` (bounded by the server's
    size limit) before :meth:`handle_message`. A handler that overrides
    :meth:`handle_data_chunk` gets each chunk as it arrives instead, so that
    a large message can go to disk with flat memory.
    """

    async def handle_connect(self, session: Session) -> Reply | None:
        """A client connected: ``None`` greets it with 220, ``Reply(554, ...)`` refuses
        service (RFC 5321 §3.1), ``Reply(421, ...)`` closes at once."""
        return None

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        """EHLO, HELO or LHLO. A positive reply gets the extension lines added."""
        return None

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        """``MAIL FROM``: the default accepts any sender."""
        return None

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        """``RCPT TO``: the default refuses, so no server relays by accident.

        Return ``Reply(250, "OK")`` for a recipient you take.
        """
        return Reply(550, "Mailbox unavailable", "5.1.1")

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        """``DATA``: ``None`` answers 354 and content follows."""
        return None

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        """A chunk of content, unstuffed. The default keeps it in memory."""
        envelope.chunks.append(data)

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        """The content ended and is within policy: ``None`` accepts it with 250."""
        return None

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        """A transaction ended without delivery: RSET, a new EHLO, STARTTLS, a refused or
        broken message, or the client left. A streaming handler drops what it wrote."""

    async def handle_vrfy(self, session: Session, argument: str) -> Reply | None:
        """``VRFY``: the default neither confirms nor denies (RFC 5321 §3.5.3)."""
        return None

    async def handle_close(self, session: Session) -> None:
        """The connection is gone, whatever the reason."""
