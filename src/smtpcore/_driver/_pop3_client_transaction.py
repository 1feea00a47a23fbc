"""The POP3 client's commands once logged in: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT.

The TRANSACTION state of RFC 1939 §5 and the UPDATE that QUIT starts (§6).
Messages come whole, in chunks as they arrive, or several at once: with
PIPELINING (RFC 2449 §6.6) a listing asks LIST and UIDL together and
:meth:`POP3ClientTransaction.retrieve_many` keeps several RETR commands in
flight. Kept apart from the session's set-up: none of it runs before the login.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final, TypeVar

from smtpcore._driver._client_base import one_call
from smtpcore._driver._pop3_client_content import (
    MaxSize,
    POP3ClientContent,
    checked_max_size,
    listing_bound,
)
from smtpcore._driver._pop3_client_wire import ContentLeft
from smtpcore._driver._pop3_errors import POP3ProtocolError, POP3ResponseError
from smtpcore._driver._pop3_listing import MessageListing, listing_of
from smtpcore._errors import RemoteProtocolError
from smtpcore.pop3 import (
    Dele,
    Err,
    List,
    Noop,
    Quit,
    Retr,
    Rset,
    Stat,
    State,
    Top,
    Uidl,
    parse_listing,
    parse_stat,
    parse_uid_listing,
)

__all__ = ["POP3ClientTransaction"]

_WINDOW: Final = 8
"""RETR commands kept in flight by :meth:`POP3ClientTransaction.retrieve_many`: enough to keep
the server busy while the client reads; the machine's pipelining check costs
grow with it."""

_R = TypeVar("_R")


def _parse(parser: Callable[[Any], _R], text: bytes | str) -> _R:
    """A listing parsed, its errors turned into the client's."""
    try:
        return parser(text)
    except RemoteProtocolError as exc:
        raise POP3ProtocolError(str(exc)) from exc


class POP3ClientTransaction(POP3ClientContent):
    """The commands of a logged-in session, for :class:`~smtpcore._driver.BasePOP3Client`."""

    @one_call
    async def quit(self) -> None:
        """Say QUIT and close. In TRANSACTION this commits the deletions (RFC 1939 §6):
        :class:`POP3ResponseError` if the server could not remove them all."""
        conn = self._conn
        try:
            open_states = (State.AUTHORIZATION, State.USER, State.TRANSACTION)
            if conn is not None and self._transport is not None and conn.state in open_states:
                await self._drain()
                await self._command(Quit())
        finally:
            await self._abort()

    @one_call
    async def stat(self) -> tuple[int, int]:
        """``(count, size)`` of the maildrop, messages marked deleted left out."""
        response = await self._command(Stat())
        return _parse(parse_stat, response.text)

    @one_call
    async def list(self, *, allow_repeated_uids: bool = False) -> list[MessageListing]:
        """Every message not marked deleted, with its size and (if offered) unique-id.

        With PIPELINING, LIST and UIDL go out together. A unique-id given to two
        messages breaks RFC 1939 §7 and is a :class:`POP3ProtocolError`, unless
        ``allow_repeated_uids``: each message it was given to is then listed with
        ``uid=None`` and the id in ``repeated_uid``, the others as usual, and the
        session goes on. A message listed twice is refused either way.
        """
        conn = self.connection
        with_uids = conn.capabilities is None or "UIDL" in conn.capabilities
        if with_uids and conn.pipelining:
            await self._drain()
            await self._write(await self._send(List(), Uidl()))
            self._owed.append(listing_bound())  # UIDL's answer, behind LIST's
            response = await self._status(self.timeouts.response)
            if isinstance(response, Err):
                await self._drain()  # UIDL's answer must not pass for the next one's
                raise POP3ResponseError("LIST", response)
            sizes = _parse(parse_listing, await self._collect(listing_bound()))
            self._owed.popleft()
            uids = await self._uids(allow_repeated_uids)
        else:
            await self._command(List())
            sizes = _parse(parse_listing, await self._collect())
            uids = None
            if with_uids:
                await self._drain()
                await self._write(await self._send(Uidl()))
                uids = await self._uids(allow_repeated_uids)
        self._sizes = dict(sizes)
        return listing_of(sizes, uids or {})

    async def _uids(self, allow_repeated_uids: bool) -> dict[int, str] | None:
        response = await self._status(self.timeouts.response)
        if isinstance(response, Err):
            return None
        parser = functools.partial(parse_uid_listing, allow_repeated_uids=allow_repeated_uids)
        return dict(_parse(parser, await self._collect(listing_bound())))

    def retrieve_chunks(
        self, number: int, *, max_size: MaxSize = "listed"
    ) -> AsyncIterator[bytes]:
        """Message ``number`` in chunks as they arrive, dot-stuffing removed: the way
        to fetch one too large to hold whole.

        ``max_size`` bounds it in octets: by default, the size :meth:`list` gave and
        10% and 64 KiB more (no bound if it was not asked); ``None``, no bound. Past
        it, :class:`POP3ProtocolError`, and the connection is closed rather than read
        on.
        Leaving the loop early is allowed: the rest is read and dropped before
        the next command, within the same bound (64 MiB where the default gives
        none) and one ``response`` timeout in all.
        """
        content = self._bound(number, max_size, held=False)
        return self._held(self._retrieve_chunks(number, content))

    async def _retrieve_chunks(self, number: int, content: ContentLeft) -> AsyncIterator[bytes]:
        await self._command(Retr(number), content=content)
        async for chunk in self._stream():
            yield chunk

    @one_call
    async def retrieve(self, number: int, *, max_size: MaxSize = "listed") -> bytes:
        """Message ``number`` whole.

        ``max_size`` bounds it in octets, so that a server cannot fill memory with a
        message it said was small: by default, the size :meth:`list` gave and 10% and
        64 KiB more (for a server that counts line ends as LF alone; RFC 1939 §5 asks
        for the exact size), or 64 MiB if :meth:`list` was not asked; ``None``, no
        bound. Past it, :class:`POP3ProtocolError`, and the connection is closed
        rather than read on.
        """
        await self._command(Retr(number), content=self._bound(number, max_size, held=True))
        return await self._collect()

    def retrieve_many(
        self, numbers: Iterable[int], *, max_size: MaxSize = "listed"
    ) -> AsyncIterator[tuple[int, bytes]]:
        """``(number, message)`` for each of ``numbers``, in order.

        With PIPELINING up to 8 RETR commands are in flight at once, so a
        mailbox of small messages costs one round trip, not one per message.
        A message the server refuses raises :class:`POP3ResponseError`; one
        past ``max_size``, :class:`POP3ProtocolError` (see :meth:`retrieve`).
        Leaving the loop early is allowed: the answers still owed are read and
        dropped before the next command, each within its bound and one
        ``response`` timeout of its own in all.
        """
        return self._held(self._retrieve_many(numbers, checked_max_size(max_size)))

    async def _retrieve_many(
        self, numbers: Iterable[int], max_size: MaxSize
    ) -> AsyncIterator[tuple[int, bytes]]:
        conn = self.connection
        await self._drain()
        pending = iter(numbers)
        window = _WINDOW if conn.pipelining else 1
        in_flight: deque[int] = deque()
        while True:
            batch: list[bytes] = []
            bounds: list[ContentLeft] = []
            # Refill when half the window is answered: fewer, fuller writes.
            while len(in_flight) < window and (batch or len(in_flight) <= window // 2):
                number = next(pending, None)
                if number is None:
                    break
                batch.append(await self._send(Retr(number)))
                bounds.append(self._bound(number, max_size, held=True))
                in_flight.append(number)
            if batch:
                await self._write(b"".join(batch))
                self._owed.extend(bounds)
            if not in_flight:
                return
            number = in_flight.popleft()
            content = self._owed.popleft()
            response = await self._status(self.timeouts.response)
            if isinstance(response, Err):
                await self._drain()  # the answers to the RETRs behind it
                raise POP3ResponseError(f"RETR {number}", response)
            yield number, await self._collect(content)

    @one_call
    async def top(self, number: int, lines: int, *, max_size: MaxSize = "listed") -> bytes:
        """The header of message ``number`` and its first ``lines`` body lines, within
        ``max_size`` octets as :meth:`retrieve` says (the whole message's bound: no
        more than the message can come)."""
        content = self._bound(number, max_size, held=True, top=True)
        await self._command(Top(number, lines), content=content)
        return await self._collect()

    @one_call
    async def uid(self, number: int) -> str:
        """The unique-id of message ``number``."""
        response = await self._command(Uidl(number))
        listing = _parse(parse_uid_listing, response.text)
        if len(listing) != 1 or listing[0][0] != number:
            raise POP3ProtocolError(f"not the unique-id of message {number}: {response.text!r}")
        return listing[0][1]

    @one_call
    async def delete(self, number: int) -> None:
        """Mark message ``number`` deleted; it goes when :meth:`quit` ends the session."""
        await self._command(Dele(number))

    @one_call
    async def reset(self) -> None:
        """Unmark every message marked deleted (RSET)."""
        await self._command(Rset())

    @one_call
    async def noop(self) -> None:
        """NOOP: keeps the session from the server's autologout timer."""
        await self._command(Noop())
