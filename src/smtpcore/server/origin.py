"""Who sent the message of a mail transaction: the session's client, or the one a
content filter names with XFORWARD.

Postfix's XFORWARD_README ("Purpose"): a content filter that passes mail back
to the server names the original client, so that the server logs it, and
writes it in its ``Received:`` line, instead of the filter (Postfix's smtpd
hands cleanup ``FORWARD_NAMADDR`` and ``FORWARD_HELO`` for both). The machine
hears XFORWARD only from a client ``xclient_from`` trusts and keeps it for the
next transaction (:attr:`~smtpcore.handler.Envelope.xforward`); this module
reads it, so that the trace line and the log line read one view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smtpcore.handler import Envelope, Session
from smtpcore.server.log import client_text

__all__ = ["CLIENT_ATTRIBUTES", "MessageOrigin"]

CLIENT_ATTRIBUTES: Final = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO"})
"""The XFORWARD attributes that describe the up-stream client, any of which (even
``[UNAVAILABLE]``) makes the message that client's: Postfix's smtpd switches to
the forwarded values only when one came (``SMTPD_STATE_XFORWARD_CLIENT_MASK`` in
src/smtpd/smtpd.h)."""


@dataclass(frozen=True, slots=True)
class MessageOrigin:
    """The client a message came from: its address and port, and its HELO name.

    ``peer`` is None and ``helo`` is None when unknown, and the port of ``peer`` is
    None when a filter forwarded the address alone (XFORWARD ``ADDR`` without ``PORT``):
    unknown, not 0, which no TCP client has. ``peer_stands_in_for`` is the
    session's (:attr:`~smtpcore.handler.Session.peer_stands_in_for`): set when ``peer``
    is a proxy's address, standing in for a client its PROXY header named by no address.
    """

    peer: tuple[str, int | None] | None
    helo: str | None
    peer_stands_in_for: str | None = None

    @classmethod
    def of(cls, session: Session, envelope: Envelope) -> MessageOrigin:
        """The transaction's client: the one XFORWARD names, else the session's.

        XFORWARD names a client only with one of its client attributes
        (:data:`CLIENT_ATTRIBUTES`); ``IDENT`` and ``SOURCE`` alone, what Postfix's
        own smtp client sends for local mail, describe the message, and the client
        stays the session's. Once a filter forwards a client, what it did not name
        of that client is unknown, never the filter's own (Postfix presets each
        forwarded attribute to unknown): the filter's HELO is no name of the client's.
        """
        forwarded = envelope.xforward
        if forwarded is None or not CLIENT_ATTRIBUTES & forwarded.attributes.keys():
            return cls(session.peer, session.helo_name, session.peer_stands_in_for)
        addr, port = forwarded.addr, forwarded.port
        peer = (addr, port if isinstance(port, int) else None) if isinstance(addr, str) else None
        helo = forwarded.helo if isinstance(forwarded.helo, str) else None
        return cls(peer, helo)

    def log_text(self) -> str:
        """``[203.0.113.7]:4711 helo=client.example``: the ``client=`` of the log, the
        client named as every log line names it (:func:`~smtpcore.server.log.client_text`)."""
        return f"{client_text(self)} helo={self.helo or '-'}"
