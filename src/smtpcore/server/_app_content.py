"""A message's content as it arrives (DATA, or BDAT chunks, RFC 3030): streamed to a
spool file in the queue after our ``Received:`` line, whose header is scanned for the
Received lines that tell a mail loop (:data:`MAX_HOPS`, RFC 5321 §6.3), then handed to
the commit.

Apart from the commit, which knows the spool only when it is finished. :data:`MAX_HOPS`
is still imported from :mod:`smtpcore.server.app`; it lives here with
:meth:`_MailContent.handle_message`, which reads it: setting it on ``app`` changes
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from smtpcore._driver._refusals import path_text
from smtpcore.handler import Envelope, MessageReply, Session
from smtpcore.server._app_commit import _MailCommit
from smtpcore.server.origin import MessageOrigin
from smtpcore.server.queue import Spool
from smtpcore.server.trace import (
    FIELD_NAME_LIMIT,
    count_received,
    header_field_follows,
    protocol_name,
    received_header,
    tls_comment,
)
from smtpcore.smtp import Reply

__all__ = ["MAX_HOPS", "_HEADER_SCAN_LIMIT", "_UNDECIDING", "_Incoming", "_MailContent"]

MAX_HOPS: Final = 50
"""Received lines past which a message is refused as looping (Postfix's
``hop_count_limit``; RFC 5321 §6.3)."""

_HEADER_SCAN_LIMIT: Final = 256 * 1024
_UNDECIDING: Final = bytes(sorted(set(range(33, 127)) - {ord(":")})) + b" \t"
"""What a first line may hold before its colon: field-name characters, blanks after."""


@dataclass(slots=True)
class _Incoming:
    """The message being received: its spool file and what the header scan found."""

    spool: Spool
    header: bytearray = field(default_factory=bytearray)
    header_done: bool = False
    hops: int = 0
    first_line_read: bool = False
    held: bytes = b""

    def spooled(self, data: bytes) -> bytes:
        """What of ``data`` goes to the spool now. The first bytes wait until they
        tell whether the client's header follows our Received line, or an empty
        line must go between (see :func:`header_field_follows`)."""
        if self.first_line_read:
            return data
        held = self.held + data
        # More of a field name (or of the blanks after one) cannot decide, so the held
        # line is looked at again only when something that may decide comes: linear
        # however small the pieces.
        if (
            self.held[:1] not in (b"", b"\r")
            and len(held) < FIELD_NAME_LIMIT
            and not data.translate(None, _UNDECIDING)
        ):
            self.held = held
            return b""
        follows = header_field_follows(held)
        if follows is None:
            self.held = held
            return b""
        self.first_line_read = True
        self.held = b""
        return held if follows else b"\r\n" + held

    def rest(self) -> bytes:
        """What is still held when the content ends (a message shorter than a line)."""
        if self.first_line_read or not self.held:
            return b""
        self.first_line_read = True
        return b"\r\n" + self.held

    def scan(self, data: bytes) -> None:
        """Count Received lines in the header, which ends at the first empty line."""
        if self.header_done:
            return
        searched = max(len(self.header) - 3, 0)  # an empty line may begin in what came
        self.header += data
        end = self.header.find(b"\r\n\r\n", searched)
        if end >= 0 or len(self.header) > _HEADER_SCAN_LIMIT or self.header.startswith(b"\r\n"):
            self.header_done = True
            self.hops = count_received(bytes(self.header[: end if end >= 0 else None]))
            self.header = bytearray()


class _MailContent(_MailCommit):
    """The content's reception, to the spool and through the header scan."""

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        try:
            self._incoming(session, envelope)
        except OSError as exc:
            return self._storage_failed(session, envelope, exc, "cannot create a spool file")
        return None

    def _incoming(self, session: Session, envelope: Envelope) -> _Incoming:
        """The spool of the message being received, opened with our Received line at the
        first sign of content (DATA, or the first BDAT chunk of RFC 3030). The line
        names the transaction's client (:class:`MessageOrigin`): the one a trusted
        content filter forwards with XFORWARD, as Postfix writes it, else the
        session's."""
        incoming = session.extra.get("incoming")
        if isinstance(incoming, _Incoming):
            return incoming
        spool = self.store.queue.spool()
        incoming = _Incoming(spool)
        session.extra["incoming"] = incoming
        utf8 = "SMTPUTF8" in envelope.mail_params
        recipients = envelope.recipients
        tls = session.tls
        origin = MessageOrigin.of(session, envelope)
        header = received_header(
            helo=origin.helo,
            peer=origin.peer,
            by=self.config.hostname,
            protocol=protocol_name(
                lmtp=self.lmtp,
                extended=session.extended,
                tls=tls is not None,
                auth=session.authenticated is not None,
                utf8=utf8,
            ),
            queue_id=spool.id,
            recipient=recipients[0].mailbox if len(recipients) == 1 else None,
            when=time.time(),
            tls=None if tls is None else tls_comment(tls.version, tls.cipher),
        )
        spool.write(header)
        return incoming

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        incoming = self._incoming(session, envelope)
        incoming.scan(data)
        incoming.spool.write(incoming.spooled(data))

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        incoming = session.extra.pop("incoming", None)
        if isinstance(incoming, _Incoming):
            incoming.spool.discard()

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        due = len(envelope.recipients) if self.lmtp else 1
        try:
            incoming = self._incoming(session, envelope)  # an empty BDAT LAST has no chunk
        except OSError as exc:
            return self._storage_failed(session, envelope, exc, "cannot create a spool file")
        del session.extra["incoming"]
        try:
            incoming.spool.write(incoming.rest())
        except OSError as exc:
            incoming.spool.discard()
            return self._storage_failed(
                session, envelope, exc, "cannot write the spool file", queue_id=incoming.spool.id
            )
        if not incoming.header_done:
            incoming.scan(b"\r\n\r\n")
        if incoming.hops >= MAX_HOPS:
            incoming.spool.discard()
            reply = Reply(554, "Too many hops: is there a mail loop?", "5.4.6")
            return self._refuse(
                session,
                "DATA",
                reply,
                sender=path_text(envelope.sender),
                queue_id=incoming.spool.id,
            )
        return await self._commit(session, envelope, incoming.spool, due)
