"""``serve``'s options: the listeners, a proxy in front, the domains and mailboxes, TLS,
the limits, relaying and the stop.

Apart from the other commands' options because they are most of the command line (a
group for each part of the server), and apart from what the parsed options become
(:func:`smtpcore.server.cli.config_from_args`): this module says what the operator may
write and how ``--help`` words it, not what it means to the server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from smtpcore._driver._proxied import DEFAULT_PROXY_TIMEOUT
from smtpcore.server._cli_types import option_type, parse_count, parse_port
from smtpcore.server.config import (
    DEFAULT_MAX_QUEUE_AGE,
    LISTENERS,
    ServerConfig,
    parse_duration,
    parse_host_port,
    parse_size,
)
from smtpcore.server.relaycache import IDLE_TIME_LIMIT, MAX_IDLE_TIME_LIMIT

__all__ = ["add_serve_command"]


def add_serve_command(commands: Any) -> None:
    """``serve`` and its options, in groups as ``serve --help`` shows them."""
    serve = commands.add_parser(
        "serve",
        help="run the mail server",
        description="Run the reference mail server: SMTP in, submission, relay, POP3 out.",
    )
    ports = serve.add_argument_group("listeners (port 0 turns one off)")
    default_ports = {field.name: field.default for field in dataclasses.fields(ServerConfig)}
    for name, what in LISTENERS.items():
        default = default_ports[f"{name}_port"]
        ports.add_argument(
            f"--{name}-port",
            type=option_type(parse_port, "port"),
            default=default,
            metavar="PORT",
            help=f"{what} (default {default or 'off'})",
        )
    ports.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    proxies = serve.add_argument_group("behind a proxy or load balancer")
    proxies.add_argument(
        "--proxy-protocol-from",
        action="append",
        default=[],
        metavar="NETWORK",
        help="a proxy (HAProxy with send-proxy or send-proxy-v2) whose PROXY header names "
        "the client, as an address or network (repeatable). Every connection to the smtp, "
        "submission, smtps, pop3 and pop3s listeners must then come from one and start "
        "with a header; LMTP takes none",
    )
    proxies.add_argument(
        "--proxy-protocol-timeout",
        type=option_type(parse_duration, "duration"),
        default=DEFAULT_PROXY_TIMEOUT,
        metavar="SECONDS",
        help="how long a proxy of --proxy-protocol-from has to send its whole PROXY header "
        "before the connection is closed, as Postfix's smtpd_upstream_proxy_timeout "
        f"(default {DEFAULT_PROXY_TIMEOUT:g})",
    )
    proxies.add_argument(
        "--xclient-from",
        action="append",
        default=[],
        metavar="NETWORK",
        help="a client that may name the client it speaks for with XCLIENT and XFORWARD "
        "on the smtp listener (Postfix's smtpd_authorized_xclient_hosts; repeatable)",
    )
    mail = serve.add_argument_group("domains and mailboxes")
    mail.add_argument(
        "--domain",
        action="append",
        metavar="NAME",
        help="a local domain (repeatable; default localhost)",
    )
    mail.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="ADDRESS:PASSWORD",
        help="a local mailbox and its password (repeatable; the login is the address). "
        "A password here shows in ps, and so would SCRAM keys, which let whoever reads "
        "them log in (RFC 5802 §9): use --users-file",
    )
    mail.add_argument(
        "--users-file",
        type=Path,
        metavar="FILE",
        help="users, one ADDRESS:PASSWORD a line (or ADDRESS:SCRAM-SHA-256$... keys), "
        "and sender aliases, one ADDRESS -> LOGIN[, LOGIN] a line; # comments",
    )
    mail.add_argument(
        "--no-sender-login-match",
        dest="sender_login_match",
        action="store_false",
        help="let a submission user send as any address (by default MAIL FROM must be "
        "the login's own address or an alias the users file grants it)",
    )
    mail.add_argument(
        "--data-dir",
        type=Path,
        default=Path("smtpcore-data"),
        metavar="DIR",
        help="mailboxes (Maildirs in DIR/mailboxes/ADDRESS/) and queue (default ./smtpcore-data)",
    )
    mail.add_argument(
        "--hostname",
        help="this server's name in greetings, EHLO, Received lines and bounces (default: the "
        "machine's FQDN, with a warning when it is not fully qualified)",
    )
    tls = serve.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="private key (PEM)")
    limits = serve.add_argument_group("limits")
    limits.add_argument(
        "--max-message-size",
        type=option_type(parse_size, "size"),
        default=10_240_000,
        metavar="SIZE",
        help="largest message accepted, in octets or like 10M, at most 2**63-1 octets; 0 for "
        "no limit (default 10240000)",
    )
    limits.add_argument(
        "--min-free-space",
        type=option_type(parse_size, "size"),
        metavar="SIZE",
        help="free space the data directory's filesystem must keep for MAIL to be "
        "taken, as Postfix's queue_minfree; below it, or below twice a declared "
        "SIZE, MAIL gets 452 4.3.1; 0 for no floor (default 1.5 times "
        "--max-message-size)",
    )
    limits.add_argument(
        "--max-recipients",
        type=option_type(parse_count, "number"),
        default=100,
        metavar="N",
        help="recipients per message (default 100)",
    )
    limits.add_argument(
        "--strict-addresses",
        action="store_true",
        help="take only RFC 5321 addresses in MAIL and RCPT: refuse a local part with a "
        "dot first, last or doubled, and a path without <>, which Postfix takes by "
        "default (strict_rfc821_envelopes); off by default",
    )
    limits.add_argument(
        "--max-sessions",
        type=option_type(parse_count, "number"),
        default=2000,
        metavar="N",
        help="sessions each listener serves at once; more get 421 (default 2000)",
    )
    limits.add_argument(
        "--max-sessions-per-address",
        type=option_type(parse_count, "number"),
        default=50,
        metavar="N",
        help="sessions each listener serves at once for one client address, as Postfix's "
        "smtpd_client_connection_count_limit; 0 for no limit (default 50)",
    )
    limits.add_argument(
        "--client-ipv6-prefix-length",
        type=option_type(parse_count, "number"),
        default=84,
        metavar="BITS",
        help="count an IPv6 client for --max-sessions-per-address by its network of this "
        "many bits, as Postfix's smtpd_client_ipv6_prefix_length; 128 counts each "
        "address (default 84)",
    )
    limits.add_argument(
        "--auth-failure-delay",
        type=option_type(parse_duration, "duration"),
        default=2.0,
        metavar="SECONDS",
        help="wait this long before answering a failed login (SMTP AUTH, POP3), as "
        "Dovecot's auth_failure_delay; 0 answers at once (default 2)",
    )
    relay = serve.add_argument_group("relaying")
    relay.add_argument(
        "--resolver",
        default="system",
        metavar="system|static:FILE|dns:HOST:PORT",
        help="where MX and address lookups go: the system's DNS, a zone file, or the DNS "
        "server at IP address HOST, an IPv6 one in brackets: dns:[::1]:53 (default system)",
    )
    relay.add_argument(
        "--remote-port",
        type=option_type(parse_port, "port"),
        default=25,
        metavar="PORT",
        help="port relayed mail goes to on every exchanger (default 25)",
    )
    relay.add_argument(
        "--relay-host",
        type=option_type(parse_host_port, "HOST:PORT"),
        metavar="HOST:PORT",
        help="send all remote mail through this smart host instead of MX lookups "
        "([HOST]:PORT as in Postfix; an IPv6 address in brackets: [2001:db8::1]:25)",
    )
    relay.add_argument(
        "--retry-after",
        type=option_type(parse_duration, "duration"),
        default=None,
        metavar="DURATION",
        help="first retry of a temporary failure, doubling after, with jitter (default 300s, "
        "Postfix's minimal_backoff_time; lowered to a shorter --max-retry-after given alone)",
    )
    relay.add_argument(
        "--max-retry-after",
        type=option_type(parse_duration, "duration"),
        default=None,
        metavar="DURATION",
        help="longest wait between two attempts (default 4000s, Postfix's maximal_backoff_time; "
        "raised to a longer --retry-after given alone)",
    )
    relay.add_argument(
        "--destination-concurrency",
        type=option_type(parse_count, "number"),
        default=None,
        metavar="N",
        help="outbound sessions at once to one destination (a recipient domain, or the "
        "--relay-host), as Postfix's default_destination_concurrency_limit, so that one "
        "that never answers cannot hold every session (default 10, half of the 20 at once; "
        "with --relay-host, the only destination, all 20)",
    )
    relay.add_argument(
        "--connection-cache-time",
        type=option_type(parse_duration, "duration"),
        default=IDLE_TIME_LIMIT,
        metavar="DURATION",
        help="keep a relay connection whose message went through open this long for the "
        "next message to the same exchanger, as Postfix's smtp_connection_cache_time_limit "
        f"(default 2s, at most {MAX_IDLE_TIME_LIMIT:g}s; 0 turns the cache off)",
    )
    relay.add_argument(
        "--max-queue-age",
        type=option_type(parse_duration, "duration"),
        default=DEFAULT_MAX_QUEUE_AGE,
        metavar="DURATION",
        help="bounce what is still undelivered after this long (default 5d)",
    )
    relay.add_argument(
        "--delay-warning",
        type=option_type(parse_duration, "duration"),
        default=None,
        metavar="DURATION",
        help="tell the sender once when mail has waited this long, like 4h (default: never)",
    )
    relay.add_argument(
        "--relay-tls",
        choices=["may", "encrypt", "verify"],
        default="may",
        help="may: TLS when offered, plaintext if it fails; encrypt: never plaintext; "
        "verify: encrypt and check the certificate against the MX name (default may)",
    )
    relay.add_argument(
        "--allow-internal-relay",
        action="store_true",
        help="let relayed mail go to addresses that are not globally reachable (loopback, "
        "private, shared, link-local...) and this server's own (address literals and MX "
        "hosts); off by default",
    )
    relay.add_argument(
        "--relay-ca",
        type=Path,
        metavar="FILE",
        help="CA certificates for --relay-tls verify (default: the system's trust store)",
    )
    serve.add_argument(
        "--stop-timeout",
        type=option_type(parse_duration, "duration"),
        default=10.0,
        metavar="DURATION",
        help="on SIGTERM or SIGINT, how long sessions and deliveries under way may take to "
        "finish before they are cut off (default 10s); a second SIGTERM or SIGINT "
        "stops at once",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="what goes to the log on stderr (default info)",
    )
