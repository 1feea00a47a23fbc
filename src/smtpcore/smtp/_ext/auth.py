"""AUTH (RFC 4954): SASL authentication, and the submitter a MAIL names with ``AUTH=``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smtpcore._words import ascii_upper
from smtpcore.address import AddressError, Mailbox, parse_mailbox
from smtpcore.smtp._dsn import DSNError, read_xtext, xtext
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


def read_submitter(value: str | None) -> Mailbox | None:
    """``AUTH=xtext`` (RFC 4954 §5): the submitter's mailbox, None for ``<>``.

    The xtext is read strictly (:func:`read_xtext`, RFC 3461 §4) and what it decodes
    to must be a mailbox or ``<>`` (§5: "the decoded form of the xtext MUST be either
    an addr-spec ... or the two characters '<>'"): anything else is ``501 5.5.4``, as a
    malformed ``ENVID`` is, so no CR, LF or NUL reaches the application. Whether to
    trust the mailbox is the application's business."""
    if value is None:
        raise ParameterError("AUTH= needs a value", _NEEDS_VALUE)
    try:
        decoded = read_xtext(value, "AUTH=")
    except DSNError as exc:
        raise ParameterError(str(exc)) from None
    if decoded == "<>":
        return None
    try:
        return parse_mailbox(decoded)
    except AddressError:
        raise ParameterError("AUTH= must be a mailbox or <> in xtext (RFC 4954 §5)") from None


def _format(submitter: Mailbox | None) -> str:
    return "<>" if submitter is None else xtext(str(submitter))


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
    mail_parameters=(Parameter("AUTH", read_submitter, _format),),
    verbs=("AUTH",),
    requires=(_USABLE_MECHANISM,),
    client_check=_mechanism_offered,
)
