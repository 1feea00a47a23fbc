"""What ``python -m smtpcore serve`` is told: domains, users, ports, paths and policy.

Everything the command line and the users file say is checked here, once,
so that a mistake stops the server before it binds a port, with a message
that names the option or the line at fault.
"""

from __future__ import annotations

import codecs
import ipaddress
import re
import socket
import ssl
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, NamedTuple

from smtpcore._driver._ports import lmtp_port_refusal
from smtpcore._driver._proxied import DEFAULT_PROXY_TIMEOUT
from smtpcore._driver._timeouts import as_seconds
from smtpcore._numbers import is_digits, parse_number
from smtpcore._secret import SECRET, secret_repr
from smtpcore.address import (
    AddressError,
    AddressPolicy,
    Mailbox,
    normalize_domain,
    normalize_host_name,
    parse_mailbox,
)
from smtpcore.routing import Router
from smtpcore.sasl import ScramCredentials, saslprep_login
from smtpcore.server.backoff import MAX_BACKOFF, MIN_BACKOFF
from smtpcore.smtp._ext.size import MAX_MESSAGE_SIZE

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


class ConfigError(ValueError):
    """A configuration mistake, worded for the operator."""


USER_ADDRESSES: Final = AddressPolicy(unquoted_dots=True)
"""How a user's address is read where an operator or a user writes it (the users
file, ``--user``, a login, a mailbox directory's name): as the SMTP listeners take
it by default, so that ``taro..yamada@pqr.example``, whose mail they accept, can be
a user who logs in as that."""


def parse_user_address(text: str) -> Mailbox:
    """``text`` as :data:`USER_ADDRESSES` reads it, else AddressError."""
    return parse_mailbox(text, policy=USER_ADDRESSES)


def mailbox_key(mailbox: Mailbox) -> str:
    """The name a mailbox is known by here: ``local@domain``, lowercase, A-label domain.

    The one key every part of the server (delivery, the users file, AUTH, POP3)
    names a mailbox by. Local parts are compared without regard to case, as almost
    every mail server does, although RFC 5321 §2.4 lets the host decide; and
    canonically equivalent spellings are one (``é`` precomposed, or ``e`` and a
    combining acute as macOS writes it), kept in NFC as RFC 6530 §10.1 and RFC
    6532 §3.1 recommend for UTF-8 addresses. Lowercasing the decomposed form makes
    the key depend on the canonical spelling alone, whichever one came.
    """
    local = mailbox.local_part
    if local.isascii():
        local = local.lower()
    else:
        local = unicodedata.normalize("NFC", unicodedata.normalize("NFD", local).lower())
    domain = mailbox.domain if mailbox.is_address_literal else normalize_domain(mailbox.domain)
    return f"{local}@{domain}"


def credential_key(login: str) -> str | None:
    """The key a login name finds its user by: its local part SASLprep'd as a query (RFC
    4013; RFC 3454 §7), then its :func:`mailbox_key`, whose domain is compared as IDNA
    compares domains (:func:`~smtpcore.address.normalize_domain`); None if it names no
    mailbox. SASLprep over the domain too would drop a joiner that IDNA 2008 keeps, and
    ``u@क्\u200dष.test`` (a ZWJ) would find the user ``u@क्ष.test``, another domain's.

    SMTP AUTH and POP3 AUTH give the user name SASLprep'd (RFC 5802 §5.1, RFC 4616
    §2), POP3 USER and APOP as the client typed it: keyed this way, every path finds
    the one user, whose name may hold a compatibility character (``ｱｲ``, ``ﬁona``,
    ``Ⅸ``, which SASLprep makes ``アイ``, ``fiona``, ``IX``). A name SASLprep refuses
    (a private-use character) or makes into no address is keyed by its mailbox key
    alone, as before, so that its user still logs in by USER and APOP (AUTH fails
    it: RFC 4616 §2). Mail is delivered by the mailbox key, never by this one.
    """
    try:
        prepared = saslprep_login(login)
    except ValueError:
        prepared = login
    for name in dict.fromkeys((prepared, login)):
        try:
            return mailbox_key(parse_user_address(name))
        except (AddressError, ValueError):
            continue
    return None


def _user_credential_key(key: str) -> str:
    """The :func:`credential_key` of the user whose mailbox key is ``key``: that of the
    address written out again (quoted if its local part needs it), else ``key``."""
    local, at, domain = key.rpartition("@")
    try:
        address = str(Mailbox(local, domain)) if at else key
    except (AddressError, ValueError):
        address = key
    return credential_key(address) or key


def credential_keys(users: Iterable[str]) -> dict[str, str]:
    """Each user's :func:`credential_key`, mapped to the user's mailbox key.

    Two users whom one key would find (``ｱｲ@`` and ``アイ@``, ``Ⅸ@`` and ``ix@``) are
    a :class:`ConfigError`: a login could not tell them apart."""
    logins: dict[str, str] = {}
    for key in users:
        login = _user_credential_key(key)
        other = logins.setdefault(login, key)
        if other != key:
            raise ConfigError(
                f"users {other} and {key} log in by one name, {login} (user names are "
                "compared as SASLprep, RFC 4013, prepares them); keep one"
            )
    return logins


def default_hostname_warning(hostname: str, option: str) -> str | None:
    """What to tell the operator when ``hostname``, the machine's name taken for want
    of ``option``, is not a fully qualified domain name (no dot, ``localhost``,
    ``localhost.localdomain`` or an IP address, as ``socket.getfqdn()`` gives on a host
    whose ``/etc/hosts`` lists ``127.0.0.1 localhost`` first), or is no domain name at
    all (:func:`server_hostname`); None when it is one.

    EHLO gives the client's fully qualified domain name (RFC 5321 §2.3.5, §4.1.1.1),
    and many servers refuse one that is not (Postfix's
    ``reject_non_fqdn_helo_hostname``); Postfix itself will not start without one."""
    name = hostname.rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        if "." in name and name != "localhost.localdomain":
            return _no_domain_warning(hostname, option)
    return (
        f"this machine's name {hostname!r}, used for want of {option}, is not a fully "
        f"qualified domain name, which EHLO must give (RFC 5321 §4.1.1.1): other servers "
        f"may refuse the mail; give {option} NAME"
    )


def _no_domain_warning(hostname: str, option: str) -> str | None:
    """The warning for a machine's name that is no domain name (``build!box``)."""
    try:
        normalize_host_name(hostname)
    except AddressError as exc:
        return (
            f"this machine's name {hostname!r}, used for want of {option}, is not a domain "
            f"name ({exc}), which the greeting and EHLO must give (RFC 5321 §4.1.1.1, "
            f"§4.2): other servers may refuse the mail; give {option} NAME"
        )
    return None


def machine_name() -> str:
    """This machine's fully qualified name, as the resolver knows it: the default name
    of a server that is given none."""
    return socket.getfqdn()


def server_hostname(hostname: str) -> str:
    """The name the mail server gives itself, in the form it is used everywhere: its
    greeting and EHLO reply, its ``Received`` lines, its relay's EHLO and its bounces'
    ``Reporting-MTA``. A :class:`ConfigError` naming ``--hostname`` if it is no domain.

    RFC 5321 §4.1.2, §4.2: a Domain of LDH labels (``_`` allowed, as Postfix allows it;
    see :func:`smtpcore.address.normalize_host_name`), a U-label converted to its A-label,
    since RFC 6531 allows UTF-8 only after SMTPUTF8 is agreed, which the greeting and
    our EHLO come before. Peers answer any other name with 501 and the mail defers
    until it bounces. This machine's own name, the default, which the operator did not
    choose, is kept as it is (``serve`` warns of it, see
    :func:`default_hostname_warning`), as one that is not fully qualified is: the
    library takes it (:mod:`smtpcore._hostname`), and a server that would not start
    for it helps no one.
    """
    try:
        return normalize_host_name(hostname)
    except AddressError as exc:
        if hostname == machine_name():
            return hostname
        raise ConfigError(f"--hostname: not a domain name: {hostname!r} ({exc})") from None


MAX_MAILBOX_NAME_OCTETS = 255
"""The longest name of a mailbox directory, in octets: the longest file name most file
systems take (NAME_MAX). An address may be longer (RFC 5321 §4.5.3.1 sets no limit
on a local part, only a size every receiver must take); such a user cannot be kept."""


def _check_path_safe(key: str, where: str) -> None:
    """A mailbox name becomes a directory name: keep it to one harmless path component,
    within the file system's limit on a name."""
    if "/" in key or "\\" in key or "\0" in key or key.startswith("."):
        raise ConfigError(f"{where}: {key!r} cannot name a mailbox directory")
    size = len(key.encode("utf-8"))
    if size > MAX_MAILBOX_NAME_OCTETS:
        raise ConfigError(
            f"{where}: the address is {size} octets, over the {MAX_MAILBOX_NAME_OCTETS} "
            "a mailbox directory's name may hold"
        )


def _check_secret(secret: str, where: str) -> str:
    """A user's secret as it is kept: a password in the clear, or SCRAM-SHA-256 keys.

    Anything that starts with ``SCRAM-`` must be SCRAM-SHA-256 keys (RFC 5803's
    form, as ``hash-password`` prints them; trailing blanks, never part of the
    keys, are dropped): taken as a password, other keys would let whoever reads
    the file log in with them, and malformed ones would lock the user out.
    """
    if not secret.startswith("SCRAM-"):
        return secret
    keys = secret.rstrip()
    try:
        hash_name = ScramCredentials.from_text(keys).hash_name
    except ValueError as exc:
        raise ConfigError(
            f"{where}: not SCRAM-SHA-256 keys as hash-password prints them: {exc}"
        ) from None
    if hash_name != "SHA-256":
        raise ConfigError(
            f"{where}: SCRAM-{hash_name} keys serve no mechanism here; give SCRAM-SHA-256 "
            "keys (python -m smtpcore hash-password)"
        )
    return keys


_ADDRESS_END = re.compile(r"[\s=:]")


def _address_part(text: str) -> str | None:
    """What an error may quote of a users-file line or a ``--user``: the address, up
    to the first blank, '=' or ':'. The rest may be the password (a blank or '=' typed
    for the ':'), so it is never shown; nor is a text with none of the three, where
    the password may follow the address with nothing between."""
    text = text.strip()
    end = _ADDRESS_END.search(text)
    return None if end is None else text[: end.start()]


def _got(text: str) -> str:
    """``, got 'ADDRESS'`` and a note that the rest is left out, for an error message."""
    shown = _address_part(text)
    if shown is None:
        return " (the text is not shown: it may hold the password)"
    return f", got {shown!r} and more, not shown (it may hold the password)"


def _check_visible(address: str, where: str) -> None:
    """Refuse a format character (Unicode category Cf: a byte order mark, a zero-width
    space or joiner) in an address: it shows neither in an editor nor in a log, yet
    makes another address, whose user could never log in nor get his mail."""
    for char in address:
        if unicodedata.category(char) == "Cf":
            raise ConfigError(
                f"{where}: the address holds an invisible format character, U+{ord(char):04X}"
            )


def _mailbox_key_of(text: str, where: str, domain_needed: str = "needs a domain") -> str:
    """The mailbox key of the address ``text``, the first thing on a users-file line or
    a ``--user``; an error quotes only what :func:`_address_part` lets it."""
    address = text.strip()
    shown = _address_part(text)
    if shown is not None and shown != address:
        # A blank or '=' inside: the parser's message would quote what follows it.
        raise ConfigError(f"{where}: not a mail address{_got(text)}")
    _check_visible(address, where)
    try:
        mailbox = parse_user_address(address)
    except AddressError as exc:
        raise ConfigError(f"{where}: {address!r} is not a mail address: {exc}") from None
    if not mailbox.domain:
        raise ConfigError(f"{where}: {address!r} {domain_needed}")
    return mailbox_key(mailbox)


def parse_user(text: str, where: str = "--user") -> tuple[str, str]:
    """``ADDRESS:PASSWORD`` into the mailbox key and the password.

    Blanks around the address go; the password is kept as it is, blanks and all,
    as ``hash-password`` and ``--password-file`` keep it. An error names ``where``
    (the option, or the file and line) and quotes at most the address."""
    address, sep, password = text.partition(":")
    if not sep:
        raise ConfigError(f"{where}: expected ADDRESS:PASSWORD{_got(text)}")
    if not password.strip():
        raise ConfigError(f"{where}: no password after {_address_part(text)!r}")
    key = _mailbox_key_of(address, where, "needs a domain (the login is the address)")
    _check_path_safe(key, where)
    return key, _check_secret(password, where)


def read_users_file(path: Path) -> dict[str, str]:
    """The users of :func:`read_users`, without the sender aliases and sources."""
    return read_users(path).users


def _is_alias_line(line: str) -> bool:
    arrow = line.find("->")
    colon = line.find(":")
    return arrow >= 0 and (colon < 0 or arrow < colon)


def _login_key(place: int, text: str, where: str) -> str:
    """The mailbox key of a login after '->'. An error counts it rather than quote it:
    a user line that lost its ':' may have a '->' in its password."""
    _check_visible(text, f"{where} login {place}")
    try:
        mailbox = parse_user_address(text.strip())
    except AddressError:
        mailbox = None
    if mailbox is None or not mailbox.domain:
        raise ConfigError(f"{where} login {place}: not a mail address with a domain")
    return mailbox_key(mailbox)


def read_users_and_aliases(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """The users and sender aliases of :func:`read_users`, without where each user is."""
    found = read_users(path)
    return found.users, found.aliases


class UsersFile(NamedTuple):
    """What :func:`read_users` found in a users file."""

    users: dict[str, str]
    aliases: dict[str, tuple[str, ...]]
    sources: dict[str, str]
    """Each user's ``FILE:LINE``, for :class:`ServerConfig` to name in its errors."""
    alias_sources: dict[tuple[str, str], str]
    """Each ``(alias, login)`` grant's ``FILE:LINE``, for the same."""


def read_users(path: Path) -> UsersFile:
    """The users file: one ``ADDRESS:PASSWORD`` a line, the password in the clear or as
    SCRAM-SHA-256 keys (``SCRAM-SHA-256$4096:salt$StoredKey:ServerKey``, RFC 5803, as
    ``python -m smtpcore hash-password`` prints them); and sender aliases, one
    ``ADDRESS -> LOGIN, LOGIN...`` a line: the logins that may send as ADDRESS on the
    submission listener (Postfix's ``smtpd_sender_login_maps``). Blank lines and ``#``
    comments are skipped.

    An alias may name a login given elsewhere (``serve --user``): whether each login
    is a user is :class:`ServerConfig`'s to check, which knows them all.

    Lines end at LF (a CR before it goes too) and nowhere else: ``str.splitlines``
    would also cut a password at a form feed or U+2028. A byte order mark at the
    start, which Windows editors write, is the UTF-8 signature, not text.

    Two lines that name one mailbox (``Kate@`` and ``kate@``, or ``josé`` in NFC and
    in NFD: see :func:`mailbox_key`) are refused with both line numbers: the last
    password would silently win. So are two lines whose users one login name would
    find (``ｱｲ@`` and ``アイ@``: see :func:`credential_key`)."""
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except OSError as exc:
        raise ConfigError(f"--users-file: cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{number}: not UTF-8 ({exc.reason})") from None
    users: dict[str, str] = {}
    sources: dict[str, str] = {}
    user_lines: dict[str, int] = {}
    login_lines: dict[str, tuple[int, str]] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    alias_sources: dict[tuple[str, str], str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        if _is_alias_line(line):
            alias, _, owners = line.partition("->")
            key = _mailbox_key_of(alias, where)
            logins = tuple(
                _login_key(place, login, f"{where}: {key} ->")
                for place, login in enumerate(filter(str.strip, owners.split(",")), 1)
            )
            if not logins:
                raise ConfigError(f"{where}: expected ADDRESS -> LOGIN[, LOGIN...]")
            aliases[key] = tuple(dict.fromkeys(aliases.get(key, ()) + logins))
            for login in logins:
                alias_sources.setdefault((key, login), where)
            continue
        key, password = parse_user(line, where)
        if key in user_lines:
            raise ConfigError(
                f"{where}: {key} is the user of line {user_lines[key]} again (addresses "
                "are compared without regard to case, in Unicode NFC); keep one line"
            )
        login = _user_credential_key(key)
        if login in login_lines:
            first, other = login_lines[login]
            raise ConfigError(
                f"{where}: {key} logs in by the name of line {first}'s user, {other} (user "
                "names are compared as SASLprep, RFC 4013, prepares them: both are "
                f"{login}); keep one line"
            )
        user_lines[key] = number
        login_lines[login] = number, key
        users[key] = password
        sources[key] = where
    return UsersFile(users, aliases, sources, alias_sources)


# [0-9], not \d: a str pattern's \d, and float(), take every script's digits.
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*\Z", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = 100 * 365 * 86400.0
"""A hundred years: longer is a typing mistake, and far longer no float at all (inf)."""


def parse_duration(text: str) -> float:
    """Seconds, or a number with a unit as Postfix writes them: ``90s``, ``30m``, ``5d``;
    at most :data:`MAX_DURATION`. Its digits are ASCII ones, as every number the
    project reads (``5m`` in Arabic-Indic digits is no duration)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (seconds, or like 30m, 12h, 5d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not seconds <= MAX_DURATION:  # inf too
        raise ValueError(f"{text.strip()!r} is over 100 years")
    return seconds


def option_number(text: str, *, max_digits: int) -> int | None:
    """The value of a number an option gives: ASCII digits alone, else None, as
    :func:`~smtpcore._numbers.parse_number` reads one, up to ``max_digits`` digits. Leading
    zeros are not counted toward them: they add nothing to the value, nor to the work, and
    ``int()``, which the options used, took them (``--smtp-port 000025`` is 25)."""
    if not is_digits(text):
        return None
    return parse_number(text.lstrip("0") or "0", max_digits=max_digits)


_SIZE = re.compile(r"\s*([0-9]+)\s*([kmg]?)i?b?\s*\Z", re.IGNORECASE)
_SIZE_DIGITS = 20
"""Digits a size may have before its suffix: RFC 1870's ``size-value``, and a bound on
the work."""
MAX_SIZE = MAX_MESSAGE_SIZE
"""The largest size an option takes, in octets (2**63-1): the machine's own bound on
``max_message_size`` (``MAX_MESSAGE_SIZE`` of the SIZE extension's entry), which keeps
the EHLO reply's ``SIZE`` within RFC 1870's 20 digits."""


def parse_size(text: str) -> int:
    """Octets, or with a binary suffix: ``512k``, ``10M``, ``1G``; in ASCII digits
    (:func:`~smtpcore._numbers.parse_number`), at most :data:`MAX_SIZE`."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (octets, or like 512k, 10M)")
    number = option_number(match.group(1), max_digits=_SIZE_DIGITS)
    exponent = " kmg".index(match.group(2).lower() or " ")
    if number is None or number * 1024**exponent > MAX_SIZE:
        raise ValueError(f"{text!r} is too large (at most {MAX_SIZE} octets)")
    size: int = number * 1024**exponent
    return size


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[HOST]:PORT`` or ``[IPv6]:PORT``; the brackets of a name are kept,
    since to a smart host they mean "no MX lookup" as in Postfix.

    An IPv6 address with a port must be in brackets, as Postfix and URIs (RFC 3986
    §3.2.2) write it: in ``2001:db8::1:25`` the port cannot be told from the last
    group of the address, so a host with a colon outside brackets is refused.
    """
    host, sep, port = text.rpartition(":")
    number = option_number(port, max_digits=5)
    if not sep or not host or number is None:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError(
            f"{text!r}: write an IPv6 address with a port in brackets, as [2001:db8::1]:25"
        )
    if not 0 < number < 65536:
        raise ValueError(f"port {number} out of range")
    if host.startswith("[") and host.endswith("]") and ":" in host:
        host = host[1:-1]  # an IPv6 address in brackets
    return host, number


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of a server connected to as it is (``send --server``, ``fetch
    --server``): ``[HOST]:PORT`` is taken too, its brackets dropped, since no MX
    lookup is made there for them to turn off."""
    host, port = parse_host_port(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


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
        durations = ("retry_after", "max_retry_after", "max_queue_age", "auth_failure_delay")
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
