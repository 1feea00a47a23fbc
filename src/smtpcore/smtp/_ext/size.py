"""SIZE (RFC 1870): the server's message size limit, and the size a client declares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smtpcore._numbers import parse_number
from smtpcore.smtp._extension import Extension, Parameter, ParameterError, ServerFacts
from smtpcore.smtp._replies import EnhancedStatus, Reply

if TYPE_CHECKING:
    from smtpcore.smtp._extensions import ServerExtensions

__all__ = ["MAX_MESSAGE_SIZE", "OVER_SIZE_LIMIT", "SIZE", "checked_message_size"]

OVER_SIZE_LIMIT: Final = Reply(552, "Message size exceeds fixed limit", EnhancedStatus(5, 3, 4))
"""The machine's refusal of a message over ``max_message_size``, the limit the client was
told in SIZE: declared at MAIL (RFC 1870 §6.1), or sent as DATA or BDAT content. The one
``5.3.4`` that counts toward ``max_errors``: the client's to heed."""
_BAD_SIZE: Final = Reply(501, "Bad SIZE value", EnhancedStatus(5, 5, 4))
MAX_MESSAGE_SIZE: Final = 2**63 - 1
"""The largest ``max_message_size``, in octets (8 EiB less one): the largest file a
64-bit ``off_t`` holds, so more than any server can keep, and 19 digits, so the EHLO
reply's SIZE stays within RFC 1870 §3's ``size-value = 1*20DIGIT``. The reference
server's size options take the same bound."""


def checked_message_size(limit: int | None) -> int | None:
    """``max_message_size`` as the machine takes it, in its constructor and when it is
    written: ``ValueError`` over :data:`MAX_MESSAGE_SIZE`, which SIZE could not offer
    in 20 digits (``10**25`` went out as ``SIZE`` and 26 of them)."""
    if limit is not None and limit > MAX_MESSAGE_SIZE:
        raise ValueError(
            f"max_message_size {limit} is over {MAX_MESSAGE_SIZE} octets (2**63-1): the "
            "EHLO reply offers it as SIZE, in at most 20 digits (RFC 1870 §3)"
        )
    return limit


def _parse(value: str | None) -> int:
    """``SIZE=`` is ``1*20DIGIT`` (RFC 1870 §3), ASCII digits only."""
    size = parse_number(value or "", max_digits=20)
    if size is None:
        raise ParameterError("Bad SIZE value", _BAD_SIZE)
    return size


def _over_limit(facts: ServerFacts, size: int) -> Reply | None:
    """Over ``max_message_size``, where there is one: None and 0 mean no limit, as
    ``SIZE 0`` does (RFC 1870 §4)."""
    limit = facts.max_message_size
    return OVER_SIZE_LIMIT if limit and size > limit else None


def _read(facts: ServerFacts, value: str | None) -> Reply | None:
    """``_parse``, then ``_over_limit``, in one call: every MAIL of most clients has SIZE."""
    size = parse_number(value or "", max_digits=20)
    if size is None:
        return _BAD_SIZE
    limit = facts.max_message_size
    return OVER_SIZE_LIMIT if limit and size > limit else None


def _client_over_limit(offered: ServerExtensions, size: int) -> str | None:
    limit = offered.size
    if limit is not None and size > limit:
        return f"the declared SIZE {size} is over the server's limit of {limit} (RFC 1870 §6)"
    return None


def _arguments(facts: ServerFacts) -> str:
    limit = facts.max_message_size
    return "" if limit is None else str(limit)


SIZE: Final = Extension(
    "SIZE",
    "RFC 1870",
    "the message size limit; MAIL declares the size",
    option="size",
    arguments=_arguments,
    line_allowance=26,  # RFC 1870 §3 (5)
    mail_parameters=(
        Parameter(
            "SIZE",
            _parse,
            str,
            check=_over_limit,
            client_check=_client_over_limit,
            read=_read,
            takes_utf8=False,  # digits (RFC 1870 §3)
        ),
    ),
)
