"""``send``'s checks of what it was given, before anything is sent: the text of the
options (a header field's, an address's, ``--helo``) and the lines of the message.

Apart from sending: each check refuses a usage mistake as a
:class:`~smtpcore.server.config.ConfigError` (exit status 2), with the option or the
line it names, so that nothing reaches a server that SMTP cannot carry or that
would inject a header field.
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore._driver import check_hello_name
from smtpcore._driver._smtp_envelope_header import hidden_fields_blanked
from smtpcore._textsafe import FORBIDDEN_IN_ADDRESSES
from smtpcore.server._tools_printable import printable
from smtpcore.server.config import ConfigError
from smtpcore.server.messagelines import unsendable_line

__all__ = ["_check_lines", "check_address_text", "check_header_text", "check_helo"]


_CONTROL_BUT_TAB: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""C0 controls but HTAB, DEL and C1 controls: not text (RFC 5198 §2)."""


def check_header_text(option: str, text: str) -> str:
    """``text`` for a header field, or a :class:`ConfigError` if it holds a control
    character but tab (RFC 5198 §2): a CR or LF would end the field and start another
    (header injection). A tab is header white space (RFC 5322 §2.2). Other characters
    are the user's text: a non-ASCII one goes RFC 2047-encoded (:func:`make_test_message`),
    never raw, so a bidi mark (RLM in Hebrew, U+061C in Arabic) is taken."""
    found = _CONTROL_BUT_TAB.search(text)
    if found is not None:
        raise ConfigError(
            f"{option}: control character {found.group()!r} not allowed in a header field"
        )
    return text


def check_address_text(option: str, text: str) -> str:
    """``text`` for an address option, or a :class:`ConfigError` if it holds what no
    address may hold (:data:`~smtpcore._textsafe.FORBIDDEN_IN_ADDRESSES`: controls,
    line and paragraph separators, bidi overrides), as the parser refuses it. A bidi
    mark or a soft hyphen is in valid addresses, and taken."""
    found = FORBIDDEN_IN_ADDRESSES.search(text)
    if found is not None:
        raise ConfigError(
            f"{option}: {found.group()!r} not allowed in an address: no control character, "
            "line or paragraph separator or bidi embedding, override or isolate"
        )
    return text


def check_helo(text: str) -> str:
    """``text`` for ``--helo``, or a :class:`ConfigError` if EHLO cannot carry it (one
    ASCII word, no tab: RFC 5321 §4.1.1.1), refused as a usage mistake with the client's
    own check rather than when the client is built."""
    try:
        check_hello_name(text)
    except ValueError as exc:
        raise ConfigError(f"--helo: {exc}") from None
    return text


def _check_lines(content: bytes, source: str) -> None:
    """A usage error (status 2) naming the first line of ``source`` SMTP cannot carry
    (:mod:`smtpcore.server.messagelines`), before anything is sent; the ``Bcc`` fields,
    never sent, are not checked, and the lines keep their numbers in ``source``."""
    why = unsendable_line(hidden_fields_blanked(content))  # Bcc fields are not sent
    if why is not None:
        raise ConfigError(printable(f"{source}: {why}"))
