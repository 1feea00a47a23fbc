"""The text of a report's fields: one line each, ASCII or RFC 6533's UTF-8, never a
character unsafe in a header (RFC 5198 §2, RFC 6532 §3.2), and the addresses in the
form the report's kind calls for (RFC 3464 §2.3, RFC 6533 §3).

A report quotes what strangers wrote (a remote's reply, an envelope's addresses and
ORCPT), so every word of theirs passes through here before it reaches a field.
"""

from __future__ import annotations

from smtpcore._textsafe import replace_unsafe
from smtpcore.address import AddressError, parse_mailbox
from smtpcore.server.log import printable
from smtpcore.smtp import OriginalRecipient, decode_xtext

__all__ = [
    "address_field",
    "field_text",
    "on_behalf_text",
    "one_line",
    "original_recipient_field",
    "shown_address",
    "to_field",
]


def _embedded(text: str) -> str:
    """RFC 6533 §3's ASCII form of UTF-8 text (``utf-8-addr-xtext``): printable ASCII but
    "+", "=" and "\\" as it is, anything else as ``\\x{HEX}``; never Python's escapes."""
    return "".join(
        char if "!" <= char <= "~" and char not in "+=\\" else f"\\x{{{ord(char):02X}}}"
        for char in text
    )


def _hex_escape(char: str) -> str:
    """RFC 6533 §3's ``\\x{HEX}`` for one character (EmbeddedUnicodeChar)."""
    return f"\\x{{{ord(char):02X}}}"


def one_line(text: str, utf8: bool, limit: int = 900) -> str:
    """Text fit for one header field: no line breaks, not too long, no character unsafe
    in text (RFC 5198 §2, RFC 6532 §3.2: a C0 or C1 control, a format or separator
    character) in either kind of report, and ASCII unless the report is a
    ``message/global-delivery-status`` one; each left out is written ``\\x{HEX}``."""
    text = field_text(text, utf8)
    # The limit is in octets (RFC 6532 §3.4), cut at a character's boundary.
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "..."


def field_text(text: str, utf8: bool) -> str:
    """:func:`one_line` but for the cut: each character's fate depends on it alone,
    and each run of white space becomes one space."""
    text = replace_unsafe(" ".join(text.split()), _hex_escape)
    if not utf8 and not text.isascii():
        text = "".join(char if char.isascii() else _hex_escape(char) for char in text)
    return text


def _parses(address: str) -> bool:
    """Whether ``address`` is a valid mailbox: a queued one may no longer be one."""
    try:
        parse_mailbox(address)
    except AddressError:
        return False
    return True


def shown_address(address: str) -> str:
    """An address as a report's text writes it: raw, as any valid address may be (a
    bidi mark or a soft hyphen in it is the address); one that no longer parses in
    RFC 6533 §3's ``\\x{HEX}`` form, its backslashes escaped too (:func:`_embedded`),
    so that it reads as no other address."""
    return address if _parses(address) else _embedded(address)


def address_field(address: str, utf8: bool) -> str:
    """``rfc822;`` for an ASCII address; ``utf-8;`` for an internationalised one, raw in
    a global report and as ``utf-8-addr-xtext`` in an ASCII one (RFC 6533 §3). One that
    no longer parses has no raw form: ``utf-8;`` and ``utf-8-addr-xtext``, which a
    reader decodes to what was queued."""
    if not _parses(address):
        return f"utf-8; {_embedded(address)}"
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {address if utf8 else _embedded(address)}"


def to_field(recipient: str) -> str:
    """The report's To:: its recipient, or for one that no longer parses (a caller's
    mistake: the delivery worker sends such a report to the postmaster) RFC 5322 §3.4's
    empty group, rather than a form that would name another address."""
    return f"To: <{recipient}>" if _parses(recipient) else "To: undisclosed-recipients:;"


def on_behalf_text(sender: str, utf8: bool) -> str:
    """The sentence that says on whose behalf a report goes to the postmaster (RFC 5321
    §4.5.1): a sender that cannot receive it, or a failure by the server's own policy.
    The sender is written as the log writes it (:func:`~smtpcore.server.log.printable`),
    and in ASCII unless the report is a global one."""
    return (
        "This report goes to the postmaster, on behalf of the message's sender "
        f"{one_line(printable(sender), utf8)}."
    )


def original_recipient_field(orcpt: str, utf8: bool) -> str | None:
    """An ``ORCPT`` as it came (``rfc822;xtext``, or ``utf-8;`` in either RFC 6533 form),
    decoded and written back for the report; None where that is over 900 octets (500
    characters of ORCPT may be 2,000 raw, and 4,500 as ``\\x{HEX}``). The field is
    optional (RFC 3464 §2.3.1): left out, not cut, since a cut address is another one,
    and the line stays within RFC 5322's 998 octets."""
    try:
        original = OriginalRecipient.parse(orcpt, utf8=True)
    except ValueError:
        addr_type, _, address = orcpt.partition(";")
        value = f"{field_text(addr_type, utf8)}; {field_text(decode_xtext(address), utf8)}"
    else:
        if original.addr_type.lower() == "utf-8":
            field = address_field(original.address, utf8)
            value = field.replace("rfc822;", "utf-8;", 1)
        else:
            value = f"{original.addr_type}; {field_text(original.address, utf8)}"
    return value if len(value.encode("utf-8")) <= 900 else None
