"""The SMTP server the asyncio and trio adapters share: its registry of sessions
and its listener.

:class:`ServerState` is what one server's sessions share (options, handler,
the live sessions, the replies built once); :class:`BaseSMTPServer` is where it
listens. The session that serves one connection
(:mod:`~smtpcore._driver._smtp_server_session`) and the options
(:mod:`~smtpcore._driver._smtp_server_options`) have modules of their own; the
driver's SMTP server names are imported from here all the same.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from smtpcore._driver._factory import MachinesInUse
from smtpcore._driver._listener import BaseListener
from smtpcore._driver._ports import lmtp_port_refusal
from smtpcore._driver._proxied import trusted
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore._driver._smtp_server_options import ServerKeywords, ServerOptions
from smtpcore._driver._smtp_server_session import ServerSession
from smtpcore._driver._transport import Link
from smtpcore.handler import _APPENDS_CHUNKS, _BY_HOSTNAME, _FIXED_ANSWERS, Handler
from smtpcore.smtp import Reply

if TYPE_CHECKING:
    from typing_extensions import Unpack


__all__ = ["BaseSMTPServer", "ServerKeywords", "ServerOptions", "ServerSession", "ServerState"]


class ServerState(SessionRegistry["ServerSession"]):
    """What the sessions of one server share: options, handler, the live sessions and
    whether the server is shutting down (idle sessions get 421 at once, busy ones
    when their message is done)."""

    logger = logging.getLogger("smtpcore.server")

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        busy = Reply(421, f"{options.hostname} Too many connections, try again later", "4.7.0")
        address_busy = Reply(
            421, f"{options.hostname} Too many connections from your address", "4.7.0"
        )
        stopping = Reply(421, f"{options.hostname} Service shutting down", "4.3.2")
        # On a TLS-on-connect port a plaintext reply would be noise: just close.
        plain = not options.tls_on_connect
        super().__init__(
            options.max_sessions,
            busy.to_bytes(busy.status) if plain else b"",
            max_per_address=options.max_sessions_per_address,
            ipv6_prefix_length=options.client_ipv6_prefix_length,
            address_busy_reply=address_busy.to_bytes(address_busy.status) if plain else b"",
            stopping_reply=stopping.to_bytes(stopping.status) if plain else b"",
            proxy_networks=options.proxy_networks,
            proxy_timeout=options.proxy_protocol_timeout,
        )
        self.handler = handler
        self.options = options
        self.proxied = bool(options.proxy_networks or options.forwarder_networks)
        self.factory_machines = MachinesInUse()
        """The ``connection_factory``'s machines the sessions run on."""
        # Replies every session may send, built once per server rather than per connection.
        self.unavailable = Reply(421, f"{options.hostname} Service not available", "4.3.0")
        self.bye = Reply(221, f"{options.hostname} Bye")
        overridden = {
            name
            for name in vars(Handler)
            if name.startswith("handle_")
            and getattr(type(handler), name) is not vars(Handler)[name]
        }
        # Handler's own hooks answer at once and never fail: they run without a deadline.
        self.overridden: frozenset[str] = frozenset(overridden)
        self.fixed_answers = {
            name: _FIXED_ANSWERS[hook]
            for name, hook in vars(Handler).items()
            if name.startswith("handle_") and hook in _FIXED_ANSWERS
        }
        """Hook name -> the one reply Handler's hook gives, for those that give one."""
        self.appends_chunks = (
            "handle_data_chunk" not in overridden
            and vars(Handler)["handle_data_chunk"] is _APPENDS_CHUNKS
        )
        """Whether each chunk of content is appended to the envelope's chunks as
        Handler's own hook does, without calling it."""
        self.unasked = {
            name: answer for name, answer in self.fixed_answers.items() if name not in overridden
        }
        for name, hook in vars(Handler).items():
            if hook in _BY_HOSTNAME and name not in overridden:
                self.unasked[name] = _BY_HOSTNAME[hook](options.hostname)
        """Hook name -> the reply given without asking the handler, which keeps Handler's
        hook (the everyday commands then cost no call to :meth:`ServerSession._ask`).
        The greeting and the EHLO reply are Handler's for the server's hostname: given
        only while the session's ``hostname`` is still that one."""

    def new_session(self, transport: Link, peer: tuple[str, int] | None) -> ServerSession:
        return ServerSession(transport, self, peer)

    def client_named_later(self, peer: tuple[str, int]) -> bool:
        """A host of ``xclient_from`` too: an XCLIENT proxy names its clients later, and
        an XFORWARD content filter speaks for others all along, so neither is capped
        at one client's share under its own address (Postfix exempts the XCLIENT hosts
        from its connection count limits: smtpd.c, ``xclient_allowed``)."""
        return trusted(peer, self.proxy_networks) or self.forwards_for_others(peer)

    def forwards_for_others(self, peer: tuple[str, int]) -> bool:
        """A host of ``xclient_from``, whether it connects or a trusted proxy's header
        names it: trusted with XCLIENT by that header's address, it is not capped by it."""
        return trusted(peer, self.options.forwarder_networks)


class BaseSMTPServer(BaseListener[ServerSession]):
    """What the asyncio and trio ``SMTPServer`` share: options, state and addresses.

    ``handler`` answers for every session. The server listens on ``host`` and
    ``port`` (port 0 picks a free one; read :attr:`port`), or on ``sock``, a
    socket already bound and listening, or on the Unix socket ``unix_path``.
    ``hostname`` is this host's name in the greeting (the FQDN by default).
    With ``ssl_context`` the server offers STARTTLS, or, with
    ``tls_on_connect``, speaks TLS from the first byte (port 465). With
    ``auth`` (an :class:`~smtpcore.handler.Authenticator`) it offers SMTP AUTH.
    With ``lmtp`` it refuses to listen on ``port`` 25 (``ValueError``): LMTP must
    not be used on TCP port 25 (RFC 2033 §1); a ``sock`` or ``unix_path`` given
    instead is the caller's to choose.
    The other keywords are those of :class:`ServerOptions`.
    """

    def __init__(
        self,
        handler: Handler,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        unix_path: str | os.PathLike[str] | None = None,
        backlog: int = 1024,
        hostname: str | None = None,
        **options: Unpack[ServerKeywords],
    ) -> None:
        super().__init__(host, port, sock=sock, unix_path=unix_path, backlog=backlog)
        self.options: ServerOptions = ServerOptions(
            hostname=hostname or socket.getfqdn(), **options
        )
        if self.options.lmtp and sock is None and unix_path is None:
            refusal = lmtp_port_refusal(port)
            if refusal is not None:
                raise ValueError(refusal)
        self.state = ServerState(handler, self.options)
