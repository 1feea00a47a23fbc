"""The :class:`~smtpcore.server.config.ServerConfig` that ``serve``'s parsed options
describe: the users given on the command line warned about, the retry bounds that
move to meet each other, two listeners on one port refused.

Apart from the options' definitions (:mod:`smtpcore.server._cli_serve_options`), which
say what may be written, and from running the server, which reads the configuration
again on SIGHUP: this turns what was written into what the server is told.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from smtpcore.server.backoff import MAX_BACKOFF, MIN_BACKOFF
from smtpcore.server.config import (
    LISTENERS,
    ConfigError,
    ServerConfig,
    machine_name,
    parse_user,
    read_users,
)
from smtpcore.server.credentials import is_hashed

__all__ = ["config_from_args"]


def _check_ports_apart(args: argparse.Namespace) -> None:
    """Two listeners on one port, refused as the options are read, naming both: every
    listener binds ``--host``, and the second bind failed at start as ``cannot listen:
    pop3 listener on 127.0.0.1:2525: Address already in use``, naming neither option.
    Port 0 turns a listener off, so any number may be 0. Here, not in
    :class:`ServerConfig`: a server given its sockets (``MailServer(sockets=...)``, as
    tests and the demo do) binds no port of its configuration, whose ports then only
    say which listeners are on."""
    taken: dict[int, str] = {}
    for name in LISTENERS:
        port: int = getattr(args, f"{name}_port")
        first = taken.setdefault(port, name) if port else name
        if first != name:
            raise ConfigError(
                f"--{first}-port and --{name}-port are both {port}: two listeners cannot "
                f"share a port on --host {args.host}; give one another port, or 0 to turn "
                "it off"
            )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` that ``serve``'s options describe."""
    _check_ports_apart(args)
    users: dict[str, str] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    sources: dict[str, str] = {}
    alias_sources: dict[tuple[str, str], str] = {}
    retry_after, max_retry_after = _retry_bounds(args)
    if args.users_file is not None:
        users, aliases, sources, alias_sources = read_users(args.users_file)
    for text in args.user:
        key, password = parse_user(text)
        users[key] = password
        sources[key] = "--user"
        if is_hashed(password):  # no safer there: RFC 5802 §9
            shown = "SCRAM keys of {} on the command line, where `ps` shows them"
            advice = (
                "with them and one login observed, or by posing as the server, anyone "
                "can log in as that user; put them in --users-file"
            )
        else:
            shown = "password of {} on the command line, where `ps` shows it"
            advice = (
                "put it in --users-file (as SCRAM keys from `python -m smtpcore hash-password`)"
            )
        print(
            f"smtpcore serve: warning: --user gives the {shown.format(key)} to every user "
            f"of this machine; {advice}",
            file=sys.stderr,
        )
    options: dict[str, Any] = {"hostname": args.hostname or machine_name()}
    return ServerConfig(
        domains=tuple(args.domain or ("localhost",)),
        users=users,
        user_sources=sources,
        data_dir=args.data_dir,
        host=args.host,
        smtp_port=args.smtp_port,
        submission_port=args.submission_port,
        pop3_port=args.pop3_port,
        lmtp_port=args.lmtp_port,
        smtps_port=args.smtps_port,
        pop3s_port=args.pop3s_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_message_size=args.max_message_size,
        min_free_space=args.min_free_space,
        max_recipients=args.max_recipients,
        strict_addresses=args.strict_addresses,
        max_sessions=args.max_sessions,
        max_sessions_per_address=args.max_sessions_per_address or None,
        client_ipv6_prefix_length=args.client_ipv6_prefix_length,
        auth_failure_delay=args.auth_failure_delay,
        resolver=args.resolver,
        remote_port=args.remote_port,
        relay_host=args.relay_host,
        retry_after=retry_after,
        max_retry_after=max_retry_after,
        destination_concurrency=args.destination_concurrency,
        connection_cache_time=args.connection_cache_time,
        max_queue_age=args.max_queue_age,
        delay_warning=args.delay_warning,
        relay_tls=args.relay_tls,
        relay_ca=args.relay_ca,
        allow_internal_relay=args.allow_internal_relay,
        sender_login_match=args.sender_login_match,
        sender_aliases=aliases,
        alias_sources=alias_sources,
        proxy_protocol_from=tuple(args.proxy_protocol_from),
        proxy_protocol_timeout=args.proxy_protocol_timeout,
        xclient_from=tuple(args.xclient_from),
        **options,
    )


def _retry_bounds(args: argparse.Namespace) -> tuple[float, float]:
    """``--retry-after`` and ``--max-retry-after``. Given alone, either moves the other's
    default to meet it, as Postfix adjusts one backoff time to the other: ``--retry-after
    2h`` raises the maximum to 2h, ``--max-retry-after 1m`` lowers the first retry to 1m.
    Given together, they are taken as given, for :class:`ServerConfig` to refuse a
    maximum shorter than the first retry: the operator said two things that disagree."""
    retry_after: float | None = args.retry_after
    most: float | None = args.max_retry_after
    if most is None:
        first = MIN_BACKOFF if retry_after is None else retry_after
        return first, max(MAX_BACKOFF, first)
    if retry_after is None:
        return min(MIN_BACKOFF, most), most
    return retry_after, most
