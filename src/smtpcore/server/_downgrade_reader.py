"""The second walk of the 7-bit conversion: a file-like reader that writes the 7-bit
form of a queued message as it is read, from the plan the first walk made; rewritten
``Content-Transfer-Encoding`` fields, quoted-printable leaves (RFC 2045 §6.7)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, Final

from smtpcore.server._downgrade_parser import _events
from smtpcore.server._downgrade_parts import _Event
from smtpcore.server._downgrade_plan import SevenBitPlan
from smtpcore.server._downgrade_rewrite import _as_is, _rewritten

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["SevenBitReader", "_seven_bit_pieces"]


_BATCH: Final = 65536
"""The octets :class:`SevenBitReader` writes at a time, at least (the client's chunk)."""


def _seven_bit_pieces(events: Iterator[_Event], plan: SevenBitPlan) -> Iterator[bytes]:
    """The message ``events`` classify, as
    :func:`~smtpcore.server._downgrade_plan.plan_seven_bit` planned it, in batches of at
    least :data:`_BATCH` octets (but the last): a reader's buffer is filled from a few
    joins, not a step per line. The plan is asked once per run of a part's events."""
    part, rewritten = None, False
    batch: list[bytes] = []
    batched = 0
    for event in events:
        if event.part is not part:
            part, rewritten = event.part, plan.is_rewritten(event.part)
        written = _rewritten(event) if rewritten else _as_is(event)
        batch.append(written)
        batched += len(written)
        if batched >= _BATCH:
            yield b"".join(batch)
            batch.clear()
            batched = 0
    yield b"".join(batch)


class SevenBitReader(io.RawIOBase):
    """The 7-bit form of a message, read as a file, written as it is read.

    ``open_source`` opens the message (the queue file) for each reading. Seekable, as
    the SMTP client needs to send a message again in a new transaction (RFC 5321
    §4.5.3.1.8): a seek starts the reading over and skips to the offset.

    Its reads may run in a worker thread while the event loop closes it (a cancelled
    send): opening the source and closing hold one lock, so that a read that starts
    after the close raises rather than reopen the queue file for no one to close."""

    def __init__(self, open_source: Callable[[], BinaryIO], plan: SevenBitPlan) -> None:
        super().__init__()
        self._source_lock = threading.Lock()
        self._open_source = open_source
        self._plan = plan
        self._source: BinaryIO | None = None
        self._pieces: Iterator[bytes] = iter(())
        self._pending = b""
        self._position = 0

    @property
    def quoted_parts(self) -> int:
        """How many parts go quoted-printable (for the log)."""
        return self._plan.quoted_parts

    @property
    def size(self) -> int:
        """The octets of the 7-bit form, known before it is read (for ``SIZE=``)."""
        return self._plan.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` whole, short only at the end: the client sends each read as
        a BDAT chunk or a write, so a read of one encoded line each made a chunk, and a
        wait for its reply, of every line. Memory holds the buffer and one line's
        encoding."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                self._pending = next(self._started_pieces(), b"")
                if not self._pending:
                    break
            taken = self._pending[: len(view) - filled]
            self._pending = self._pending[len(taken) :]
            view[filled : filled + len(taken)] = taken
            filled += len(taken)
        self._position += filled
        return filled

    def _started_pieces(self) -> Iterator[bytes]:
        if self._source is None:
            with self._source_lock:
                if self.closed:
                    raise ValueError("I/O operation on closed file")
                self._source = self._open_source()
            self._pieces = (
                piece for piece in _seven_bit_pieces(_events(self._source), self._plan) if piece
            )
        return self._pieces

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("the 7-bit form's size is not known before it is read")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        if offset < self._position:
            self._restart()
        while self._position < offset and self.read(offset - self._position):
            pass
        return self._position

    def _restart(self) -> None:
        self._close_source()
        self._pending, self._position = b"", 0

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        self._pieces = iter(())

    def close(self) -> None:
        with self._source_lock:
            super().close()
            self._close_source()
