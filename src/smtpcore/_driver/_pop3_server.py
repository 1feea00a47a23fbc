"""The one POP3 server session loop, shared by the asyncio and trio adapters.

:class:`POP3ServerSession` drives a :class:`~smtpcore.pop3.ServerConnection`
over a :class:`~smtpcore._driver.Transport` and serves the maildrop a
:class:`~smtpcore.maildrop.Mailstore` opens. Answers to pipelined commands
(RFC 2449 §6.6) are written together once the commands already received are
answered; a message is streamed from the maildrop in chunks, never held whole.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, fields
from inspect import isawaitable
from types import CoroutineType, GeneratorType
from typing import TYPE_CHECKING, Any, Final, TypedDict, TypeVar

from smtpcore._driver._factory import (
    MachinesInUse,
    check_agreement,
    check_new,
    refuse_server_keywords,
    session_state,
)
from smtpcore._driver._listener import (
    BaseListener,
    ConnectionLost,
    ServedSession,
    SessionRegistry,
    session_address,
)
from smtpcore._driver._logtext import (
    NO_CLEAR_PASSWORD,
    describe_error,
    loggable,
    loggable_reply,
    login_fields,
    named_mechanism,
    no_credential_line,
)
from smtpcore._driver._own_timeouts import DeadlinePassed, seconds_text
from smtpcore._driver._proxied import (
    DEFAULT_PROXY_TIMEOUT,
    Network,
    checked_proxy_timeout,
    client_text,
    networks,
)
from smtpcore._driver._timeouts import DEFAULT_POP3_TIMEOUTS, POP3Timeouts, checked_delay
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._hostname import checked_hostname
from smtpcore._ip import CLIENT_IPV6_PREFIX_LENGTH, checked_prefix_length, unmapped
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.handler import _runs_in_thread
from smtpcore.maildrop import (
    Maildrop,
    MaildropError,
    MaildropInUse,
    Mailstore,
    MechanismFactory,
    MessageInfo,
    MessageUnavailable,
    POP3Session,
)
from smtpcore.pop3 import (
    Apop,
    Auth,
    AuthAnswer,
    AuthMechanisms,
    AuthResponse,
    BadCommand,
    Capa,
    ConnectionClosed,
    Continue,
    Dele,
    EndOfResponse,
    Err,
    Event,
    List,
    MessageNumbers,
    Noop,
    Ok,
    Pass,
    Quit,
    ResponseData,
    Retr,
    Rset,
    ServerAuth,
    ServerConnection,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
    apop_matches,
    format_lines,
    top_chunks,
    top_chunks_async,
)
from smtpcore.pop3._events import MECHANISM_NAME
from smtpcore.sasl import ChannelBindings, offered_mechanisms

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BasePOP3Server",
    "POP3ServerKeywords",
    "POP3ServerOptions",
    "POP3ServerSession",
    "POP3ServerState",
]

logger = logging.getLogger("smtpcore.pop3.server")

READ_SIZE: Final = 65536
_WRITE_SIZE: Final = 262144
"""Bytes of answers gathered before a write: a listing or a message goes out in
pieces this big, and many small pipelined answers in one."""


class _SessionAuth(ServerAuth):
    """One session's AUTH state (see :class:`~smtpcore.pop3.ServerAuth`), with what
    the session keeps beside it: ``in_thread``, whether the steps of the exchange
    under way run in a worker thread (its mechanism is an
    ``Authenticator(in_thread=True)``'s)."""

    def __init__(
        self,
        mechanisms: Mapping[str, MechanismFactory],
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        super().__init__(mechanisms, channel_bindings=channel_bindings)
        self.in_thread = False

    def fresh(self) -> _SessionAuth:
        """A new AUTH state with the same mechanisms and channel bindings, for a session
        whose exchange was abandoned to a worker thread still running its step."""
        return _SessionAuth(self.mechanisms, self.channel_bindings)


_TEMP_ERROR: Final = Err("Internal error, try again later", code="SYS/TEMP")
_NOT_REMOVED: Final = Err("Some deleted messages were not removed", code="SYS/TEMP")
_SHUTTING_DOWN: Final = Err("Server shutting down", code="SYS/TEMP")
_UNAVAILABLE: Final = Err("Service not available, try again later", code="SYS/TEMP")
_AUTH_FAILED: Final = Err("Authentication failed", code="AUTH")
_END_OF_RESPONSE: Final = EndOfResponse()
"""The one every multi-line answer ends with: an event is immutable, and making one
is a Python call a RETR."""
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]+")
_greetings = itertools.count(1)
_EMPTY_CHUNKS: Final = 65536
"""Empty chunks in a row that a message's iterator may give. An iterator that
gives nothing else and never ends (``iter(partial(file.read, n), None)`` at the
end of the file) would keep the session reading without a pause for the event
loop: past this many it has failed."""
_TRANSACTION_COMMANDS: Final = (Retr, Top, Stat, List, Uidl, Dele, Noop, Rset)

_LOGIN_COMMAND: Final = re.compile(rb"(USER|PASS|APOP|AUTH)(?=[ \r\n]|\Z)", re.IGNORECASE)
"""A login command's keyword, read as the machine reads it, up to the first space:
``AUTHX`` or ``USERS`` is an unknown command, not a login refused."""

T = TypeVar("T")


def _shown(response: Ok | Err) -> str:
    """A response as its log line shows it: its status line, escaped."""
    return loggable_reply(response.to_bytes().decode("utf-8").rstrip("\r\n"))


def _text(message: object) -> str:
    """An error message fit for a status line (UTF-8 text: a lone surrogate is
    replaced)."""
    text = str(message).encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_RE.sub(" ", text).strip()[:200]


def _is_loopback(peer: tuple[str, int] | None) -> bool:
    if peer is None:
        return False
    try:
        return ipaddress.ip_address(unmapped(peer[0].split("%", 1)[0])).is_loopback
    except ValueError:
        return False


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
        new = self._session_connection(_NO_LOGINS)
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
        refuse_server_keywords(machine_options, _POP3_SERVER_KEYWORDS)
        conn = self._session_connection(_NO_LOGINS, machine, machine_options)
        setattr(conn, _LOGIN_PLACEHOLDERS, _SessionLogins.of(conn))
        return conn

    def _session_connection(
        self,
        logins: _SessionLogins,
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
        check_agreement(conn, expected, _POP3_SERVER_KEYWORDS)
        check_new(conn, self._new_session_state)
        return conn


@dataclass(frozen=True, slots=True)
class _SessionLogins:
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
    def of(cls, conn: ServerConnection) -> _SessionLogins:
        """The logins the machine ``conn`` offers now."""
        return cls(
            user=conn.offers_user,
            apop=conn.offers_apop,
            sasl_mechanisms=tuple(conn.sasl_mechanisms),
            require_tls=conn.require_tls,
        )

    def changed(self, other: _SessionLogins) -> list[str]:
        """The machine attributes whose values differ in ``other``."""
        names = {"user": "offers_user", "apop": "offers_apop"}
        return [
            names.get(item.name, item.name)
            for item in fields(self)
            if getattr(self, item.name) != getattr(other, item.name)
        ]


_NO_LOGINS: Final = _SessionLogins(user=False, apop=False, sasl_mechanisms=(), require_tls=False)
"""What ``build_connection`` builds with: nothing offered that the session's own values
would not add."""
_LOGIN_PLACEHOLDERS: Final = "_smtpcore_login_placeholders"
"""The attribute in which ``build_connection`` records the logins it gave its machine,
placeholders. A machine that still has them gets the session's; one whose factory
changed any, like one built by hand, has chosen its own, which the server checks and
never silently replaces (see :meth:`POP3ServerSession._factory_connection`)."""
_POP3_SESSION_STATE: Final = ("state", "buffered", "user", "utf8", "apop_timestamp")
"""What a machine shows of the session it has run (``tls`` aside: the server sets it):
a factory's machine must have a new machine's values. Public session state added to
the machine belongs here."""

_POP3_SERVER_KEYWORDS: Final = {
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
    pipelining: bool
    expire: str | int | None
    login_delay: str | int | None
    implementation: str | None
    connection_factory: Callable[[POP3ServerOptions], ServerConnection] | None
    proxy_protocol_from: Sequence[str]
    proxy_protocol_timeout: float


class POP3ServerState(SessionRegistry["POP3ServerSession"]):
    """What the sessions of one POP3 server share: options, the mailstore, the live
    sessions, and whether the server is shutting down."""

    logger = logger

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
            stopping_reply=_SHUTTING_DOWN.to_bytes() if plain else b"",
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


class POP3ServerSession(ServedSession):
    """One connection, from greeting to close."""

    __slots__ = (
        "_closing",
        "_failures",
        "_out",
        "_out_size",
        "_sasl",
        "conn",
        "listing",
        "maildrop",
        "numbers",
        "options",
        "retrieved",
        "store",
    )

    logger = logger
    protocol = "POP3"
    state: POP3ServerState
    session: POP3Session

    def __init__(
        self, transport: Link, state: POP3ServerState, peer: tuple[str, int] | None
    ) -> None:
        # ServedSession's fields are set here, as in the SMTP session's constructor
        # (_smtp_server.ServerSession.__init__): a base constructor costs a call a connection.
        self.transport = transport
        self.state = state
        self.options = options = state.options
        self.store = state.store
        self.session = POP3Session(
            hostname=options.hostname,
            peer=peer,
            local=session_address(transport.local_address),
        )
        self.conn: ServerConnection | None = None
        self.maildrop: Maildrop | None = None
        self.listing: Sequence[MessageInfo] = ()
        self.numbers = MessageNumbers(0)
        self.retrieved: set[int] = set()
        self._sasl = _SessionAuth({})
        self._failures = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._write_cut = False
        self._closing = False
        self._waiting_idle = False

    # -- the loop ---------------------------------------------------------

    async def _ended(self) -> None:
        if self.options.connection_factory is not None and self.conn is not None:
            self.state.factory_machines.give_back(self.conn)
        await self._release()

    async def _release(self) -> None:
        """Close the maildrop, releasing its lock (RFC 1939 §6), under the store
        timeout: a close that hangs must not hold the session and its connection."""
        maildrop, self.maildrop = self.maildrop, None
        if maildrop is not None:
            try:
                await self._store(maildrop.close)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                user = loggable(str(self.session.user))
                if not self._timed_out(exc, "closing the maildrop of %s", user):
                    logger.exception("closing the maildrop of %s failed", user)

    async def _logins(self, client: tuple[str, int] | None) -> _SessionLogins:
        """What this session offers: the store's logins and mechanisms, and
        ``require_tls`` (by default, for a ``client`` off loopback: see
        :meth:`_known_client`)."""
        self._sasl.mechanisms = await self._offered_mechanisms()
        require_tls = self.options.require_tls
        if require_tls is None:
            require_tls = self.options.stls and not _is_loopback(client)
        return _SessionLogins(
            user=self.state.user_login,
            apop=self.state.apop_login and bool(self.store.apop),
            sasl_mechanisms=tuple(self._sasl.mechanisms),  # more once TLS is up: _stls
            require_tls=require_tls,
        )

    def _factory_connection(self, logins: _SessionLogins) -> ServerConnection:
        """The ``connection_factory``'s machine, checked against the server
        (:meth:`POP3ServerOptions.check_connection`), with the session's ``logins``:
        on a machine of ``build_connection`` that kept its placeholders, they are
        the session's to fill; logins the factory chose (by hand, or by changing the
        placeholders) are checked, one rule for both, never silently replaced. A
        machine running another session is refused, and one that passes is taken
        (:class:`~smtpcore._driver._factory.MachinesInUse`) until :meth:`_ended`."""
        options = self.options
        assert options.connection_factory is not None
        conn = options.connection_factory(options)
        self.state.factory_machines.check_free(conn)
        conn = options.check_connection(conn)
        placeholders = getattr(conn, _LOGIN_PLACEHOLDERS, None)
        chosen = _SessionLogins.of(conn)
        if chosen != placeholders:
            try:
                self._check_chosen_logins(conn, logins)
            except ValueError as exc:
                if placeholders is None:
                    raise
                raise ValueError(
                    f"the factory changed {', '.join(placeholders.changed(chosen))} on its "
                    "build_connection() machine, whose logins are then all its own, "
                    f"checked as a hand-built machine's: {exc}"
                ) from None
        conn.offers_user = logins.user
        conn.offers_apop = logins.apop  # before the greeting: its APOP timestamp
        conn.sasl_mechanisms = logins.sasl_mechanisms
        conn.require_tls = logins.require_tls
        self.state.factory_machines.take(conn)  # once every check passed: see _ended
        return conn

    @staticmethod
    def _check_chosen_logins(conn: ServerConnection, logins: _SessionLogins) -> None:
        """``ValueError`` for a machine whose logins the factory chose and the
        session's would change: the server never lowers what a factory chose (its
        ``require_tls``, the mechanisms it listed), nor offers logins the mailstore
        does not serve."""
        expected = {"offers_user": logins.user, "offers_apop": logins.apop}
        check_agreement(conn, expected, _POP3_SERVER_KEYWORDS)
        if conn.require_tls and not logins.require_tls:
            raise ValueError(
                "connection_factory: the machine has require_tls=True where the server "
                "does not require TLS of this client: set require_tls on the server"
            )
        named = conn.sasl_mechanisms
        if named and set(named) != set(logins.sasl_mechanisms):
            raise ValueError(
                f"connection_factory: the machine offers SASL {' '.join(named)} where the "
                f"mailstore offers {' '.join(logins.sasl_mechanisms) or 'none'}: leave "
                "sasl_mechanisms to the server (options.build_connection()), or change "
                "the mailstore's sasl_mechanisms"
            )

    async def _offered_mechanisms(self) -> dict[str, MechanismFactory]:
        """The store's mechanisms for this session, SCRAM-SHA-256-PLUS only where the
        TLS layer gives channel binding data (RFC 5802 §6, RFC 9266), which the
        exchange then hands to each mechanism.

        The store's hook may be a coroutine, as its other hooks are, awaited under
        the ``store`` timeout, or a plain method (a fixed table needs no wait)."""
        bindings = self._sasl.channel_bindings = self.transport.channel_bindings()
        if not self.state.sasl_login:
            return {}
        try:
            answer = self.store.sasl_mechanisms(self.session)
            offered = await self._store(lambda: answer) if isawaitable(answer) else answer
            by_name = {name.upper(): factory for name, factory in offered.items()}
            for name in by_name:  # each goes on the CAPA SASL line (RFC 4422 §3.1)
                if not MECHANISM_NAME.fullmatch(name):
                    raise ValueError(f"not a SASL mechanism name: {name!r}")
            return {name: by_name[name] for name in offered_mechanisms(by_name, bindings)}
        except BaseException as exc:  # a result that is no mapping of names, too
            if not self._call_failed(exc):
                raise
            logger.exception("sasl_mechanisms failed: no SASL offered")
            return {}

    async def _open(self) -> None:
        options = self.options
        timeouts = options.timeouts
        client = await self._known_client(timeouts.send)
        if options.tls_on_connect:
            await self._handshake()
        elif self.session.tls is None:
            finishing = self.tls_from_the_start(self.options.timeouts.tls_handshake)
            if finishing is not None:
                await finishing
            self.session.tls = self.transport.tls
        logins = await self._logins(client)
        if options.connection_factory is None:
            conn = self.conn = options._session_connection(logins)
        else:
            try:
                conn = self.conn = self._factory_connection(logins)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                # As a server that cannot serve (RFC 1939 §4 allows -ERR for the greeting).
                logger.error("the session is refused: %s", describe_error(exc), exc_info=exc)
                self.conn = options._session_connection(_NO_LOGINS)
                self._goodbye(_UNAVAILABLE)
                return
        conn.tls = self.session.tls is not None
        if self.state.stopping:
            self._answer(_SHUTTING_DOWN)
        else:
            try:
                greeting = conn.greeting(os.getpid(), f"{time.time_ns()}.{next(_greetings)}")
            except LocalProtocolError:  # a host name unfit for the APOP timestamp
                greeting = conn.greeting()
            self._answer(greeting)

    async def _close(self, timed_out: bool) -> bool:
        if timed_out:
            if not self.state.stopping:
                # RFC 1939 §3: the autologout timer closes without a response, and
                # without entering UPDATE.
                raise ConnectionLost from None
            self._goodbye(_SHUTTING_DOWN)
        await self._flush()
        # The server's own goodbye (a shutdown's, a failed maildrop's) or a protocol
        # error's -ERR (too many bad commands): not after QUIT, nor the client's close.
        conn = self.conn
        return self._closing or (conn is not None and conn.state is State.ERROR)

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation (see
        :class:`~smtpcore._driver._listener.ServedSession`).

        The loop answers the client's commands until the session ends, written
        out here rather than in a coroutine of its own, with its read, so that
        a session waiting for its client is suspended in this one frame.
        """
        self.state.sessions.setdefault(self)  # as admitted, or under no address
        watching = None  # the watchdog's block, once entered (see ServedSession.run)
        try:
            await self._open()
            block = self.transport.watchdog()
            watchdog = self._watchdog = await block.__aenter__()
            watching = block
            conn = self.conn
            assert conn is not None
            new_wait = True  # the next read starts a wait for a new command
            while conn.state is not State.CLOSED and not self._closing:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    if isinstance(exc.reply_hint, Err):
                        self._out.append(conn.send(exc.reply_hint))
                    break
                if event is NEED_DATA:
                    # Write the answers due, then wait for the next command under
                    # the autologout timer (the watchdog: when it goes off,
                    # _close closes). It runs from the start of the wait for a
                    # command until its line is complete, however many reads it
                    # takes: a client that trickles a byte at a time cannot hold
                    # a session forever.
                    if self.state.stopping:
                        self._goodbye(_SHUTTING_DOWN)
                        break
                    if new_wait:
                        watchdog.arm(self.options.timeouts.autologout)
                    else:
                        watchdog.resume()
                    try:
                        if self._out:
                            await self._write_out()
                            if self.state.stopping:  # begun during the write: no wait
                                self._goodbye(_SHUTTING_DOWN)
                                break
                        # A shutdown may wake the wait, not the write.
                        self._waiting_idle = True
                        # The bytes, or a wait for them (see Link.receive_or_wait).
                        got = self.transport.receive_or_wait(READ_SIZE)
                        data = got if isinstance(got, bytes) else await got
                        while data is None:  # the wait is over: read again
                            if isinstance(got, CoroutineType):  # not a wait: a read
                                raise TypeError("the transport's receive_some gave None")
                            got = self.transport.receive_or_wait(READ_SIZE)
                            data = got if isinstance(got, bytes) else await got
                    except OSError:
                        data = got = b""
                    finally:
                        self._waiting_idle = False
                        watchdog.disarm()
                    conn.receive_data(data)
                    del data, got  # the machine's now: a waiting session must not keep it
                    new_wait = False
                elif event is PAUSED:  # pragma: no cover - every event is answered at once
                    raise RuntimeError(f"machine paused in {conn.state}")
                elif isinstance(event, ConnectionClosed):
                    break
                else:
                    new_wait = True
                    await self._dispatch(event)
        except BaseException as exc:
            ended: BaseException | None = exc
        else:
            ended = None
        await self._end(ended, watching)

    def _goodbye(self, response: Err) -> None:
        """Answer, then end the session (nothing is deleted: there was no QUIT).

        Where a response is part-written (a multi-line one under way, or a write
        cut off part-way: see :attr:`_write_cut`), the close alone ends it: a status
        line there would be read as its content (RFC 1939 §3), and mid-line at that."""
        assert self.conn is not None
        if not (self._write_cut or self.conn.in_multiline_response):
            self._out.append(response.to_bytes())
        self._closing = True

    async def _flush(self) -> None:
        if self._out:
            await self._write_out()

    async def _write_out(self) -> None:
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_size = 0
        try:
            sent = self.transport.send_nowait(data)
            if sent < len(data):
                async with self.transport.deadline(self.options.timeouts.send):
                    await self._send_all(data[sent:])
        except (OSError, TimeoutError):
            if self.conn is not None:
                self.conn.send_failed()
            raise ConnectionLost from None

    async def _emit(self, data: bytes) -> None:
        """Queue bytes for the client, writing once enough has gathered."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _WRITE_SIZE:
            await self._write_out()

    def _answer(self, response: Ok | Err | Continue) -> bool:
        """Send ``response`` through the machine; True if it went out as given."""
        assert self.conn is not None
        try:
            self._out.append(self.conn.send(response))
            return True
        except LocalProtocolError:
            logger.exception("the answer %r is not legal here", response)
            self._out.append(self.conn.send(_TEMP_ERROR))
            return False

    async def _store(self, call: Callable[[], Awaitable[T]]) -> T:
        """A mailstore call under the store timeout, which passed is
        :class:`DeadlinePassed`; the call's own ``TimeoutError`` (its database's, its
        socket's) is its failure, as any exception of its own is."""
        return await self.transport.within(self.options.timeouts.store, call())

    def _failure(
        self, exc: BaseException, call: str, *args: object, answer: Err = _TEMP_ERROR
    ) -> Err:
        """The answer to a mailstore call that failed with ``exc`` (one
        :meth:`_call_failed` says is its own): a :class:`MaildropError`'s ``-ERR``,
        else ``answer``, with ``exc`` logged as the failure of ``call % args``. A
        :class:`MaildropError` the store has not logged itself is logged here (see
        :func:`_refusal_level`), so that every refusal leaves one line, and one only."""
        if isinstance(exc, MaildropError):
            if not exc.logged:
                level = _refusal_level(exc)
                logger.log(level, f"{call} refused: %s", *args, loggable(_text(exc)))
            return _maildrop_err(exc)
        if not self._timed_out(exc, call, *args):
            logger.error(f"{call} failed", *args, exc_info=exc)
        return answer

    def _timed_out(self, exc: BaseException, call: str, *args: object) -> bool:
        """Whether ``exc`` is the ``store`` timeout of ``call % args`` (the deadline's
        own, :class:`DeadlinePassed`), which is then logged as the expected event it
        is (a slow disk, a big maildrop): one WARNING naming the call, the session's
        client and the deadline, no traceback, as Dovecot logs a timeout. A
        ``TimeoutError`` the store raised itself is its failure, not this. The
        client's answer is the caller's, as for any failure."""
        if not isinstance(exc, DeadlinePassed):
            return False
        logger.warning(
            f"{call} from %s: store timeout, given up after %s",
            *args,
            client_text(self.session),
            seconds_text(exc.seconds),
        )
        return True

    # -- commands ---------------------------------------------------------

    async def _dispatch(self, event: Event) -> None:
        """Answer a command; those of the TRANSACTION state asked first, the commands
        of nearly every exchange of a session."""
        conn = self.conn
        assert conn is not None
        if isinstance(event, _TRANSACTION_COMMANDS):
            await self._transaction(event)
        elif isinstance(event, BadCommand):
            await self._bad_command(event)
        elif isinstance(event, Capa):
            self._lines(Ok("Capability list follows"), ["CAPA", *conn.capabilities()])
        elif isinstance(event, AuthMechanisms):
            self._lines(Ok("Mechanisms follow"), conn.offered_mechanisms())
        elif isinstance(event, User):
            self._answer(Ok("Send PASS"))  # the same for every name: no user probing
        elif isinstance(event, Pass):
            await self._pass(event)
        elif isinstance(event, Apop):
            await self._apop(event)
        elif isinstance(event, Auth):
            await self._auth(event)
        elif isinstance(event, AuthResponse):
            await self._auth_response(event)
        elif isinstance(event, Stls):
            await self._stls()
        elif isinstance(event, Utf8):
            self._answer(Ok("UTF8 enabled"))
        elif isinstance(event, Quit):
            await self._quit()
        else:  # pragma: no cover - the machine gives no other command
            self._answer(Err("Command not implemented"))

    async def _bad_command(self, event: BadCommand) -> None:
        """A line the machine refused. An unreadable answer to a ``+`` challenge ends
        the SASL exchange (RFC 5034 §4); after the mechanism had refused the
        credentials (a token's error challenge, RFC 7628 §3.2.2) that is the failed
        login the refusal already was, whatever ended it: the machine's ``-ERR``,
        after ``auth_failure_delay``, logged and counted as a failed login is. Any
        other refusal of a line of the exchange, or of a login command (USER, PASS,
        APOP, AUTH: before STLS where TLS is required, an unknown mechanism, a
        syntax error), judged no credential: answered at once and logged as such
        (:meth:`_no_credential_checked`)."""
        sasl = self._sasl
        answering = sasl.exchange_under_way
        refusal = sasl.abandon()
        if refusal is not None:
            await self._failed(
                "AUTH",
                refusal.named,
                mechanism=sasl.mechanism,
                no_secret=refusal.no_secret,
                answer=event.response,
            )
            return
        self._answer(event.response)
        login = _LOGIN_COMMAND.match(event.line)
        if answering:
            self._no_credential_checked("AUTH", event.response, sasl.mechanism)
        elif login is not None:
            command = login.group().decode("ascii").upper()
            named = named_mechanism(event.line, sasl.mechanisms) if command == "AUTH" else None
            self._no_credential_checked(command, event.response, named)

    def _no_credential_checked(self, command: str, answer: Err, mechanism: str | None) -> None:
        """A login ``command`` refused with ``answer`` before any credential was judged:
        no failed login, so answered at once, with no ``auth_failure_delay``, and
        logged in the line SMTP's server writes for such an AUTH, which fail2ban's
        filter does not read, with ``mechanism=`` when the server knows which."""
        peer = client_text(self.session)
        logger.info("%s", no_credential_line("pop3", command, peer, _shown(answer), mechanism))

    def _lines(self, answer: Ok, lines: Sequence[str]) -> None:
        """Answer a command whose content the machine gives (CAPA, bare AUTH): ``answer``
        then ``lines``, one a line."""
        conn = self.conn
        assert conn is not None
        self._answer(answer)
        self._out.append(conn.send(ResponseData(format_lines(lines))))
        self._out.append(conn.send(_END_OF_RESPONSE))

    async def _stls(self) -> None:
        conn = self.conn
        assert conn is not None
        if self.options.ssl_context is None:  # a machine offering what the server cannot
            self._answer(Err("TLS not available"))
            return
        self._answer(Ok("Begin TLS negotiation"))
        await self._flush()
        await self._handshake()
        conn.tls_started()
        if self.state.sasl_login:
            self._sasl.mechanisms = await self._offered_mechanisms()
            conn.sasl_mechanisms = tuple(self._sasl.mechanisms)

    async def _handshake(self) -> None:
        context = self.options.ssl_context
        assert context is not None
        await self._shake_hands(
            functools.partial(self.transport.start_tls, context, server_side=True),
            self.options.timeouts.tls_handshake,
        )
        self.session.tls = self.transport.tls

    # -- logging in -------------------------------------------------------

    async def _pass(self, event: Pass) -> None:
        user = self.conn.user if self.conn is not None else None
        assert user is not None
        try:
            ok = await self._store(
                lambda: self.store.check_password(self.session, user, event.password)
            )
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._answer(self._failure(exc, "check_password"))
            return
        if ok is True:  # nothing else logs in: a wrong answer must fail closed
            await self._login(user, "USER")
        elif ok is False:
            await self._failed("PASS", user)
        else:
            self._wrong_verdict("check_password", ok, "a bool")

    async def _apop(self, event: Apop) -> None:
        conn = self.conn
        assert conn is not None and conn.apop_timestamp is not None
        timestamp = conn.apop_timestamp
        try:
            secret = await self._store(lambda: self.store.apop_secret(self.session, event.name))
            matches = isinstance(secret, str) and apop_matches(timestamp, secret, event.digest)
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._answer(self._failure(exc, "apop_secret"))
            return
        if matches:
            await self._login(event.name, "APOP")
        elif secret is None or isinstance(secret, str):
            await self._failed("APOP", event.name, no_secret=secret is None)
        else:
            self._wrong_verdict("apop_secret", secret, "a str or None")

    def _wrong_verdict(self, hook: str, verdict: object, expected: str) -> None:
        """A login hook answered with the wrong type (an ``async def`` helper's coroutine
        left unawaited, a forgotten ``return``): the store's mistake, not the client's
        failed login, so it is logged at ERROR and answered ``-ERR [SYS/TEMP]`` at once,
        with no failure delay, no count and no line for fail2ban, as a SASL callback's
        is (:attr:`smtpcore.sasl.Failure.callback_error`)."""
        logger.error("%s gave %s, not %s", hook, type(verdict).__name__, expected)
        self._answer(_TEMP_ERROR)

    async def _auth(self, event: Auth) -> None:
        sasl = self._sasl
        sasl.in_thread = _runs_in_thread(sasl.mechanisms.get(event.mechanism))
        start = functools.partial(sasl.start, event)
        await self._sasl_step(start, event.mechanism.upper(), sasl.in_thread)

    async def _auth_response(self, event: AuthResponse) -> None:
        sasl = self._sasl
        step = functools.partial(sasl.step, event)
        # A cancel ("*") runs no mechanism code: answered in the loop.
        in_thread = sasl.in_thread and not event.cancel
        await self._sasl_step(step, sasl.mechanism, in_thread, cancel=event.cancel)

    async def _sasl_step(
        self,
        step: Callable[[], AuthAnswer],
        mechanism: str,
        in_thread: bool,
        *,
        cancel: bool = False,
    ) -> None:
        """Answer with a step of an AUTH exchange. What the store's mechanisms or
        their callables raise is the store's failure, answered as a store call's
        (``-ERR [SYS/TEMP]``, no failed login: no password was judged), and so is
        a cancellation that is not the session's (:meth:`_call_failed`); the next
        AUTH starts on a fresh exchange.

        With ``in_thread`` (an ``Authenticator(in_thread=True)``'s step) it runs in
        a worker thread, under the store timeout, as USER/PASS's login check is:
        the store's mechanisms check its credentials. Past it the exchange is left
        to its thread, which may still change it."""
        try:
            if in_thread:  # see Authenticator's in_thread
                answer = await self._store(lambda: self.transport.run_in_thread(step))
            else:
                answer = step()
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._sasl = self._sasl.fresh()
            self._answer(self._failure(exc, "SASL %s", mechanism))
            return
        await self._sasl_answer(answer, mechanism, cancel=cancel)

    async def _sasl_answer(self, answer: AuthAnswer, mechanism: str, *, cancel: bool) -> None:
        """Send what :class:`~smtpcore.pop3.ServerAuth` answered to a step of
        ``mechanism``, doing what it says the answer was: a login, a failed login, or
        a refusal that judged no credential (a mechanism this session cannot run, an
        initial response to a server-first one, which is a bad command too). A
        client's cancel (``*``) is none of these."""
        sasl = self._sasl
        success, failure = sasl.success, sasl.failure
        if failure is not None and failure.callback_error:
            # The application's mistake, never the client's failed login.
            logger.error("SASL %s failed: %s", sasl.mechanism, failure.reason)
        if success is not None:
            await self._login(success.authzid, sasl.mechanism)
        elif failure is not None and sasl.failed_login:
            await self._failed(
                "AUTH",
                failure.named,
                mechanism=sasl.mechanism,
                no_secret=failure.no_secret,
                answer=answer if isinstance(answer, Err) else _AUTH_FAILED,
            )
        else:
            self._answer(answer)
            if sasl.bad_command:
                conn = self.conn
                assert conn is not None
                conn.count_bad_command()
            if isinstance(answer, Err) and not cancel and (failure is None or sasl.bad_command):
                self._no_credential_checked("AUTH", answer, mechanism)

    async def _failed(
        self,
        command: str,
        named: str | None,
        *,
        mechanism: str | None = None,
        no_secret: bool = False,
        answer: Err = _AUTH_FAILED,
    ) -> None:
        """A failed login: ``answer`` (``-ERR [AUTH]``, or the machine's ``-ERR`` to a
        line that ended an exchange whose mechanism had refused the credentials; at
        ``max_auth_failures`` the closing one) after ``auth_failure_delay`` seconds,
        which this session alone waits, and logged in the line fail2ban's filter
        reads, with the AUTH ``mechanism``, and the user the client ``named`` only when the
        store's :meth:`~smtpcore.maildrop.Mailstore.is_user` knows it (a password
        typed as a name is not logged). A known user the store had no secret for
        (APOP or CRAM-MD5 and SCRAM keys: ``no_secret``) could not have logged in:
        answered alike, but logged as not possible in place of ``reject:``, so that
        a client trying each way in turn is not banned for it."""
        user = await self._known_user(named)
        delay = self.options.auth_failure_delay
        if delay:
            await self.transport.sleep(delay)
        self._failures += 1
        if self._failures >= self.options.max_auth_failures:
            answer = Err("Authentication failed, too many attempts", code="AUTH")
            self._closing = True
        self._answer(answer)
        peer = client_text(self.session)
        fields = login_fields(user, mechanism)
        answered = answer.to_bytes().decode("utf-8").rstrip("\r\n")
        if no_secret and user:
            logger.info(
                "pop3: %s from %s: %s; %s; %s", command, peer, answered, NO_CLEAR_PASSWORD, fields
            )
        else:
            logger.info("pop3: reject: %s from %s: %s; %s", command, peer, answered, fields)

    async def _known_user(self, name: str | None) -> str | None:
        """``name`` when the store's ``is_user`` says it names a user, else None (no
        name, or a call that failed, which is logged)."""
        if not name:
            return None
        try:
            known = await self._store(lambda: self.store.is_user(self.session, name))
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.error("is_user failed", exc_info=exc)
            return None
        return name if known is True else None

    async def _login(self, user: str, mechanism: str) -> None:
        """Open and lock the maildrop; then the session is in TRANSACTION (RFC 1939 §4)."""
        session = self.session
        session.mechanism = mechanism  # the credentials were right: the store may read it
        try:
            maildrop = await self._store(lambda: self.store.open_maildrop(session, user))
        except BaseException as exc:
            session.mechanism = None
            if not self._call_failed(exc):
                raise
            self._answer(self._failure(exc, "open_maildrop(%r)", user))
            return
        self.maildrop = maildrop
        try:
            listing = _checked_listing(await self._store(maildrop.messages))
        except BaseException as exc:
            if not self._call_failed(exc):
                session.mechanism = None
                raise
            await self._release()
            session.mechanism = None
            self._answer(self._failure(exc, "listing the maildrop of %r", user))
            return
        self.listing = listing
        self.numbers = MessageNumbers(len(listing))
        session.user = user
        count, size = self._totals()
        if not self._answer(Ok(f"Logged in, {count} messages ({size} octets)")):
            await self._release()

    def _totals(self) -> tuple[int, int]:
        listing = self.listing
        numbers = self.numbers
        return len(numbers), sum(listing[n - 1].size for n in numbers)

    # -- the transaction ---------------------------------------------------

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
            self._answer(Ok(f"Maildrop has {count} messages ({size} octets)"))
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
        self._answer(Ok(f"{count} messages ({size} octets)"))
        batch: list[str] = []
        for number in self.numbers:
            batch.append(line(number))
            if len(batch) == 4096:
                await self._emit(conn.send(ResponseData(format_lines(batch))))
                batch.clear()
        if batch:
            await self._emit(conn.send(ResponseData(format_lines(batch))))
        self._out.append(conn.send(_END_OF_RESPONSE))

    async def _send_message(self, event: Retr | Top) -> None:
        """Stream one message. The maildrop's ``open`` is called and the first chunk
        read before ``+OK``, so that a message that cannot be read (whatever ``open``
        raises, a first chunk that is not bytes) is answered with ``-ERR``; after
        that a failure can only close the connection. Chunks are read a write's
        worth at a time: from an async iterator under one ``store`` deadline
        (entered only when the reading has to wait), from a plain one as they come
        (a read that blocks could not be interrupted anyway)."""
        conn, maildrop = self.conn, self.maildrop
        assert conn is not None and maildrop is not None
        number = event.message
        raw: AsyncIterator[bytes] | Iterator[bytes] | None = None
        chunks: AsyncIterator[bytes] | Iterator[bytes] | None = None
        size = self.listing[number - 1].size
        ok = Ok(f"{size} octets" if isinstance(event, Retr) else "Top of message")
        answered = done = False
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
            self._out.append(conn.send(_END_OF_RESPONSE))
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
        while size < _WRITE_SIZE:
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
        while size < _WRITE_SIZE:
            chunk = next(chunks, None)
            if chunk is None:
                return batch, True
            empty = _batched(batch, chunk, empty)
            size += len(chunk)
        return batch, False

    async def _quit(self) -> None:
        conn = self.conn
        assert conn is not None
        hostname = self.options.hostname
        if conn.state is not State.UPDATE:
            self._answer(Ok(f"{hostname} POP3 server signing off"))
            return
        maildrop = self.maildrop
        assert maildrop is not None
        deleted = self.numbers.deleted
        user = self.session.user
        # Two deadlines: UPDATE never starts with one the wait has used up.
        for step, call in (
            ("wait before the UPDATE of %r", maildrop.before_update),
            ("UPDATE of %r", lambda: maildrop.update(deleted, frozenset(self.retrieved))),
        ):
            try:
                await self._store(call)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                self._answer(self._failure(exc, step, user, answer=_NOT_REMOVED))
                return
        left = len(self.numbers)
        self._answer(Ok(f"{hostname} POP3 server signing off ({left} messages left)"))


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


def _checked_listing(listing: Iterable[MessageInfo]) -> list[MessageInfo]:
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


def _refusal_level(exc: MaildropError) -> int:
    """How loud a store's own refusal is logged: a maildrop another session holds, or a
    message gone since the listing, is the normal course of things (INFO); anything
    else, a store that cannot serve, is for the operator (WARNING)."""
    if isinstance(exc, MaildropInUse | MessageUnavailable):
        return logging.INFO
    return logging.WARNING


def _maildrop_err(exc: MaildropError) -> Err:
    """``-ERR`` with a :class:`MaildropError`'s message and response code. A code
    that is none (RFC 2449 §8: levels of printable characters but ``/`` and ``]``,
    joined by ``/``) is the store's mistake: logged, and left out."""
    text = _text(exc)
    try:
        return Err(text, code=exc.code)
    except LocalProtocolError:
        logger.error("%s: %r is not a response code (RFC 2449 §8)", type(exc).__name__, exc.code)
        return Err(text)


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
