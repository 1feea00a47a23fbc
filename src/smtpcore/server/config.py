"""What ``python -m smtpcore serve`` is told: domains, users, ports, paths and policy.

Everything the command line and the users file say is checked here, once,
so that a mistake stops the server before it binds a port, with a message
that names the option or the line at fault.

This module keeps the listeners' tables and :class:`ServerConfig`, which checks them
together. Its parts each have a module of their own: the error and the single options'
values (``_config_values``: durations, sizes, host and port), the users and their
addresses (``_config_users``: the users file, the mailbox and credential keys), and the
server's name (``_config_hostname``). Every public name is still imported from here.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from smtpcore._driver._ports import lmtp_port_refusal
from smtpcore._driver._proxied import DEFAULT_PROXY_TIMEOUT
from smtpcore._driver._timeouts import as_seconds
from smtpcore._secret import SECRET, secret_repr
from smtpcore.address import AddressError, normalize_domain
from smtpcore.routing import Router
from smtpcore.server._config_hostname import (
    default_hostname_warning,
    machine_name,
    server_hostname,
)
from smtpcore.server._config_users import (
    MAX_MAILBOX_NAME_OCTETS,
    USER_ADDRESSES,
    UsersFile,
    _check_secret,
    credential_key,
    credential_keys,
    mailbox_key,
    parse_user,
    parse_user_address,
    read_users,
    read_users_and_aliases,
    read_users_file,
)
from smtpcore.server._config_values import (
    MAX_DURATION,
    MAX_SIZE,
    ConfigError,
    parse_duration,
    parse_host_port,
    parse_server,
    parse_size,
)
from smtpcore.server._config_values import option_number as option_number  # _cli_types imports it
from smtpcore.server.backoff import MAX_BACKOFF, MIN_BACKOFF
from smtpcore.server.relaycache import IDLE_TIME_LIMIT, MAX_IDLE_TIME_LIMIT

__all__ = [
    "MAX_DURATION",
    "LISTENERS",
    "MAX_SIZE",
    "PROXIED_LISTENERS",
    "XCLIENT_LISTENERS",
    "MAX_MAILBOX_NAME_OCTETS",
    "USER_ADDRESSES",
    "ConfigError",
    "ServerConfig",
    "UsersFile",
    "credential_key",
    "credential_keys",
    "default_hostname_warning",
    "machine_name",
    "mailbox_key",
    "parse_duration",
    "parse_host_port",
    "parse_server",
    "parse_size",
    "parse_user",
    "parse_user_address",
    "read_users",
    "read_users_and_aliases",
    "read_users_file",
    "server_hostname",
]


# The classes moved into private modules keep the name callers import them by in
# ``__module__``, which tracebacks and pickling read (as ``_maildrop_errors`` does).
for _moved in (ConfigError, UsersFile):
    _moved.__module__ = __name__
del _moved

LISTENERS: Mapping[str, str] = MappingProxyType(
    {
        "smtp": "inbound mail for the local domains (no AUTH, never relays)",
        "submission": "mail from local users (AUTH required), any recipient",
        "smtps": "submission over implicit TLS (RFC 8314); needs --tls-cert",
        "lmtp": "LMTP final delivery into the local mailboxes",
        "pop3": "POP3 for the local mailboxes",
        "pop3s": "POP3 over implicit TLS; needs --tls-cert",
    }
)
"""Every listener, by name, and what it serves: each has a ``NAME_port`` option (0
turns it off). In the order the server opens them and ``serve --help`` lists them;
the one table that :meth:`ServerConfig.listeners` and ``serve``'s options read."""
PROXIED_LISTENERS = ("smtp", "submission", "smtps", "pop3", "pop3s")
"""The listeners ``--proxy-protocol-from`` applies to: those a load balancer fronts.
LMTP is not one: its client is the MTA in front, whose own address is the one to
count and log, and HAProxy does not stand between the two."""
XCLIENT_LISTENERS = ("smtp",)
"""The listeners ``--xclient-from`` applies to: port 25's, where Postfix sets
``smtpd_authorized_xclient_hosts`` for a proxy or filter in front of it."""

DEFAULT_MAX_QUEUE_AGE = 5 * 86400.0
"""Five days, as Postfix's ``maximal_queue_lifetime`` (RFC 5321 §4.5.4.1 asks for 4-5)."""


def _networks(option: str, specs: Iterable[str]) -> tuple[str, ...]:
    """The addresses or networks an option lists, each as ``ipaddress`` writes it."""
    found = []
    for spec in (specs,) if isinstance(specs, str) else specs:
        try:
            found.append(str(ipaddress.ip_network(spec.strip(), strict=False)))
        except ValueError:
            raise ConfigError(
                f"{option}: {spec!r} is not an IP address or network (like 10.0.0.5, "
                "10.0.0.0/8 or 2001:db8::/32)"
            ) from None
    return tuple(dict.fromkeys(found))


def _check_ca_file(path: Path) -> None:
    """``--relay-ca`` loaded now, as the relay will load it: a file that holds no
    certificate is a mistake to report before the server binds."""
    if not path.is_file():
        raise ConfigError(f"--relay-ca: {path} is not a file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--relay-ca: cannot load {path}: {exc}") from None


def _check_port(name: str, port: int) -> None:
    if not 0 <= port < 65536:
        raise ConfigError(f"--{name}-port: {port} is not a port (0 turns the listener off)")
    refusal = lmtp_port_refusal(port) if name == "lmtp" else None
    if refusal is not None:
        raise ConfigError(f"--lmtp-port: {refusal}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One mail server: its domains and mailboxes, listeners, storage and relay policy.

    ``users`` maps each mailbox key (:func:`mailbox_key`) to its password;
    the address is also the login name for AUTH and POP3, in any case and as
    SASLprep writes it (:meth:`user_key`), and two users one login would find
    are refused. Each user's mailbox is a Maildir at ``data_dir/mailboxes/KEY/``.
    A port of 0 turns its listener off. The repr shows the users' addresses,
    never their passwords.
    """

    domains: tuple[str, ...] = ("localhost",)
    users: Mapping[str, str] = field(default_factory=dict, metadata=SECRET)
    data_dir: Path = Path("smtpcore-data")
    hostname: str = field(default_factory=machine_name)
    """The server's name (:func:`server_hostname`), kept in lowercase A-label form; the
    machine's own name, when it is no domain name, as it is."""
    host: str = "127.0.0.1"
    smtp_port: int = 2525
    submission_port: int = 2587
    pop3_port: int = 2110
    lmtp_port: int = 0
    smtps_port: int = 0
    pop3s_port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_size: int = 10_240_000
    min_free_space: int | None = None
    """Octets the data directory's filesystem must keep free for MAIL to be taken
    (Postfix's ``queue_minfree``): below it MAIL gets ``452 4.3.1`` (RFC 1870 §6.1).
    None, the default, is 1.5 times ``max_message_size``, as Postfix's default; 0 is
    no floor. Either way a MAIL whose declared SIZE needs more than the disk has (the
    spool file and one Maildir copy, twice the size) is refused too; see
    :mod:`smtpcore.server.freespace`."""
    max_recipients: int = 100
    strict_addresses: bool = False
    """Take only RFC 5321 §4.1.2's envelope addresses in MAIL and RCPT. Off, the
    default, the SMTP listeners take what Postfix's smtpd takes by default
    (:meth:`~smtpcore.address.AddressPolicy.postfix`): a local part with a dot
    first, last or doubled, relayed quoted, and a path without angle brackets."""
    max_sessions: int = 2000
    """Sessions each listener serves at once; past that a client gets 421 4.7.0."""
    max_sessions_per_address: int | None = 50
    """Sessions each listener serves at once for one client address (Postfix's
    ``smtpd_client_connection_count_limit``); None for no limit."""
    client_ipv6_prefix_length: int = 84
    """The bits of an IPv6 client's address ``max_sessions_per_address`` counts it by,
    as Postfix's ``smtpd_client_ipv6_prefix_length``: an IPv6 customer's /64 is one
    client, not 2**64 of them."""
    auth_failure_delay: float = 2.0
    """Seconds a failed login (SMTP AUTH, POP3 PASS, APOP, AUTH) waits before its answer,
    as Dovecot's ``auth_failure_delay``: a client guessing passwords guesses slowly."""
    resolver: str = "system"
    """``system``, ``static:FILE`` or ``dns:HOST:PORT``."""
    remote_port: int = 25
    """The port relayed mail goes to on every exchanger (Postfix's ``smtp_tcp_port``)."""
    relay_host: tuple[str, int] | None = None
    retry_after: float = MIN_BACKOFF
    """Seconds before the first retry of a temporary failure; the wait doubles after
    (Postfix's ``minimal_backoff_time``)."""
    max_retry_after: float = MAX_BACKOFF
    """The longest wait between two attempts (Postfix's ``maximal_backoff_time``)."""
    destination_concurrency: int | None = None
    """Outbound sessions the relay holds at once to one destination (a recipient domain,
    or the smart host), as Postfix's ``default_destination_concurrency_limit``; None, the
    default, is half the sessions it holds at once (10 of 20), so that an exchanger that
    never answers cannot hold them all, or all 20 with a ``relay_host``, the only
    destination (:func:`~smtpcore.server.places.default_destination_concurrency`, which
    the worker asks). Above 20 it has no effect."""
    connection_cache_time: float = IDLE_TIME_LIMIT
    """Seconds a relay connection whose message went through is kept open for the next
    message to the same next hop (Postfix's ``smtp_connection_cache_time_limit``);
    0 keeps none; at most :data:`~smtpcore.server.relaycache.MAX_IDLE_TIME_LIMIT` (60):
    see :mod:`smtpcore.server.relaycache`."""
    max_queue_age: float = DEFAULT_MAX_QUEUE_AGE
    delay_warning: float | None = None
    """Warn the sender once when mail has waited this long (Postfix's
    ``delay_warning_time``); None, the default, never warns."""
    relay_tls: str = "may"
    """``may``, ``encrypt`` or ``verify``: see :mod:`smtpcore.server.relay_tls`."""
    relay_ca: Path | None = None
    """CA certificates for ``relay_tls="verify"``, instead of the system's trust store."""
    allow_internal_relay: bool = False
    sender_login_match: bool = True
    """On submission, MAIL FROM must be the login's own address or one of its
    ``sender_aliases`` (Postfix's ``reject_sender_login_mismatch``)."""
    sender_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Sender address (mailbox key) to the logins that may also send as it."""
    """Let the relay reach loopback, private and link-local addresses and the server's
    own (``smtpcore.server.internal``); two servers on one machine need it."""
    proxy_protocol_from: tuple[str, ...] = ()
    """The proxies (HAProxy with ``send-proxy``) whose PROXY header names the client,
    on the ``PROXIED_LISTENERS``: every connection to those must then come from
    one of them."""
    proxy_protocol_timeout: float = DEFAULT_PROXY_TIMEOUT
    """Seconds a proxy of ``proxy_protocol_from`` has to send its whole header
    (Postfix's ``smtpd_upstream_proxy_timeout``, Dovecot's ``haproxy_timeout``)."""
    xclient_from: tuple[str, ...] = ()
    """The clients that may use XCLIENT and XFORWARD on the ``XCLIENT_LISTENERS``
    (Postfix's ``smtpd_authorized_xclient_hosts``)."""
    user_sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """Where each user was given (``FILE:LINE``, ``--user``), for the errors about it
    to name, as the users file's parser names the line of its own."""
    alias_sources: Mapping[tuple[str, str], str] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Where each ``(alias, login)`` of ``sender_aliases`` was granted (``FILE:LINE``)."""
    _logins: Mapping[str, str] = field(init=False, repr=False, compare=False)
    """Each user's :func:`credential_key` to the user's mailbox key."""

    def __post_init__(self) -> None:
        if not self.domains:
            raise ConfigError("--domain: at least one local domain is needed")
        try:
            domains = tuple(dict.fromkeys(normalize_domain(d) for d in self.domains))
        except AddressError as exc:
            raise ConfigError(f"--domain: {exc}") from None
        object.__setattr__(self, "domains", domains)
        for key in self.users:
            domain = key.rpartition("@")[2]
            if domain not in domains:
                raise ConfigError(
                    f"{self._user_source(key)}: {domain} is not a local domain: "
                    f"a typo, or add --domain {domain}"
                )
        users = {
            key: _check_secret(secret, self._user_source(key))
            for key, secret in self.users.items()
        }
        object.__setattr__(self, "users", MappingProxyType(users))
        object.__setattr__(self, "_logins", MappingProxyType(credential_keys(users)))
        for alias, logins in self.sender_aliases.items():
            for login in logins:
                if login not in self.users:
                    where = self.alias_sources.get((alias, login), "sender alias")
                    raise ConfigError(f"{where}: {alias} -> {login}: {login} is not a user here")
        object.__setattr__(self, "sender_aliases", MappingProxyType(dict(self.sender_aliases)))
        for name in LISTENERS:
            _check_port(name, getattr(self, f"{name}_port"))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_cert is None and (self.smtps_port or self.pop3s_port):
            raise ConfigError("--smtps-port and --pop3s-port need --tls-cert and --tls-key")
        if not 0 < self.remote_port < 65536:
            raise ConfigError(f"--remote-port: {self.remote_port} is not a port")
        object.__setattr__(self, "hostname", server_hostname(self.hostname))
        self._check_routable()
        self._check_durations()
        if self.retry_after <= 0:
            raise ConfigError("--retry-after must be positive")
        if self.max_retry_after < self.retry_after:
            raise ConfigError("--max-retry-after must not be shorter than --retry-after")
        if self.connection_cache_time < 0:
            raise ConfigError("--connection-cache-time must not be negative (0: no cache)")
        if self.connection_cache_time > MAX_IDLE_TIME_LIMIT:
            raise ConfigError(
                f"--connection-cache-time must be at most {MAX_IDLE_TIME_LIMIT:g}s: an idle "
                "connection holds a slot at the exchanger"
            )
        if self.max_queue_age <= 0:
            raise ConfigError("--max-queue-age must be positive")
        if self.delay_warning is not None and self.delay_warning <= 0:
            raise ConfigError("--delay-warning must be positive (leave it out for none)")
        if self.auth_failure_delay < 0:
            raise ConfigError("--auth-failure-delay must not be negative (0: answer at once)")
        if self.proxy_protocol_timeout <= 0:
            raise ConfigError("--proxy-protocol-timeout must be positive")
        if self.relay_tls not in ("may", "encrypt", "verify"):
            raise ConfigError(f"--relay-tls: {self.relay_tls!r}; use may, encrypt or verify")
        if self.relay_ca is not None:
            _check_ca_file(self.relay_ca)
        if self.max_message_size < 0:
            raise ConfigError("--max-message-size must not be negative (0: no limit)")
        if self.min_free_space is not None and self.min_free_space < 0:
            raise ConfigError("--min-free-space must not be negative (0: no floor)")
        for name in ("max_message_size", "min_free_space"):
            size = getattr(self, name)
            if size is not None and size > MAX_SIZE:
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag}: {size} is too large (at most {MAX_SIZE} octets)")
        if self.max_recipients < 1:
            raise ConfigError("--max-recipients must be at least 1")
        if self.destination_concurrency is not None and self.destination_concurrency < 1:
            raise ConfigError("--destination-concurrency must be at least 1")
        if self.max_sessions < 1:
            raise ConfigError("--max-sessions must be at least 1")
        per_address = self.max_sessions_per_address
        if per_address is not None and per_address < 1:
            raise ConfigError(
                "--max-sessions-per-address must be at least 1 (0 on the command line: none)"
            )
        if not 0 <= self.client_ipv6_prefix_length <= 128:
            raise ConfigError("--client-ipv6-prefix-length must be 0 to 128")
        object.__setattr__(
            self,
            "proxy_protocol_from",
            _networks("--proxy-protocol-from", self.proxy_protocol_from),
        )
        object.__setattr__(self, "xclient_from", _networks("--xclient-from", self.xclient_from))
        on = {name for name, _ in self.listeners()}
        if self.proxy_protocol_from and not on & set(PROXIED_LISTENERS):
            raise ConfigError(
                "--proxy-protocol-from: none of the listeners it applies to is on "
                f"({', '.join(PROXIED_LISTENERS)}; LMTP takes no PROXY header)"
            )
        if self.xclient_from and not on & set(XCLIENT_LISTENERS):
            raise ConfigError("--xclient-from applies to the smtp listener, which is off")
        kind = self.resolver.partition(":")[0]
        if kind not in ("system", "static", "dns") or (kind != "system") != (":" in self.resolver):
            raise ConfigError(
                f"--resolver: {self.resolver!r}; use system, static:FILE or dns:HOST:PORT"
            )

    __repr__ = secret_repr

    def _user_source(self, key: str) -> str:
        """``FILE:LINE: KEY``, ``--user: KEY`` or ``user KEY``: the user an error is about,
        and where it was given when that is known."""
        where = self.user_sources.get(key)
        return f"user {key}" if where is None else f"{where}: {key}"

    def _check_durations(self) -> None:
        """Every duration as a finite float (:func:`as_seconds`), or a
        :class:`ConfigError` naming its option: a string, None where a duration is
        required, or a number past a float's range would otherwise fail later, as
        ``TypeError`` here or as ``OverflowError`` in every session's deadline."""
        durations = (
            "retry_after",
            "max_retry_after",
            "max_queue_age",
            "auth_failure_delay",
            "connection_cache_time",
        )
        for name in (*durations, "proxy_protocol_timeout", "delay_warning"):
            seconds = getattr(self, name)
            if name == "delay_warning" and seconds is None:
                continue  # no warning
            try:
                object.__setattr__(self, name, as_seconds(name, seconds))
            except ValueError as exc:
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag}: {str(exc).removeprefix(name + ' ')}") from None

    def _check_routable(self) -> None:
        """The names the mail server's routers are built from, refused here as the
        routers would refuse them at start, with the option named."""
        try:
            Router(self.domains, hostnames=[self.hostname])
        except ValueError as exc:
            raise ConfigError(f"--hostname: {exc}") from None
        try:
            Router(self.domains, smart_host=self.relay_host)
        except ValueError as exc:  # AddressError too
            raise ConfigError(f"--relay-host: {exc}") from None

    @property
    def free_space_floor(self) -> int:
        """What ``min_free_space`` asks, its default worked out: 1.5 times the size
        limit, or no floor when there is no limit."""
        if self.min_free_space is not None:
            return self.min_free_space
        return self.max_message_size * 3 // 2

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def mailboxes_dir(self) -> Path:
        return self.data_dir / "mailboxes"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    def user_key(self, login: str) -> str | None:
        """The mailbox key of the user ``login`` names, however SASLprep would write it
        (see :func:`credential_key`); None when it names no user."""
        key = credential_key(login)
        return None if key is None else self._logins.get(key)

    def mailbox_path(self, key: str) -> Path:
        """Where the Maildir of mailbox ``key`` lives."""
        return self.mailboxes_dir / key

    def postmaster_key(self, domain: str) -> str:
        """The mailbox that receives ``postmaster`` mail for ``domain`` (RFC 5321 §4.5.1).

        ``postmaster@domain`` when it is a user, else the postmaster of the
        first domain, whose Maildir is created even without a user to read it.
        """
        own = f"postmaster@{domain}"
        return own if own in self.users else f"postmaster@{self.domains[0]}"

    def listeners(self) -> Iterable[tuple[str, int]]:
        """(name, port) of every listener that is on."""
        for name in LISTENERS:
            port: int = getattr(self, f"{name}_port")
            if port:
                yield name, port
