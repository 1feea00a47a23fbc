"""Who a server session's client is, and its TLS handshakes: a trusted proxy's
PROXY header, TLS from the connection's first byte, STARTTLS and STLS.

A part of :class:`~smtpcore._driver._served_session.ServedSession` (a base class of
it, holding no fields: a method costs the same wherever in its bases it is), apart
from the session's life and close: what a session learns of its client, and how
it shakes hands, are the same for SMTP and POP3 and both adapters.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._logtext import describe_error
from smtpcore._driver._proxied import (
    client_text,
    counted_peer,
    peer_text,
    proxied_tls,
    read_proxy_header,
    trusted,
    unnamed_client_text,
)
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore._driver._transport import Link
from smtpcore.handler import TLSInfo
from smtpcore.proxy import ProxyProtocolError

__all__ = ["SessionOpening"]


# Here, not in _served_session with ServedSession: SessionOpening's methods read
# `session` too, and _served_session imports this module for its base class, so
# this module cannot import from it without an import cycle.
class _Client(Protocol):
    """A session as its hooks see it (``Session``, ``POP3Session``)."""

    peer: tuple[str, int] | None
    """The client: the one a trusted proxy's header named, once it has."""
    peer_stands_in_for: str | None
    """The client ``peer`` stands in for, when it is the proxy's (see
    :func:`~smtpcore._driver._proxied.client_text`)."""
    local: tuple[str, int] | None
    """The address the client reached."""
    tls: TLSInfo | None
    """The session's TLS: its own handshake's, or the client's to a trusted proxy that
    terminated it (:func:`~smtpcore._driver._proxied.proxied_tls`)."""


class SessionOpening:
    """The client of a served session, as a proxy names it, and its handshakes."""

    __slots__ = ()

    logger: ClassVar[logging.Logger]
    transport: Link
    state: SessionRegistry[Any]
    session: _Client

    def tls_from_the_start(self, handshake_timeout: float | None) -> Awaitable[None] | None:
        """What a transport given under TLS (a ``trio.SSLStream``, asyncio's
        ``start_server(ssl=...)``) still has to do before its ``tls`` can be read: its
        optional ``finish_handshake`` (a handshake made lazily, on first use), run as a
        client's is, so that ``tls`` describes the session from its first byte (RFC 8314
        §3.3); read before the handshake, it says None and the session runs as if in
        plaintext. None when there is nothing to finish, the everyday case, which then
        costs no coroutine. One place for both protocols and both adapters."""
        finish_handshake = self.transport.finish_handshake
        if finish_handshake is None:
            return None
        return self._shake_hands(finish_handshake, handshake_timeout)

    async def _shake_hands(
        self, handshake: Callable[[], Awaitable[None]], timeout: float | None
    ) -> None:
        """Run ``handshake`` under ``timeout``: one place for every handshake a server
        session makes (STARTTLS, STLS, ``tls_on_connect``, a given transport's). A
        failed one is the client's connection lost (RFC 3207 §4.1: the session
        cannot go on in plaintext), logged at INFO."""
        try:
            async with self.transport.deadline(timeout):
                await handshake()
        except (OSError, TimeoutError) as exc:
            self.logger.info(
                "TLS handshake with %s failed: %s", client_text(self.session), describe_error(exc)
            )
            raise ConnectionLost from None

    async def _known_client(self, send_timeout: float | None) -> tuple[str, int] | None:
        """Who the client is, as far as the server knows, for what trusts a client by
        its address (a loopback client's login without TLS, XCLIENT): the connection's
        peer, or the client a trusted proxy's header names (see
        :meth:`_client_from_proxy`).

        None when the header names no client (v1 ``UNKNOWN``, a v2 ``LOCAL`` command
        or unspecified family: HAProxy sends ``UNKNOWN`` for a client on a Unix
        socket) or names a Unix socket's path (v2 UNIX family), never an address:
        the peer is then the proxy's address, which the log shows with the client
        it stands in for (the session is counted under no address), but the client
        behind it is unknown, never loopback or trusted because its proxy is."""
        if not self.state.proxy_networks:
            return self.session.peer
        return await self._client_from_proxy(send_timeout)

    async def _client_from_proxy(self, send_timeout: float | None) -> tuple[str, int] | None:
        """The client named by the PROXY header a trusted proxy opens the connection
        with, if it names one: from now on the session's
        peer (and ``local`` the address it reached) and counted under it.

        A header that names the client by no address (its ``source`` is None: the
        UNIX family names a socket's path, v1 ``UNKNOWN`` and v2 ``LOCAL`` name
        none) leaves the proxy's address as the peer, a stand-in the session knows
        for one (its ``peer_stands_in_for``), so that the log never names the
        proxy as the client (:func:`~smtpcore._driver._proxied.client_text`), and is
        counted under no address (:func:`counted_peer`), as is a client that speaks
        for others in turn (the registry's
        :meth:`~smtpcore._driver._session_registry.SessionRegistry.forwards_for_others`).
        A client whose TLS the proxy terminated, as its header says, is under TLS
        from the start (the session's ``tls``: :func:`proxied_tls`).

        The header is read within the registry's ``proxy_timeout``, not the greeting's
        timeout: a proxy sends it at once, and a trickled one would hold a session
        slot for minutes (Postfix's ``smtpd_upstream_proxy_timeout``).

        A connection from anywhere else, a bad header, or a client over its share
        (told so with the registry's ``address_busy_reply``, written within
        ``send_timeout``) ends the session: :class:`ConnectionLost`.
        """
        transport = self.transport
        proxy = transport.peer_address
        if not trusted(proxy, self.state.proxy_networks):
            self.logger.info("connection from %s, not a trusted proxy: closed", peer_text(proxy))
            raise ConnectionLost
        try:
            header = await read_proxy_header(transport, self.state.proxy_timeout)
        except (ProxyProtocolError, OSError, TimeoutError) as exc:
            self.logger.info("bad PROXY header from %s: %s", peer_text(proxy), describe_error(exc))
            raise ConnectionLost from None
        session = self.session
        session.tls = proxied_tls(header)
        if header.source is None:
            session.peer_stands_in_for = unnamed_client_text(header)
        else:
            session.peer = header.source
            session.local = header.destination
        if header.source_path is not None:
            self.logger.info("connection from %s", client_text(session))
        counted = counted_peer(header)
        if counted is not None and self.state.forwards_for_others(counted):
            counted = None
        if not self.state.readdress(self, counted):
            self.state.log_turned_away(client_text(session), True, self.state.block_of(counted))
            if self.state.address_busy_reply:
                with contextlib.suppress(OSError, TimeoutError):
                    async with transport.deadline(send_timeout):
                        await transport.send_all(self.state.address_busy_reply)
            raise ConnectionLost
        return header.source
