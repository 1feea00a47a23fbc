"""A queued message's content on disk: the spool a message being received is written
to (:class:`Spool`), and the content of a queued one, read in bounded pieces
(:class:`QueuedContent`, :data:`MAX_HEADER`).

Apart from the queue's envelopes and their commit: this is the message's octets, which
the server writes once and the relay reads. Both classes are still imported from
:mod:`smtpcore.server.queue`; a test that makes the spool's file creation fail patches
``create_new`` here, where :class:`Spool` reads it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from smtpcore._driver._header_octets import MAX_HEADER_SECTION
from smtpcore.server.safefiles import create_new, open_regular

__all__ = ["MAX_HEADER", "QueuedContent", "Spool", "_READ_SIZE"]

_READ_SIZE: Final = 64 * 1024
MAX_HEADER: Final = MAX_HEADER_SECTION
"""How much of a queued message's header the relay reads at most (for the SMTPUTF8 check,
``TLS-Required``, and the reports that return the header): the bound the clients' look
at a message's header section has too."""


class Spool:
    """A message being received, written as it arrives into the queue's ``tmp/``.

    It gets its queue id at once, so that the Received header and the logs
    can name it; it becomes a queue entry only through
    :meth:`~smtpcore.server.queue.Queue.prepare`.
    """

    def __init__(self, queue_id: str, path: Path) -> None:
        self.id = queue_id
        self.path = path
        fd = create_new(path)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """Flush and fsync; the file can then be read and renamed."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def open(self) -> BinaryIO:
        """The content, for reading (after :meth:`finish`); opened as every queue file is
        (see :func:`~smtpcore.server.safefiles.open_regular`), though it is this
        process's own, made with ``O_EXCL`` in ``tmp/``: one opener, no case to argue."""
        return os.fdopen(open_regular(self.path), "rb")

    def discard(self) -> None:
        """Close and remove the file. Closing flushes what is buffered, which fails on
        a full disk: the file goes all the same (the descriptor is closed either way)."""
        try:
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class QueuedContent:
    """A queued message's content, on disk: read in pieces when it is needed, never whole.

    The relay sends it from :meth:`open` in the client's chunks; what must be looked at
    before it is sent (the header) or returned in a report is read with a bound. Every
    method blocks on the disk.
    """

    path: Path

    def open(self) -> BinaryIO:
        """The content for reading; a FIFO or a link in its place is a ``ValueError``
        (:class:`~smtpcore.server.safefiles.NotRegularFile`), never a read that blocks."""
        return os.fdopen(open_regular(self.path), "rb")

    @property
    def size(self) -> int:
        """The content's size. ``lstat``: a link in its place is not followed (its own
        size is given, and :meth:`open` refuses it); no stat blocks on a FIFO."""
        return os.lstat(self.path).st_size

    def header(self, limit: int = MAX_HEADER) -> bytes:
        """The header section and the empty line after it (RFC 5322 §2.1; the empty line
        alone when the message starts with it: its body is no header), or the first
        ``limit`` octets of a header that long (the whole message, if it has no body)."""
        found = bytearray()
        with self.open() as file:
            while len(found) < limit:
                piece = file.read(min(_READ_SIZE, limit - len(found)))
                if not piece:
                    break
                start = max(len(found) - 3, 0)
                found += piece
                if found.startswith(b"\r\n"):  # no field: the empty line comes first
                    return b"\r\n"
                end = found.find(b"\r\n\r\n", start)
                if end >= 0:
                    return bytes(found[: end + 4])
        return bytes(found)

    def returned_header(self, limit: int = MAX_HEADER) -> bytes:
        """The header as a report returns it (RFC 3462 §2): :meth:`header`, but one cut
        at ``limit`` comes back to its last whole line (none if no line ends within
        it). A cut at the limit itself could fall between a CR and its LF, or inside a
        UTF-8 character, and the report would carry a bare CR (RFC 5322 §2.3) or text
        that is not UTF-8 (RFC 6532 §3.2). What the relay examines (8-bit octets, the
        ``TLS-Required`` field) stays :meth:`header`, every octet within the limit."""
        header = self.header(limit)
        if len(header) < limit or header.endswith(b"\r\n"):
            return header
        return header[: header.rfind(b"\r\n") + 2] if b"\r\n" in header else b""

    def returned(self, limit: int) -> bytes | None:
        """The whole message when it is at most ``limit`` octets, else None (a report
        then returns the header alone)."""
        with self.open() as file:
            data = file.read(limit + 1)
        return data if len(data) <= limit else None

    def is_ascii(self) -> bool:
        """Whether every octet is below 128 (else it needs 8BITMIME, RFC 6152), read in
        pieces."""
        with self.open() as file:
            while piece := file.read(_READ_SIZE):
                if not piece.isascii():
                    return False
        return True
