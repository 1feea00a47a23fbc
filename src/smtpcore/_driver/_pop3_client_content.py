"""The POP3 client's answers: the status line of a command, and its content, within bounds.

:meth:`POP3ClientContent._ask` sends a command once what the last ones left
unread is read and dropped (:meth:`POP3ClientContent._drain`: the rest of a
multi-line answer a loop left early, the answers owed to pipelined commands),
and reads its status line; the content that follows is streamed
(:meth:`POP3ClientContent._stream`) within a bound in octets of its own
(:class:`ContentLeft`): a listing's, CAPA's, or a message's as the caller's
``max_size`` says. Kept apart from the commands that use it: the bounds are
what keeps a hostile server from growing memory or holding the client without
end, and they are read in one place.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Final, Literal

from smtpcore._driver._pop3_client_wire import ContentLeft, POP3ClientWire
from smtpcore._driver._pop3_errors import POP3Error, POP3ProtocolError, POP3ResponseError
from smtpcore._errors import LocalProtocolError
from smtpcore.pop3 import (
    Capa,
    Command,
    Continue,
    EndOfResponse,
    Err,
    List,
    Ok,
    ResponseData,
    Uidl,
)

__all__ = [
    "MAX_CAPABILITIES",
    "MAX_LISTING",
    "MAX_MESSAGE",
    "MaxSize",
    "POP3ClientContent",
    "checked_max_size",
    "listing_bound",
    "size_bound",
]

MAX_LISTING: Final = 16 * 1024 * 1024
"""Octets a LIST or UIDL listing may have (some 200,000 messages with the longest
unique-ids, a million with short ones): each line becomes Python objects many times
its size, so a server that sent listings without end would grow memory without end."""


MAX_CAPABILITIES: Final = 64 * 1024
"""Octets a CAPA listing may have: a few hundred is usual (RFC 2449 §5), and the machine
looks at the first 16 KiB alone; a server that sent one without end would hold the
client in ``connect()`` for ever."""


MAX_MESSAGE: Final = 64 * 1024 * 1024
"""Octets of a message whose size no LIST gave that :meth:`~BasePOP3Client.retrieve`,
:meth:`~BasePOP3Client.top` and :meth:`~BasePOP3Client.retrieve_many` keep by default
(they hold it whole), and that the client reads and drops of one left unread where
the default bounds it no other way (a loop over :meth:`~BasePOP3Client.retrieve_chunks`
left early); not where the caller chose no bound (``max_size=None``)."""


MaxSize = int | None | Literal["listed"]
"""A fetch's ``max_size``: octets, ``None`` for no bound, or ``"listed"``: by the size
LIST gave (:func:`size_bound`)."""


def size_bound(listed: int) -> int:
    """The most octets taken by default of a message LIST gave as ``listed``: 10% and
    64 KiB more, for a server that counts its line ends as LF alone (RFC 1939 §5 asks
    for the exact size). A message that runs past it is refused: a hostile server
    cannot fill memory or a disk with a message it said was small."""
    return listed + listed // 10 + 64 * 1024


def checked_max_size(max_size: MaxSize) -> MaxSize:
    """``max_size`` if it is one (``ValueError`` otherwise), before any command goes out."""
    if max_size is None or max_size == "listed":
        return max_size
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f'max_size must be octets, None or "listed", not {max_size!r}')
    return max_size


def listing_bound() -> ContentLeft:
    """The bound of a LIST or UIDL listing's content."""
    return ContentLeft(MAX_LISTING, f"a listing longer than {MAX_LISTING} octets")


def content_bound_of(command: Command) -> ContentLeft:
    """The bound of the content a ``+OK`` to ``command`` opens, unless its caller sets
    one: CAPA's, or a listing's (RETR's and TOP's are the caller's: see ``_bound``)."""
    if isinstance(command, Capa):
        return ContentLeft(
            MAX_CAPABILITIES, f"a CAPA listing longer than {MAX_CAPABILITIES} octets"
        )
    if isinstance(command, (List, Uidl)):
        return listing_bound()
    return ContentLeft(None, "")


class POP3ClientContent(POP3ClientWire):
    """Commands asked and the content of their answers read, for the layers above it."""

    _owed: deque[ContentLeft]
    _sizes: dict[int, int]

    async def _ask(
        self, command: Command, *, content: ContentLeft | None = None
    ) -> Ok | Err | Continue:
        """Send ``command`` and read its status line; ``content``: the bound of the
        content its ``+OK`` opens, where :func:`content_bound_of` does not know it."""
        await self._drain()
        try:
            data = await self._send(command)
        except LocalProtocolError as exc:
            raise POP3Error(f"{command.keyword} not possible now: {exc}") from exc
        await self._write(data)
        response = await self._status(self.timeouts.response)
        if isinstance(response, Ok) and command.multiline:
            self._unread = content if content is not None else content_bound_of(command)
        return response

    async def _command(
        self,
        command: Command,
        *,
        error: type[POP3ResponseError] = POP3ResponseError,
        content: ContentLeft | None = None,
    ) -> Ok:
        """Send ``command`` and read its status line; ``-ERR`` raises ``error``."""
        response = await self._ask(command, content=content)
        if isinstance(response, Err):
            raise error(command.keyword, response)
        if not isinstance(response, Ok):
            raise POP3ProtocolError(f"unexpected {response!r} to {command.keyword}")
        return response

    async def _collect(self, content: ContentLeft | None = None) -> bytes:
        """The whole multi-line response under way (whose ``content`` is given when no
        :meth:`_ask` read its status line), within its bound (see :meth:`_stream`)."""
        if content is not None:
            self._unread = content
        chunks = [chunk async for chunk in self._stream()]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _stream(self, until: float | None = None) -> AsyncIterator[bytes]:
        """The content of the multi-line response under way, to end by ``until`` (a
        :func:`time.monotonic` time) if given. Past its bound in octets,
        :class:`POP3ProtocolError`: the rest is not read (it may never end), and the
        session is lost with it, so that a server cannot grow memory or hold the
        client without end."""
        content = self._unread
        assert content is not None
        while True:
            event = await self._event(self.timeouts.response, until=until)
            if isinstance(event, ResponseData):
                if content.left is not None:
                    content.left -= len(event.data)
                    if content.left < 0:
                        await self._abort()
                        raise POP3ProtocolError(f"{content.overrun}: the connection is closed")
                yield event.data
            elif isinstance(event, EndOfResponse):
                self._unread = None
                return
            else:
                raise POP3ProtocolError(f"unexpected {event!r} in a multi-line response")

    async def _drain(self) -> None:
        """Read and drop what the caller left unread, before the next command: the
        rest of a multi-line response (a loop over :meth:`retrieve_chunks` left
        early, or a CAPA listing, which only the machine reads), then the answers
        still owed to pipelined multi-line commands (one over :meth:`retrieve_many`).
        Each would be paired with a later command.

        Each answer must end within one ``response`` timeout of its own, from when
        its turn comes, not one per read: a server that sends without end, a line at
        a time each in time, would otherwise hold ``connect()`` or ``quit()`` for
        ever, while several large answers owed over a slow link each take their
        time. Each keeps its bound in octets (:data:`MAX_MESSAGE` where it has none,
        unless the caller chose none). Past either, the connection is closed
        (:class:`POP3Timeout`, :class:`POP3ProtocolError`): the session cannot go on
        without the rest."""
        timeout = self.timeouts.response
        while self._unread is not None or self._owed:
            until = None if timeout is None else time.monotonic() + timeout
            if self._unread is None:
                content = self._owed.popleft()
                if not isinstance(await self._status(timeout, until=until), Ok):
                    continue
                self._unread = content
            content = self._unread
            if content.left is None and not content.unbounded:
                content.left = MAX_MESSAGE
                content.overrun = f"a message left unread runs on past {MAX_MESSAGE} octets"
            async for _ in self._stream(until):
                pass

    def _bound(
        self, number: int, max_size: MaxSize, *, held: bool, top: bool = False
    ) -> ContentLeft:
        """The bound of message ``number``'s content (``top``: the start TOP gives) as
        ``max_size`` says; ``held``: a message kept whole, which :data:`MAX_MESSAGE`
        bounds by default where no LIST gave its size."""
        what = f"the top of message {number}" if top else f"message {number}"
        max_size = checked_max_size(max_size)
        if isinstance(max_size, str):  # "listed"
            listed = self._sizes.get(number)
            if listed is not None:
                bound = size_bound(listed)
                return ContentLeft(
                    bound, f"{what} runs past {bound} octets, where LIST said {listed}"
                )
            if not held:
                return ContentLeft(None, "")
            return ContentLeft(
                MAX_MESSAGE, f"{what} runs past {MAX_MESSAGE} octets (no LIST gave its size)"
            )
        if max_size is None:
            return ContentLeft(None, "", unbounded=True)
        return ContentLeft(max_size, f"{what} runs past max_size, {max_size} octets")
