"""What an SMTP client sends for one message, decided before the first command.

:func:`build_envelope` turns what the caller gave (bytes or an
:class:`~email.message.Message`, sender, recipients, parameters) into
the ``MAIL`` and ``RCPT`` commands and the content, adding ``SIZE``,
``BODY`` and ``SMTPUTF8`` where the server offers them, and refuses, before
anything is sent, what the server's EHLO reply rules out (RFC 5321 §2.2.2,
RFC 1870 §6, RFC 6531 §3.2, RFC 6152 §3).
"""

from __future__ import annotations

import copy
import email.header
import email.message
import email.policy
import email.utils
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final, NamedTuple, TypeAlias

from smtpcore._driver._content import Content, check_not_text, known_size
from smtpcore._driver._header_octets import (
    FIELD_NAME,
    header_fields_wording,
    utf8_header_fields,
)
from smtpcore._driver._smtp_errors import ExtensionNotOffered, MessageTooLarge
from smtpcore._errors import LocalProtocolError
from smtpcore._header_end import header_end
from smtpcore._numbers import parse_number
from smtpcore.address import AddressError, Mailbox, parse_mailbox, parse_path
from smtpcore.smtp import Limits, Mail, Parameters, Rcpt, Reply, ServerExtensions
from smtpcore.smtp._extensions import parameter_problem, unoffered_parameter
from smtpcore.smtp._params import NO_PARAMETERS, ParametersLike

__all__ = [
    "HIDDEN_FIELDS",
    "Envelope",
    "Offer",
    "RecipientParameters",
    "Recipients",
    "build_envelope",
    "envelope_from_fields",
    "field_addresses",
    "field_texts",
    "header_lines",
    "hidden_fields_blanked",
    "recipient_fields",
    "recipients_from_fields",
    "resent_prefix",
    "sender_field",
    "sender_from_fields",
    "unobsolete_names",
    "without_hidden_fields",
]

Recipients: TypeAlias = str | Mailbox | Iterable[str | Mailbox]
"""One recipient, or several: addresses as text or as :class:`~smtpcore.address.Mailbox`."""

RecipientParameters: TypeAlias = ParametersLike | Callable[[Mailbox], ParametersLike]
"""What ``rcpt_params`` takes: the parameters of every RCPT, or a function giving
each recipient its own (an ``ORCPT``, say)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """What a server's EHLO reply says about sending it a message, read once per reply
    (:meth:`of`) rather than asked of its extensions for every message."""

    extensions: ServerExtensions
    size: int | None
    """The fixed size limit (RFC 1870); None for none."""
    declares_size: bool
    """``SIZE`` offered, with or without a limit: the client declares a message's."""
    eight_bit_mime: bool
    binary_mime: bool
    smtputf8: bool
    chunking: bool
    pipelining: bool
    limits: Limits | None
    """What ``LIMITS`` says (RFC 9422), None when not offered: recipients may have
    to go in batches, and a session takes so many transactions."""

    @classmethod
    def of(cls, extensions: ServerExtensions) -> Offer:
        size = extensions.size
        return cls(
            extensions,
            size,
            size is not None or "SIZE" in extensions,
            extensions.eight_bit_mime,
            extensions.binary_mime,
            extensions.smtputf8,
            extensions.chunking,
            extensions.pipelining,
            extensions.limits if "LIMITS" in extensions else None,
        )


class Envelope(NamedTuple):
    """The commands and content of one message, checked against the server's offer
    (a tuple: made once a message, read once)."""

    mail: Mail
    rcpts: Sequence[Rcpt]
    content: Content


_everyday: Final = functools.partial(tuple.__new__, Envelope)
"""``Envelope(*fields)`` without the named tuple's ``__new__``, a Python function."""


def build_envelope(
    offer: Offer,
    message: Content | email.message.Message,
    sender: str | Mailbox | None,
    recipients: Recipients | None,
    mail_params: ParametersLike,
    rcpt_params: RecipientParameters,
) -> Envelope:
    """The envelope of ``message`` for a server that made ``offer``.

    Raises :class:`ValueError`, :class:`TypeError` (text for content) or
    :class:`~smtpcore.LocalProtocolError` for the caller's own mistakes, and the refusals of
    :func:`check_sendable` and :func:`check_offered` for what this server
    cannot take.
    """
    if (
        type(message) is bytes
        and type(sender) is str
        and type(recipients) is list
        and mail_params is None
        and rcpt_params is None
        and not offer.declares_size
        and message.isascii()
    ):
        # The everyday message: what the general path below makes of it, from events
        # made once per address (a test holds the two paths equal).
        plain_mail = _plain_mail(sender)
        plain_rcpts = list(map(_plain_rcpt, recipients))
        if plain_mail is not None and plain_rcpts and all(plain_rcpts):  # None is false
            return _everyday((plain_mail, plain_rcpts, message))
    if isinstance(message, email.message.Message):
        sender, recipients = envelope_from_fields(message, sender, recipients)
    elif recipients is None:
        raise ValueError("recipients are needed with bytes content")
    if sender is None:
        raise ValueError("a sender is needed with bytes content ('' for the null path)")
    from_ = (
        None
        if sender in NULL_SENDERS
        else sender
        if isinstance(sender, Mailbox)
        else _parsed_mailbox(sender)
    )
    if isinstance(recipients, (str, Mailbox)):
        recipients = [recipients]
    rcpts = [r if isinstance(r, Mailbox) else _parsed_mailbox(r) for r in recipients]
    if not rcpts:
        raise ValueError("no recipients")
    if not offer.smtputf8:
        from_ = None if from_ is None else from_.a_label_form
        rcpts = [rcpt.a_label_form for rcpt in rcpts]
    given = NO_PARAMETERS if mail_params is None else Parameters.coerce(mail_params)
    wide = _first_wide(from_, rcpts)
    wide_field = None
    utf8_policy = False
    content: Content
    if isinstance(message, email.message.Message):
        field = _first_wide_field(message)
        wide_field = None if field is None else f"the UTF-8 address in its {field} field"
        # A policy whose utf8 asks for UTF-8 header fields, to a server that takes them.
        utf8_policy = offer.smtputf8 and getattr(message.policy, "utf8", False)
        utf8 = wide is not None or wide_field is not None or utf8_policy or "SMTPUTF8" in given
        content = _email_bytes(message, utf8=utf8)
        if not utf8:
            # Header fields a message parsed from bytes keeps as they came: 8-bit they
            # stay, and go only in an SMTPUTF8 transaction (RFC 6532 §3).
            wide_field = header_fields_wording(_header_section(content))
        eight_bit: bool | None = not content.isascii()
    else:
        check_not_text(message)
        content = bytes(message) if isinstance(message, (bytearray, memoryview)) else message
        # Octets are scanned once for 8-bit ones (None: a file or an iterable, read only
        # as it is sent); only 8-bit octets have their header section read, whose UTF-8
        # fields need SMTPUTF8 (RFC 6531 §3.2, §3.4; other 8-bit octets, 8BITMIME).
        eight_bit = None
        if isinstance(content, bytes):
            eight_bit = not content.isascii()
            if eight_bit and utf8_header_fields(content):
                wide_field = "its UTF-8 header fields"
    size = known_size(content)
    if rcpt_params is None:
        commands = list(map(Rcpt, rcpts, repeat(NO_PARAMETERS)))
    else:
        commands = [Rcpt(r, _params_of(rcpt_params, r)) for r in rcpts]
    wide_value = (
        None
        if given is NO_PARAMETERS and rcpt_params is None
        else _first_wide_value(given, commands)
    )
    needs_utf8 = (
        wide is not None or wide_value is not None or wide_field is not None or utf8_policy
    )
    added = _added_mail_params(offer, needs_utf8, eight_bit, size, given)
    mail = Mail(from_, (added or NO_PARAMETERS) if given is NO_PARAMETERS else {**added, **given})
    check_sendable(offer, mail, wide, eight_bit, size, wide_value, wide_field)
    if mail.params is not NO_PARAMETERS or rcpt_params is not None:
        check_offered(offer.extensions, mail, commands)
    return Envelope(mail, commands, content)


def check_sendable(
    offer: Offer,
    mail: Mail,
    wide: Mailbox | None,
    eight_bit: bool | None,
    size: int | None,
    wide_value: str | None = None,
    wide_field: str | None = None,
) -> None:
    """Refuse a message the server has said it cannot take, with the reply RFC 3463
    names: a UTF-8 address (``wide``, the first one; ``wide_field``, what in the
    header section of an email message or of octets is 8-bit), a parameter with a
    UTF-8 value (``wide_value``, its keyword) or ``SMTPUTF8`` without the extension
    (``553 5.6.7``), 8-bit content (``eight_bit``; None for content seen only as it is
    sent) without 8BITMIME nor ``BODY=BINARYMIME`` (``554 5.6.3``), a size
    (``SIZE=`` declared, else the content's where known) over ``SIZE`` (``552
    5.3.4``)."""
    params = mail.params
    if (
        wide is not None
        or wide_value is not None
        or wide_field is not None
        or (params is not NO_PARAMETERS and "SMTPUTF8" in params)
    ) and not offer.smtputf8:
        # RFC 6531 §3.2: no internationalized message to a server without SMTPUTF8;
        # §3.3: nor a UTF-8 parameter value (RFC 6533 §3: a raw UTF-8 ORCPT).
        if wide is not None:
            needed, keyword = f"for {wide}", None
        elif wide_field is not None:
            needed, keyword = f"for {wide_field}", None
        elif wide_value is not None:
            needed, keyword = f"for the UTF-8 {wide_value} value", wide_value
        else:
            needed, keyword = "for this message", "SMTPUTF8"
        reply = Reply(553, f"the server does not offer SMTPUTF8, needed {needed}", "5.6.7")
        raise ExtensionNotOffered(keyword, "SMTPUTF8", reply)
    if eight_bit and not offer.eight_bit_mime and not _declares_binary(params):
        # BINARYMIME offered is not enough: with no BODY=BINARYMIME, MAIL says 7BIT.
        text = "the server does not offer 8BITMIME, needed for 8-bit content"
        if offer.binary_mime:
            text += " unless it goes as BODY=BINARYMIME"
        reply = Reply(554, text, "5.6.3")
        raise ExtensionNotOffered(None, "8BITMIME", reply)
    limit = offer.size
    if limit is None:
        return
    declared = None if params is NO_PARAMETERS else params.get("SIZE")
    parsed = parse_number(declared, max_digits=20) if declared else None
    if parsed is not None:  # else the content's own size, where known
        size = parsed
    if size is not None and size > limit:
        raise MessageTooLarge(size, limit)


def _declares_binary(params: Parameters) -> bool:
    """Whether MAIL carries ``BODY=BINARYMIME`` (RFC 3030 §3): 8-bit content goes to a
    server without 8BITMIME only so (RFC 6152 §3), and the caller says it; the client
    never does, as binary content goes with its line ends as they are."""
    body = None if params is NO_PARAMETERS else params.get("BODY")
    return body is not None and body.upper() == "BINARYMIME"


def check_offered(extensions: ServerExtensions, mail: Mail, rcpts: Sequence[Rcpt]) -> None:
    """Refuse a parameter whose extension was not offered (RFC 5321 §2.2.2), and
    a malformed one or one of the other command (``NOTIFY`` on MAIL): the
    caller's mistake, :class:`~smtpcore.LocalProtocolError`."""
    commands: list[Mail | Rcpt] = [mail, *rcpts]
    for command in commands:
        if command.params is NO_PARAMETERS:
            continue
        verb = command.verb
        for keyword, value in command.params.items():
            extension = unoffered_parameter(extensions, keyword, value, verb)
            if extension is not None:
                raise ExtensionNotOffered(keyword, extension)
            problem = parameter_problem(extensions, keyword, value, verb)
            if problem is not None:
                raise LocalProtocolError(problem)


def _first_wide_value(given: Parameters, rcpts: Sequence[Rcpt]) -> str | None:
    """The keyword of the first parameter, MAIL's then the RCPTs', whose value holds
    UTF-8, which only an SMTPUTF8 transaction may carry (RFC 6531 §3.3); None."""
    for params in (given, *[rcpt.params for rcpt in rcpts]):
        for keyword, value in params.items():
            if value is not None and not value.isascii():
                return keyword
    return None


def _first_wide(sender: Mailbox | None, rcpts: Sequence[Mailbox]) -> Mailbox | None:
    """The first address that can only be sent with SMTPUTF8, recipients first (RFC
    6531 §3.4); None when all are ASCII."""
    for mailbox in rcpts:
        if not (mailbox.local_part.isascii() and mailbox.domain.isascii()):
            return mailbox
    if sender is not None and not (sender.local_part.isascii() and sender.domain.isascii()):
        return sender
    return None


def _added_mail_params(
    offer: Offer,
    needs_utf8: bool,
    eight_bit: bool | None,
    size: int | None,
    given: Parameters,
) -> dict[str, str | None]:
    """SIZE, BODY and SMTPUTF8, where the server offers them and ``given`` does not
    say otherwise (``eight_bit``: None for content seen only as it is sent)."""
    params: dict[str, str | None] = {}
    if given is not NO_PARAMETERS and "BODY" in given:
        params["BODY"] = given["BODY"]
    if size is not None and offer.declares_size:
        params["SIZE"] = str(size)
    # Content that is not bytes cannot be looked at before it is sent: 8-bit, maybe.
    if eight_bit is not False and offer.eight_bit_mime:
        params["BODY"] = "8BITMIME"
    if needs_utf8 and offer.smtputf8:
        params["SMTPUTF8"] = None
    if given is NO_PARAMETERS:
        return params
    return {keyword: value for keyword, value in params.items() if keyword not in given}


@functools.lru_cache(maxsize=256)
def _plain_mail(sender: str) -> Mail | None:
    """``MAIL`` from ``sender`` (text, ``""`` for the null path) with no parameter, as
    :func:`build_envelope` makes it for ASCII content to a server without ``SIZE``;
    None for a UTF-8 address, which needs more (an event is immutable: made once)."""
    mailbox = None if sender in NULL_SENDERS else _parsed_mailbox(sender)
    if mailbox is not None and _first_wide(mailbox, ()) is not None:
        return None
    return Mail(mailbox, NO_PARAMETERS)


@functools.lru_cache(maxsize=256)
def _plain_rcpt(recipient: object) -> Rcpt | None:
    """``RCPT`` to ``recipient`` (text) with no parameter; None for anything but
    text, and for a UTF-8 address (see :func:`_plain_mail`)."""
    if type(recipient) is not str:
        return None
    mailbox = _parsed_mailbox(recipient)
    if _first_wide(None, (mailbox,)) is not None:
        return None
    return Rcpt(mailbox, NO_PARAMETERS)


NULL_SENDERS: Final = frozenset({"", "<>"})
"""A sender given as text that is the null reverse-path (RFC 5321 §4.5.5): ``""``, or
``"<>"`` as smtplib's ``sendmail`` takes it."""


@functools.lru_cache(maxsize=256)
def _parsed_mailbox(text: str) -> Mailbox:
    """``text`` parsed, once: a client sends from the same address, and often to the
    same few, message after message (a :class:`Mailbox` is immutable). An address in
    angle brackets is read as a path (RFC 5321 §4.1.2), as smtplib takes it."""
    if not text.startswith("<"):
        return parse_mailbox(text)
    path = parse_path(text)
    if path is None:
        raise AddressError("the null path <> is a sender, not a recipient")
    return path


def envelope_from_fields(
    message: email.message.Message,
    sender: str | Mailbox | None,
    recipients: Recipients | None,
) -> tuple[str | Mailbox, Recipients]:
    """The envelope of an email message where the caller gives none, as
    ``smtplib.send_message`` derives it (and ``sendmail -t``): what is not given
    comes from its fields (:func:`sender_from_fields`, :func:`recipients_from_fields`)."""
    if sender is None:
        sender = sender_from_fields(message)
    if recipients is None:
        recipients = recipients_from_fields(message)
    return sender, recipients


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


def _header_section(content: bytes) -> bytes:
    """The header section of a message's wire form (:func:`header_end`): up to its
    first line that is neither a field nor a fold, which may be the first."""
    return content[: header_end(content)]


HIDDEN_FIELDS: Final = ("Bcc", "Resent-Bcc")
"""The fields whose recipients the others must not see (RFC 5322 §3.6.3): the envelope
reads them, the content goes without them (:func:`_email_bytes`,
:func:`without_hidden_fields`)."""


def header_lines(content: bytes) -> list[bytes]:
    """The lines of ``content``'s header section, line endings kept: up to its first
    line that is neither a field nor a fold, or all of it. Only the header section is
    split (:func:`header_end`): a message may be as large as its server takes."""
    return content[: header_end(content)].splitlines(keepends=True)


def unobsolete_names(lines: Iterable[bytes]) -> bytes:
    """``lines`` with the obsolete white space before a field's colon removed (RFC 5322
    §4.5.3), which stops :mod:`email`'s parser at the field: for reading the fields,
    not for sending them. Only a line that starts a field is touched; a folded line
    (white space first, RFC 5322 §2.2.3) may hold `` :`` in a quoted string."""
    return b"".join(map(_unobsolete_name, lines))


def _unobsolete_name(line: bytes) -> bytes:
    """``line`` with no white space between the field name that starts it and its colon."""
    name = FIELD_NAME.match(line)
    if name is None or name.end() == len(name.group(1)) + 1:  # not a field, or no space
        return line
    return name.group(1) + b":" + line[name.end() :]


def without_hidden_fields(content: bytes) -> bytes:
    """``content`` (a message as bytes) without its ``Bcc`` and ``Resent-Bcc`` fields
    and their folded lines (:data:`HIDDEN_FIELDS`, RFC 5322 §3.6.3), obsolete forms
    included; every other octet as it came (a signature over them stays good)."""
    head = header_lines(content)
    kept = [line for line, hidden in zip(head, _hidden_lines(head), strict=True) if not hidden]
    if len(kept) == len(head):
        return content
    return b"".join(kept) + content[sum(map(len, head)) :]


def hidden_fields_blanked(content: bytes) -> bytes:
    """``content`` with each line of its ``Bcc`` and ``Resent-Bcc`` fields emptied, its
    line end kept: the lines :func:`without_hidden_fields` sends, each numbered as in
    ``content`` (for naming a line that cannot be sent by its place in the file)."""
    head = header_lines(content)
    hidden = _hidden_lines(head)
    if not any(hidden):
        return content
    lines = [_line_end(line) if gone else line for line, gone in zip(head, hidden, strict=True)]
    return b"".join(lines) + content[sum(map(len, head)) :]


def _hidden_lines(head: Sequence[bytes]) -> list[bool]:
    """Whether each line of ``head`` belongs to a hidden field (:data:`HIDDEN_FIELDS`),
    a folded line going with its field."""
    names = {name.lower().encode() for name in HIDDEN_FIELDS}
    hidden: list[bool] = []
    dropping = False
    for line in head:
        if line[:1] not in (b" ", b"\t"):  # a folded line goes with its field
            name = FIELD_NAME.match(line)
            dropping = name is not None and name.group(1).lower() in names
        hidden.append(dropping)
    return hidden


def _line_end(line: bytes) -> bytes:
    """The CRLF, CR or LF that ends ``line`` (a line of :func:`header_lines`), if any."""
    return line[len(line.rstrip(b"\r\n")) :]


def _email_bytes(message: email.message.Message, *, utf8: bool) -> bytes:
    """The wire form of an email message: CRLF line endings, the ``Bcc`` and
    ``Resent-Bcc`` fields left out (RFC 5322 §3.6.3: those recipients stay
    hidden), and its header fields in UTF-8 in an SMTPUTF8 transaction (RFC 6532
    §3), in ASCII otherwise whatever the policy's ``utf8`` (RFC 2047 encoded
    words: UTF-8 header fields need SMTPUTF8, RFC 6531 §3.2)."""
    outgoing = copy.copy(message)
    for name in HIDDEN_FIELDS:
        del outgoing[name]
    policy = message.policy.clone(linesep="\r\n")
    if isinstance(policy, email.policy.EmailPolicy):  # compat32 has no utf8
        policy = policy.clone(utf8=utf8)
    return outgoing.as_bytes(policy=policy)


def _params_of(given: RecipientParameters, recipient: Mailbox) -> Parameters:
    if given is None:
        return NO_PARAMETERS
    return Parameters.coerce(given(recipient) if callable(given) else given)
