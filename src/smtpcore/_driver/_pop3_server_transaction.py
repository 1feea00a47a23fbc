"""The TRANSACTION state of a POP3 server session (RFC 1939 §5): STAT, LIST, UIDL,
RETR, TOP, DELE, NOOP and RSET over the maildrop the login opened.

:class:`Transaction` answers from the listing read at login, and streams a
message from the maildrop's iterator a write's worth at a time, never whole:
the commands of nearly every exchange of a session, and the one path whose
cost grows with the mail, kept apart from logging in and from UPDATE.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from types import GeneratorType
from typing import Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._logtext import loggable
from smtpcore._driver._pop3_server_replies import END_OF_RESPONSE, WRITE_SIZE
from smtpcore._driver._pop3_server_store import StoreCalls
from smtpcore._plural import messages
from smtpcore.maildrop import MaildropError, MessageInfo, pop3_size
from smtpcore.pop3 import (
    HEADER_LOOKAHEAD,
    Dele,
    Err,
    Event,
    HeaderScan,
    List,
    Noop,
    Ok,
    ResponseData,
    Retr,
    Rset,
    Stat,
    Top,
    Uidl,
    format_lines,
    presented,
    top_chunks,
    top_chunks_async,
)

logger = logging.getLogger("smtpcore.pop3.server")

_EMPTY_CHUNKS: Final = 65536
"""Empty chunks in a row that a message's iterator may give. An iterator that
gives nothing else and never ends (``iter(partial(file.read, n), None)`` at the
end of the file) would keep the session reading without a pause for the event
loop: past this many it has failed."""

TRANSACTION_COMMANDS: Final = (Retr, Top, Stat, List, Uidl, Dele, Noop, Rset)
"""The commands :meth:`Transaction._transaction` answers, which the session asks of
an event first."""


class Transaction(StoreCalls):
    """The commands of the TRANSACTION state, over the open maildrop."""

    __slots__ = ()

    def _totals(self) -> tuple[int, int]:
        listing = self.listing
        numbers = self.numbers
        return len(numbers), sum(listing[n - 1].size for n in numbers)

    async def _transaction(self, event: Event) -> None:
        numbers = self.numbers
        conn = self.conn
        assert conn is not None
        if isinstance(event, (Retr, Top)):
            problem = numbers.check(event.message)
            if problem is not None:
                self._answer(problem)
            else:
                await self._send_message(event)
        elif isinstance(event, Stat):
            count, size = self._totals()
            self._answer(Ok(f"{count} {size}"))
        elif isinstance(event, (List, Uidl)):
            await self._listing(event)
        elif isinstance(event, Dele):
            problem = numbers.delete(event.message)
            self._answer(problem or Ok(f"Message {event.message} deleted"))
        elif isinstance(event, Noop):
            self._answer(Ok())
        elif isinstance(event, Rset):
            numbers.reset()
            count, size = self._totals()
            self._answer(Ok(f"Maildrop has {messages(count)} ({size} octets)"))
        else:  # pragma: no cover - the machine gives no other command
            self._answer(Err("Command not implemented"))

    async def _listing(self, event: List | Uidl) -> None:
        conn = self.conn
        assert conn is not None
        listing = self.listing

        def line(number: int) -> str:
            info = listing[number - 1]
            return f"{number} {info.size}" if isinstance(event, List) else f"{number} {info.uid}"

        if event.message is not None:
            problem = self.numbers.check(event.message)
            self._answer(problem or Ok(line(event.message)))
            return
        count, size = self._totals()
        self._answer(Ok(f"{messages(count)} ({size} octets)"))
        batch: list[str] = []
        for number in self.numbers:
            batch.append(line(number))
            if len(batch) == 4096:
                await self._emit(conn.send(ResponseData(format_lines(batch))))
                batch.clear()
        if batch:
            await self._emit(conn.send(ResponseData(format_lines(batch))))
        self._out.append(conn.send(END_OF_RESPONSE))

    async def _send_message(self, event: Retr | Top) -> None:
        """Stream one message. The maildrop's ``open`` is called and the first chunk
        read before ``+OK``, so that a message that cannot be read (whatever ``open``
        raises, a first chunk that is not bytes) is answered with ``-ERR``; after
        that a failure can only close the connection. Chunks are read a write's
        worth at a time: from an async iterator under one ``store`` deadline
        (entered only when the reading has to wait), from a plain one as they come
        (a read that blocks could not be interrupted anyway). Each turn of the loop
        reads, or writes out the answers due, which gives the next read room: a
        read counts them, and one that has no room reads nothing."""
        conn, maildrop = self.conn, self.maildrop
        assert conn is not None and maildrop is not None
        number = event.message
        raw: AsyncIterator[bytes] | Iterator[bytes] | None = None
        chunks: AsyncIterator[bytes] | Iterator[bytes] | None = None
        size = self.listing[number - 1].size
        ok = Ok(f"{size} octets" if isinstance(event, Retr) else "Top of message")
        answered = done = False
        # None where every message goes as stored; a server without UTF8 (the
        # machine's offers_utf8 is options.utf8) does not even ask, a call a RETR.
        scan = conn.header_scan() if self.options.utf8 else None
        held: list[bytes] = []  # what the scan has read before the +OK
        try:
            while not done:
                try:
                    if chunks is None:
                        raw = chunks = maildrop.open(number)
                        if isinstance(event, Top):
                            if isinstance(raw, AsyncIterator):
                                chunks = top_chunks_async(raw, event.lines)
                            else:
                                chunks = top_chunks(raw, event.lines)
                    # A generator is no async iterator: asked first, it spares the
                    # common case the ABC's check, a Python call (here and at close).
                    if not isinstance(chunks, GeneratorType) and isinstance(chunks, AsyncIterator):
                        batch, done = await self.transport.within(
                            self.options.timeouts.store, self._read_chunks(chunks)
                        )
                    else:
                        batch, done = self._read_chunks_now(chunks)
                except BaseException as exc:
                    if not self._call_failed(exc):
                        raise
                    if answered:
                        # Half a message is out: the only honest end is to close.
                        user = self.session.user
                        if not self._timed_out(exc, "message %d of %r", number, user):
                            _broke_off(exc, number, user)
                        raise ConnectionLost from None
                    user = self.session.user
                    self._answer(self._failure(exc, "reading message %d of %r", number, user))
                    return
                if scan is not None:
                    if not _header_read(scan, batch, done):
                        held += batch  # the header goes on: +OK waits for its end
                        if self._out:
                            # Earlier answers due (a pipelined RETR's last batch) take
                            # the reads' room: out now, the next read has a write's
                            # worth, so this loop never turns without reading.
                            await self._write_out()
                        continue
                    read = held + batch
                    sent = presented(scan, read, downgrade=self.options.downgrade)
                    if isinstance(sent, Err):
                        self._answer(sent)
                        return
                    if scan.overran:
                        _log_overran(number, self.session.user)
                    if scan.needs_utf8:  # downgraded: +OK gives the size sent
                        if number not in self.surrogates_logged:
                            self.surrogates_logged.add(number)
                            _log_surrogate(number, self.session.user)
                        size += pop3_size(sent) - pop3_size(read)
                        ok = Ok(f"{size} octets" if isinstance(event, Retr) else "Top of message")
                    batch, held, scan = sent, [], None
                for chunk in batch:
                    if not answered:
                        answered = self._answer(ok)
                        if not answered:
                            return
                    data = conn.send(ResponseData(chunk))
                    self._out.append(data)
                    self._out_size += len(data)
                if not done:
                    await self._write_out()
            if not answered and not self._answer(ok):  # an empty message
                return
            self._out.append(conn.send(END_OF_RESPONSE))
            if isinstance(event, Retr):
                self.retrieved.add(number)
        finally:
            for generator in (chunks,) if chunks is raw else (chunks, raw):
                if generator is not None:  # None: open() failed
                    await self._close_message(number, generator)

    async def _close_message(
        self, number: int, generator: AsyncIterator[bytes] | Iterator[bytes]
    ) -> None:
        """Close a message's generator, which runs its cleanup (a file closed, a
        stream given back), an async one under the store timeout. A cleanup that
        fails or hangs leaves the maildrop in a state the session cannot trust: it
        is logged, and the session ends once the answers made are written."""
        try:
            if not isinstance(generator, GeneratorType) and isinstance(generator, AsyncIterator):
                aclose = getattr(generator, "aclose", None)
                if aclose is not None:
                    await self._store(aclose)
            else:
                close = getattr(generator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            user = self.session.user
            if not self._timed_out(exc, "closing message %d of %r", number, user):
                logger.exception("closing message %d of %r failed", number, user)
            self._closing = True

    async def _read_chunks(self, chunks: AsyncIterator[bytes]) -> tuple[list[bytes], bool]:
        """The next chunks of a message, up to a write's worth; True once it is all read."""
        batch: list[bytes] = []
        size = self._out_size
        empty = 0
        while size < WRITE_SIZE:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return batch, True
            empty = _batched(batch, chunk, empty)
            size += len(chunk)
        return batch, False

    def _read_chunks_now(self, chunks: Iterator[bytes]) -> tuple[list[bytes], bool]:
        """:meth:`_read_chunks` of a plain iterator."""
        batch: list[bytes] = []
        size = self._out_size
        empty = 0
        while size < WRITE_SIZE:
            chunk = next(chunks, None)
            if chunk is None:
                return batch, True
            empty = _batched(batch, chunk, empty)
            size += len(chunk)
        return batch, False


def _header_read(scan: HeaderScan, batch: list[bytes], last: bool) -> bool:
    """Whether ``scan`` knows if the message needs UTF-8 mode, having read ``batch``
    (the message's last if ``last``): until it does, the ``+OK`` waits."""
    for chunk in batch:
        if scan.feed(chunk):
            return True
    if last:
        scan.end()
        return True
    return False


def _log_overran(number: int, user: str | None) -> None:
    """One line for a message sent as stored though its header went on past the
    lookahead with no UTF-8 in it (a sender could otherwise make it unfetchable)."""
    logger.warning(
        "message %d of %r: header longer than %d octets, no UTF-8 in them: sent as stored",
        number,
        user,
        HEADER_LOOKAHEAD,
    )


def _log_surrogate(number: int, user: str | None) -> None:
    """One line for each message sent as its RFC 6858 surrogate, the first time a
    session fetches it (RETR or TOP): a client that
    fetches and deletes it keeps that lossy copy (UTF-8 addresses and trace fields
    gone) in place of the original, for good."""
    logger.info(
        "message %d of %r: sent as its RFC 6858 surrogate (header rewritten in ASCII,"
        " lossy) to a session not in UTF-8 mode",
        number,
        user,
    )


def _batched(batch: list[bytes], chunk: object, empty: int) -> int:
    """Put a message's ``chunk`` in ``batch``, where the chunks read go out together;
    the count of empty chunks in a row after it, which an iterator that never ends
    and never gives an octet soon makes :func:`_no_content` (it would hold the event
    loop, never yielding, and grow the batch for ever)."""
    if not isinstance(chunk, bytes):
        raise _not_bytes(chunk)
    if chunk:
        batch.append(chunk)
        return 0
    if empty + 1 == _EMPTY_CHUNKS:
        raise _no_content()
    return empty + 1


def _not_bytes(chunk: object) -> TypeError:
    """A maildrop's chunk that is not bytes: a failure to read the message, caught
    where its chunks are read rather than when the machine refuses it."""
    return TypeError(f"a message's chunks are bytes, not {type(chunk).__name__}")


def _no_content() -> ValueError:
    """A message's iterator that gives empty chunks and nothing else (see
    :data:`_EMPTY_CHUNKS`): a failure to read the message."""
    return ValueError(f"a message's iterator gave {_EMPTY_CHUNKS} empty chunks in a row")


def checked_listing(listing: Iterable[MessageInfo]) -> list[MessageInfo]:
    """A maildrop's listing as the session serves it: each item a
    :class:`MessageInfo` (an exact size in octets, RFC 1939 §5; a unique-id of 1
    to 70 printable characters, §7), and no unique-id twice (§7: unique within the
    maildrop). Anything else is the maildrop's failure."""
    infos = list(listing)
    uids: set[str] = set()
    for info in infos:
        if not isinstance(info, MessageInfo):
            raise TypeError(f"a maildrop lists MessageInfo, not {type(info).__name__}")
        if info.uid in uids:
            raise ValueError(f"the unique-id {info.uid!r} is listed twice (RFC 1939 §7)")
        uids.add(info.uid)
    return infos


def _broke_off(exc: BaseException, number: int, user: str | None) -> None:
    """Log a message cut off after ``+OK``. A :class:`MaildropError` is the maildrop's
    own answer: one line, for a user who grows his files at will would fill the log
    with tracebacks, and none where the store has logged it (``logged``: a Maildir
    file grown past its listed size, or one that could not be read, named by its
    path), so that a message cut off leaves one line, never two. Anything else is a
    fault, logged with its traceback."""
    if isinstance(exc, MaildropError):
        if not exc.logged:
            logger.warning("message %d of %r broke off: %s", number, user, loggable(str(exc)))
    else:
        logger.error("message %d of %r broke off", number, user, exc_info=exc)
