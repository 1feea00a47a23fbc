"""Users and their addresses: how an address an operator or a user writes is read
(:data:`USER_ADDRESSES`), the mailbox and credential keys it maps to, and the users file
(``--user`` lines, the aliases a login may send as), each mistake a :class:`ConfigError`
naming its line.

Apart from the server's configuration, which holds what these read; the credential
store and the submission policy use the keys alone. Every public name is still
imported from :mod:`smtpcore.server.config`.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Final, NamedTuple

from smtpcore.address import AddressError, AddressPolicy, Mailbox, normalize_domain, parse_mailbox
from smtpcore.sasl import ScramCredentials, saslprep_login
from smtpcore.server._config_values import ConfigError

__all__ = [
    "MAX_MAILBOX_NAME_OCTETS",
    "USER_ADDRESSES",
    "UsersFile",
    "_check_secret",
    "credential_key",
    "credential_keys",
    "mailbox_key",
    "parse_user",
    "parse_user_address",
    "read_users",
    "read_users_and_aliases",
    "read_users_file",
]


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
    """Each user's ``FILE:LINE``, for :class:`~smtpcore.server.config.ServerConfig` to
    name in its errors."""
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
    is a user is :class:`~smtpcore.server.config.ServerConfig`'s to check, which knows them all.

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
