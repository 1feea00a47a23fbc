"""The chunks of a Maildir message that must be found again before it is read.

A message another reader renamed since the listing (``new/X`` moved to ``cur/X:2,S``)
is found by its unique name: a listing of ``new/`` and ``cur/``, and a look at each
name of it. That is blocking I/O as long as the folders are big and the disk slow, and
the server must not do it on its event loop, which every other session shares; yet
:meth:`~smtpcore.maildrop.Maildir.open` is called, and its chunks read, on that loop.
:class:`FoundAgain` is both iterators: read asynchronously (as the server reads an
async iterator, under the ``store`` timeout) it finds the message in a worker thread;
read plainly (a program of its own, on no event loop) it finds it where it runs,
through ``now``. Either way the search is the maildrop's one piece of work in flight
(see :class:`~smtpcore._maildrop_flight._OneAtATime`). Only
the finding is the thread's: the file is then opened where it is read, so that a wait
given up (the ``store`` timeout) leaves no descriptor open in a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator

__all__ = ["FoundAgain"]


class FoundAgain(Iterator[bytes], AsyncIterator[bytes]):
    """A message's chunks, once ``find()`` has found its file again (it raises what the
    reader sees where it is not found): ``read()`` then opens it and gives them.
    ``in_thread`` runs ``find`` in a worker thread for an asynchronous reader, ``now`` on
    the reader's thread for a plain one, each under the maildrop's rule. Closed
    before it is read, it gives nothing, and neither finds nor opens the file."""

    def __init__(
        self,
        *,
        find: Callable[[], None],
        read: Callable[[], Generator[bytes, None, None]],
        in_thread: Callable[[Callable[[], None]], Awaitable[None]],
        now: Callable[[Callable[[], None]], None],
    ) -> None:
        self._find = find
        self._read = read
        self._in_thread = in_thread
        self._now = now
        self._chunks: Generator[bytes, None, None] | None = None
        self._closed = False

    def __next__(self) -> bytes:
        if self._chunks is None:
            if self._closed:
                raise StopIteration
            self._now(self._find)
            self._chunks = self._read()
        return next(self._chunks)

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            if self._closed:
                raise StopAsyncIteration
            await self._in_thread(self._find)
            if self._closed:  # closed while it was sought
                raise StopAsyncIteration
            self._chunks = self._read()
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Close the file, if it was found and opened; read after this, it gives
        nothing, as a closed generator does."""
        self._closed = True
        if self._chunks is not None:
            self._chunks.close()

    async def aclose(self) -> None:
        """:meth:`close`, for an asynchronous reader."""
        self.close()
