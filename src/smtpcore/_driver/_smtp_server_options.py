"""How an SMTP server runs its sessions: :class:`ServerOptions`, and the keywords
the adapters' ``SMTPServer`` passes on to it (:class:`ServerKeywords`).

Apart from the sessions, since the options are checked once, when the server
is built, and then only read: what they mean, how they are checked and how they
build each session's machine (and hold a ``connection_factory``'s to the server's
settings) is one job, with no I/O in it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from smtpcore._driver._timeouts import DEFAULT_TIMEOUTS, Timeouts, checked_delay
from smtpcore._hostname import a_label_hostname
from smtpcore._ip import CLIENT_IPV6_PREFIX_LENGTH, checked_prefix_length
from smtpcore._lines import FramingPolicy
from smtpcore._sasl_settings import mechanism_factories
from smtpcore.address import AddressPolicy
from smtpcore.handler import Authenticator, MechanismFactory
from smtpcore.sasl import SERVER_MECHANISMS
from smtpcore.smtp import ServerConnection
from smtpcore.smtp._server_config import ServerConfig

__all__ = ["AuthConfig", "ServerKeywords", "ServerOptions"]


AuthConfig = Authenticator | Mapping[str, MechanismFactory]
"""What ``auth=`` takes: an :class:`~smtpcore.handler.Authenticator`, or the mechanisms
to offer by name, each with a factory of :class:`~smtpcore.sasl.ServerMechanism`."""


_SERVER_KEYWORDS: Final = {
    "hostname": "hostname",
    "starttls": "ssl_context and tls_on_connect",
    "tls": "tls_on_connect (the server sets tls per session)",
    "auth_mechanisms": "auth",
    "xclient": "xclient_from",
    "xforward": "xclient_from",
    "trusted_forwarder": "xclient_from (the server decides per client)",
}
"""A machine option the server sets under another name -> that name; the others it
sets (see :meth:`ServerOptions.build_connection`) have the names of its own keywords."""


_SESSION_STATE: Final = (
    "state",
    "pending",
    "buffered",
    "authenticated",
    "extended",
    "helo_name",
    "accepted_recipients",
    "binary_transaction",
    "forwarded_client",
    "forwarded_message",
)
"""What a machine shows of the session it has run (``tls`` and ``trusted_forwarder``
aside: the server sets them): a factory's machine must have a new machine's values
(:meth:`ServerOptions.check_connection`). Public session state added to the machine
belongs here."""


def _option_value(machine: object, name: str) -> object:
    """Option ``name`` of a machine or its configuration, as the server compares it:
    ``max_message_size`` ``0`` and ``None`` both mean no limit (RFC 1870 §4); the AUTH
    mechanisms as a set, sorted, since the machine lists them on EHLO in its own order
    while what matters is which the server's ``auth`` must run."""
    value = getattr(machine, name)
    if name == "max_message_size":
        return value or None
    if name == "auth_mechanisms":
        return sorted(set(value))
    return value


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How a server runs its sessions; the adapters' ``SMTPServer`` takes these as keywords."""

    hostname: str = field(default_factory=socket.getfqdn)
    """This host's name, in the greeting, the EHLO reply, the 221 and every 421. A
    non-ASCII name is kept in its A-label form, as the machine takes it: those replies
    come before SMTPUTF8 is agreed (RFC 5321 §4.1.2, RFC 6531)."""
    ssl_context: ssl.SSLContext | None = None
    """With a context, STARTTLS is offered (RFC 3207), or TLS starts on connect."""
    require_tls: bool = False
    """Refuse MAIL with ``530 5.7.0`` until TLS is up (RFC 3207 §4)."""
    tls_on_connect: bool = False
    """Implicit TLS: the handshake comes before the greeting (RFC 8314 §3.3, port 465)."""
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    max_sessions: int = 2000
    """Sessions served at once; past that a client gets ``421 4.7.0`` and is closed."""
    max_sessions_per_address: int | None = 50
    """Sessions served at once for one client IP address (Postfix's
    ``smtpd_client_connection_count_limit``), so that one address cannot take every
    slot; past that the client gets ``421 4.7.0`` and is closed. ``None``: no limit."""
    client_ipv6_prefix_length: int = CLIENT_IPV6_PREFIX_LENGTH
    """The bits of an IPv6 client's address ``max_sessions_per_address`` counts it by
    (84, as Postfix's ``smtpd_client_ipv6_prefix_length``): every address of that
    network is one client, for an ordinary IPv6 customer has a /64 or more, which
    counted address by address would be no limit. ``128`` counts each address;
    an IPv4 client (one on a dual-stack socket too) is counted by its address."""
    max_message_size: int | None = 10_240_000
    max_recipients: int = 100
    max_recipient_overshoot: int = 1000
    """Recipients past ``max_recipients`` answered ``452 4.5.3`` in one transaction before
    they count as errors (Postfix's ``smtpd_recipient_overshoot_limit``); so for the
    ``503`` answers to what a pipelining client sent behind a refused MAIL."""
    max_junk_commands: int = 100
    """Commands that move no mail forward before ``421 4.7.0`` and a close (Postfix's
    ``smtpd_junk_command_limit``)."""
    lmtp: bool = False
    """Speak LMTP (RFC 2033): LHLO, and one reply per recipient after the content."""
    dsn: bool = False
    """Offer DSN (RFC 3461): the machine checks RET, ENVID, NOTIFY and ORCPT; honouring
    them (the reports they ask for) is the handler's part."""
    binarymime: bool = False
    """Offer BINARYMIME (RFC 3030 §3) beside CHUNKING: binary content, sent with BDAT only."""
    limits: bool = False
    """Announce LIMITS (RFC 9422): ``RCPTMAX`` is ``max_recipients``."""
    requiretls: bool = False
    """Offer REQUIRETLS (RFC 8689) over TLS; the handler finds it in ``mail_params`` and
    must then keep the message to verified TLS, or return it."""
    framing: FramingPolicy | None = None
    addresses: AddressPolicy | None = None
    """Which addresses beyond RFC 5321's grammar MAIL and RCPT take (the machine's
    ``addresses``): strict for None, as ``framing`` is; ``AddressPolicy.postfix()``
    takes what Postfix does by default."""
    connection_factory: Callable[[ServerOptions], ServerConnection] | None = None
    """Builds the machine of each session, called as the session starts, to set the
    machine options not listed here: start from ``options.build_connection(...)``.
    What the server sets is the server's: a machine that disagrees with it, weaker
    or stricter, or that is not new, is refused (a ``421`` greeting and a close,
    logged), as when the factory raises. See :meth:`check_connection`."""
    auth: AuthConfig | None = None
    """Offers SMTP AUTH (RFC 4954) with these credential checks or mechanisms."""
    auth_require_tls: bool = True
    """Offer mechanisms that show a reusable secret (PLAIN, LOGIN, bearer tokens) only
    under TLS (RFC 4954 §4, RFC 4616 §5)."""
    require_auth: bool = False
    """Refuse ``MAIL`` with ``530 5.7.0`` until AUTH succeeds (a submission server)."""
    max_auth_failures: int = 3
    """Failed AUTH attempts per session; the next one gets ``421 4.7.0`` and a close."""
    auth_failure_delay: float = 2.0
    """Seconds a failed AUTH waits before its reply (Dovecot's ``auth_failure_delay``,
    Postfix's ``smtpd_error_sleep_time``), so that a client guessing passwords makes a
    guess every so often, not a thousand a second. Only that session waits; ``0``
    answers at once."""
    proxy_protocol_from: Sequence[str] = ()
    """Read HAProxy's PROXY protocol header (v1 or v2, :mod:`smtpcore.proxy`) before the
    greeting and take the client's address from it. Each connection must come from
    one of these addresses or networks (``"127.0.0.1"``, ``"10.0.0.0/8"``) and start
    with a valid header, whole within ``proxy_protocol_timeout``; any other is closed
    at once."""
    proxy_protocol_timeout: float = DEFAULT_PROXY_TIMEOUT
    """Seconds a proxy of ``proxy_protocol_from`` has to send its whole header, as
    Postfix's ``smtpd_upstream_proxy_timeout``; past it the connection is closed.
    Not ``timeouts.greeting``: a proxy writes its header at once, and one trickled
    would hold a session slot for minutes."""
    xclient_from: Sequence[str] = ()
    """Offer XCLIENT and XFORWARD (Postfix) to clients from these addresses or networks
    (``"127.0.0.1"``, ``"10.0.0.0/8"``), as Postfix's ``smtpd_authorized_xclient_hosts``:
    a proxy or content filter there may name the client it speaks for. To any other
    client the commands do not exist (``500 5.5.2``)."""
    auth_mechanisms: Mapping[str, MechanismFactory] = field(init=False, repr=False, compare=False)
    proxy_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)
    forwarder_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)
    """The mechanisms offered, by name, as ``auth`` gives them."""
    _machine_options: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    """The machine's constructor keywords these options make (see :meth:`build_connection`)."""
    _machine_config: ServerConfig = field(init=False, repr=False, compare=False)
    """What every session's machine is built with, built once: a server's
    connections share it rather than each holding these options itself."""
    _new_session_state: Mapping[str, object] = field(init=False, repr=False, compare=False)
    """What a new machine shows of its session (:data:`_SESSION_STATE`), read once:
    what :meth:`check_connection` holds a factory's machine to."""

    def __post_init__(self) -> None:
        # Refused now, not at each session's greeting; kept in the form the machine
        # takes, so that every reply the server writes names the host as the machine does.
        object.__setattr__(self, "hostname", a_label_hostname(self.hostname))
        if self.tls_on_connect and self.ssl_context is None:
            raise ValueError("tls_on_connect needs an ssl_context")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if self.max_sessions_per_address is not None and self.max_sessions_per_address < 1:
            raise ValueError("max_sessions_per_address must be at least 1 (or None)")
        checked_prefix_length(self.client_ipv6_prefix_length)
        object.__setattr__(self, "auth_failure_delay", checked_delay(self.auth_failure_delay))
        timeout = checked_proxy_timeout(self.proxy_protocol_timeout)
        object.__setattr__(self, "proxy_protocol_timeout", timeout)
        auth = self.auth
        if isinstance(auth, Authenticator):
            mechanisms = auth.server_mechanisms(self.hostname)
        else:
            mechanisms = mechanism_factories("auth", {} if auth is None else auth)
        object.__setattr__(self, "auth_mechanisms", mechanisms)
        try:
            object.__setattr__(self, "proxy_networks", networks(self.proxy_protocol_from))
        except ValueError as exc:
            raise ValueError(f"proxy_protocol_from: {exc}") from None
        try:
            object.__setattr__(self, "forwarder_networks", networks(self.xclient_from))
        except ValueError as exc:
            raise ValueError(f"xclient_from: {exc}") from None
        if self.require_auth and not mechanisms:
            raise ValueError("require_auth needs auth")
        in_plaintext = [
            name
            for name in mechanisms
            if name in SERVER_MECHANISMS and not SERVER_MECHANISMS[name].requires_tls
        ]
        if mechanisms and not in_plaintext and self.auth_require_tls and not self.ssl_context:
            raise ValueError(
                f"{', '.join(mechanisms)} need TLS, and there is no ssl_context: "
                "give one, or pass auth_require_tls=False to offer them in plaintext"
            )
        machine_options: dict[str, Any] = {
            "lmtp": self.lmtp,
            "dsn": self.dsn,
            "binarymime": self.binarymime,
            "limits": self.limits,
            "requiretls": self.requiretls,
            "xclient": bool(self.forwarder_networks),
            "xforward": bool(self.forwarder_networks),
            "max_recipients": self.max_recipients,
            "max_recipient_overshoot": self.max_recipient_overshoot,
            "max_junk_commands": self.max_junk_commands,
            "max_message_size": self.max_message_size,
            "framing": self.framing,
            "addresses": self.addresses,
            "starttls": self.ssl_context is not None and not self.tls_on_connect,
            "require_tls": self.require_tls,
            "auth_mechanisms": list(mechanisms),
            "auth_require_tls": self.auth_require_tls,
            "require_auth": self.require_auth,
            "max_auth_failures": self.max_auth_failures,
        }
        object.__setattr__(self, "_machine_options", machine_options)
        configured = ServerConnection(self.hostname, **machine_options)
        object.__setattr__(self, "_machine_config", configured._config)
        object.__setattr__(self, "_new_session_state", session_state(configured, _SESSION_STATE))

    def new_connection(self) -> ServerConnection:
        """A session's machine as the server builds it, with no ``connection_factory``."""
        # Every connection's machine shares one configuration (_machine_config), built
        # with the options: only the session's own state is made per connection.
        conn = ServerConnection.__new__(ServerConnection)
        conn._begin(self._machine_config)
        return conn

    def build_connection(
        self, machine: type[ServerConnection] = ServerConnection, /, **machine_options: Any
    ) -> ServerConnection:
        """For a ``connection_factory``: the machine this server builds (of the class
        ``machine``, a :class:`~smtpcore.smtp.ServerConnection` subclass, say), with
        ``machine_options``, keywords of its constructor that the server does not
        set. One it sets (``starttls``, ``max_recipients``, ``auth_mechanisms``...)
        is a ``ValueError`` naming the server's keyword: a factory never weakens the
        server's TLS, AUTH or size settings."""
        refuse_server_keywords(machine_options, self._machine_server_keywords())
        return machine(self.hostname, **self._machine_options, **machine_options)

    def check_connection(self, conn: ServerConnection) -> ServerConnection:
        """``conn``, a machine a ``connection_factory`` built, once it has every option
        the server sets (:meth:`build_connection`'s, ``hostname`` and the AUTH
        mechanisms included) as the server has it, else a ``ValueError`` naming the
        first that differs. Weaker, a session would go without the server's guards;
        stricter, the server's settings would no longer say what it does: either is
        set on the server. ``tls`` and ``trusted_forwarder`` are not compared: the
        server sets them on every session's machine. The machine must also be new
        (its ``state``, ``buffered``, ``authenticated``, ``helo_name`` and the rest of
        the session it shows a new machine's): one already authenticated, say,
        would take MAIL on a ``require_auth`` server with no AUTH."""
        if not isinstance(conn, ServerConnection):
            raise TypeError(
                f"connection_factory gave {type(conn).__name__}, not a ServerConnection"
            )
        config = self._machine_config
        expected = {name: _option_value(config, name) for name in self._server_set()}
        check_agreement(conn, expected, _SERVER_KEYWORDS, _option_value)
        check_new(conn, self._new_session_state)
        return conn

    def _server_set(self) -> tuple[str, ...]:
        """The machine options the server sets, as the machine names them."""
        return ("hostname", *self._machine_options)

    def _machine_server_keywords(self) -> dict[str, str]:
        """Every machine option the server sets -> the server keyword that sets it."""
        names = (*self._machine_options, *_SERVER_KEYWORDS)
        return {name: _SERVER_KEYWORDS.get(name, name) for name in names}


class ServerKeywords(TypedDict, total=False):
    """The keywords ``SMTPServer`` passes on to :class:`ServerOptions`, for type checkers.

    Defaults and documentation live in :class:`ServerOptions` alone; a test holds
    these names and types to its fields, so a new option is declared there and here.
    """

    ssl_context: ssl.SSLContext | None
    require_tls: bool
    tls_on_connect: bool
    timeouts: Timeouts
    max_sessions: int
    max_sessions_per_address: int | None
    client_ipv6_prefix_length: int
    max_message_size: int | None
    max_recipients: int
    max_recipient_overshoot: int
    max_junk_commands: int
    lmtp: bool
    dsn: bool
    binarymime: bool
    limits: bool
    requiretls: bool
    framing: FramingPolicy | None
    addresses: AddressPolicy | None
    connection_factory: Callable[[ServerOptions], ServerConnection] | None
    auth: AuthConfig | None
    auth_require_tls: bool
    require_auth: bool
    max_auth_failures: int
    auth_failure_delay: float
    proxy_protocol_from: Sequence[str]
    proxy_protocol_timeout: float
    xclient_from: Sequence[str]
