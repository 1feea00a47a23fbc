"""AUTH (RFC 4954): SASL authentication, and the submitter a MAIL names with ``AUTH=``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smtpcore._textsafe import holds_unsafe
from smtpcore._words import ascii_upper
from smtpcore.address import AddressError, Mailbox, parse_mailbox
from smtpcore.smtp._dsn import DSNError, read_any_case_xtext, read_xtext
from smtpcore.smtp._events import Auth
from smtpcore.smtp._extension import (
    Extension,
    Parameter,
    ParameterError,
    Requirement,
    ServerFacts,
)
from smtpcore.smtp._replies import EnhancedStatus, Reply

if TYPE_CHECKING:
    from smtpcore.smtp._extensions import ServerExtensions

__all__ = ["AUTH", "read_submitter"]

_NEEDS_VALUE: Final = Reply(555, "Unsupported parameter AUTH", EnhancedStatus(5, 5, 4))


def _parse(value: str | None) -> str:
    """``AUTH=xtext`` (RFC 4954 §5) as both machines read it: the value, once it is xtext
    (RFC 3461 §4; hex of either case, as Exim reads it). Only a value that is no xtext
    at all gets 501 5.5.4: §5 has a server "parse and discard syntactically valid
    AUTH parameters", so one whose text names no mailbox is taken, as ``<>``
    (:func:`read_submitter`), and the message with it. A client is held to more
    (:func:`_client_problem`)."""
    if value is None:
        raise ParameterError("AUTH= needs a value", _NEEDS_VALUE)
    try:
        read_any_case_xtext(value, "AUTH=")
    except DSNError as exc:
        raise ParameterError(str(exc)) from None
    return value


def _client_problem(offered: ServerExtensions, value: str) -> str | None:
    """What a client must not send (RFC 4954 §5: the decoded xtext "MUST be either an
    addr-spec ... or the two characters '<>'"): strict xtext (upper-case hex, RFC 3461
    §4) of a mailbox, or ``<>``. :func:`xtext` writes any mailbox so."""
    try:
        text = read_xtext(value, "AUTH=")
    except DSNError as exc:
        return str(exc)
    if text == "<>" or _mailbox_in(text) is not None:
        return None
    return "AUTH= must be a mailbox or <> in xtext (RFC 4954 §5)"


def read_submitter(value: str | None) -> Mailbox | None:
    """The submitter an ``AUTH=`` value names (RFC 4954 §5): its mailbox, or None for
    ``<>``, for no value, and for a value whose text is no mailbox free of controls
    (a bare user name, a CR LF, a trailing dot, octets that are not UTF-8): the server
    acts "as if the AUTH=<> parameter was supplied" for a value it cannot trust, as
    Postfix and sendmail do, so no CR, LF or NUL reaches the application. Whether to
    trust a mailbox is the application's business."""
    if value is None:
        return None
    try:
        text = read_any_case_xtext(value, "AUTH=").decode("utf-8")
    except (DSNError, UnicodeDecodeError):
        return None
    return None if text == "<>" else _mailbox_in(text)


def _mailbox_in(text: str) -> Mailbox | None:
    """``text`` as a mailbox, or None when it is none or holds a character unsafe in
    text (RFC 5198 §2: a control, a format character such as U+200B)."""
    if holds_unsafe(text):
        return None
    try:
        return parse_mailbox(text)
    except AddressError:
        return None


def _format(value: str) -> str:
    return value


def _mechanisms(facts: ServerFacts) -> str | None:
    offered = facts.offered_auth_mechanisms()
    return " ".join(offered) if offered else None


_USABLE_MECHANISM: Final = Requirement(
    "a mechanism usable now",
    lambda facts: bool(facts.offered_auth_mechanisms()),
    Reply(538, "Encryption required for requested mechanism", EnhancedStatus(5, 7, 11)),
)
"""Every mechanism configured sends a reusable secret and the session is not yet
encrypted: AUTH is not offered (nor HELP'd, nor ``AUTH=`` read), and the command
gets 538 (RFC 4954 §6), as the EHLO reply after STARTTLS will list it."""


def _mechanism_offered(offered: ServerExtensions, command: Auth) -> str | None:
    if offered.auth and ascii_upper(command.mechanism) not in offered.auth:
        return f"the server did not offer AUTH {command.mechanism}"
    return None


AUTH: Final = Extension(
    "AUTH",
    "RFC 4954",
    "SASL authentication; MAIL may name the submitter (AUTH=)",
    option="auth_mechanisms",
    line_allowance=500,  # RFC 4954 §5: AUTH= on MAIL
    arguments=_mechanisms,
    mail_parameters=(
        Parameter(
            "AUTH",
            _parse,
            _format,
            client_check=_client_problem,
            takes_utf8=False,  # xtext (RFC 4954 §5); a UTF-8 mailbox goes hex-encoded
        ),
    ),
    verbs=("AUTH",),
    requires=(_USABLE_MECHANISM,),
    client_check=_mechanism_offered,
)
