"""What a POP3 server is configured with, and the machine each of its sessions runs.

:class:`POP3ServerOptions` holds the server's options, checked once when the
server is made, and builds each session's
:class:`~smtpcore.pop3.ServerConnection` (or checks the one a
``connection_factory`` built); :class:`POP3ServerKeywords` is the same
options as keywords, for type checkers. Apart from the session
(:mod:`~smtpcore._driver._pop3_server_session`) because it is read once a
server, not once a command; the driver imports both from
:mod:`~smtpcore._driver._pop3_server` all the same.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypedDict

from smtpcore._driver._factory import (
    check_agreement,
    check_new,
    refuse_server_keywords,
    session_state,
)
from smtpcore._driver._proxied import (
    DEFAULT_PROXY_TIMEOUT,
    Network,
    checked_proxy_timeout,
    networks,
)
from smtpcore._driver._timeouts import DEFAULT_POP3_TIMEOUTS, POP3Timeouts, checked_delay
from smtpcore._hostname import checked_hostname
from smtpcore._ip import CLIENT_IPV6_PREFIX_LENGTH, checked_prefix_length
from smtpcore.pop3 import ServerConnection

__all__ = ["POP3ServerKeywords", "POP3ServerOptions"]


@dataclass(frozen=True, slots=True)
class POP3ServerOptions:
    """How a POP3 server runs its sessions; the adapters' ``POP3Server`` takes these as
    keywords."""

    hostname: str = field(default_factory=socket.getfqdn)
    """This host's name, in the greeting and the APOP timestamp."""
    ssl_context: ssl.SSLContext | None = None
    """With a context, STLS is offered (RFC 2595 §4), or TLS starts on connect."""
    tls_on_connect: bool = False
    """Implicit TLS: the handshake comes before the greeting (RFC 8314 §3.3, port 995)."""
    require_tls: bool | None = None
    """Refuse every login until TLS is up (RFC 2595 §4). ``None``: when STLS is offered,
    except to a client on loopback, as Dovecot's ``disable_plaintext_auth`` does (behind
    a proxy, the client its PROXY header names: one it leaves unnamed is not on loopback)."""
    timeouts: POP3Timeouts = DEFAULT_POP3_TIMEOUTS
    max_sessions: int = 1000
    """Sessions served at once; past that a client gets ``-ERR [SYS/TEMP]`` and is closed."""
    max_sessions_per_address: int | None = 50
    """Sessions served at once for one client IP address, so that one address cannot
    take every slot; past that the client gets ``-ERR [SYS/TEMP]`` and is closed.
    ``None``: no limit."""
    client_ipv6_prefix_length: int = CLIENT_IPV6_PREFIX_LENGTH
    """The bits of an IPv6 client's address ``max_sessions_per_address`` counts it by
    (84, as Postfix's ``smtpd_client_ipv6_prefix_length``): every address of that
    network is one client, for an ordinary IPv6 customer has a /64 or more, which
    counted address by address would be no limit. ``128`` counts each address;
    an IPv4 client (one on a dual-stack socket too) is counted by its address."""
    max_auth_failures: int = 3
    """Failed logins per session; the last one closes the connection."""
    auth_failure_delay: float = 2.0
    """Seconds a failed login (``PASS``, ``APOP`` or ``AUTH``) waits before its ``-ERR``,
    as Dovecot's ``auth_failure_delay``, so that a client guessing passwords makes a
    guess every so often, not a thousand a second. Only that session waits; ``0``
    answers at once."""
    utf8: bool = False
    """Offer UTF8 (RFC 6856)."""
    downgrade: bool = False
    """With ``utf8``: send a session not in UTF-8 mode the RFC 6858 surrogate of a
    message whose header holds UTF-8 (its header rewritten in ASCII, its body as
    stored) where it gets ``-ERR [UTF8]`` without (see :func:`smtpcore.pop3.presented`)."""
    pipelining: bool = True
    """List PIPELINING in CAPA (RFC 2449 §6.6); answers are in order either way."""
    expire: str | int | None = None
    """The EXPIRE capability's argument (RFC 2449 §6.7), such as ``"NEVER"``, ``"30"``
    or ``30``; held as the machine writes it (``"30"``, ``NEVER`` upper-case)."""
    login_delay: str | int | None = None
    """The LOGIN-DELAY capability's argument (RFC 2449 §6.5), in seconds; held as the
    machine writes it, as ``expire`` is."""
    implementation: str | None = None
    """The IMPLEMENTATION capability's argument (RFC 2449 §6.9)."""
    connection_factory: Callable[[POP3ServerOptions], ServerConnection] | None = None
    """Builds the machine of each session, called as the session starts, to set the
    machine options not listed here: start from ``options.build_connection(...)``.
    What the server sets is the server's: a machine that disagrees with it, offers
    logins other than the mailstore's, or is not new, is refused (``-ERR [SYS/TEMP]``
    and a close, logged), as when the factory raises. See :meth:`check_connection`."""
    proxy_protocol_from: Sequence[str] = ()
    """Read HAProxy's PROXY protocol header (v1 or v2, :mod:`smtpcore.proxy`) before the
    greeting and take the client's address from it, as Dovecot's
    ``haproxy_trusted_networks``. Each connection must come from one of these addresses
    or networks (``"127.0.0.1"``, ``"10.0.0.0/8"``) and start with a valid header, whole
    within ``proxy_protocol_timeout``; any other is closed at once."""
    proxy_protocol_timeout: float = DEFAULT_PROXY_TIMEOUT
    """Seconds a proxy of ``proxy_protocol_from`` has to send its whole header, as
    Dovecot's ``haproxy_timeout`` and Postfix's ``smtpd_upstream_proxy_timeout``; past
    it the connection is closed. Not ``timeouts.greeting``: a proxy writes its header
    at once, and one trickled would hold a session slot."""
    proxy_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)
    _new_session_state: Mapping[str, object] = field(init=False, repr=False, compare=False)
    """What a new machine shows of its session (:data:`_POP3_SESSION_STATE`), read
    once: what :meth:`check_connection` holds a factory's machine to."""

    def __post_init__(self) -> None:
        checked_hostname(self.hostname)  # refused now, not at each session's greeting
        if self.tls_on_connect and self.ssl_context is None:
            raise ValueError("tls_on_connect needs an ssl_context")
        if self.downgrade and not self.utf8:
            raise ValueError("downgrade needs utf8: without it every message goes as stored")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if self.max_sessions_per_address is not None and self.max_sessions_per_address < 1:
            raise ValueError("max_sessions_per_address must be at least 1 (or None)")
        checked_prefix_length(self.client_ipv6_prefix_length)
        if self.max_auth_failures < 1:
            raise ValueError("max_auth_failures must be at least 1")
        object.__setattr__(self, "auth_failure_delay", checked_delay(self.auth_failure_delay))
        timeout = checked_proxy_timeout(self.proxy_protocol_timeout)
        object.__setattr__(self, "proxy_protocol_timeout", timeout)
        try:
            object.__setattr__(self, "proxy_networks", networks(self.proxy_protocol_from))
        except ValueError as exc:
            raise ValueError(f"proxy_protocol_from: {exc}") from None
        new = self._session_connection(NO_LOGINS)
        object.__setattr__(self, "_new_session_state", session_state(new, _POP3_SESSION_STATE))
        # The CAPA policies as the machine took them (an int as its digits, NEVER and
        # USER upper-case), so that every machine built from these options agrees.
        object.__setattr__(self, "expire", new.expire)
        object.__setattr__(self, "login_delay", new.login_delay)

    @property
    def stls(self) -> bool:
        """Whether STLS is offered (RFC 2595 §4): with a context, unless TLS starts on
        connect."""
        return self.ssl_context is not None and not self.tls_on_connect

    def build_connection(
        self, machine: type[ServerConnection] = ServerConnection, /, **machine_options: Any
    ) -> ServerConnection:
        """For a ``connection_factory``: the machine this server builds (of the class
        ``machine``), with ``machine_options``, keywords of its constructor that the
        server does not set; one it sets is a ``ValueError`` naming the server's
        keyword. What the server decides per session (USER and APOP as its mailstore
        serves them, the SASL mechanisms, ``require_tls``) is left to placeholders
        here, and set on the machine before its greeting, unless the factory changes
        them: then they are its choice, checked as a hand-built machine's."""
        refuse_server_keywords(machine_options, POP3_SERVER_KEYWORDS)
        conn = self._session_connection(NO_LOGINS, machine, machine_options)
        setattr(conn, LOGIN_PLACEHOLDERS, SessionLogins.of(conn))
        return conn

    def _session_connection(
        self,
        logins: SessionLogins,
        machine: type[ServerConnection] = ServerConnection,
        machine_options: Mapping[str, Any] | None = None,
    ) -> ServerConnection:
        """The machine of a session with these ``logins``: what a server with no
        ``connection_factory`` runs, built in one constructor call."""
        return machine(
            self.hostname,
            user=logins.user,
            apop=logins.apop,
            sasl_mechanisms=logins.sasl_mechanisms,
            require_tls=logins.require_tls,
            stls=self.stls,
            utf8=self.utf8,
            pipelining=self.pipelining,
            expire=self.expire,
            login_delay=self.login_delay,
            implementation=self.implementation,
            **(machine_options or {}),
        )

    def check_connection(self, conn: ServerConnection) -> ServerConnection:
        """``conn``, a machine a ``connection_factory`` built, once it has every option
        this server sets as the server has it, else a ``ValueError`` naming it: STLS
        without a context cannot start TLS, none with one leaves logins in plaintext,
        and the server's CAPA answer is the server's to make. The machine must also
        be new (its ``state``, ``buffered``, ``user``, ``utf8`` and ``apop_timestamp``
        a new machine's): a session begins at
        its greeting. (What the server sets per session is checked as the session
        starts.)"""
        if not isinstance(conn, ServerConnection):
            raise TypeError(
                f"connection_factory gave {type(conn).__name__}, not a ServerConnection"
            )
        expected = {
            "hostname": self.hostname,
            "stls": self.stls,
            "offers_utf8": self.utf8,
            "pipelining": self.pipelining,
            "expire": self.expire,
            "login_delay": self.login_delay,
            "implementation": self.implementation,
        }
        check_agreement(conn, expected, POP3_SERVER_KEYWORDS)
        check_new(conn, self._new_session_state)
        return conn


@dataclass(frozen=True, slots=True)
class SessionLogins:
    """What a POP3 server decides per session, from its mailstore and the client: the
    logins the machine offers and whether they wait for TLS."""

    user: bool
    """USER and PASS: the mailstore checks passwords."""
    apop: bool
    """APOP: the mailstore gives APOP secrets."""
    sasl_mechanisms: tuple[str, ...]
    """The mailstore's mechanisms for this session."""
    require_tls: bool
    """``require_tls``, decided for this client."""

    @classmethod
    def of(cls, conn: ServerConnection) -> SessionLogins:
        """The logins the machine ``conn`` offers now."""
        return cls(
            user=conn.offers_user,
            apop=conn.offers_apop,
            sasl_mechanisms=tuple(conn.sasl_mechanisms),
            require_tls=conn.require_tls,
        )

    def changed(self, other: SessionLogins) -> list[str]:
        """The machine attributes whose values differ in ``other``."""
        names = {"user": "offers_user", "apop": "offers_apop"}
        return [
            names.get(item.name, item.name)
            for item in fields(self)
            if getattr(self, item.name) != getattr(other, item.name)
        ]


NO_LOGINS: Final = SessionLogins(user=False, apop=False, sasl_mechanisms=(), require_tls=False)
"""What ``build_connection`` builds with: nothing offered that the session's own values
would not add."""

LOGIN_PLACEHOLDERS: Final = "_smtpcore_login_placeholders"
"""The attribute in which ``build_connection`` records the logins it gave its machine,
placeholders. A machine that still has them gets the session's; one whose factory
changed any, like one built by hand, has chosen its own, which the server checks and
never silently replaces (see :meth:`POP3ServerSession._factory_connection`)."""

_POP3_SESSION_STATE: Final = ("state", "buffered", "user", "utf8", "apop_timestamp")
"""What a machine shows of the session it has run (``tls`` aside: the server sets it):
a factory's machine must have a new machine's values. Public session state added to
the machine belongs here."""


POP3_SERVER_KEYWORDS: Final = {
    "hostname": "hostname",
    "user": "a mailstore with check_password",
    "offers_user": "mailstore (its check_password)",
    "apop": "a mailstore with apop_secret",
    "offers_apop": "mailstore (its apop_secret and apop)",
    "sasl_mechanisms": "a mailstore with sasl_mechanisms",
    "stls": "ssl_context and tls_on_connect",
    "require_tls": "require_tls",
    "utf8": "utf8",
    "offers_utf8": "utf8",
    "pipelining": "pipelining",
    "expire": "expire",
    "login_delay": "login_delay",
    "implementation": "implementation",
}
"""A machine option (or attribute) the POP3 server sets -> what sets it."""


class POP3ServerKeywords(TypedDict, total=False):
    """The keywords ``POP3Server`` passes on to :class:`POP3ServerOptions`, for type
    checkers; defaults and documentation live in :class:`POP3ServerOptions` alone (a
    test holds the two together)."""

    ssl_context: ssl.SSLContext | None
    tls_on_connect: bool
    require_tls: bool | None
    timeouts: POP3Timeouts
    max_sessions: int
    max_sessions_per_address: int | None
    client_ipv6_prefix_length: int
    max_auth_failures: int
    auth_failure_delay: float
    utf8: bool
    downgrade: bool
    pipelining: bool
    expire: str | int | None
    login_delay: str | int | None
    implementation: str | None
    connection_factory: Callable[[POP3ServerOptions], ServerConnection] | None
    proxy_protocol_from: Sequence[str]
    proxy_protocol_timeout: float
