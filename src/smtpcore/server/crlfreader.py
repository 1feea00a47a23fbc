"""A queued message read with every bare CR and bare LF made CRLF.

The client makes line endings CRLF as it sends, by DATA or BDAT, unless the message
goes as ``BODY=BINARYMIME`` (RFC 3030 §3: octets as they are). The relay sends 8-bit
content that was not queued as binary so to an exchanger that takes 8-bit octets only
so (BINARYMIME and CHUNKING, no 8BITMIME): a queue filled under a lenient framing
policy may hold bare CR or LF, which every other hop gets as CRLF, and this one too,
from :class:`CRLFReader`, with the client's own :class:`CRLFNormalizer`.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, BinaryIO

from smtpcore._driver._content import CRLFNormalizer

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["CRLFReader"]


class CRLFReader(io.RawIOBase):
    """``source`` from where it stands, each bare CR or LF read as CRLF; memory holds a
    read's worth. Seekable back to the start only, which is what the SMTP client asks
    to send the message again in a new transaction (RFC 5321 §4.5.3.1.8). Closing it
    closes ``source``."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._start = source.tell()
        self._normalizer = CRLFNormalizer()
        self._pending = b""
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            piece = self._source.read(max(len(view), 1))
            if not piece:
                self._pending = self._normalizer.end()  # a CR held back: its CRLF
                break
            self._pending = self._normalizer.feed(piece)  # empty for a lone CR held
        taken = self._pending[: len(view)]
        self._pending = self._pending[len(taken) :]
        view[: len(taken)] = taken
        self._position += len(taken)
        return len(taken)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("the size with CRLF line ends is not known")
        if offset == self._position:
            return offset
        if offset != 0:
            raise io.UnsupportedOperation("only a seek back to the start reads it again")
        self._source.seek(self._start)
        self._normalizer = CRLFNormalizer()
        self._pending, self._position = b"", 0
        return 0

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            super().close()
