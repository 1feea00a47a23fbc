"""The options of a server session: the constructor's keywords, read and written.

What is the same for every connection of a server lives in one shared
:class:`ServerConfig`; each option is a property that reads it in C and, written,
gives that one session a copy (:func:`_option`). Apart from the session's other
layers (see ``smtp/_server.py``) because an option is checked and documented
once here, whatever part of the session reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from smtpcore._hostname import a_label_hostname
from smtpcore._lines import FramingPolicy
from smtpcore._words import ascii_upper, listed
from smtpcore.address import STRICT_ADDRESSES, AddressPolicy
from smtpcore.smtp._events import _MECHANISM_RE
from smtpcore.smtp._ext.size import checked_message_size
from smtpcore.smtp._extension import Extension
from smtpcore.smtp._replies import MAX_REPLY_LINE
from smtpcore.smtp._server_session import SessionLayer


def _mechanism_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` upper-cased, each a SASL mechanism name (RFC 4422 §3.1), as the EHLO
    AUTH line lists them; ValueError otherwise (a space would list two names, a line
    break end the reply, and a name ``str.upper()`` alone makes one, as the dotless
    i of ``"pla\u0131n"``, is none: its case is ASCII); TypeError for one str."""
    upper = tuple(map(ascii_upper, listed("auth_mechanisms", names)))
    for name in upper:
        if not _MECHANISM_RE.fullmatch(name):
            raise ValueError(f"not a SASL mechanism name: {name!r}")
    return upper


def _checked_mechanisms(names: Sequence[str]) -> tuple[str, ...]:
    """:func:`_mechanism_names`, on one EHLO AUTH line (RFC 5321 §4.5.3.1.5): the
    constructor's check. A session's own list over the line fails its EHLO reply
    instead (``LocalProtocolError``, the machine left as it was)."""
    upper = _mechanism_names(names)
    if len("250-AUTH \r\n") + len(" ".join(upper)) > MAX_REPLY_LINE:
        raise ValueError(
            f"the EHLO AUTH line of {len(upper)} mechanisms is over "
            f"{MAX_REPLY_LINE} octets (RFC 5321 §4.5.3.1.5)"
        )
    return upper


def _wire_hostname(hostname: str) -> str:
    """The host name as the machine takes it: checked (``ValueError``), and a non-ASCII
    name in its A-label form, for the greeting and EHLO reply it heads come before
    SMTPUTF8 is agreed (RFC 6531; RFC 5321 §4.1.2: a Domain is ASCII)."""
    return a_label_hostname(hostname)


def _address_policy(policy: AddressPolicy | None) -> AddressPolicy:
    """The policy kept for ``addresses``: None is the strict default."""
    return policy or STRICT_ADDRESSES


_OPTION_CHECKS: Final[dict[str, Callable[[Any], object]]] = {
    "hostname": _wire_hostname,
    "max_message_size": checked_message_size,
    "addresses": _address_policy,
}
"""Options checked as they are taken, by the constructor and when written: the value
the machine keeps, or ``ValueError``."""


def _option(name: str, doc: str = "") -> property:
    """The constructor option ``name`` of a machine, kept in its shared configuration:
    read in C (no Python call: extensions read some on every command), and written
    by giving the machine a copy of the configuration, so that a write changes
    this machine alone. An extension switched on or off counts from the next
    command (its parameters, its commands) and the next EHLO (its line there)."""

    def write(conn: OptionsLayer, value: Any) -> None:
        check = _OPTION_CHECKS.get(name)
        if check is not None:
            value = check(value)  # as the constructor takes it, or refused there
        old = conn._config
        new = old.replaced(name, value)
        if new.tables is not old.tables:
            extended = conn._verbs is old.tables.extended_verbs
            conn._verbs = new.tables.extended_verbs if extended else new.tables.plain_verbs
        conn._config = new

    return property(attrgetter(f"_config.{name}"), write, doc=doc)


class OptionsLayer(SessionLayer):
    """The options, as properties over the shared configuration, and the ones each
    session keeps its own of (``tls``, ``trusted_forwarder``, ``auth_mechanisms``)."""

    __slots__ = ()

    # Options each session keeps its own of, from the configuration on: the driver
    # sets them per connection.
    tls: bool
    """True once the session runs over TLS: implicit TLS (``tls=True``, the
    port-465 style of RFC 8314) or after STARTTLS."""
    trusted_forwarder: bool
    """Whether this client may speak for another: only then are ``xclient`` and
    ``xforward`` offered to it (Postfix's ``smtpd_authorized_xclient_hosts``).
    The application decides, from the client's address; it may set this before
    the greeting, and decides again for the client an accepted XCLIENT names
    (XCLIENT_README, note 1: that client usually may not send XCLIENT)."""

    def _set_auth_mechanisms(self, names: Sequence[str]) -> None:
        self._auth_mechanisms = _mechanism_names(names)

    auth_mechanisms = property(
        attrgetter("_auth_mechanisms"),
        _set_auth_mechanisms,
        doc="""The SASL mechanisms AUTH offers this session (RFC 4954), upper-cased: the
        constructor's ``auth_mechanisms``, which the driver sets per connection. Each
        name written is checked as the constructor's are (``ValueError``), since it
        goes on the EHLO AUTH line; a list too long for that line fails the EHLO
        reply, the machine left as it was.""",
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
        dsn: bool
        starttls: bool
        require_tls: bool
        auth_require_tls: bool
        require_auth: bool
        max_auth_failures: int
        max_auth_line: int
        reject_early_content: bool
        extra_extensions: tuple[str | Extension, ...]
    else:
        hostname = _option("hostname")
        lmtp = _option("lmtp")
        max_command_line = _option("max_command_line")
        max_text_line = _option("max_text_line")
        max_recipients = _option("max_recipients")
        max_message_size = _option(
            "max_message_size",
            """The largest message accepted, in octets: a larger one is read to its end and
            refused with ``552 5.3.4``, as a ``MAIL`` declaring a larger ``SIZE=``. The
            EHLO reply lists it as ``SIZE``'s argument. ``None`` or ``0`` for no limit:
            RFC 1870 §4 reads ``SIZE 0`` so (Postfix's ``message_size_limit = 0``);
            a negative value refuses every message. At most 2**63-1, given or written
            (``ValueError``): SIZE offers it in at most 20 digits (RFC 1870 §3).
            Written during a message, it counts from the next piece of DATA content but
            from the next BDAT chunk: a chunk is measured once, at the size its command
            announces (RFC 3030 §2).""",
        )
        max_errors = _option(
            "max_errors",
            """4xx and 5xx answers a session may earn before the next command line gets
            ``421 4.7.0`` and the session is closed (RFC 5321 §3.8; Postfix's
            ``smtpd_hard_error_limit``). Not counted, up to ``max_recipient_overshoot``:
            excess recipients, and the ``503`` of each RCPT, DATA or BDAT a pipelining
            client sent behind a MAIL that was refused (RFC 2920 §3.1); a message
            accepted starts the count again. Nor are temporary refusals of the server's
            own making: a status ``4.3.X`` (RFC 3463 §3.4, mail system status, as
            ``451 4.3.0`` local error and ``452 4.3.1`` insufficient storage), and
            ``454`` to STARTTLS or AUTH (RFC 3207 §4, RFC 4954 §6), and a ``552 5.3.4``
            the application sends (a message the server could not hold, within the
            SIZE it offered); the machine's own ``552 5.3.4``, over
            ``max_message_size``, counts. A ``4.4.X`` one
            (§3.5, network and routing, as ``451 4.4.3`` when DNS fails for now)
            counts: the client may have chosen the domain that fails.""",
        )
        max_bad_commands = _option("max_bad_commands")
        max_junk_commands = _option(
            "max_junk_commands",
            """Commands that move no mail forward (:data:`JUNK_COMMANDS`) a session may
            send before it gets ``421 4.7.0`` and is closed; a message accepted
            starts the count again (Postfix's ``smtpd_junk_command_limit``).""",
        )
        max_recipient_overshoot = _option(
            "max_recipient_overshoot",
            """Recipients past ``max_recipients`` in one transaction that are refused
            with ``452 4.5.3`` without counting toward ``max_errors`` (RFC 5321
            §4.5.3.1.10 expects the client to go on; Postfix's
            ``smtpd_recipient_overshoot_limit``); each one past this counts. So do the
            RCPT, DATA and BDAT refused with ``503`` behind a refused MAIL (RFC 2920
            §3.1: a pipelining client sent them before it read the refusal), until the
            next MAIL, RSET, hello, STARTTLS or XCLIENT.""",
        )
        framing = _option("framing")
        addresses = _option(
            "addresses",
            """The :class:`~smtpcore.address.AddressPolicy`: which addresses beyond RFC
            5321 §4.1.2's grammar ``MAIL`` and ``RCPT`` take. Strict by default, as
            ``framing`` is; ``AddressPolicy.postfix()`` takes what Postfix's smtpd
            does (a local part with a dot first, last or doubled; a path without
            its angle brackets), as the reference server does.""",
        )
        pipelining = _option("pipelining")
        eight_bit_mime = _option("eight_bit_mime")
        enhanced_status_codes = _option("enhanced_status_codes")
        smtputf8 = _option("smtputf8")
        chunking = _option("chunking")
        binarymime = _option("binarymime")
        size = _option("size")
        limits = _option("limits")
        requiretls = _option("requiretls")
        xclient = _option("xclient")
        xforward = _option("xforward")
        dsn = _option("dsn")
        starttls = _option("starttls")
        require_tls = _option("require_tls")
        auth_require_tls = _option("auth_require_tls")
        require_auth = _option("require_auth")
        max_auth_failures = _option("max_auth_failures")
        max_auth_line = _option("max_auth_line")
        reject_early_content = _option("reject_early_content")
        extra_extensions = _option("extra_extensions")
