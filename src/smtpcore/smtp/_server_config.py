"""What every connection of an SMTP server shares: its options and the tables they make.

A server makes a :class:`~smtpcore.smtp.ServerConnection` per connection, and
most of what a machine was constructed with (its name, limits, extensions,
framing policy) is the same for all of them. It lives here, in one object each
server builds once, so that an idle connection holds only its own session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from copy import copy
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Final

from smtpcore._lines import FramingPolicy
from smtpcore._words import listed
from smtpcore.address import AddressPolicy
from smtpcore.smtp._commands import VERBS, envelope_verbs
from smtpcore.smtp._events import Command
from smtpcore.smtp._everyday_params import everyday_bits
from smtpcore.smtp._ext import BUILTIN
from smtpcore.smtp._extension import Extension, Readers, parameter_readers

__all__ = [
    "HELLOS_KEPT",
    "OPTIONS",
    "STRICT",
    "Readers",
    "ServerConfig",
    "SessionTables",
    "build_tables",
    "builtin_offered",
    "builtin_tables",
    "extra_entries",
    "session_tables",
]

STRICT: Final = FramingPolicy()
"""The default framing policy: immutable, so every machine that takes the default shares it."""

OPTIONS: Final = tuple([entry.option or "" for entry in BUILTIN])
"""The option that turns each built-in entry on, in ``BUILTIN``'s order."""

TABLE_OPTIONS: Final = frozenset({*OPTIONS, "lmtp", "extra_extensions", "addresses"}) - {""}
"""The options the session tables are made from (:func:`session_tables`)."""

HELLOS_KEPT: Final = 32
"""Sets of facts whose EHLO lines a configuration keeps; a full table starts over."""


class ServerConfig:
    """A server machine's options, as its constructor took them, and the tables they
    make: everything in a :class:`~smtpcore.smtp.ServerConnection` that is the same
    for every connection of a server.

    Shared, never changed once built. The driver builds one per server and starts
    every connection's machine from it; a machine constructed by hand builds its
    own, attribute by attribute (no call of its own: a ``connection_factory`` makes
    a machine per connection). The machine reads its options here directly. A
    write to one of them through the machine (``conn.max_recipients = 5``) gives
    that machine a copy (:meth:`replaced`), so no other machine sees it; a write to
    an extension's option (``conn.dsn = False``) makes the copy's tables anew.

    ``tls``, ``trusted_forwarder`` and ``auth_mechanisms`` are where a session
    starts: each machine keeps its own, which the driver sets per connection.
    """

    __slots__ = (
        "addresses",
        "auth_mechanisms",
        "auth_require_tls",
        "binarymime",
        "chunking",
        "dsn",
        "eight_bit_mime",
        "enhanced_status_codes",
        "extra_extensions",
        "first_hello",
        "framing",
        "hostname",
        "limits",
        "lmtp",
        "max_auth_failures",
        "max_auth_line",
        "max_bad_commands",
        "max_command_line",
        "max_errors",
        "max_junk_commands",
        "max_message_size",
        "max_recipient_overshoot",
        "max_recipients",
        "max_text_line",
        "pipelining",
        "reject_early_content",
        "require_auth",
        "require_tls",
        "requiretls",
        "size",
        "smtputf8",
        "starttls",
        "tables",
        "tls",
        "trusted_forwarder",
        "xclient",
        "xforward",
    )

    if TYPE_CHECKING:
        hostname: str
        lmtp: bool
        max_command_line: int
        max_text_line: int | None
        max_recipients: int
        max_message_size: int | None
        max_errors: int
        max_bad_commands: int
        max_junk_commands: int
        max_recipient_overshoot: int
        framing: FramingPolicy
        addresses: AddressPolicy
        pipelining: bool
        eight_bit_mime: bool
        enhanced_status_codes: bool
        smtputf8: bool
        chunking: bool
        binarymime: bool
        size: bool
        limits: bool
        requiretls: bool
        xclient: bool
        xforward: bool
        trusted_forwarder: bool
        dsn: bool
        starttls: bool
        tls: bool
        require_tls: bool
        auth_mechanisms: Sequence[str]
        auth_require_tls: bool
        require_auth: bool
        max_auth_failures: int
        max_auth_line: int
        reject_early_content: bool
        extra_extensions: tuple[str | Extension, ...]
        tables: SessionTables

    first_hello: tuple[object, int, bytes] | None
    """The answer to the first EHLO of a session whose facts are still the configuration's
    own: the reply it answered (the driver's one reply to every EHLO), the command line
    limit and the bytes (see ``ServerConnection._hello_accepted``). None until a session
    makes it; not copied by :meth:`replaced`."""

    def replaced(self, name: str, value: object) -> ServerConfig:
        """A copy with the option ``name`` set to ``value``: for the one machine it is
        written through. An option the tables are made from (an extension's, ``lmtp``,
        ``extra_extensions``) gets them made anew, so that the EHLO reply, the
        parameters and the commands read follow it (``ValueError`` for extra
        extensions the constructor would refuse)."""
        changed = copy(self)
        changed.first_hello = None  # made with the options as they were
        setattr(changed, name, value)
        if name in TABLE_OPTIONS:
            changed.tables = session_tables(changed)
        return changed


Verbs = dict[str, Callable[[str], Command]]


@dataclass(frozen=True, slots=True)
class SessionTables:
    """What a session looks its commands and parameters up in, given the extensions
    it may offer. Shared, never changed: every connection of a server gets the same
    tables, so a new connection builds none and an idle one holds none of its own."""

    offerable: tuple[Extension, ...]
    """The extensions switched on, in EHLO order."""
    mail_readers: Readers
    rcpt_readers: Readers
    verb_owner: dict[str, Extension]
    """Verb -> the extension it belongs to (BDAT: CHUNKING)."""
    plain_verbs: Verbs
    """The commands known before EHLO (or after HELO): RFC 5321's, and those of the
    offered extensions that need no EHLO (XCLIENT)."""
    extended_verbs: Verbs
    """The commands known after EHLO: the plain ones and the offered extensions' own."""
    everyday_mail: int
    everyday_rcpt: int
    """The everyday parameters (``smtp/_everyday_params.py``) a session takes in their
    everyday shapes once opened with EHLO, as bits, for MAIL and for RCPT."""
    hellos: dict[tuple[object, ...], tuple[tuple[str, ...], int]] | None
    """The EHLO lines and the command line limit they make by the session's facts,
    filled as sessions meet them (see ``ServerConnection._offered_now``); None for
    tables with extensions of the application's own."""


def session_tables(config: ServerConfig) -> SessionTables:
    """The tables of a configuration: its built-in extensions switched on and its
    extra ones (shared between configurations alike when there are none)."""
    # Each built-in entry's option, read in C.
    switched_on = tuple(map(bool, map(getattr, repeat(config), OPTIONS, repeat(False))))
    if config.extra_extensions:
        extras = extra_entries(config.extra_extensions)
        offered = (*builtin_offered(switched_on), *extras)
        return build_tables(offered, config.lmtp, addresses=config.addresses)
    return builtin_tables(switched_on, config.lmtp, config.addresses)


def builtin_offered(switched_on: tuple[bool, ...]) -> tuple[Extension, ...]:
    return tuple([entry for entry, on in zip(BUILTIN, switched_on, strict=True) if on])


@functools.lru_cache(maxsize=64)
def builtin_tables(
    switched_on: tuple[bool, ...], lmtp: bool, addresses: AddressPolicy | None = None
) -> SessionTables:
    """The tables of a server offering the built-in extensions ``switched_on`` (one
    flag per entry of ``BUILTIN``) and taking the envelope addresses ``addresses``
    takes (strict for None): built once per configuration."""
    return build_tables(builtin_offered(switched_on), lmtp, builtin=True, addresses=addresses)


def build_tables(
    offerable: tuple[Extension, ...],
    lmtp: bool,
    *,
    builtin: bool = False,
    addresses: AddressPolicy | None = None,
) -> SessionTables:
    verb_owner = {verb: entry for entry in offerable for verb in entry.verbs}
    extension_verbs = {verb for entry in BUILTIN for verb in entry.verbs}
    excluded = {"EHLO", "HELO"} if lmtp else {"LHLO"}
    # MAIL and RCPT as the address policy reads them (one place: address.AddressPolicy).
    verbs = {**VERBS, **envelope_verbs(addresses or AddressPolicy())}
    plain_verbs = {
        verb: parse
        for verb, parse in verbs.items()
        if verb not in excluded and verb not in extension_verbs
    }
    # An offered extension's commands known before EHLO too (XCLIENT).
    plain_verbs.update(
        {
            verb: VERBS[verb]
            for verb, entry in verb_owner.items()
            if not entry.needs_ehlo and verb in VERBS
        }
    )
    mail_readers = parameter_readers(offerable, mail=True)
    rcpt_readers = parameter_readers(offerable, mail=False)
    return SessionTables(
        offerable=offerable,
        mail_readers=mail_readers,
        rcpt_readers=rcpt_readers,
        verb_owner=verb_owner,
        plain_verbs=plain_verbs,
        extended_verbs={
            **plain_verbs,
            **{verb: VERBS[verb] for verb in verb_owner if verb in VERBS},
        },
        everyday_mail=everyday_bits(mail_readers, offerable),
        everyday_rcpt=everyday_bits(rcpt_readers, offerable),
        hellos={} if builtin else None,
    )


def extra_entries(entries: Sequence[str | Extension]) -> tuple[Extension, ...]:
    """The ``extra_extensions`` as entries, each keyword and parameter had by one."""
    extras = tuple([_extra(entry) for entry in listed("extra_extensions", entries)])
    keywords = [entry.keyword for entry in extras]
    parameters = [p.keyword for e in extras for p in (*e.mail_parameters, *e.rcpt_parameters)]
    for names in (keywords, parameters):
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"extra_extensions name {', '.join(twice)} twice")
    return extras


def _extra(entry: str | Extension) -> Extension:
    """An ``extra_extensions`` item as an entry. Refused (``ValueError``) when the
    machine would list what it then refuses: a built-in keyword (listed twice, read
    by its option), a parameter another entry brings, a command it cannot read."""
    extension = entry if isinstance(entry, Extension) else Extension.plain(entry)
    for builtin in BUILTIN:
        if builtin.keyword == extension.keyword:
            raise ValueError(
                f"{builtin.keyword} is built in: turn it on with the {builtin.option} option"
            )
        owned = {p.keyword for p in (*builtin.mail_parameters, *builtin.rcpt_parameters)}
        for parameter in (*extension.mail_parameters, *extension.rcpt_parameters):
            if parameter.keyword in owned:
                raise ValueError(f"the {parameter.keyword} parameter is {builtin.keyword}'s")
    if extension.verbs:
        # A command is an event the machine parses (smtp/_commands.py VERBS): one it
        # cannot read would be listed, then answered 500 as unknown.
        raise ValueError(
            f"{extension.keyword}: the server machine reads no command of an entry of "
            f"the application's own ({', '.join(extension.verbs)})"
        )
    return extension
