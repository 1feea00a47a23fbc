"""What content goes to one exchanger, from what it offers: the message as queued, its
7-bit form (RFC 6152 §3), 8-bit content as ``BODY=BINARYMIME`` (RFC 3030 §3), or a
refusal of what the exchanger lacks (SMTPUTF8, BINARYMIME, CHUNKING, 8BITMIME).
Apart from the session because each decision reads only the message and the
extensions offered."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO, Final, TypeAlias

from smtpcore._driver import (
    BaseSMTPClient,
    ExtensionNotOffered,
)
from smtpcore._plural import counted
from smtpcore.server.bounce import seven_bit_form
from smtpcore.server.crlfreader import CRLFReader
from smtpcore.server.downgrade import NotConvertible, SevenBitReader, plan_seven_bit
from smtpcore.server.log import loggable, logger
from smtpcore.server.queue import QueuedContent, QueueEntry
from smtpcore.smtp import Reply

__all__ = [
    "_AsBinary",
    "_BINARYMIME",
    "_Carried",
    "_ConvertedOffLoop",
    "_carried",
    "_outgoing",
    "_queued_binary",
    "_say_unreturnable",
]


def _needs_smtputf8(
    client: BaseSMTPClient, entry: QueueEntry, header: bytes
) -> ExtensionNotOffered | None:
    """RFC 6531 §3.4, as Postfix does: a message its sender sent with SMTPUTF8 and that
    has UTF-8 in its header cannot go to an exchanger without SMTPUTF8, even with an
    ASCII envelope (the client refuses UTF-8 addresses, a SIZE overrun and 8-bit
    content without 8BITMIME itself, before MAIL)."""
    if client.connection.extensions.smtputf8 or "SMTPUTF8" not in dict(entry.params):
        return None
    if header.isascii():
        return None
    reply = Reply(
        553, "the message needs SMTPUTF8 (RFC 6531) and the exchanger does not offer it", "5.6.7"
    )
    return ExtensionNotOffered("SMTPUTF8", "SMTPUTF8", reply)


_BINARYMIME: Final = "BINARYMIME"


def _queued_binary(entry: QueueEntry) -> bool:
    """Whether the message was queued as binary, ``BODY=BINARYMIME`` (RFC 3030 §3; values
    are not case sensitive, RFC 5321 §2.4)."""
    body = dict(entry.params).get("BODY")
    return body is not None and body.upper() == _BINARYMIME


def _needs_binarymime(client: BaseSMTPClient, entry: QueueEntry) -> ExtensionNotOffered | None:
    """RFC 3030 §3: BINARYMIME content goes only with ``BODY=BINARYMIME``, to an
    exchanger that offers BINARYMIME, and only with BDAT, so CHUNKING too. Elsewhere
    it would go without the parameter (to an exchanger with 8BITMIME, which
    :func:`_carried` lets 8-bit content go to) as text, over DATA even, where bare CR
    and LF and long lines are not what was queued; without CHUNKING, MAIL went and
    the client then refused DATA for it.
    So it is refused before MAIL, with the status of a conversion this relay does not
    make (RFC 3463 5.6.3), as 8-bit content is without 8BITMIME."""
    if not _queued_binary(entry):
        return None
    offered = client.connection.extensions
    missing = offered.missing_for("BODY", _BINARYMIME) or (
        None if offered.chunking else "CHUNKING"
    )
    if missing is None:
        return None
    reply = Reply(
        554,
        f"the message is binary (BODY=BINARYMIME) and the server does not offer {missing}",
        "5.6.3",
    )
    return ExtensionNotOffered("BODY", missing, reply)


def _binary_only(client: BaseSMTPClient) -> bool:
    """Whether 8-bit content goes to this exchanger only as ``BODY=BINARYMIME`` by BDAT:
    it offers BINARYMIME and CHUNKING but not 8BITMIME. Without ``BODY`` a MAIL says
    7BIT (RFC 6152 §3: no 8-bit octet then), and BINARYMIME goes with BDAT alone (RFC
    3030 §3), so BINARYMIME without CHUNKING carries nothing 8-bit."""
    offered = client.connection.extensions
    return not offered.eight_bit_mime and offered.binary_mime and offered.chunking


@dataclass(frozen=True, slots=True)
class _AsBinary:
    """8-bit content not queued as binary, to an exchanger that takes 8-bit octets only
    as ``BODY=BINARYMIME`` (:func:`_binary_only`): it goes so, by BDAT, with its line
    ends made CRLF (:class:`CRLFReader`), as every other hop gets them, and ``SIZE=``
    the queue file's, an estimate as on the 8BITMIME path (RFC 1870 §4)."""

    size: int


def _seven_bit_report(entry: QueueEntry, content: QueuedContent) -> bytes | None:
    """The 7-bit form of a report of this server's (RFC 6152 §3 lets a server convert
    what it cannot send as it is), or None: the report with the returned message cut to
    its header, which reads better than the whole message quoted-printable. The whole
    report is read: it was built whole in memory, its returned message bounded
    (:data:`~smtpcore.server.bounce.MAX_RETURNED_MESSAGE`)."""
    if not entry.is_report:
        return None
    with content.open() as file:
        return seven_bit_form(file.read())


def _seven_bit_message(content: QueuedContent) -> SevenBitReader:
    """The queued message converted to 7-bit as it is sent (RFC 6152 §3, as Postfix
    does: fewer bounces, and mail from ``<>``, which cannot bounce, is not lost), read
    through once first to plan it; :class:`~smtpcore.server.downgrade.NotConvertible`
    when it has no 7-bit form."""
    with content.open() as file:
        plan = plan_seven_bit(file)
    return SevenBitReader(content.open, plan)


def _seven_bit_content(
    entry: QueueEntry, content: QueuedContent, relay: str
) -> bytes | SevenBitReader:
    """What goes instead of 8-bit content to an exchanger without 8BITMIME: a report of
    this server's in its own 7-bit form, any other message converted (or
    :class:`~smtpcore.server.downgrade.NotConvertible`)."""
    report = _seven_bit_report(entry, content)
    if report is not None:
        logger.info(
            "%s: %s does not offer 8BITMIME: the report goes in its 7-bit form, the "
            "message returned with the header only (RFC 3461 §4.3)",
            entry.id,
            loggable(relay),
        )
        return report
    converted = _seven_bit_message(content)
    parts = converted.quoted_parts
    logger.info(
        "%s: %s does not offer 8BITMIME: the message goes converted to 7-bit, %s "
        "quoted-printable (RFC 6152 §3)",
        entry.id,
        loggable(relay),
        counted(parts, "part"),
    )
    return converted


_OFF_LOOP_READ: Final = 65536
"""The octets of the 7-bit form converted per worker-thread read: the client's chunk."""


class _ConvertedOffLoop:
    """A :class:`SevenBitReader` (or a :class:`CRLFReader`) read in a worker thread:
    each read converts a chunk of the message, CPU work (tens of milliseconds for short
    lines) that would hold the event loop every other session runs on. It is content
    the client already takes, an async iterable of bytes, each iteration from where the
    reader stands; ``seek`` and ``tell`` make it a file the client can send again (RFC
    5321 §4.5.3.1.8), and stay synchronous, as the client seeks only back to the
    start, which reopens (or rewinds) the queue file and converts nothing."""

    def __init__(self, reader: SevenBitReader | CRLFReader) -> None:
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await asyncio.to_thread(self._reader.read, _OFF_LOOP_READ):
            yield piece

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def __enter__(self) -> _ConvertedOffLoop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()


def _seven_bit_refusal(reason: NotConvertible) -> ExtensionNotOffered:
    """The refusal of 8-bit content with no 7-bit form (RFC 6152 §3: returned as
    undeliverable, RFC 3463 5.6.3)."""
    reply = Reply(
        554,
        f"the server does not offer 8BITMIME, needed for 8-bit content that cannot be "
        f"converted: {reason}",
        "5.6.3",
    )
    return ExtensionNotOffered(None, "8BITMIME", reply)


def _say_unreturnable(entry: QueueEntry, relay: str, refusal: ExtensionNotOffered) -> None:
    """A refusal of 8-bit content with no 7-bit form cannot be returned from ``<>``
    (RFC 5321 §4.5.5), so the loss is said here with its cause."""
    reason = refusal.__cause__
    if entry.sender or not isinstance(reason, NotConvertible):
        return
    logger.warning(
        "%s: %s does not offer 8BITMIME and the message from <> has no 7-bit form "
        "(%s): it cannot be sent there, and no report of it can be made",
        entry.id,
        loggable(relay),
        reason,
    )


_Carried: TypeAlias = bytes | SevenBitReader | _AsBinary | None
"""What goes instead of the queued content (see :func:`_carried`)."""


async def _carried(
    client: BaseSMTPClient, entry: QueueEntry, content: QueuedContent, relay: str
) -> _Carried:
    """What goes instead of the queued content in this session (None: the content
    itself, as queued). :class:`ExtensionNotOffered`, as the client raises for what it
    was not offered, where the session lacks what the message needs: SMTPUTF8 for a
    UTF-8 header, BINARYMIME and CHUNKING for binary content, 8BITMIME for 8-bit
    content with no 7-bit form.

    8-bit content cannot go as it is to an exchanger without 8BITMIME (RFC 6152 §3)
    but as ``BODY=BINARYMIME`` (:class:`_AsBinary`, RFC 3030 §3). The content is
    streamed from the queue, so the client cannot see this before it is sent; the
    queue file is read through (in pieces) to say it first, only for such an exchanger.
    7-bit content goes to it as it is, with no ``BODY``: declared binary, the next hop
    would take it for binary, and pass it on only where BINARYMIME is offered."""
    header = await asyncio.to_thread(content.header)
    lacking = _needs_smtputf8(client, entry, header) or _needs_binarymime(client, entry)
    if lacking is not None:
        raise lacking
    if client.connection.extensions.eight_bit_mime or _queued_binary(entry):
        return None
    if await asyncio.to_thread(content.is_ascii):
        return None
    if _binary_only(client):
        return _AsBinary(await asyncio.to_thread(lambda: content.size))
    try:
        return await asyncio.to_thread(_seven_bit_content, entry, content, relay)
    except NotConvertible as reason:
        raise _seven_bit_refusal(reason) from reason


async def _outgoing(
    converted: _Carried, content: QueuedContent
) -> contextlib.AbstractContextManager[bytes | BinaryIO | _ConvertedOffLoop]:
    """What the client sends, from :func:`_carried`'s choice, to close once sent. The
    content goes from the queue file in the client's chunks (DATA or BDAT), so a
    message of any size needs no more memory than a chunk."""
    if isinstance(converted, bytes):
        return contextlib.nullcontext(converted)
    if isinstance(converted, SevenBitReader):
        return _ConvertedOffLoop(converted)
    source = await asyncio.to_thread(content.open)
    if isinstance(converted, _AsBinary):
        return _ConvertedOffLoop(CRLFReader(source))
    return source
