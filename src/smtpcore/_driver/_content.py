"""Message content for the SMTP client, read in bounded chunks whatever its source.

``send_message`` takes bytes, a binary file, or a sync or async iterable of
bytes. :func:`content_chunks` reads any of them in pieces of at most
``chunk_size`` octets, so a message never has to be in memory whole;
:func:`known_size` says how long it is when that can be known without
reading it (for ``SIZE``, RFC 1870). :class:`CRLFNormalizer` makes line
endings CRLF across chunk boundaries for BDAT content, which is not
dot-stuffed (RFC 3030 §2) but must still be canonical unless it is
``BODY=BINARYMIME`` (RFC 3030 §3).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from stat import S_ISREG
from typing import BinaryIO, Protocol, TypeAlias, cast

__all__ = [
    "Content",
    "CRLFNormalizer",
    "ReadAhead",
    "check_not_text",
    "close_iterator",
    "content_chunks",
    "first_piece_checked",
    "known_size",
    "replayable",
    "sent_size",
]

Content: TypeAlias = (
    bytes | bytearray | memoryview | BinaryIO | Iterable[bytes] | AsyncIterable[bytes]
)
"""What ``send_message`` sends: the octets, a file opened in binary mode, or an
iterable (sync or async) of byte strings."""


def check_not_text(content: object) -> None:
    """:class:`TypeError` for text given as content: a ``str``, or a file opened in
    text mode, whose reads give ``str``. Said before ``MAIL``, rather than found
    once the server has said 354 and waits for the octets."""
    if isinstance(content, (str, io.TextIOBase)):
        raise TypeError(
            f"message content is octets, not text ({type(content).__name__}): "
            "give bytes, a file opened in binary mode ('rb'), or an iterable of bytes"
        )


def replayable(content: Content) -> bool:
    """Whether ``content`` can be sent again, for another transaction (RFC 9422 §4.2)
    or recipients refused as too many (RFC 5321 §4.5.3.1.8): bytes, or content that
    can seek (``seekable()``), say where it stands (``tell``) and go back there
    (``seek``)."""
    if isinstance(content, bytes):
        return True
    seekable = getattr(content, "seekable", None)
    return (
        seekable is not None
        and bool(seekable())
        and hasattr(content, "tell")
        and hasattr(content, "seek")
    )


async def first_piece_checked(content: Content) -> Content:
    """``content``, an iterable's first piece read ahead and checked to be octets: an
    iterator of ``str`` is a :class:`TypeError` before ``MAIL``, as a ``str`` is,
    rather than once the server has said 354 (the session then ends with the
    message). The piece is kept and goes first; memory holds that one piece. A
    later piece that is not octets is found only as it is sent. Octets and files
    are given back as they are; so is other content that can be sent again
    (:func:`replayable`), checked in place (:func:`_checked_in_place`)."""
    if isinstance(content, (bytes, bytearray, memoryview)) or hasattr(content, "read"):
        return content
    if replayable(content):
        await _checked_in_place(cast("_Rewindable", content))
        return content
    if isinstance(content, AsyncIterable):
        pieces = aiter(content)
        try:
            first = await anext(pieces)
        except StopAsyncIteration:
            return ()
        _check_piece(first)
        return ReadAhead(first, pieces)
    iterator = iter(content)
    for first in iterator:
        _check_piece(first)
        return itertools.chain((first,), iterator)
    return ()


class _Rewindable(Protocol):
    """Content that can be sent again (:func:`replayable`) and has no ``read``: an
    iterable that seeks back to where it stood."""

    def tell(self) -> int: ...
    def seek(self, offset: int, /) -> object: ...


async def _checked_in_place(content: _Rewindable) -> None:
    """The first piece of content that can be sent again, read and checked, and the
    content sought back to where it stood: read ahead and kept (:class:`ReadAhead`),
    it could not be sent again from its start (RFC 5321 §4.5.3.1.8, RFC 9422 §4.2).
    Content that is not iterable is a :class:`TypeError` here too, before ``MAIL``."""
    start = content.tell()
    try:
        if isinstance(content, AsyncIterable):
            pieces = aiter(content)
            try:
                async for first in pieces:
                    _check_piece(first)
                    break
            finally:
                await close_iterator(pieces)
        else:
            for first in cast("Iterable[object]", content):
                _check_piece(first)
                break
    finally:
        content.seek(start)


class ReadAhead:
    """An async iterator of content whose first piece was read ahead
    (:func:`first_piece_checked`), and which closes the caller's iterator it reads
    from in :meth:`aclose`: a message stopped early (refused, cancelled, its
    connection lost) must not leave an async generator suspended, whose ``finally``
    would then run at garbage collection, out of the caller's context (PEP 525;
    trio warns of it), even when not one more piece was read."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> ReadAhead:
        return self

    async def __anext__(self) -> bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        self._first = None
        await close_iterator(self._rest)


async def close_iterator(iterator: object) -> None:
    """Close an async iterator the client read content from, if it can be closed (an
    async generator can); the caller's files are the caller's to close."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def sent_size(octets: bytes | bytearray) -> int:
    """The octets ``octets`` make on the wire: each bare CR or LF counted as the CRLF
    the client sends it as (DATA's encoder, :class:`CRLFNormalizer` for BDAT), as RFC
    1870 §4 counts CRLF pairs."""
    crlf = octets.count(b"\r\n")
    return len(octets) + (octets.count(b"\n") - crlf) + (octets.count(b"\r") - crlf)


def known_size(content: Content) -> int | None:
    """The octets ``content`` makes on the wire (RFC 1870 §4: CRLF pairs counted), if
    known without reading it: bytes with each bare CR or LF counted as the CRLF it is
    sent as, or what is left of a regular file as it stands (an estimate where its
    lines end in LF alone, which RFC 1870 §4 allows a client to give); None for an
    iterator."""
    if isinstance(content, (bytes, bytearray)):
        return sent_size(content)
    if isinstance(content, memoryview):
        return known_size(content.tobytes())
    fileno = getattr(content, "fileno", None)
    tell = getattr(content, "tell", None)
    if fileno is None or tell is None:
        return None
    try:
        stat = os.fstat(fileno())
        position: int = tell()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if not S_ISREG(stat.st_mode):
        return None
    return max(stat.st_size - position, 0)


async def content_chunks(content: Content, chunk_size: int) -> AsyncGenerator[bytes]:
    """``content`` in pieces of at most ``chunk_size`` octets (none empty)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if isinstance(content, (bytes, bytearray, memoryview)):
        view = memoryview(content).cast("B")
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])
        return
    read = getattr(content, "read", None)
    if read is not None:
        while piece := read(chunk_size):
            yield bytes(piece)
        return
    if isinstance(content, AsyncIterable):
        pieces = aiter(content)
        try:
            async for piece in pieces:
                for part in _split(piece, chunk_size):
                    yield part
        finally:  # the loop left early: its source is not left suspended (ReadAhead)
            await close_iterator(pieces)
        return
    for piece in content:
        for part in _split(piece, chunk_size):
            yield part


def _check_piece(piece: object) -> None:
    if not isinstance(piece, (bytes, bytearray, memoryview)):
        raise TypeError(f"content iterables give bytes, not {type(piece).__name__}")


def _split(piece: bytes, chunk_size: int) -> Iterable[bytes]:
    _check_piece(piece)
    view = memoryview(piece).cast("B")
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


class CRLFNormalizer:
    """Makes every bare CR and bare LF a CRLF, across chunk boundaries.

    A chunk that ends in CR is held back by one octet until the next chunk
    (or the end) shows whether an LF follows. The same rule the DATA encoder
    applies, without the dot-stuffing BDAT does not have.
    """

    __slots__ = ("_pending_cr",)

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pending_cr = True
        if b"\r" not in chunk:
            return chunk.replace(b"\n", b"\r\n")
        lines = chunk.splitlines()
        joined = b"\r\n".join(lines)
        return joined + b"\r\n" if chunk.endswith((b"\n", b"\r")) else joined

    def end(self) -> bytes:
        """What is still held back: a last CR, made CRLF."""
        if self._pending_cr:
            self._pending_cr = False
            return b"\r\n"
        return b""
