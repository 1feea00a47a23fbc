"""What an SMTP client sends for one message, decided before the first command.

:func:`build_envelope` turns what the caller gave (bytes or an
:class:`~email.message.Message`, sender, recipients, parameters) into
the ``MAIL`` and ``RCPT`` commands and the content, adding ``SIZE``,
``BODY`` and ``SMTPUTF8`` where the server offers them, and refuses, before
anything is sent, what the server's EHLO reply rules out (RFC 5321 §2.2.2,
RFC 1870 §6, RFC 6531 §3.2, RFC 6152 §3). The sender and recipients an email
message's fields give (:mod:`smtpcore._driver._smtp_envelope_fields`) and its header
section as octets, hidden fields left out
(:mod:`smtpcore._driver._smtp_envelope_header`), have modules of their own.
"""

from __future__ import annotations

import email.message
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final, NamedTuple, TypeAlias

from smtpcore._driver._content import Content, check_not_text, known_size
from smtpcore._driver._header_octets import header_fields_wording, utf8_header_fields
from smtpcore._driver._smtp_envelope_fields import (
    _first_wide_field,
    recipients_from_fields,
    sender_from_fields,
)
from smtpcore._driver._smtp_envelope_header import _email_bytes, _header_section
from smtpcore._driver._smtp_errors import ExtensionNotOffered, MessageTooLarge
from smtpcore._errors import LocalProtocolError
from smtpcore._numbers import parse_number
from smtpcore.address import AddressError, Mailbox, parse_mailbox, parse_path
from smtpcore.smtp import Limits, Mail, Parameters, Rcpt, Reply, ServerExtensions
from smtpcore.smtp._extensions import parameter_problem, unoffered_parameter
from smtpcore.smtp._params import NO_PARAMETERS, ParametersLike

__all__ = [
    "Envelope",
    "Offer",
    "RecipientParameters",
    "Recipients",
    "build_envelope",
    "envelope_from_fields",
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


def _params_of(given: RecipientParameters, recipient: Mailbox) -> Parameters:
    if given is None:
        return NO_PARAMETERS
    return Parameters.coerce(given(recipient) if callable(given) else given)
