"""XCLIENT and XFORWARD (Postfix): a trusted proxy or content filter names the client
it speaks for.

:class:`Forwarding` decides which clients may use them (``xclient_from``, by
the address a trusted PROXY header named, if any) and starts the named
client's session on the connection (XCLIENT_README): the handler sees the
session so far close and the named client connect.
"""

from __future__ import annotations

import logging
from typing import Final

from smtpcore._driver._logtext import loggable
from smtpcore._driver._proxied import client_text, ip_peer, trusted
from smtpcore._driver._smtp_server_close import SessionClose
from smtpcore._driver._smtp_server_replies import OK
from smtpcore.handler import AuthIdentity, Session
from smtpcore.smtp import Reply, Xclient, Xforward

logger = logging.getLogger("smtpcore.server")


_GREETING_CODES: Final = frozenset({220, 554, 421})
"""What may greet a client (RFC 5321 §3.1, §4.3.2): the connection or the one XCLIENT names."""


class Forwarding(SessionClose):
    """XCLIENT and XFORWARD, for the clients ``xclient_from`` trusts."""

    __slots__ = ()

    def _trust_forwarder(self, client: tuple[str, int] | None) -> None:
        """Whether this client may use XCLIENT and XFORWARD: by its address (the one a
        trusted proxy's header named, if any: see :meth:`_known_client`), in
        ``xclient_from``."""
        self.conn.trusted_forwarder = trusted(client, self.options.forwarder_networks)

    async def _xclient(self, command: Xclient) -> None:
        """The session now speaks for the client XCLIENT names, as if that client had
        connected anew (XCLIENT_README): the handler sees the session so far close
        (:meth:`_tell_handler_closed`), so that ``handle_close`` still pairs with
        each ``handle_connect``, and then the named client connect; its answer is
        that client's greeting (Postfix's connection-level decision), handled as
        the connection's own: 554 serves it nothing but QUIT, 421 closes. The
        session is counted under the named client's address (one over its share is
        closed with 421 before ``handle_connect``, as a proxied one is; an XCLIENT
        that never named ``ADDR`` leaves it counted as it was, under none for a
        forwarder, and under none for a client itself in ``xclient_from``), and that
        client may use XCLIENT only if ``xclient_from`` trusts
        it in turn (XCLIENT_README, note 1): a proxy's client cannot name yet another."""
        session = self.session
        before = client_text(session)
        known = session.xclient
        merged = command if known is None else known.merged(command)
        await self._tell_handler_closed()
        _present(session, merged)
        peer = ip_peer(session.peer)
        # Without ADDR the client is still the forwarder itself: its count stays. A
        # forwarder named is counted under none, as when a PROXY header names one.
        counted = None if peer is None or self.state.forwards_for_others(peer) else peer
        if merged.addr is not None and not self.state.readdress(self, counted):  # type: ignore[arg-type]  # a ServerSession's part
            self._connect_told = False  # the named client: refused before handle_connect
            self.state.log_turned_away(client_text(session), True, self.state.block_of(peer))
            self._answer(
                Reply(
                    421, f"{self.options.hostname} Too many connections from your address", "4.7.0"
                )
            )
            return
        unavailable = self.state.unavailable
        greeting = await self._ask(
            "handle_connect",
            (session,),
            self.options.timeouts.command,
            failed=unavailable,
        )
        if greeting.code not in _GREETING_CODES:
            logger.error("the handler's greeting %s is not 220, 554 or 421", greeting)
            greeting = unavailable
        if merged.addr is not None:  # a client named: trusted by its own address now
            self._trust_forwarder(session.peer)
        logger.info(
            "XCLIENT from %s: now %s%s",
            before,
            loggable(str(merged)),
            "" if greeting.code == 220 else f", greeted {greeting.code}",
        )
        self._answer(greeting)

    def _xforward(self, command: Xforward) -> None:
        self._answer(OK)  # the machine keeps it for the next transaction's envelope


def _present(session: Session, forwarded: Xclient) -> None:
    """Show ``forwarded`` to the handler as the session's own client (Postfix's
    XCLIENT_README): what it names replaces, what it calls unavailable is unknown."""
    addr, port = forwarded.addr, forwarded.port
    if addr is not None:  # the client named, or said unknown: no proxy stands in for it
        session.peer_stands_in_for = None
    if isinstance(addr, str):
        session.peer = (addr, port if isinstance(port, int) else 0)
    elif addr is not None:
        session.peer = None
    elif isinstance(port, int) and session.peer is not None:
        session.peer = (session.peer[0], port)
    destaddr, destport = forwarded.destaddr, forwarded.destport
    if isinstance(destaddr, str):
        session.local = (destaddr, destport if isinstance(destport, int) else 0)
    elif destaddr is not None:
        session.local = None
    if forwarded.name is not None:
        session.peer_name = forwarded.name if isinstance(forwarded.name, str) else None
    session.helo_name = forwarded.helo if isinstance(forwarded.helo, str) else None
    login = forwarded.login
    session.authenticated = (
        AuthIdentity(login, login, "XCLIENT") if isinstance(login, str) else None
    )
    session.extended = False
    session.xclient = forwarded
