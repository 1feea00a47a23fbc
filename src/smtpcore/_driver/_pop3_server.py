"""The POP3 server the asyncio and trio adapters share: its registry of sessions and
its listener.

:class:`POP3ServerState` is what one server's sessions share (options, the
mailstore, the live sessions); :class:`BasePOP3Server` is where it listens.
The session that serves one connection
(:mod:`~smtpcore._driver._pop3_server_session`) and the options
(:mod:`~smtpcore._driver._pop3_server_options`) have modules of their own; the
driver's POP3 server names are imported from here all the same.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from smtpcore._driver._factory import MachinesInUse
from smtpcore._driver._listener import BaseListener
from smtpcore._driver._pop3_server_options import POP3ServerKeywords, POP3ServerOptions
from smtpcore._driver._pop3_server_session import SHUTTING_DOWN, POP3ServerSession
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore._driver._transport import Link
from smtpcore.maildrop import Mailstore
from smtpcore.pop3 import Err

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BasePOP3Server",
    "POP3ServerKeywords",
    "POP3ServerOptions",
    "POP3ServerSession",
    "POP3ServerState",
]


class POP3ServerState(SessionRegistry["POP3ServerSession"]):
    """What the sessions of one POP3 server share: options, the mailstore, the live
    sessions, and whether the server is shutting down."""

    logger = logging.getLogger("smtpcore.pop3.server")

    def __init__(self, store: Mailstore, options: POP3ServerOptions) -> None:
        busy = Err("Too many connections, try again later", code="SYS/TEMP")
        address_busy = Err("Too many connections from your address", code="SYS/TEMP")
        # On a TLS-on-connect port a plaintext answer would be noise: just close.
        plain = not options.tls_on_connect
        super().__init__(
            options.max_sessions,
            busy.to_bytes() if plain else b"",
            max_per_address=options.max_sessions_per_address,
            ipv6_prefix_length=options.client_ipv6_prefix_length,
            address_busy_reply=address_busy.to_bytes() if plain else b"",
            stopping_reply=SHUTTING_DOWN.to_bytes() if plain else b"",
            proxy_networks=options.proxy_networks,
            proxy_timeout=options.proxy_protocol_timeout,
        )
        self.store = store
        self.options = options
        self.factory_machines = MachinesInUse()
        """The ``connection_factory``'s machines the sessions run on."""
        kind = type(store)
        self.user_login = kind.check_password is not Mailstore.check_password
        self.apop_login = kind.apop_secret is not Mailstore.apop_secret
        """Whether the store serves APOP at all; its ``apop`` says, per session, whether
        it does now."""
        self.sasl_login = kind.sasl_mechanisms is not Mailstore.sasl_mechanisms

    def new_session(self, transport: Link, peer: tuple[str, int] | None) -> POP3ServerSession:
        return POP3ServerSession(transport, self, peer)


class BasePOP3Server(BaseListener[POP3ServerSession]):
    """What the asyncio and trio ``POP3Server`` share: options, state and addresses.

    ``store`` logs users in and opens their maildrops. The server listens on
    ``host`` and ``port`` (port 0 picks a free one; read :attr:`port`), or on
    ``sock``, a socket already bound and listening, or on the Unix socket
    ``unix_path``. ``hostname`` is this
    host's name in the greeting (the FQDN by default). With ``ssl_context``
    the server offers STLS, or, with ``tls_on_connect``, speaks TLS from the
    first byte (port 995). The other keywords are those of
    :class:`POP3ServerOptions`.
    """

    def __init__(
        self,
        store: Mailstore,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        unix_path: str | os.PathLike[str] | None = None,
        backlog: int = 1024,
        hostname: str | None = None,
        **options: Unpack[POP3ServerKeywords],
    ) -> None:
        super().__init__(host, port, sock=sock, unix_path=unix_path, backlog=backlog)
        self.options: POP3ServerOptions = POP3ServerOptions(
            hostname=hostname or socket.getfqdn(), **options
        )
        self.state = POP3ServerState(store, self.options)
