"""The one SMTP server session loop, shared by the asyncio and trio adapters.

:class:`ServerSession` drives a :class:`~smtpcore.smtp.ServerConnection` over
a :class:`~smtpcore._driver.Transport` and asks a
:class:`~smtpcore.handler.Handler` what to answer. At heart it is h11's
loop: take events until ``NEED_DATA``, answer each, write the replies in one
piece, read more. Replies to pipelined commands are written together, once
the commands already received are answered (RFC 2920 §3.1).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypedDict, TypeVar

from smtpcore._driver._factory import (
    MachinesInUse,
    check_agreement,
    check_new,
    refuse_server_keywords,
    session_state,
)
from smtpcore._driver._failures import LOCAL_ERROR, failure_reply, fault_text, no_room
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
from smtpcore._driver._own_timeouts import DeadlinePassed
from smtpcore._driver._ports import lmtp_port_refusal
from smtpcore._driver._proxied import (
    DEFAULT_PROXY_TIMEOUT,
    Network,
    checked_proxy_timeout,
    client_text,
    ip_peer,
    networks,
    trusted,
)
from smtpcore._driver._refusals import only_recipient, path_text, refusal_line
from smtpcore._driver._timeouts import DEFAULT_TIMEOUTS, Timeouts, checked_delay
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._hostname import a_label_hostname
from smtpcore._ip import CLIENT_IPV6_PREFIX_LENGTH, checked_prefix_length
from smtpcore._lines import FramingPolicy
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.address import AddressPolicy, Mailbox
from smtpcore.handler import (
    _APPENDS_CHUNKS,
    _BY_HOSTNAME,
    _FIXED_ANSWERS,
    Authenticator,
    AuthIdentity,
    Envelope,
    Handler,
    MechanismFactory,
    MessageReply,
    Recipient,
    Session,
    _answering,
    _runs_in_thread,
)
from smtpcore.sasl import SERVER_MECHANISMS, ChannelBindings, Failure, offered_mechanisms
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Parameters,
    Quit,
    Rcpt,
    RejectedMessage,
    Reply,
    Rset,
    ServerAuth,
    ServerConnection,
    StartTls,
    State,
    Vrfy,
    Xclient,
    Xforward,
)
from smtpcore.smtp._commands import VERBS
from smtpcore.smtp._ext.auth import read_submitter
from smtpcore.smtp._server_config import ServerConfig

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["BaseSMTPServer", "ServerKeywords", "ServerOptions", "ServerSession", "ServerState"]

logger = logging.getLogger("smtpcore.server")


_VERB: Final = re.compile(rb"[A-Za-z]{1,12}(?=[ \r\n]|\Z)")
"""A line's verb as the machine reads it: up to the first space."""
_KNOWN_VERBS: Final = frozenset(VERBS)


def _logged_verb(event: BadCommand) -> str:
    """What the reject log calls a refused line: ``AUTH`` for one that may carry a
    credential (an answer to a 334, an AUTH command), a verb the server knows by
    its name, any other line ``command``: its first letters may be a password
    sent where a command was due."""
    if event.secret:
        return "AUTH"
    match = _VERB.match(event.line)
    verb = match.group().decode("ascii").upper() if match else ""
    return verb if verb in _KNOWN_VERBS else "command"


_AUTH_COMMAND: Final = re.compile(rb"AUTH(?=[ \r\n]|\Z)", re.IGNORECASE)
"""An AUTH command line, its verb read as the machine reads it, up to the first space:
``AUTHX`` or ``AUTHENTICATE foo`` is an unknown command, not an AUTH refused."""


def _refusal_kind(reply: Reply) -> str:
    """What the log calls a line the machine refused: ``bad sequence`` for a ``503``
    (RFC 5321 §4.2.2, "Bad sequence of commands"), which a pipelining client meets
    after a refused MAIL as the normal course of RFC 2920 §3.1 and which refuses
    nothing of its own; ``reject`` for any other reply, the refusal fail2ban counts.
    The machine counts the 503s behind a refused MAIL toward ``max_recipient_overshoot``
    and every other one toward ``max_errors``."""
    return "bad sequence" if reply.code == 503 else "reject"


def _judged_no_credential(reply: Reply) -> bool:
    """Whether ``reply``, refusing a line of AUTH, is one that checked no credential:
    a 5xx, but not a ``503`` (a ``bad sequence``, as for any command), and not the
    ``421`` that ends a session for abuse (too many errors or failed logins), which
    fail2ban's filter bans."""
    return reply.code >= 500 and reply.code != 503


READ_SIZE: Final = 65536
"""Bytes asked of the transport per read: big enough for a pipelined batch, small
enough that unstuffing a chunk stays in the CPU cache."""

_IDLE_STATES: Final = frozenset({State.HELLO, State.READY, State.NO_SERVICE})
_GREETING_CODES: Final = frozenset({220, 554, 421})
"""What may greet a client (RFC 5321 §3.1, §4.3.2): the connection or the one XCLIENT names."""
_DATA_STATE: Final = State.DATA
_ERROR_STATE: Final = State.ERROR
"""A global: a member read through its enum class costs the class's __getattr__ hook."""
_OVER: Final = frozenset({State.ERROR, State.CLOSED})
"""A session over: its machine counts nothing more."""
_AUTH_UNAVAILABLE: Final = Reply(454, "Temporary authentication failure", "4.7.0")
_OK: Final = Reply(250, "OK")
_new: Final = object.__new__
_SET_RECIPIENT_MAILBOX: Final[Callable[[Recipient, Mailbox], None]] = vars(Recipient)[
    "mailbox"
].__set__
_SET_RECIPIENT_PARAMS: Final[Callable[[Recipient, Parameters], None]] = vars(Recipient)[
    "params"
].__set__


class _SessionAuth(ServerAuth):
    """One session's AUTH state (see :class:`~smtpcore.smtp.ServerAuth`), with what
    the session keeps beside it: ``names``, every mechanism its machine was built
    with (``-PLUS`` ones are offered only over a TLS layer that gives channel
    binding data, see :meth:`ServerSession._offer_auth`), and ``mechanism``, the
    one of the exchange under way. Here rather than in two slots of every
    session: a session that offers no mechanism shares :data:`_NO_AUTH`."""

    def __init__(
        self,
        names: Sequence[str],
        mechanisms: Mapping[str, MechanismFactory],
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        super().__init__(mechanisms, channel_bindings=channel_bindings)
        self.names = names
        self.mechanism = ""
        self.in_thread = False
        """Whether the steps of the exchange under way run in a worker thread (its
        mechanism is an ``Authenticator(in_thread=True)``'s)."""

    def fresh(self) -> _SessionAuth:
        """A new AUTH state with the same mechanisms and channel bindings, for a session
        whose exchange was abandoned to a worker thread still running its step."""
        return _SessionAuth(self.names, self.mechanisms, self.channel_bindings)


_NO_AUTH: Final = _SessionAuth((), {})
"""The AUTH state of a session that offers no mechanism: its machine refuses every
AUTH (504) before the session sees one, and it keeps nothing, so every such session
shares it."""
_HANDLER: Final = Handler()
"""Handler's own hooks: they answer for a hook a handler leaves as it is or answers None
to, so that the defaults live in :class:`~smtpcore.handler.Handler` alone."""

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


_TRANSACTION_HOOKS: Final[Mapping[str, str]] = {
    "handle_mail": "MAIL",
    "handle_rcpt": "RCPT",
    "handle_data": "DATA",
    "handle_data_chunk": "DATA",
    "handle_message": "DATA",
}
"""The hooks of a mail transaction, whose replies RFC 5321 §4.2.2 gives 452 (MAIL,
RCPT, DATA and the end of the content) and 552 (the content) among, and the command
each answers in the reject log (the content is ``DATA``'s, as the reference server's
refusals of a message name it)."""


def _submitter(value: str | None) -> str | None:
    """The mailbox ``AUTH=xtext`` names (RFC 4954 §5), in its wire form: None for
    ``<>``, no ``AUTH=``, or a value that names no mailbox (:func:`read_submitter`).
    The machine keeps a parameter as its wire text, so it is decoded here, once, by
    the AUTH entry's own reader, never by a lenient decoder that lets a CR LF by."""
    submitter = read_submitter(value)
    return None if submitter is None else str(submitter)


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
            mechanisms = {name.upper(): factory for name, factory in (auth or {}).items()}
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


class ServerState(SessionRegistry["ServerSession"]):
    """What the sessions of one server share: options, handler, the live sessions and
    whether the server is shutting down (idle sessions get 421 at once, busy ones
    when their message is done)."""

    logger = logger

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


T = TypeVar("T")


class ServerSession(ServedSession):
    """One connection, from greeting to close.

    Its fields are slots, as an idle session keeps them for minutes (the
    handler is read from :attr:`state`, not kept again).
    """

    __slots__ = (
        "_auth",
        "_connect_told",
        "_content_failure",
        "_content_wait",
        "_in_chunk",
        "_last_read",
        "_out",
        "_waited_idle",
        "conn",
        "options",
    )

    logger = logger
    protocol = "SMTP"
    state: ServerState
    session: Session
    conn: ServerConnection
    """The session's machine: the server's own, built with the session, or a
    ``connection_factory``'s, taken as the session starts (:meth:`_open`)."""

    def __init__(self, transport: Link, state: ServerState, peer: tuple[str, int] | None) -> None:
        # ServedSession's fields are set here, as in the POP3 session's constructor
        # (_pop3_server.POP3ServerSession.__init__): a base constructor costs a call a connection.
        self.transport = transport
        self.state = state
        self.options = options = state.options
        local = transport.local_address
        if local is not None and local[0][:7] == "::ffff:":  # session_address, inline:
            local = session_address(local)  # a call less for every connection
        self.session = Session(hostname=options.hostname, peer=peer, local=local)
        self._out: list[bytes] | None = None
        """The replies due, in the order answered; None when none is (an idle session
        keeps no list)."""
        self._content_wait = False
        """Whether the wait under way is for message content."""
        self._in_chunk = False
        """Whether the octets of a BDAT chunk are being read."""
        self._last_read = 0
        self._waiting_idle = False
        self._write_cut = False
        self._waited_idle = False
        """Whether the last wait for the client was between transactions."""
        self._content_failure: Reply | None = None
        """What a message whose content the handler failed to take is answered
        (:func:`~smtpcore._driver._failures.failure_reply`); None while it takes it."""
        self._connect_told = False
        """Whether the handler was told of the session (see :meth:`_after_close`)."""
        self._auth = _NO_AUTH
        # With a connection_factory, the machine is the factory's, taken as the
        # session starts (_machine_from_factory): none is built here.
        if options.connection_factory is None:
            self.conn = options.new_connection()
            if options.auth_mechanisms:
                self._offer_auth(self.conn.auth_mechanisms)

    # -- the loop ---------------------------------------------------------

    def _after_close(self) -> Awaitable[None] | None:
        """``handle_close`` only for a session whose ``handle_connect`` was asked (or
        answered by Handler's own): handlers pair the two, as aiosmtpd's count
        sessions or open a resource for one, and a session refused before its
        greeting (a factory's machine, a PROXY header, TLS on connect) is one the
        handler never saw."""
        if not self._connect_told:
            return None
        # Handler's own handle_close does nothing: most sessions need no coroutine here.
        if self.session.envelope is None and "handle_close" not in self.state.overridden:
            return None
        return self._tell_closed()

    async def _tell_closed(self) -> None:
        self._out = None  # nothing more reaches the client
        await self._tell_handler_closed()

    async def _tell_handler_closed(self) -> None:
        """End, for the handler, the session it was told of: ``handle_reset`` for a
        transaction left open, then ``handle_close``. At the connection's close, and
        at a trusted XCLIENT, which starts the named client's session on it."""
        if self.session.envelope is not None:
            await self._end_transaction()
        if "handle_close" in self.state.overridden:
            await self._call("handle_close", (self.session,))

    async def _open(self) -> None:
        served = self.options.connection_factory is None or self._machine_from_factory()
        # _known_client, its coroutine spared where no proxy is trusted: every
        # connection opens here.
        if self.state.proxy_networks:
            client = await self._client_from_proxy(self.options.timeouts.command)
        else:
            client = self.session.peer
        # tls and trusted_forwarder are the session's, set on whatever machine runs it.
        if self.options.forwarder_networks:
            self._trust_forwarder(client)
        else:
            self.conn.trusted_forwarder = False
        if self.options.tls_on_connect:
            await self._handshake()
        elif self.session.tls is None:
            finishing = self.tls_from_the_start(self.options.timeouts.tls_handshake)
            if finishing is not None:
                await finishing
            self.session.tls = self.transport.tls
        # However it came (a proxy that terminated the client's TLS: _client_from_proxy),
        # the session's TLS is what the machine's gates read, as the POP3 session's is.
        self.conn.tls = self.options.tls_on_connect or self.session.tls is not None
        unavailable = self.state.unavailable
        if not served:
            greeting = unavailable
        else:
            self._connect_told = True
            greeting = (
                self.session.hostname is self.options.hostname  # see ServerState.unasked
                and self.state.unasked.get("handle_connect")
            ) or await self._ask(
                "handle_connect",
                (self.session,),
                self.options.timeouts.greeting,
                failed=unavailable,
            )
        if self.state.stopping:
            greeting = Reply(421, f"{self.options.hostname} Service shutting down", "4.3.2")
        self._answer(greeting, unavailable)

    def _machine_from_factory(self) -> bool:
        """Take the session's machine from the ``connection_factory``, checked against
        the server (:meth:`ServerOptions.check_connection`). False when the factory
        fails, its machine would go without the server's guards, or it runs another
        session (:class:`~smtpcore._driver._factory.MachinesInUse`): logged, and the
        session is refused with a ``421`` greeting on the server's own machine, built
        for that alone, as when ``handle_connect`` fails (RFC 5321 §3.1; no enhanced
        code before EHLO, RFC 2034)."""
        options = self.options
        assert options.connection_factory is not None
        running = self.state.factory_machines
        try:
            conn = options.connection_factory(options)
            running.check_free(conn)
            conn = options.check_connection(conn)
        except BaseException as exc:
            self.conn = options.new_connection()  # the refusal's, whatever ends the session
            if not self._call_failed(exc):
                raise
            logger.error("the session is refused: %s", describe_error(exc), exc_info=exc)
            return False
        running.take(conn)  # given back by _ended
        self.conn = conn
        if options.auth_mechanisms:
            self._offer_auth(options._machine_config.auth_mechanisms)
        return True

    async def _ended(self) -> None:
        """Give the factory's machine back while the session still holds it (see
        :class:`~smtpcore._driver._factory.MachinesInUse`)."""
        if self.options.connection_factory is not None:
            self.state.factory_machines.give_back(self.conn)

    async def _close(self, timed_out: bool) -> bool:
        if self._write_cut:
            # The client may hold part of a reply (see ServedSession._write_cut): a 421
            # would land inside it. The close alone ends the session, lingered on as
            # after a 421 when the watchdog went off.
            self._out = None
            return timed_out
        if timed_out:
            if self.state.stopping and (self._waited_idle or self.state.cutting_off):
                reply = Reply(421, f"{self.options.hostname} Service shutting down", "4.3.2")
            else:
                reply = Reply(421, f"{self.options.hostname} Timeout exceeded", "4.4.2")
            self._answer(reply)
        # The server ends the session on its own after a protocol error (the ERROR
        # state), or with 421, the one code it closes with unasked (RFC 5321 §3.8): not
        # after QUIT's 221, nor the replies before the client's own close.
        out = self._out
        hung_up = (out is not None and out[-1][:3] == b"421") or self.conn.state is _ERROR_STATE
        try:
            rest = self._flush()
            if rest is not None:
                await rest
        except TimeoutError:
            raise ConnectionLost from None
        return hung_up

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation (see
        :class:`~smtpcore._driver._listener.ServedSession`).

        At heart h11's loop: answer the client's events until the session ends
        (a closed machine gives ``ConnectionClosed``), written out here rather
        than in a coroutine of its own, so that a session waiting for its
        client is suspended in this one frame.
        """
        self.state.sessions.setdefault(self)  # as admitted, or under no address
        watching = None  # the watchdog's block, once entered (see ServedSession.run)
        try:
            await self._open()
            block = self.transport.watchdog()
            self._watchdog = await block.__aenter__()
            watching = block
            conn = self.conn
            new_wait = True  # the next read starts a wait for a new command
            while True:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    if isinstance(exc.reply_hint, Reply):
                        self._out = [*(self._out or ()), conn.send(exc.reply_hint)]
                    break
                except LocalProtocolError as exc:
                    # An extension entry of the application's own failed on a command
                    # (see ServerConnection.next_event): its mistake, logged and
                    # answered as a failing hook's, and the session goes on.
                    if not isinstance(exc.reply_hint, Reply):
                        raise
                    logger.exception("extension entry: %s", exc)
                    self._answer(exc.reply_hint)
                    new_wait = True
                    continue
                if event is NEED_DATA:
                    # The wait itself is written out here, not in a method: a
                    # suspended session's stack is one frame shorter, and every
                    # read one call less.
                    if self._start_wait(new_wait):
                        try:
                            out = self._out
                            if out is not None:
                                # The replies due, as _write_out writes them,
                                # without its two calls when the kernel takes
                                # them at once: every read.
                                self._out = None
                                due = out[0] if len(out) == 1 else b"".join(out)
                                out = None  # a waiting session keeps no list
                                try:
                                    # What the kernel did not take (a slice of
                                    # all of it is the same bytes, of none b"").
                                    due = due[self.transport.send_nowait(due) :]
                                except OSError:
                                    conn.send_failed()
                                    raise ConnectionLost from None
                                if due:
                                    self._out = [due]
                                    await self._write_out()
                                del due  # nor the replies written
                            # The bytes, or a wait for them: no coroutine of
                            # the transport's stays suspended (see
                            # Link.receive_or_wait).
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
                            self._watchdog.disarm()
                        self._last_read = len(data)
                        conn.receive_data(data)
                        # The machine's now: a waiting session must not keep it.
                        del data, got
                    new_wait = False
                elif (answer := _ANSWERS.get(type(event))) is not None:  # an event
                    new_wait = True
                    answering = answer(self, event)
                    if answering is not None:  # a handler's hook, say
                        await answering
                        answering = None  # a waiting session keeps no coroutine
                elif event is PAUSED:
                    # Every event is answered at once, but for a BDAT chunk: the
                    # machine pauses once its octets are in (RFC 3030 §2).
                    if not isinstance(conn.pending, Bdat):  # pragma: no cover
                        raise RuntimeError(f"machine paused in {conn.state}")
                    new_wait = True
                    await self._chunk_received(conn.pending)
                elif isinstance(event, ConnectionClosed):
                    break
                else:
                    new_wait = True
                    self._unanswered(event)
        except BaseException as exc:
            ended: BaseException | None = exc
        else:
            ended = None
        await self._end(ended, watching)

    def _start_wait(self, new_wait: bool) -> bool:
        """Arm the watchdog for a wait for the client; False, once 421 is answered
        instead, when the server is shutting down and the session is idle.

        A command line has ``command`` seconds to arrive from the start of the
        wait for it, however many reads it takes (``new_wait`` is true for the
        first); content has ``data_block`` seconds plus what ``min_data_rate``
        credits for each read (Postfix's per-request deadline and minimum data
        rate). So a client that trickles a byte at a time cannot hold a session
        forever. When the watchdog goes off, :meth:`_close` answers 421. The
        replies due are written within the wait, before the read.
        """
        conn_state = self.conn.state
        idle = conn_state in _IDLE_STATES
        if idle and self.state.stopping:
            self._answer(Reply(421, f"{self.options.hostname} Service shutting down", "4.3.2"))
            return False
        watchdog = self._watchdog
        if conn_state is _DATA_STATE or self._in_chunk:
            timeouts = self.options.timeouts
            if self._content_wait and timeouts.min_data_rate:
                watchdog.resume(self._last_read)
            else:
                watchdog.arm(timeouts.data_block, timeouts.min_data_rate)
                self._content_wait = True
        elif new_wait or self._content_wait:
            watchdog.arm(self.options.timeouts.command)
            self._content_wait = False
        else:
            watchdog.resume()
        self._waited_idle = self._waiting_idle = idle
        return True

    def _flush(self) -> Coroutine[Any, Any, None] | None:
        """Write the replies due: None once the transport took them all at once (a
        connection's last reply, nearly always), else what writes the rest under the
        command timeout, to await (no coroutine made for a write that needs none)."""
        out = self._out
        if out is None:
            return None
        self._out = None
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = self.transport.send_nowait(data)
        except OSError:
            self.conn.send_failed()
            raise ConnectionLost from None
        if sent < len(data):
            self._out = [data[sent:]]
            return self._write_rest()
        return None

    async def _write_rest(self) -> None:
        async with self.transport.deadline(self.options.timeouts.command):
            await self._write_out()

    async def _write_out(self) -> None:
        out = self._out
        if out is None:
            return
        self._out = None
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            await self._send_all(data)
        except OSError:
            self.conn.send_failed()
            raise ConnectionLost from None

    def _answer(self, reply: Reply, fallback: Reply = LOCAL_ERROR) -> Reply:
        """Send ``reply`` through the machine; a reply it refuses becomes ``fallback``.

        Returns the reply that stands. A session whose machine is closed (a 421 or
        221 ended it) is sent nothing more, not even ``fallback``, which then only
        stands for the refused reply: what was sent before it still goes out."""
        try:
            data = self.conn.send(reply)
        except LocalProtocolError:
            if self.conn.state is State.CLOSED:
                logger.error("the handler's reply %s comes after the session closed", reply)
                return fallback
            logger.exception("the handler's reply %s is not legal here", reply)
            reply = fallback
            data = self.conn.send(reply)
        out = self._out
        if out is None:
            out = self._out = []
        out.append(data)
        return reply

    async def _ask(
        self,
        hook: str,
        args: tuple[Any, ...],
        seconds: float | None,
        *,
        failed: Reply | None = None,
    ) -> Reply:
        """What the handler's ``hook`` answers, called with ``args``, within ``seconds``.

        ``None`` stands for what :class:`~smtpcore.handler.Handler`'s own hook
        answers, and an exception for ``failed``, or else the reply the exception
        earns (:meth:`_hook_failed`). The hook is named and its
        arguments given, rather than a function calling it: a hook of every
        message makes no closure (a function and a cell per argument).
        """
        reply = None
        if hook in self.state.overridden:
            try:
                call = getattr(self.state.handler, hook)(*args)
                reply = await self.transport.within(seconds, call)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                earned = self._hook_failed(hook, exc)
                return earned if failed is None else failed
        if reply is None:
            reply = self.state.fixed_answers.get(hook)  # Handler's, without calling it
            if reply is None:
                reply = await getattr(_HANDLER, hook)(*args)
                assert reply is not None, f"Handler.{hook} answers"
        return reply

    def _hook_failed(self, hook: str, exc: BaseException, event: Event | None = None) -> Reply:
        """Log the handler's ``hook`` that raised ``exc`` (called in its ``except``)
        answering ``event``, and give the reply it earns. In a mail transaction
        :func:`failure_reply` tells a write that found no room (``452 4.3.1``, ``552
        5.3.4``) from any other fault (``451 4.3.0``), before the content as after it,
        since RFC 5321 §4.2.2 452 is a reply to MAIL, RCPT and DATA alike. Any other
        hook (EHLO, AUTH, VRFY, EXPN) gets ``451 4.3.0``: "message too big" or "storage
        full" answers no such command.

        A write that found no room (:func:`no_room`) is the expected state of a full
        disk, not a fault: one ``reject:`` line, with the write's reason and no
        traceback (:meth:`_refused_by_failure`). Any other failure in a transaction is
        refused too, and gets that line, every refusal having one, then its traceback."""
        verb = _TRANSACTION_HOOKS.get(hook)
        if verb is None:
            logger.exception("%s failed", hook)
            return LOCAL_ERROR
        why = no_room(exc)
        reply = failure_reply(exc)
        detail = why if why is not None else f"{hook} failed: {fault_text(exc)}"
        self._refused_by_failure(verb, event, reply, detail)
        if why is None:
            logger.exception("%s failed", hook)
        return reply

    def _refused_by_failure(self, verb: str, event: Event | None, reply: Reply, why: str) -> None:
        """The ``reject:`` line of a transaction a local failure refused (a full disk,
        a fault), naming what was refused as every refusal does
        (:meth:`_refused_addresses`). One line at WARNING, as the reference server's
        floor check warns of a full disk at MAIL: mail is refused until the operator
        acts, which ``--log-level warning`` must show."""
        session = self.session
        sender, recipient = self._refused_addresses(verb, event)
        logger.warning(
            refusal_line(
                None,
                session,
                verb,
                reply,
                sender=sender,
                recipient=recipient,
                helo=session.helo_name,
                user=None if session.authenticated is None else str(session.authenticated),
                detail=why,
            )
        )

    def _refused_addresses(self, verb: str, event: Event | None) -> tuple[str | None, str | None]:
        """The ``from=`` and ``to=`` of a refused ``verb`` answering ``event``, as the
        reference server's refusals give them: a MAIL's own sender (``<>`` for the null
        path), a RCPT's own recipient with its transaction's sender, a message's sender
        and its recipient when it has one alone, as Postfix logs a refused DATA (never
        a recipient accepted before a refused RCPT)."""
        envelope = self.session.envelope
        if isinstance(event, Mail):
            return path_text(event.sender), None
        sender = None if envelope is None else path_text(envelope.sender)
        if isinstance(event, Rcpt):
            return sender, str(event.recipient)
        if envelope is not None and verb == "DATA":
            return sender, only_recipient([r.mailbox for r in envelope.recipients])
        return sender, None

    async def _call(self, hook: str, args: tuple[Any, ...]) -> None:
        """Tell the handler's ``hook``, called with ``args``, within the ``command``
        timeout as every hook: one that runs past it is logged as failed, and the
        session goes on (docs/adapters.rst). A hook that waits has the replies
        already due written first: a client is not kept waiting for its RSET's 250
        while the handler tidies up."""
        if hook not in self.state.overridden:
            await getattr(_HANDLER, hook)(*args)
            return
        try:
            started = self.transport.start_within(
                self.options.timeouts.command, getattr(self.state.handler, hook)(*args)
            )
            if not isinstance(started, tuple):
                self._write_due_now()
                await started
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.exception("%s failed", hook)

    def _write_due_now(self) -> None:
        """Write the replies due, as far as the kernel takes them without waiting; the
        rest stays due, and a failed write is met again by the next one (which ends
        the session): for a caller that must not wait here."""
        out = self._out
        if out is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = self.transport.send_nowait(data)
        except OSError:
            return
        self._out = [data[sent:]] if sent < len(data) else None

    # -- events -------------------------------------------------------------

    def _unanswered(self, event: Event) -> None:
        """Answer an event ``_ANSWERS`` has no method for: a command a custom machine
        (``connection_factory``) knows, say."""
        if isinstance(event, Command):
            self._answer(Reply(502, "Command not implemented", "5.5.1"))
            return
        raise RuntimeError(f"unexpected event {event!r}")  # pragma: no cover

    async def _bad_command(self, event: BadCommand) -> None:
        """A line the machine refused. One that may carry a credential goes to
        :meth:`ServerAuth.answer <smtpcore.smtp.ServerAuth.answer>`, which ends the
        exchange it ended (an answer to a 334 that is not base64, or too long) and,
        after the mechanism had refused the credentials (a token's error challenge,
        RFC 7628 §3.2.2), counts the failed authentication the refusal already was
        toward ``max_auth_failures``: the machine's reply, held back and logged as a
        failed AUTH is. Any other refusal of an answer to a 334, or of an ``AUTH``
        command, judged no credential: answered at once and logged as such
        (:meth:`_no_credential_checked`). A line that only starts as AUTH
        (``AUTHX``) is an unknown command, refused as any other is."""
        if event.secret:
            flow = self._auth
            answering = flow.exchange_under_way
            reply = flow.answer(self.conn, event)
            if flow.failed_login:
                await self._auth_failed(self._answer(reply), flow.mechanism, flow.failure)
                return
            if _judged_no_credential(reply) and (
                answering or _AUTH_COMMAND.match(event.line) is not None
            ):
                mechanism = (
                    flow.mechanism if answering else named_mechanism(event.line, flow.names)
                )
                self._no_credential_checked(self._answer(reply), mechanism)
                await self._follow_the_machine_out_of_a_transaction()
                return
        logger.info(
            "NOQUEUE: %s: %s from %s: %s",
            _refusal_kind(event.reply),
            _logged_verb(event),
            client_text(self.session),
            loggable_reply(event.reply),
        )
        self._answer(event.reply)
        await self._follow_the_machine_out_of_a_transaction()

    async def _follow_the_machine_out_of_a_transaction(self) -> None:
        """End the session's transaction where the machine's own ended with a refusal
        (a BDAT line refused fails it, RFC 3030 §2): ``handle_reset`` is told, and
        nothing of it (its envelope, what the handler spooled) reaches the next
        message. A session the refusal closed ends its transaction as it closes."""
        if self.session.envelope is not None and self.conn.state in _IDLE_STATES:
            await self._end_transaction()

    async def _rejected(self, event: RejectedMessage) -> None:
        """A message the machine refused: at its end, or at a BDAT chunk that took it
        past ``max_message_size`` (RFC 3030 §2); the handler never sees it."""
        logger.info(
            "NOQUEUE: reject: %s from %s: %s",
            "BDAT" if self._in_chunk else "DATA",
            client_text(self.session),
            loggable_reply(event.reply),
        )
        self._in_chunk = False
        for _ in range(self._replies_due()):
            self._answer(event.reply)
        await self._end_transaction()

    async def _hello(self, command: Ehlo | Helo | Lhlo) -> None:
        session = self.session
        reply = (
            session.hostname is self.options.hostname  # see ServerState.unasked
            and self.state.unasked.get("handle_hello")
        ) or await self._ask(
            "handle_hello",
            (session, command),
            self.options.timeouts.command,
        )
        if self._answer(reply).code // 100 == 2:  # accepted (is_positive, without a call)
            if session.envelope is not None:
                await self._end_transaction()
            session.helo_name = command.domain
            session.extended = not isinstance(command, Helo)

    def _asked(
        self,
        answer: Callable[[ServerSession, Any, Reply], object],
        event: Event,
        hook: str,
        args: tuple[Any, ...],
    ) -> tuple[Reply] | Awaitable[None]:
        """The reply of the handler's ``hook``, called with ``args``, as :meth:`_ask`
        answers: ``(reply,)`` when it comes at once, else what the session awaits to
        answer ``event`` with it (``answer(self, event, reply)``, see :meth:`_mail`).

        The hook is started here (:meth:`LinkBase.start_within
        <smtpcore._driver._transport.LinkBase.start_within>`): most hooks answer
        without waiting for anything, and then their command costs no coroutine.
        """
        state = self.state
        if hook in state.overridden:
            try:
                started = self.transport.start_within(
                    self.options.timeouts.command, getattr(state.handler, hook)(*args)
                )
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                return (self._hook_failed(hook, exc, event),)
            if not isinstance(started, tuple):  # the hook waits: the rest is awaited
                return self._answer_when_done(answer, event, hook, args, started)
            if started[0] is not None:
                return started
        reply = state.fixed_answers.get(hook)  # Handler's, without calling it
        if reply is None:
            return self._answer_when_done(answer, event, hook, args, None)
        return (reply,)

    async def _answer_when_done(
        self,
        answer: Callable[[ServerSession, Any, Reply], object],
        event: Event,
        hook: str,
        args: tuple[Any, ...],
        rest: Awaitable[Reply | None] | None,
    ) -> None:
        """What :meth:`_asked` awaits: the ``rest`` of the handler's ``hook``, or else
        Handler's own (``rest`` None), as :meth:`_ask` does."""
        reply = None
        if rest is not None:
            try:
                reply = await rest
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                reply = self._hook_failed(hook, exc, event)
        if reply is None:
            reply = self.state.fixed_answers.get(hook)
            if reply is None:
                reply = await getattr(_HANDLER, hook)(*args)
                assert reply is not None, f"Handler.{hook} answers"
        answer(self, event, reply)

    def _mail(self, command: Mail, reply: Reply | None = None) -> Awaitable[None] | None:
        """Answer ``command`` with ``reply``, or else what the handler replies.

        Like every answer in ``_ANSWERS``, it returns None once it answered, or
        what the session awaits to answer: a handler that keeps Handler's hook
        is not asked (``ServerState.unasked``), and its commands cost no
        coroutine.
        """
        session = self.session
        if reply is None:
            reply = self.state.unasked.get("handle_mail")
            if reply is None:
                args = (session, command)
                asked = self._asked(ServerSession._mail, command, "handle_mail", args)
                if not isinstance(asked, tuple):
                    return asked
                reply = asked[0]
        if self._answer(reply).code // 100 == 2:  # accepted (is_positive, without a call)
            submitter = None
            if session.authenticated is not None:
                submitter = _submitter(command.params.get("AUTH"))
            conn = self.conn
            # Envelope(sender, params, submitter=..., xforward=...), every field set
            # here without the constructor's call (a test holds the two equal).
            envelope: Envelope = _new(Envelope)
            envelope.sender = command.sender
            envelope.mail_params = command.params
            envelope.submitter = submitter
            envelope.recipients = []
            # Only a machine that offers XFORWARD has one: no property call otherwise.
            envelope.xforward = conn.forwarded_message if conn.xforward else None
            envelope.content = b""
            envelope.size = 0
            envelope.chunks = []
            session.envelope = envelope
        return None

    def _data(self, command: Data, reply: Reply | None = None) -> Awaitable[None] | None:
        if reply is None:
            reply = self.state.unasked.get("handle_data")
            if reply is None:
                session = self.session
                args = (session, session.envelope)
                asked = self._asked(ServerSession._data, command, "handle_data", args)
                if not isinstance(asked, tuple):
                    return asked
                reply = asked[0]
        self._content_failure = None
        self._answer(reply)  # a refusal keeps the transaction open (RFC 5321 §4.1.1.4)
        return None

    def _bdat(self, command: Bdat) -> None:
        if self.conn.state is State.RCPT:  # the first chunk of the message
            self._content_failure = None
        self._in_chunk = True
        # Answered once its octets are in (see _chunk_received), or with the
        # message itself when it is the last chunk.

    def _rset(self, command: Rset) -> Awaitable[None] | None:
        self._answer(_OK)
        if self.session.envelope is None:
            return None
        return self._end_transaction()

    def _noop(self, command: Noop) -> None:
        self._answer(_OK)

    def _quit(self, command: Quit) -> None:
        self._answer(self.state.bye)

    async def _vrfy(self, command: Vrfy) -> None:
        session = self.session
        reply = await self._ask(
            "handle_vrfy",
            (session, command.argument),
            self.options.timeouts.command,
        )
        self._answer(reply)

    async def _expn(self, command: Expn) -> None:
        session = self.session
        reply = await self._ask(
            "handle_expn",
            (session, command.argument),
            self.options.timeouts.command,
        )
        self._answer(reply)

    async def _help(self, command: Help) -> None:
        """RFC 5321 §4.1.1.8: the commands this session knows now, extensions' included."""
        self._answer(Reply(214, f"Commands: {' '.join(self.conn.commands())}"))

    def _rcpt(self, command: Rcpt, reply: Reply | None = None) -> Awaitable[None] | None:
        """Answer ``command`` with ``reply``, or else what the handler replies (see
        :meth:`_mail`): nearly every handler has a ``handle_rcpt`` of its own
        (Handler's refuses every recipient), which most often answers at once."""
        session = self.session
        envelope = session.envelope
        assert envelope is not None
        if reply is None:
            reply = self.state.unasked.get("handle_rcpt")
            if reply is None:
                args = (session, envelope, command)
                asked = self._asked(ServerSession._rcpt, command, "handle_rcpt", args)
                if not isinstance(asked, tuple):
                    return asked
                reply = asked[0]
        if self._answer(reply).code // 100 == 2:  # accepted (is_positive, without a call)
            # Recipient(mailbox, params), without the constructor's call.
            recipient: Recipient = _new(Recipient)
            _SET_RECIPIENT_MAILBOX(recipient, command.recipient)
            _SET_RECIPIENT_PARAMS(recipient, command.params)
            envelope.recipients.append(recipient)
        return None

    async def _starttls(self, command: StartTls) -> None:
        if self.options.ssl_context is None:  # a machine offering what the server cannot
            self._answer(Reply(454, "TLS not available", "4.7.0"))  # RFC 3207 §4
            return
        self._answer(Reply(220, "Ready to start TLS"))
        try:
            rest = self._flush()
            if rest is not None:
                await rest
        except TimeoutError:
            raise ConnectionLost from None
        await self._handshake()
        self.conn.tls_started()
        self.session.helo_name = None
        self.session.extended = False
        # RFC 3207 §4.2: nothing learnt before TLS stands, the identity included.
        self.conn.authenticated = False
        self.session.authenticated = None

    def _trust_forwarder(self, client: tuple[str, int] | None) -> None:
        """Whether this client may use XCLIENT and XFORWARD: by its address (the one a
        trusted proxy's header named, if any: see :meth:`_known_client`), in
        ``xclient_from``."""
        self.conn.trusted_forwarder = trusted(client, self.options.forwarder_networks)

    # -- XCLIENT and XFORWARD (Postfix) ----------------------------------------

    async def _xclient(self, command: Xclient) -> None:
        """The session now speaks for the client XCLIENT names, as if that client had
        connected anew (XCLIENT_README): the handler sees the session so far close
        (:meth:`_tell_handler_closed`), so that ``handle_close`` still pairs with
        each ``handle_connect``, and then the named client connect; its answer is
        that client's greeting (Postfix's connection-level decision), handled as
        the connection's own: 554 serves it nothing but QUIT, 421 closes. The
        session is counted under the named client's address (one over its share is
        closed with 421 before ``handle_connect``, as a proxied one is), and that
        client may use XCLIENT only if ``xclient_from`` trusts it in turn
        (XCLIENT_README, note 1): a proxy's client cannot name yet another."""
        session = self.session
        before = client_text(session)
        known = session.xclient
        merged = command if known is None else known.merged(command)
        await self._tell_handler_closed()
        _present(session, merged)
        named = ip_peer(session.peer)
        if not self.state.readdress(self, named):
            self._connect_told = False  # the named client: refused before handle_connect
            self.state.log_turned_away(client_text(session), True, self.state.block_of(named))
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
        self._answer(_OK)  # the machine keeps it for the next transaction's envelope

    async def _handshake(self) -> None:
        context = self.options.ssl_context
        assert context is not None
        await self._shake_hands(
            functools.partial(self.transport.start_tls, context, server_side=True),
            self.options.timeouts.tls_handshake,
        )
        self.session.tls = self.transport.tls
        names = self._auth.names
        if names or self.options.auth_mechanisms:
            self._offer_auth(names)

    def _offer_auth(self, names: Sequence[str]) -> None:
        """A fresh AUTH state for this connection's channel, of a machine built with the
        mechanisms ``names``: SCRAM-SHA-256-PLUS is offered, and its binding checked,
        only with the TLS layer's channel binding data (RFC 5802 §6, RFC 9266);
        nothing learnt before a handshake stands. An Authenticator's
        :meth:`~smtpcore.handler.Authenticator.withheld` mechanisms, which no user
        could use now, are not offered."""
        bindings = self.transport.channel_bindings()
        auth = self.options.auth
        withheld = auth.withheld() if isinstance(auth, Authenticator) else frozenset()
        offered = offered_mechanisms([n for n in names if n not in withheld], bindings)
        self.conn.auth_mechanisms = tuple(offered)
        self._auth = _SessionAuth(names, self.options.auth_mechanisms, bindings)

    # -- AUTH -----------------------------------------------------------------

    async def _authenticate(self, event: Auth | AuthResponse) -> None:
        """One step of an AUTH exchange (RFC 4954 §4); the handler may veto a success.

        A step that raises (the mechanism or the application's callables), lets
        out a cancellation that is not the session's (:meth:`_call_failed`), or
        whose callback broke its contract (a ``check_password`` that gave no bool)
        is the application's failure: logged, and answered ``454 4.7.0`` (RFC 4954
        §6), which counts no failed attempt: no password was judged."""
        flow = self._auth
        if isinstance(event, Auth):
            flow.mechanism = event.mechanism.upper()
            flow.in_thread = _runs_in_thread(flow.mechanisms.get(flow.mechanism))
        step = (
            functools.partial(flow.start, event)
            if isinstance(event, Auth)
            else functools.partial(flow.step, event)
        )
        # A cancel ("*") is answered 501 by the flow, with no mechanism code run: in
        # the loop, so that no deadline turns it into a 454 the machine refuses
        # (RFC 4954 §4).
        cancel = isinstance(event, AuthResponse) and event.cancel
        try:
            if flow.in_thread and not cancel:
                # Under the deadline of the handler's hooks; past it the exchange
                # is its thread's, which may still change it: a fresh one follows.
                reply = await self.transport.within(
                    self.options.timeouts.command, self.transport.run_in_thread(step)
                )
            else:
                reply = step()
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.exception("AUTH %s failed", flow.mechanism)
            if flow.in_thread:
                self._auth = flow.fresh()
            reply = _AUTH_UNAVAILABLE
        else:
            failure = flow.failure
            if failure is not None and failure.callback_error:  # answered 454 already
                logger.error("AUTH %s failed: %s", flow.mechanism, failure.reason)
        if cancel and flow.failure is None:  # no credential judged: see ServerAuth.step
            self._auth_cancelled(self._answer(reply), flow.mechanism)
            return
        session = self.session
        success = flow.success
        if reply.code != 235 or success is None:
            answered = self._answer(reply)
            if flow.failed_login:
                await self._auth_failed(answered, flow.mechanism, flow.failure)
            elif answered.code >= 500:
                self._no_credential_checked(answered, flow.mechanism)
            return
        flow.success = None
        identity = AuthIdentity(success.authcid, success.authzid, flow.mechanism)
        reply = await self._ask(
            "handle_auth",
            (session, identity),
            self.options.timeouts.command,
        )
        if reply.code != 235 and reply.code < 400:
            # The exchange is over: a 334 would have the client's next command read
            # as its answer (RFC 4954 §4), and the machine cannot tell.
            logger.error("handle_auth's reply %s is not legal here: 235, 4xx or 5xx", reply)
            reply = LOCAL_ERROR
        answered = self._answer(reply)
        if answered.code == 235:
            session.authenticated = identity
            logger.info(
                "AUTH %s from %s as %s",
                identity.mechanism,
                client_text(session),
                loggable(str(identity)),
            )
        else:  # the handler's veto counts as a failed attempt: logged as one
            await self._auth_failed(answered, flow.mechanism, None, proven=identity.authcid)

    def _auth_cancelled(self, reply: Reply, mechanism: str | None) -> None:
        """An exchange the client cancelled with ``*``, answered with ``reply`` (501):
        no failed authentication (RFC 4954 §4), for no password was judged. Answered
        at once, with no ``auth_failure_delay``, and logged at INFO in no line
        fail2ban's filter reads: a client that gives up is not banned for it. A ``*``
        after the mechanism refused the credentials (a token's error challenge, RFC
        7628 §3.2.2) is no such cancel: its 501 is a failed AUTH (``_auth_failed``)."""
        logger.info(
            "AUTH %s from %s: cancelled by the client: %s",
            mechanism,
            client_text(self.session),
            loggable_reply(reply),
        )

    def _no_credential_checked(self, reply: Reply, mechanism: str | None) -> None:
        """The line of an AUTH refused before any credential was judged (RFC 4954 §6),
        answered with ``reply``: by the machine (PLAIN before STARTTLS, an unknown
        mechanism, a syntax error, an answer to a 334 that is not base64 or too
        long) or by the mechanism (an initial response to a server-first mechanism,
        ``501 5.7.0``, RFC 4954 §4; a ``-PLUS`` mechanism without channel binding
        data, ``504``). No failed login: answered at once, with no
        ``auth_failure_delay``, and logged in no line fail2ban's filter reads, with
        ``mechanism=`` when the server knows which (never a word it does not: it
        may be a password)."""
        line = no_credential_line(
            "NOQUEUE", "AUTH", client_text(self.session), loggable_reply(reply), mechanism
        )
        logger.info("%s", line)

    async def _auth_failed(
        self,
        reply: Reply,
        mechanism: str | None,
        failure: Failure | None,
        *,
        proven: str | None = None,
    ) -> None:
        """A failed AUTH, answered with ``reply``: the mechanism refused the
        credentials (:attr:`ServerAuth.failed_login
        <smtpcore.smtp.ServerAuth.failed_login>`) or the handler vetoed the
        identity they proved (``proven``), whatever the veto's code. A 5xx is
        logged at INFO, in the line fail2ban's filter reads, and the reply held back
        ``auth_failure_delay`` seconds; a 4xx is neither (a veto's temporary failure, or
        the ``421`` of a session the machine closed for too many errors). The line
        names the user the ``failure`` named only when the
        Authenticator's ``is_user`` knows it (a password typed as a name is not
        logged), or the one a handler vetoed (``proven``). A known user whom the
        mechanism had no secret for (CRAM-MD5 and SCRAM keys) could not have
        succeeded: the client is answered alike, but the line says so in place of
        ``reject:``, so that a client trying mechanisms in turn is not banned.
        A 5xx counts toward ``max_auth_failures`` here, once, whatever its code
        (:meth:`ServerConnection.count_auth_failure
        <smtpcore.smtp.ServerConnection.count_auth_failure>`): a veto worded ``538``
        judged a credential as a ``535`` did. The replies due go out at the
        session's next wait for its client, so the session waits here, alone,
        before it gets there."""
        if reply.code >= 500:
            if self.conn.state not in _OVER:
                self.conn.count_auth_failure()
            user = proven
            if user is None and failure is not None:
                user = await self._known_user(failure.named)
            fields = login_fields(user, mechanism)
            peer = client_text(self.session)
            if proven is None and user and failure is not None and failure.no_secret:
                logger.info(
                    "NOQUEUE: AUTH from %s: %s; %s; %s",
                    peer,
                    loggable_reply(reply),
                    NO_CLEAR_PASSWORD,
                    fields,
                )
            else:
                logger.info(
                    "NOQUEUE: reject: AUTH from %s: %s; %s", peer, loggable_reply(reply), fields
                )
            delay = self.options.auth_failure_delay
            if delay:
                await self.transport.sleep(delay)

    async def _known_user(self, name: str | None) -> str | None:
        """``name`` when the Authenticator's ``is_user`` says it names a user, else None
        (no name, no ``is_user``, or one that failed, which is logged). Run as the
        exchange's steps are: in a worker thread, under the command deadline, with
        ``in_thread``."""
        auth = self.options.auth
        if not name or not isinstance(auth, Authenticator) or auth.is_user is None:
            return None
        is_user = auth.is_user
        try:
            if auth.in_thread:
                known = await self.transport.within(
                    self.options.timeouts.command,
                    self.transport.run_in_thread(lambda: is_user(name)),
                )
            else:
                known = is_user(name)
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.exception("is_user failed")
            return None
        return name if known is True else None

    # -- content --------------------------------------------------------------

    async def _chunk_received(self, command: Bdat) -> None:
        """Answer a BDAT chunk that is not the last (RFC 3030 §2)."""
        self._in_chunk = False
        failure = self._content_failure
        if failure is not None:
            self._answer(failure)  # the machine abandons the transaction
            await self._end_transaction()
        else:
            self._answer(Reply(250, f"{command.size} octets received"))

    def _content(self, event: MessageData) -> Awaitable[None] | None:
        data = event.data
        envelope = self.session.envelope
        assert envelope is not None
        envelope.size += len(data)
        if self.state.appends_chunks:
            envelope.chunks.append(data)
            return None
        return self._content_to_handler(envelope, data)

    async def _content_to_handler(self, envelope: Envelope, data: bytes) -> None:
        """Pass a chunk of content to the handler's ``handle_data_chunk``."""
        if "handle_data_chunk" not in self.state.overridden:
            await _HANDLER.handle_data_chunk(self.session, envelope, data)
            return
        if self._content_failure is not None:
            return
        try:
            await self.transport.within(
                self.options.timeouts.data_block,
                self.state.handler.handle_data_chunk(self.session, envelope, data),
            )
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._content_failure = self._hook_failed("handle_data_chunk", exc)

    def _end_of_message(self, event: EndOfMessage) -> Awaitable[None] | None:
        session = self.session
        envelope = session.envelope
        assert envelope is not None
        self._in_chunk = False
        session.transactions += 1
        failure = self._content_failure
        if failure is not None:
            return self._message_failed(failure)
        chunks = envelope.chunks
        if chunks:
            envelope.content = b"".join(chunks)
            chunks.clear()
        accepted = self.state.unasked.get("handle_message")
        if accepted is not None and not self.options.lmtp:  # the everyday message
            session.envelope = None
            self._answer(accepted)
            return None
        return self._message_answered(envelope, accepted)

    async def _message_failed(self, failure: Reply) -> None:
        """Answer the end of a message whose content the handler failed to take with
        the reply that failure earned (``_content_failure``)."""
        for _ in range(self._replies_due()):
            self._answer(failure)
        await self._end_transaction()

    async def _message_answered(self, envelope: Envelope, accepted: Reply | None) -> None:
        """Answer the end of a message as the handler's ``handle_message`` does (or
        ``accepted`` once per recipient LMTP accepted)."""
        due = self._replies_due()
        if accepted is not None:
            replies: Sequence[Reply] = [accepted] * due
        else:
            replies = await self._message_replies(envelope, due)
        committed = self.session.committing
        self.session.envelope = None  # and the commit's mark with it
        for reply in replies:
            if self.conn.state is State.CLOSED:
                break  # a 421 among LMTP's replies closed the session (RFC 2033 §4.2)
            self._answer(reply)
        if committed and self.state.cutting_off:
            super().cut_off()  # put off while the message was committed: see cut_off

    def cut_off(self) -> None:
        """Interrupt the session, for its 421 (see
        :meth:`~smtpcore._driver._listener.ServedSession.cut_off`), unless its handler
        is committing a message (:meth:`Session.begin_commit
        <smtpcore.handler.Session.begin_commit>`): a 421 to the end of the data would
        say the message was not taken, and the client would send it again. That session
        runs on and is cut off once the message's replies are due, after them; should
        it outlive the cut-off's last words, the shutdown cancels it, and it closes with
        no reply (RFC 5321 §6.1: a lost reply may cause a duplicate, a false 4xx
        causes one)."""
        if not self.session.committing:
            super().cut_off()

    async def _message_replies(self, envelope: Envelope, due: int) -> Sequence[Reply]:
        """The replies of ``handle_message``, ``due`` of them: one
        :class:`~smtpcore.smtp.Reply` stands for every recipient; a sequence gives
        one each (LMTP, RFC 2033 §4.2). Anything else is the hook's failure, as an
        exception is: logged, and the reply an exception earns
        (:meth:`_hook_failed`) for every reply due; ``451 4.3.0`` for a bad result."""
        result: MessageReply = None
        if "handle_message" in self.state.overridden:  # as _ask does, but for LMTP's lists
            _answering(envelope)  # begin_commit may be called from here
            try:
                result = await self.transport.within(
                    self.options.timeouts.data_termination,
                    self.state.handler.handle_message(self.session, envelope),
                )
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                if isinstance(exc, DeadlinePassed) and self.session.committing:
                    self._commit_timed_out()
                result = self._hook_failed("handle_message", exc)
        if result is None:  # Handler's answer, as in _ask
            result = self.state.fixed_answers.get("handle_message")
            if result is None:
                result = await _HANDLER.handle_message(self.session, envelope)
                assert result is not None, "Handler.handle_message answers"
        if isinstance(result, Reply):
            return [result] * due
        if not isinstance(result, Sequence) or not all(isinstance(r, Reply) for r in result):
            logger.error("handle_message returned %r: not a Reply or a sequence of them", result)
            return [LOCAL_ERROR] * due
        replies = list(result)
        if len(replies) != due:
            logger.error("handle_message gave %d replies for %d recipients", len(replies), due)
            return [LOCAL_ERROR] * due
        return replies

    def _commit_timed_out(self) -> NoReturn:
        """End the session with no reply: its ``handle_message`` began the commit
        (:meth:`Session.begin_commit <smtpcore.handler.Session.begin_commit>`) and did
        not answer within the ``data_termination`` timeout. Its ``451`` would say the
        message was not taken, and the client would send it again, while the write
        begun may land: as past a cut-off's last words, no reply (RFC 5321 §6.1: a lost
        reply may cause a duplicate, a false 4xx causes one). The message's fate is the
        handler's to log."""
        logger.warning(
            "handle_message began its commit and did not answer within the "
            "data_termination timeout: %s closed with no reply, which may send the "
            "message again",
            client_text(self.session),
        )
        raise ConnectionLost from None

    def _replies_due(self) -> int:
        """One reply ends a message; LMTP gives one per accepted recipient (RFC 2033
        §4.2), but to a chunk refused before the last: the machine counts them."""
        return self.conn.replies_due

    async def _end_transaction(self) -> None:
        """Drop the open transaction, telling the handler if there was one."""
        envelope = self.session.envelope
        if envelope is None:
            return
        self.session.envelope = None
        envelope.chunks.clear()
        await self._call("handle_reset", (self.session, envelope))


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


_ANSWERS: Final[dict[type[object], Callable[[ServerSession, Any], Awaitable[None] | None]]] = {
    MessageData: ServerSession._content,
    EndOfMessage: ServerSession._end_of_message,
    RejectedMessage: ServerSession._rejected,
    BadCommand: ServerSession._bad_command,
    Auth: ServerSession._authenticate,
    AuthResponse: ServerSession._authenticate,
    Ehlo: ServerSession._hello,
    Helo: ServerSession._hello,
    Lhlo: ServerSession._hello,
    Mail: ServerSession._mail,
    Rcpt: ServerSession._rcpt,
    Data: ServerSession._data,
    Bdat: ServerSession._bdat,
    Rset: ServerSession._rset,
    Noop: ServerSession._noop,
    Quit: ServerSession._quit,
    StartTls: ServerSession._starttls,
    Vrfy: ServerSession._vrfy,
    Expn: ServerSession._expn,
    Help: ServerSession._help,
    Xclient: ServerSession._xclient,
    Xforward: ServerSession._xforward,
}
"""Event type -> how a session answers it: one method per event, as the machine has
one rule per command. Each returns None once it has answered, or what the session
awaits to answer (a handler's hook, say): the everyday events cost no coroutine."""
