"""The answer to ``TOP msg n`` (RFC 1939 §7): a message's header and ``n`` body lines.

A server machine sends whatever ``ResponseData`` it is given; where the cut
falls is the maildrop's business, and the same for every server, so it lives
here once. No I/O: the chunks come from any iterator, plain or async.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

from smtpcore._errors import wrong_type
from smtpcore.pop3._arguments import check_iterable

__all__ = ["top_chunks", "top_chunks_async"]


class _Top:
    """Cuts content after the header and ``lines`` body lines, fed content whose line
    ends are LF alone (the caller folds CRLF and CR)."""

    __slots__ = ("_body_lines", "_last", "_lines")

    def __init__(self, lines: int) -> None:
        self._lines = lines
        self._body_lines: int | None = None
        self._last = b"\n"

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The part of ``data`` to send, and whether the cut is reached."""
        start = 0
        if self._body_lines is None:
            index = (self._last + data).find(b"\n\n")
            if index < 0:
                self._last = data[-1:] or self._last
                return data, False
            start = index + 1
            self._body_lines = 0
        position = start
        while self._body_lines < self._lines:
            newline = data.find(b"\n", position)
            if newline < 0:
                self._last = data[-1:] or self._last
                return data, False
            self._body_lines += 1
            position = newline + 1
        return data[:position], True


class _TopReader:
    """Cuts raw message chunks (any line ends) at the end of ``TOP``'s body lines.

    A negative count is a ValueError: RFC 1939 §7 requires n non-negative, which
    the ``Top`` event checks too; taken as zero it would send a header no command
    asked for."""

    def __init__(self, lines: int) -> None:
        if not isinstance(lines, int):
            raise wrong_type("TOP line count", lines, "an int")
        if lines < 0:
            raise ValueError(f"TOP line count must be non-negative (RFC 1939 §7): {lines}")
        self._cutter = _Top(lines)
        self._pending_cr = False

    def feed(self, raw: bytes) -> tuple[bytes, bool]:
        """The part of ``raw`` to send, line ends as LF, and whether the cut is reached."""
        if not isinstance(raw, bytes | bytearray):
            raise wrong_type("a top_chunks() chunk", raw, "bytes")
        chunk = b"\r" + raw if self._pending_cr else raw
        self._pending_cr = chunk.endswith(b"\r")  # maybe half of a CRLF
        if self._pending_cr:
            chunk = chunk[:-1]
        return self._cutter.feed(chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))

    def finish(self) -> bytes:
        """What is left once the message ended before the cut (a last bare CR)."""
        return self._cutter.feed(b"\n")[0] if self._pending_cr else b""


def top_chunks(chunks: Iterable[bytes], lines: int) -> Iterator[bytes]:
    """The content of a ``TOP`` answer: the header of the message whose chunks are
    ``chunks``, the blank line, and its first ``lines`` body lines (RFC 1939 §7).

    Send each chunk as ``ResponseData``. A message with no blank line is all
    header, so it comes out whole; a count past the body's lines gives the
    whole body. Chunks may split lines (and CRLFs) anywhere; line ends come out
    as LF, which the server machine sends as CRLF. A chunk comes out for each
    chunk in, empty or not, and reading stops at the cut. A negative ``lines``
    raises ValueError here, before any chunk is read.
    """
    check_iterable(chunks, "top_chunks() chunks", "an iterable of bytes chunks")
    return _cut(chunks, _TopReader(lines))


def _cut(chunks: Iterable[bytes], reader: _TopReader) -> Iterator[bytes]:
    for raw in chunks:
        data, done = reader.feed(raw)
        yield data
        if done:
            return
    if last := reader.finish():
        yield last


def top_chunks_async(chunks: AsyncIterable[bytes], lines: int) -> AsyncIterator[bytes]:
    """:func:`top_chunks` of a message read from an async iterator."""
    check_iterable(
        chunks,
        "top_chunks_async() chunks",
        "an async iterable of bytes chunks",
        kind=AsyncIterable,
    )
    return _cut_async(chunks, _TopReader(lines))


async def _cut_async(chunks: AsyncIterable[bytes], reader: _TopReader) -> AsyncIterator[bytes]:
    async for raw in chunks:
        data, done = reader.feed(raw)
        yield data
        if done:
            return
    if last := reader.finish():
        yield last
