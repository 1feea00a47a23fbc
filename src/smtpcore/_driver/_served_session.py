"""The life of one accepted connection, the same for SMTP and POP3.

:class:`ServedSession` is the base of each protocol's session: its fields, and
the end of the session, whatever ended it (:meth:`ServedSession._end`). Who its
client is and how it shakes hands (a proxy's header, TLS from the start,
STARTTLS), and how its connection closes (lingering, the writes a client did
not take), are its base classes, each in a module of its own
(:mod:`~smtpcore._driver._session_opening`,
:mod:`~smtpcore._driver._session_closing`).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._logtext import describe_error
from smtpcore._driver._proxied import client_text
from smtpcore._driver._session_closing import SessionClosing
from smtpcore._driver._session_opening import SessionOpening, _Client
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore._driver._timeouts import Watchdog
from smtpcore._driver._transport import Link

__all__ = ["NOT_TAKEN_LOOKS", "NOT_TAKEN_PROBE", "ServedSession"]

NOT_TAKEN_PROBE: Final = 1.0
"""Seconds a session whose timeout went off with bytes still waiting to be sent
watches whether the client takes any (:meth:`ServedSession._note_write_not_taken`),
where only the transport's count of them can tell: a client that reads, however
slowly, makes some room within it."""

NOT_TAKEN_LOOKS: Final = 6
"""How many :data:`NOT_TAKEN_PROBE` seconds that watch lasts at most where the kernel
also counts what the client has not acknowledged (Linux), each ending with a look
at the counts; the first that shows the client took some ends it. A client's
reading shows only as its window reopens, once it has read what makes that worth
saying (a segment, or a share of its receive buffer: RFC 9293 §3.8.6.2.2): a
1,448-octet segment is three seconds of a client reading 500 octets a second, and
on loopback a 2 KiB step of a 4 KiB buffer four."""


class ServedSession(SessionOpening, SessionClosing):
    """The life of one accepted connection, the same for SMTP and POP3.

    Each protocol's :meth:`run` serves it in one coroutine: it counts the
    session in the registry, opens it (:meth:`_open`: the greeting), answers
    the client in its loop under the watchdog, and then hands whatever ended
    the loop to :meth:`_end`, which closes the session (:meth:`_close`: a last
    reply; :meth:`_linger` after a server's own goodbye), logs a failure, leaves
    the registry, lets the protocol tidy up (:meth:`_ended`: a maildrop lock),
    closes the transport and then tells the application (:meth:`_after_close`:
    an abandoned transaction, ``handle_close``), whatever happened. The loop
    is written out in :meth:`run`, not called as a coroutine of its own, and
    it reads its client with ``receive_or_wait``
    (:class:`~smtpcore._driver._transport.Link`): so a session waiting for
    its client is suspended one coroutine deep, where an idle session's
    memory, and each wake-up's calls, grow with every level.
    """

    # Slots, here and in the protocols' sessions: an idle session keeps its fields for
    # minutes, and an instance dictionary costs more than the fields themselves.
    __slots__ = (
        "_waiting_idle",
        "_watchdog",
        "_write_cut",
        "_write_unfinished",
        "session",
        "state",
        "transport",
    )

    logger: ClassVar[logging.Logger] = logging.getLogger("smtpcore")
    protocol: ClassVar[str] = ""

    transport: Link
    state: SessionRegistry[Any]
    session: _Client
    """What the protocol's hooks are told about the connection."""
    _watchdog: Watchdog
    """The timer of the waits for the client; the protocol enters it around its loop."""
    _waiting_idle: bool
    """True while the session waits for a command outside a transaction (False from
    the start: each protocol's session sets it in its constructor)."""
    _write_unfinished: bool
    """True while a write to the client is under way (:meth:`_send_all`), and so still
    True after a cancellation (the watchdog, a send timeout, a shutdown's cut-off)
    or a lost connection ended one: the client did not take it in the time it had.
    Set too when the watchdog goes off while the transport still waits to send
    what a write left it, none of it taken in the wait (:meth:`_note_write_not_taken`),
    and set again after the goodbye, whose write may end in the transport's buffer
    behind those bytes (asyncio's streams return below their high-water mark).
    What SMTP writes after it gets :data:`~smtpcore._driver._shutdown.LAST_WORDS`
    at most (its session's ``_write_within``; POP3 writes nothing more), and the
    close does not wait for room to send what is left, where the transport allows
    it (:meth:`_close_transport`). (False from the start, as
    :attr:`_waiting_idle`.)"""

    _write_cut: bool
    """True while a write that a cancellation may cut part-way is under way, over a
    transport that may drop the rest of a cancelled write (trio's), and so still True
    after one was cut: the client may hold part of a reply. A last word written
    after it would land inside it, mid-line: each protocol's :meth:`_close` says
    nothing then, and the close alone ends the session. Never so over a transport
    that keeps a cancelled write's bytes (asyncio's), where the last word goes out
    after them. Asked of the transport as the write starts. (False from the start,
    as :attr:`_waiting_idle`.)"""

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation.

        The protocol's own, in this shape (see the class's description)::

            self.state.sessions.setdefault(self)  # None: under no address, unless admitted
            watching = None
            try:
                await self._open()
                block = self.transport.watchdog()
                self._watchdog = await block.__aenter__()
                watching = block
                ...  # the loop: answer the client until the session ends
            except BaseException as exc:
                ended: BaseException | None = exc
            else:
                ended = None
            await self._end(ended, watching)

        The watchdog's block is entered there and left by :meth:`_end`, as
        ``async with`` would leave it, rather than with ``async with``, which
        keeps the block's bound ``__aexit__`` (64 bytes) for the session's life.
        """
        raise NotImplementedError

    async def _end(
        self,
        ended: BaseException | None,
        watching: AbstractAsyncContextManager[Watchdog] | None,
    ) -> None:
        """End the session, whatever ended its loop: ``ended`` is what the protocol's
        :meth:`run` raised (``None``: the session came to its end), ``watching`` the
        watchdog's block once the loop entered it, which is left first. It says
        goodbye (:meth:`_close`, told whether the watchdog went off), and lingers
        when the goodbye was the server's own (:meth:`_linger`), unless the
        connection was lost; after a failure (logged) it still writes the replies
        already made, and says nothing more; then, in any case, the
        session leaves the registry, the protocol tidies up, the transport
        closes and the application is told. A cancellation is raised again once
        all that is done."""
        if watching is not None:  # what leaving ``async with`` does
            try:
                if ended is None:
                    await watching.__aexit__(None, None, None)
                elif await watching.__aexit__(type(ended), ended, ended.__traceback__):
                    ended = None  # the block swallowed it
            except BaseException as exc:
                ended = exc
        try:
            try:
                if ended is not None and not (
                    isinstance(ended, TimeoutError)
                    and watching is not None  # else _open's
                    and self._watchdog.expired
                ):
                    raise ended
                not_taken = ended is not None and await self._note_write_not_taken()
                if await self._close(ended is not None):
                    await self._linger()
                if not_taken:  # a goodbye that went into the buffer is behind them
                    self._write_unfinished = True
            except ConnectionLost:
                pass
            except Exception:
                self.log_failure()
                # The replies the machine made before the failure are the client's: a
                # pipelined message's 250 among them, else the message is sent again.
                with contextlib.suppress(Exception):
                    await self._close(False)
        finally:
            self.state.remove(self)
            try:
                await self._ended()
            finally:
                try:
                    await self._close_transport()
                except (ConnectionError, ssl.SSLError) as exc:
                    self.log_lost_in_close(exc)
                except Exception:  # run() raises only cancellations (a transport's own bug)
                    self.log_failure()
                finally:
                    told = self._after_close()
                    if told is not None:
                        try:
                            await told
                        finally:
                            self.transport.clock.close()  # its deadlines set the timer again

    async def _send_all(self, data: bytes) -> None:
        """Write ``data`` to the client, however long it takes; a write a cancellation
        ended leaves :attr:`_write_unfinished` set (and :attr:`_write_cut`, where the
        transport may drop the rest: see
        :meth:`~smtpcore._driver._transport.LinkBase.cancelled_send_may_cut`)."""
        transport = self.transport
        self._write_cut = transport.cancelled_send_may_cut()
        self._write_unfinished = True
        await transport.send_all(data)
        self._write_cut = self._write_unfinished = False

    async def _note_write_not_taken(self) -> bool:
        """The watchdog went off while the session waited for its client, not in a
        write: if the transport still waits to send bytes a write left it (the rest
        of a held reply the kernel did not take, which the event loop sends while
        the session reads; what asyncio's transports buffer below their high-water
        mark: see :meth:`~smtpcore._driver._transport.LinkBase.waiting_to_send`),
        and the client takes none of them in the probe after, it has stopped
        reading, and the goodbye is as after
        a write it did not take (:attr:`_write_unfinished`): SMTP's ``421``, queued
        behind them, has :data:`~smtpcore._driver._shutdown.LAST_WORDS` at most, not
        the command timeout again, and the close does not wait for room. Not while
        the server stops, whose shutdown bounds the goodbyes itself. True when so.

        A client that reads, if too slowly to take them within the timeout, takes
        some within the probe, and its goodbye waits for it as before: its last
        replies (a POP3 message's end) are not cut off. The kernel has long taken
        what it takes without the client reading; only a count that falls tells the
        two apart. The transport's count falls only once the socket has room again
        (a third of its send buffer acknowledged), which a client reading a few KiB
        a second may not make in a second: so where the kernel counts what the
        client has not acknowledged (:meth:`~smtpcore._driver._transport.LinkBase.unacknowledged`),
        which falls at each of its acknowledgements, the probe looks at both once a
        :data:`NOT_TAKEN_PROBE`, for :data:`NOT_TAKEN_LOOKS` of them at most, ended
        by the first fall; elsewhere, or where the kernel's count is 0 to begin with
        (it cannot fall), it looks once, at the transport's alone. A few
        system calls a timed-out session, never one on the way of a message."""
        transport = self.transport
        if self.state.stopping or self._write_unfinished:
            return False  # a cut write is known not taken; a stop bounds the goodbyes
        waiting = transport.waiting_to_send()
        if not waiting:
            return False
        unacknowledged = transport.unacknowledged()
        # a kernel count of 0 (or none) cannot fall: one look, at the transport's
        for _ in range(NOT_TAKEN_LOOKS if unacknowledged else 1):
            await transport.sleep(NOT_TAKEN_PROBE)
            if self.state.stopping:
                return False  # stopped meanwhile: its shutdown bounds the goodbye
            if _taken_some(transport, waiting, unacknowledged):
                return False
        self._write_unfinished = True
        return True

    def log_failure(self) -> None:
        """Log the exception being handled as the session's failure (one that ended
        :meth:`run`, or escaped it: see the trio adapter's ``_run_contained``)."""
        self.logger.exception(
            "%s session with %s failed", self.protocol, client_text(self.session)
        )

    def log_lost_in_close(self, exc: ConnectionError | ssl.SSLError) -> None:
        """Log the connection lost as the transport closed (a last flush that found the
        client gone): what ends a session in any case, as a client's reset does, so
        one INFO line without a traceback; the session's replies were all made."""
        self.logger.info(
            "%s session with %s: connection lost as it closed: %s",
            self.protocol,
            client_text(self.session),
            describe_error(exc),
        )

    def _call_failed(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised out of the application's code (a handler's hook, a
        mailstore's method), is that code's failure, logged and answered as one: an
        ``Exception``, or a cancellation that does not cancel the session (the
        clock's ``stray_cancellation``). Anything else (the session's own
        cancellation: a timeout, a shutdown) must end the session."""
        return isinstance(exc, Exception) or self.transport.stray_cancellation(exc)

    def wake_if_idle(self) -> None:
        """Interrupt a wait for the next command (graceful shutdown)."""
        if self._waiting_idle:
            self._watchdog.expire()

    def cut_off(self) -> None:
        """Interrupt the session wherever it is, as its watchdog going off does: its
        :meth:`_close` then writes the shutting-down reply. A session not yet in
        its loop (a TLS handshake, the greeting) has no watchdog to go off: the
        adapter's cancellation ends it."""
        watchdog = getattr(self, "_watchdog", None)  # unset before the loop
        if watchdog is not None:
            watchdog.expire()

    async def _open(self) -> None:
        """Start the session: what comes before the client's first command (a PROXY
        header, TLS on connect, the greeting)."""
        raise NotImplementedError

    async def _close(self, timed_out: bool) -> bool:
        """End the session: its last replies (``timed_out``: the watchdog went off,
        a wait for the client timed out or a shutdown woke an idle session). True
        when the server ends it on its own (SMTP's 421, POP3's closing ``-ERR``),
        with the client perhaps still sending: :meth:`_end` then lingers. False
        after the client's QUIT, or its own close: nothing is left to read."""
        raise NotImplementedError

    async def _ended(self) -> None:
        """Tidy up after the session, before the transport closes (POP3: the maildrop's
        lock, released before the client sees the end)."""

    def _after_close(self) -> Awaitable[None] | None:
        """What tells the application that the session is over, to await once the
        transport is closed (SMTP: ``handle_reset`` of an abandoned transaction,
        ``handle_close``), so that its code, however long it takes within its
        deadline, never holds the client's connection; None when there is nothing
        to tell."""
        return None


def _taken_some(transport: Link, waiting: int, unacknowledged: int | None) -> bool:
    """Whether the client took some of what waited since the probe began, when the
    transport had ``waiting`` bytes to send and the kernel ``unacknowledged`` (None:
    it cannot say): the transport's count fell (all sent, or some), or the kernel's.
    Either falls alone: bytes the transport hands the kernel leave its count and
    join the kernel's, and the kernel's falls alone while the transport's waits
    for room. A client that reads nothing makes neither fall."""
    left = transport.waiting_to_send()
    if left < waiting:
        return True
    if unacknowledged is None:
        return False
    now = transport.unacknowledged()
    return now is not None and now < unacknowledged
