"""The sender and recipients an email message's header fields give, for an envelope
the caller gives no part of.

As ``smtplib.send_message`` and ``sendmail -t`` derive it: the sender from
``Sender`` or ``From``, the recipients from ``To``, ``Cc`` and ``Bcc`` (the
``Resent-`` fields of a message resent, RFC 5322 §3.6.6), their addresses read
as the UTF-8 they may hold (RFC 6532 §3.2). ``python -m smtpcore send`` reads
the same fields to show and check them.
"""

from __future__ import annotations

import email.header
import email.message
import email.utils
from typing import Final

__all__ = [
    "field_addresses",
    "field_texts",
    "recipient_fields",
    "recipients_from_fields",
    "resent_prefix",
    "sender_field",
    "sender_from_fields",
]


def sender_from_fields(
    message: email.message.Message, *, fall_back_to_original: bool = False
) -> str:
    """The sender of an email message: the address :func:`sender_field` finds."""
    return sender_field(message, fall_back_to_original=fall_back_to_original)[1]


def sender_field(
    message: email.message.Message, *, fall_back_to_original: bool = False
) -> tuple[str, str]:
    """The name of the field giving an email message's sender, and its address: the
    first address of its ``Sender`` field, else of its ``From`` (the ``Resent-`` ones in
    a message resent, :func:`resent_prefix`). A ``Sender`` with no address (empty, a
    group, RFC 5322 §3.4) says nothing: ``From`` is read. None at all is a
    :class:`ValueError`, never the null reverse-path, which would lose every bounce
    (RFC 5321 §4.5.5). With ``fall_back_to_original`` (the recipients given, only a
    return address is asked), a message resent more than once, or whose resent block
    has no ``Resent-Sender`` nor ``Resent-From``, gives its original ``Sender`` or
    ``From`` rather than a :class:`ValueError`; so does one whose resent sender fields
    name nobody (empty, a group)."""
    prefix = resent_prefix(message, original_if_resent_again=fall_back_to_original)
    names: tuple[str, ...] = (f"{prefix}Sender", f"{prefix}From")
    if prefix and fall_back_to_original:
        names += ("Sender", "From")
    for name in names:
        for _, address in field_addresses(message, name):
            if address:
                return name, address
    present = [name for name in names if message.get_all(name)]
    if not present:
        raise ValueError(f"no sender given and the message has no {names[-1]} header")
    verb = "has" if len(present) == 1 else "have"
    raise ValueError(
        f"no sender given and the message's {' and '.join(present)} {verb} no address"
    )


def recipients_from_fields(message: email.message.Message) -> list[str]:
    """The recipients of an email message: the addresses :func:`recipient_fields`
    finds, in their order; empty when there is none."""
    return [address for addresses in recipient_fields(message).values() for address in addresses]


def recipient_fields(message: email.message.Message) -> dict[str, list[str]]:
    """The addresses of each of the ``To``, ``Cc`` and ``Bcc`` fields of an email
    message (the ``Resent-`` ones in a message resent, :func:`resent_prefix`) that
    holds one, by field name, in their order."""
    prefix = resent_prefix(message)
    fields = {
        prefix + name: [address for _, address in field_addresses(message, prefix + name)]
        for name in ("To", "Cc", "Bcc")
    }
    return {
        name: [a for a in addresses if a] for name, addresses in fields.items() if any(addresses)
    }


def resent_prefix(
    message: email.message.Message, *, original_if_resent_again: bool = False
) -> str:
    """``"Resent-"`` for a message resent once (one ``Resent-Date``, RFC 5322 §3.6.6),
    which goes to its new recipients, not back to the first ones; ``""`` for one never
    resent. With more than one resent block, which one is meant is not said:
    :class:`ValueError`, as ``smtplib`` does (the caller can give the envelope), or
    with ``original_if_resent_again`` ``""``, the original fields."""
    resent = message.get_all("Resent-Date", [])
    if len(resent) > 1:
        if original_if_resent_again:
            return ""
        raise ValueError("the message has more than one Resent- block: give the envelope")
    return "Resent-" if resent else ""


def field_addresses(message: email.message.Message, name: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of every ``name`` field of ``message``, as
    :func:`email.utils.getaddresses` finds them in :func:`field_texts`.

    An address must be UTF-8 (RFC 6532 §3.2): one holding other octets is a
    :class:`ValueError` naming the field, not an address of U+FFFD. A display name
    holding them (Latin-1 in old mail, sent as it came before RFC 6532) does not
    matter: it is no part of the envelope."""
    pairs = email.utils.getaddresses(field_texts(message, name))
    for _, address in pairs:
        if not address.isascii() and _has_escapes(address):
            raise _not_utf8(name, address.encode("utf-8", "surrogateescape"))
    return pairs


def field_texts(message: email.message.Message, name: str) -> list[str]:
    """Every value of the header field ``name`` as the text it holds, unfolded.

    An address field may hold UTF-8 (RFC 6532 §3.2). A message parsed from bytes
    keeps such octets as surrogate escapes, which every policy shows as U+FFFD: the
    raw values (:meth:`~email.message.Message.raw_items`, the same whatever the
    policy) are read here, and the octets turned back into the UTF-8 they are.
    Octets that are not UTF-8 stay surrogate escapes (see :func:`field_addresses`)."""
    wanted = name.lower()
    return [_field_text(value) for key, value in message.raw_items() if key.lower() == wanted]


def _field_text(value: object) -> str:
    """One raw field value as text (see :func:`field_texts`). A compat32
    :class:`~email.header.Header` an application built is decoded from its charsets."""
    if not isinstance(value, email.header.Header):
        return _unfolded(_unescaped(str(value)))
    texts = []
    for chunk, charset in email.header.decode_header(value):
        if isinstance(chunk, str):
            texts.append(_unescaped(chunk))
            continue
        try:
            texts.append(chunk.decode(charset or "ascii"))
        except (LookupError, UnicodeDecodeError):
            # compat32's raw 8-bit octets come as "unknown-8bit": UTF-8, if anything.
            texts.append(_unescaped(chunk.decode("utf-8", "surrogateescape")))
    return _unfolded("".join(texts))


def _unfolded(text: str) -> str:
    """``text`` without the line breaks of its folding (RFC 5322 §2.2.3)."""
    return text.replace("\r\n", "").replace("\n", "") if "\n" in text else text


def _unescaped(text: str) -> str:
    """``text`` with the surrogate escapes of octets parsed from bytes turned back into
    the UTF-8 they encode; those that are no UTF-8 stay escapes. Unchanged when it holds
    none (the usual case)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")


def _has_escapes(text: str) -> bool:
    """Whether ``text`` holds a surrogate escape: an octet that is not UTF-8."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _not_utf8(name: str, octets: bytes) -> ValueError:
    shown = octets.decode("utf-8", "backslashreplace")
    return ValueError(f"the message's {name} field is not UTF-8 (RFC 6532 §3.2): '{shown}'")


_ADDRESS_FIELDS: Final = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
)
"""The address fields that go on the wire (``Bcc`` and ``Resent-Bcc`` do not)."""


def _first_wide_field(message: email.message.Message) -> str | None:
    """The name of the first address field of ``message`` holding a UTF-8 address,
    which only an SMTPUTF8 transaction may carry (RFC 6532 §3; an RFC 2047 encoded
    word may not stand in an address, RFC 2047 §5); None."""
    for name in _ADDRESS_FIELDS:
        if not all(address.isascii() for _, address in field_addresses(message, name)):
            return name
    return None
