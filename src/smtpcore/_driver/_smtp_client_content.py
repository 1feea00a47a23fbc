"""The SMTP client's message content: DATA's dot-stuffed content and its end, BDAT chunks.

After DATA's ``354`` the content goes out dot-stuffed with its end (RFC 5321
§4.1.1.4), a piece written as the next is read; with CHUNKING it goes in
``BDAT`` chunks, each answered before the next (RFC 3030 §2). Before the end
(or a chunk), what the server said meanwhile is looked at: a reply sent before
the end answers nothing, and read after it would pass for its answer. In LMTP
the end has a reply per recipient (RFC 2033 §4.2). Kept apart from the
commands of the transaction, which decide whether the content goes at all.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Final

from smtpcore._driver._content import Content, CRLFNormalizer, content_chunks
from smtpcore._driver._smtp_client_wire import SMTPClientWire
from smtpcore._driver._smtp_errors import (
    MessageRefused,
    SMTPConnectionError,
    SMTPTimeout,
)
from smtpcore.smtp import Bdat, Data, EndOfMessage, MessageData, Reply

__all__ = ["DATA", "END", "SMTPClientContent"]

DATA: Final = Data()
END: Final = EndOfMessage()
"""Events without fields, made once: events are immutable."""


class SMTPClientContent(SMTPClientWire):
    """A message's content and its end, in DATA or in BDAT chunks."""

    lmtp: bool
    chunk_size: int

    async def _send_data(self, content: Content) -> None:
        """The content after the 354, dot-stuffed, then the end of data (RFC 5321
        §4.1.1.4): each piece written as the next is read, and the last one with the
        end, so that a message of one piece goes out in one write. The caller has
        looked at what the machine held after the 354; content that went out in
        pieces took time, and what came meanwhile is looked at before the end
        (:meth:`_no_reply_before_end`)."""
        timeout = self.timeouts.data_block
        if type(content) is bytes and len(content) <= self.chunk_size:  # one piece, one write
            await self._write(timeout, MessageData(content), END)
            return
        ready = b""
        async with aclosing(content_chunks(content, self.chunk_size)) as chunks:
            async for chunk in chunks:
                if ready:
                    await self._write(timeout, before=ready)
                ready = self._send(MessageData(chunk))
        await self._no_reply_before_end(streamed=True)
        await self._write(timeout, END, before=ready)

    async def _no_reply_before_end(self, *, streamed: bool = False) -> None:
        """Raise if the server has replied since its 354, before the end of the data
        went out: every path that writes the end looks here first.

        The end of data confirms the transaction, and the reply after it answers it
        (RFC 5321 §3.3, §4.1.1.4): a reply sent before cannot, and left for the read
        after the end it would pass for that answer (a message reported delivered
        that the server never took). It is a reply no command asked for, which the
        machine refuses (:meth:`_unasked_held`): a ``421`` ends the session as
        :class:`SMTPConnectionError` with the reply (§3.8), anything else as
        :class:`SMTPProtocolError`; the message stays undelivered, to be tried again.
        What the machine holds is looked at; after content ``streamed`` in pieces,
        which took time, what the transport has already too (:meth:`_take_unasked`,
        a read that never waits, bounded as there). The one-write paths make no such
        read: a system call a message, for a reply sent before the content that the
        read of the 354 would most often have taken with it."""
        if streamed:
            await self._take_arrived()
        else:
            await self._unasked_held()

    async def _take_arrived(self) -> None:
        """Raise for a reply that came while content was read from its source, which
        takes time, before the end of data or the next BDAT chunk goes out (RFC 5321
        §4.1.1.4, RFC 3030 §2): no reply is due then, so whatever came is read as
        before a command (:meth:`_take_unasked`, reads that never wait), and then
        what has reached the socket that such a read cannot give (the transport's
        ``arrived``: a TLS record on trio, bytes an event loop blocked by the source
        has yet to read), looked at briefly
        (:func:`~smtpcore._driver._arrived.look_at_arrived`): any reply in it is one no
        command asked for (as :meth:`_unasked`; the server's close too). Never the
        ``data_block`` timeout: the server, waiting for the end, would send nothing
        more, and an honest session would end in :class:`SMTPTimeout`."""
        await self._take_unasked(idle=True, look=True)

    async def _final_replies(self) -> Reply:
        """The reply to the end of the content; in LMTP one per accepted recipient
        (RFC 2033 §4.2), of which the last is returned."""
        conn = self._conn
        due = len(conn.transaction.accepted) if self.lmtp and conn and conn.transaction else 1
        last = None
        try:
            for _ in range(due):
                last = await self._reply(self.timeouts.data_termination)
        except (SMTPConnectionError, SMTPTimeout) as exc:
            if self.lmtp and conn is not None and conn.transaction is not None:
                exc.result = conn.transaction  # who was delivered before the loss
            raise
        assert last is not None
        return last

    async def _send_chunks(self, content: Content, *, binary: bool) -> Reply:
        """The content in BDAT chunks (RFC 3030 §2): each chunk of at most
        ``chunk_size`` octets read (twice that once line endings are made CRLF),
        written and answered before the next is read; the last is ``BDAT n LAST``.
        BINARYMIME content is sent as it is; other content gets CRLF line endings."""
        normalizer = None if binary else CRLFNormalizer()
        pending: bytes | None = None
        streamed = type(content) is not bytes  # read from a source, which takes time
        async with aclosing(content_chunks(content, self.chunk_size)) as pieces:
            async for piece in pieces:
                data = piece if normalizer is None else normalizer.feed(piece)
                if not data:
                    continue
                if pending is not None:
                    await self._send_chunk(pending, last=False, look=streamed)
                    streamed = True  # the chunk's reply has been read: the next piece since
                pending = data
        tail = b"" if normalizer is None else normalizer.end()
        return await self._send_chunk((pending or b"") + tail, last=True, look=streamed)

    async def _send_chunk(self, data: bytes, *, last: bool, look: bool) -> Reply:
        """One BDAT chunk and its reply. Each chunk has one reply, and none comes
        before it (RFC 3030 §2): a reply that came while the chunk's content was
        read, since the last reply was read (the RCPT's, or the chunk before's),
        answers nothing, and paired with this chunk it would shift every later
        reply (this chunk's read as the LAST's, the message as delivered). With
        ``look`` (content read from a source, or a chunk after the first) what came
        meanwhile is looked at first (:meth:`_take_arrived`); content given as one
        ``bytes`` object, sent at once after the RCPT's reply, is not looked at
        before its first chunk."""
        conn = self.connection
        if look:
            await self._take_arrived()
        bdat = Bdat(len(data), last)
        if data:
            await self._write(self.timeouts.data_block, bdat, MessageData(data))
        else:
            await self._write(self.timeouts.data_block, bdat)
        if last:
            return await self._final_replies()
        reply = await self._reply(self.timeouts.data_block)
        if not reply.is_positive:
            raise MessageRefused("BDAT", reply, conn.transaction)
        return reply
