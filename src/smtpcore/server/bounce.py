"""Delivery status notifications: bounces, and the success reports DSN asks for.

A report is a ``multipart/report`` message (RFC 6522) of report type
``delivery-status`` (RFC 3464): a text part for people, a
``message/delivery-status`` part for programs, and the message (or only
its header: when it is large, when the sender asked ``RET=HDRS``, and
always in a success report, RFC 3461 §4.3). A report on an
internationalised message (SMTPUTF8, or a UTF-8 address) follows RFC 6533:
``message/global-delivery-status`` with UTF-8 fields, ``message/global``
or ``message/global-headers``, and addresses in ``utf-8;`` form. A message whose header
holds raw UTF-8, sent without SMTPUTF8 as some mailers do, comes back as
``message/global`` (or ``message/global-headers``) too, in an otherwise ASCII report
that needs no SMTPUTF8 to travel (:func:`_returned_type`). It goes to the original sender
with the null reverse path, so that it can never cause a report of its own
(RFC 5321 §4.5.5), or to the postmaster on its behalf, whose report names it only
in its text; mail that arrived with the null sender gets none. So a
report that cannot be sent is lost: one that holds 8-bit content, an RFC 6533
one included, has a 7-bit form (:func:`seven_bit_form`) for a server without
8BITMIME.
"""

from __future__ import annotations

import binascii
import email.utils
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Final

from smtpcore._textsafe import replace_unsafe
from smtpcore.address import AddressError, parse_mailbox
from smtpcore.server.log import printable
from smtpcore.server.reportfields import diagnostic_field, mta_name
from smtpcore.smtp import OriginalRecipient, decode_xtext

__all__ = [
    "FailedRecipient",
    "MAX_RETURNED_MESSAGE",
    "Report",
    "ReportedRecipient",
    "build_bounce",
    "build_delay_notice",
    "build_success_report",
    "seven_bit_form",
]

MAX_RETURNED_MESSAGE: Final = 256 * 1024
"""A larger message comes back as its header only (``text/rfc822-headers``)."""


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    """One recipient in a report: what became of the message for it, and why."""

    address: str
    status: str
    """The enhanced status code (RFC 3463), such as ``5.1.1``."""
    diagnostic: str
    """The remote reply (``550 5.1.1 no such user``) or a local explanation."""
    remote_mta: str | None = None
    """The exchanger that answered, if one did."""
    from_remote: bool = False
    """True when ``diagnostic`` is the remote server's SMTP reply."""
    action: str = "failed"
    """RFC 3464 §2.3.3: ``failed``; ``delayed`` in a delay notice; in a success report
    ``delivered`` (into a mailbox here) or ``relayed`` (to a server that does not speak
    DSN)."""
    original_recipient: str | None = None
    """The recipient's ``ORCPT`` parameter as it came (RFC 3461 §4.2)."""
    diagnostic_breaks: tuple[int, ...] = ()
    """Where ``diagnostic``, a reply of several lines, has the spaces between its lines
    (:func:`~smtpcore.server.exchanger.transcribe`): its ``Diagnostic-Code`` folds
    there. Breaks that are not all such spaces, in increasing order, leave the field
    unfolded."""


FailedRecipient = ReportedRecipient
"""What a bounce lists: a :class:`ReportedRecipient` whose action is ``failed``."""


@dataclass(frozen=True, slots=True)
class Report:
    """A report as built: its wire form, and what the relay must know to send it."""

    content: bytes
    international: bool
    """It follows RFC 6533 (``message/global-delivery-status``): it is queued with
    SMTPUTF8, which goes on where the exchanger offers it (its own header is ASCII but
    for a UTF-8 address, so one without may take it too, RFC 6531 §3.4). Said by the
    builder, which chose it; what the returned message quotes never is."""


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


def _one_line(text: str, utf8: bool, limit: int = 900) -> str:
    """Text fit for one header field: no line breaks, not too long, no character unsafe
    in text (RFC 5198 §2, RFC 6532 §3.2: a C0 or C1 control, a format or separator
    character) in either kind of report, and ASCII unless the report is a
    ``message/global-delivery-status`` one; each left out is written ``\\x{HEX}``."""
    text = _field_text(text, utf8)
    # The limit is in octets (RFC 6532 §3.4), cut at a character's boundary.
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "..."


def _field_text(text: str, utf8: bool) -> str:
    """:func:`_one_line` but for the cut: each character's fate depends on it alone,
    and each run of white space becomes one space."""
    text = replace_unsafe(" ".join(text.split()), _hex_escape)
    if not utf8 and not text.isascii():
        text = "".join(char if char.isascii() else _hex_escape(char) for char in text)
    return text


def _diagnostic_lines(item: ReportedRecipient, utf8: bool) -> list[str]:
    """``item``'s diagnostic as :func:`_one_line` writes it, in pieces that begin where
    the reply's lines begin (:attr:`ReportedRecipient.diagnostic_breaks`), up to the
    cut: joined by spaces, they are that one line whatever the breaks say. Breaks that
    are not increasing spaces inside the text, as no queue file of ours holds, leave
    it in one piece."""
    text, breaks = item.diagnostic, item.diagnostic_breaks
    shown = _one_line(text, utf8)
    if len(breaks) >= len(text):  # not increasing inside the text: a damaged file's
        return [shown]  # list, which costs no more than the text then
    edges = [-1, *breaks, len(text)]
    if not breaks or any(
        not (start < end < len(text) and text[end] == " ") for start, end in pairwise(edges[:-1])
    ):
        return [shown]
    pieces = [_field_text(text[start + 1 : end], utf8) for start, end in pairwise(edges)]
    if "" in pieces or " ".join(pieces) != _field_text(text, utf8):
        return [shown]
    lines: list[str] = []
    start = 0
    for piece in pieces[:-1]:
        end = start + len(piece)
        if end >= len(shown) or shown[end] != " ":
            break  # the rest was cut, or this line was cut short
        lines.append(shown[start:end])
        start = end + 1
    return [*lines, shown[start:]]


def _parses(address: str) -> bool:
    """Whether ``address`` is a valid mailbox: a queued one may no longer be one."""
    try:
        parse_mailbox(address)
    except AddressError:
        return False
    return True


def _shown_address(address: str) -> str:
    """An address as a report's text writes it: raw, as any valid address may be (a
    bidi mark or a soft hyphen in it is the address); one that no longer parses in
    RFC 6533 §3's ``\\x{HEX}`` form, its backslashes escaped too (:func:`_embedded`),
    so that it reads as no other address."""
    return address if _parses(address) else _embedded(address)


def _address_field(address: str, utf8: bool) -> str:
    """``rfc822;`` for an ASCII address; ``utf-8;`` for an internationalised one, raw in
    a global report and as ``utf-8-addr-xtext`` in an ASCII one (RFC 6533 §3). One that
    no longer parses has no raw form: ``utf-8;`` and ``utf-8-addr-xtext``, which a
    reader decodes to what was queued."""
    if not _parses(address):
        return f"utf-8; {_embedded(address)}"
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {address if utf8 else _embedded(address)}"


def _to_field(recipient: str) -> str:
    """The report's To:: its recipient, or for one that no longer parses (a caller's
    mistake: the delivery worker sends such a report to the postmaster) RFC 5322 §3.4's
    empty group, rather than a form that would name another address."""
    return f"To: <{recipient}>" if _parses(recipient) else "To: undisclosed-recipients:;"


def _on_behalf_text(sender: str, utf8: bool) -> str:
    """The sentence that says on whose behalf a report goes to the postmaster (RFC 5321
    §4.5.1): a sender that cannot receive it, or a failure by the server's own policy.
    The sender is written as the log writes it (:func:`~smtpcore.server.log.printable`),
    and in ASCII unless the report is a global one."""
    return (
        "This report goes to the postmaster, on behalf of the message's sender "
        f"{_one_line(printable(sender), utf8)}."
    )


def _original_recipient(orcpt: str, utf8: bool) -> str | None:
    """An ``ORCPT`` as it came (``rfc822;xtext``, or ``utf-8;`` in either RFC 6533 form),
    decoded and written back for the report; None where that is over 900 octets (500
    characters of ORCPT may be 2,000 raw, and 4,500 as ``\\x{HEX}``). The field is
    optional (RFC 3464 §2.3.1): left out, not cut, since a cut address is another one,
    and the line stays within RFC 5322's 998 octets."""
    try:
        original = OriginalRecipient.parse(orcpt, utf8=True)
    except ValueError:
        addr_type, _, address = orcpt.partition(";")
        value = f"{_field_text(addr_type, utf8)}; {_field_text(decode_xtext(address), utf8)}"
    else:
        if original.addr_type.lower() == "utf-8":
            field = _address_field(original.address, utf8)
            value = field.replace("rfc822;", "utf-8;", 1)
        else:
            value = f"{original.addr_type}; {_field_text(original.address, utf8)}"
    return value if len(value.encode("utf-8")) <= 900 else None


_GLOBAL_TYPES: Final = {
    "message/rfc822": "message/global",
    "text/rfc822-headers": "message/global-headers",
    "message/delivery-status": "message/global-delivery-status",
}
"""RFC 6533 §6: the media types of a report on an internationalised message."""


_HEADERS_ONLY: Final = {
    "message/rfc822": "text/rfc822-headers",
    "message/global": "message/global-headers",
}
"""The type of a returned message's header alone, by the type of the whole (RFC 3462 §2,
RFC 6533 §6.4)."""
_WHOLE: Final = "Undelivered message"
_HEADER_ONLY: Final = "Undelivered message headers"
"""The descriptions of a bounce's returned part, whole or the header only."""
_PREAMBLE: Final = "This is a MIME-encapsulated message."
_QUOTABLE: Final = frozenset(
    {"message/global", "message/global-headers", "message/global-delivery-status"}
)
"""The ``message`` types that may be quoted-printable over a 7-bit transport (RFC 6532
§3.5, RFC 6533 §6.1, §6.3), where RFC 2046 §5.2.1 forbids it to the others."""


def _what_follows(returned_type: str) -> str:
    """The notification's last sentence: what the report holds after it, the message or
    its header only (RFC 3461 §4.3), by the returned part's type."""
    if returned_type in _HEADERS_ONLY.values():
        return "The delivery report and the header of your message follow."
    return "The delivery report and your message follow."


def _header_part(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def _header_holds_utf8(content: bytes) -> bool:
    """Whether the header section of ``content`` (a message, or its header alone) holds
    UTF-8 beyond ASCII: an internationalised header (RFC 6532 §3), whatever the
    envelope said. 8-bit octets that are not UTF-8 (Latin-1 from an old mailer) make
    no such header: ``message/global`` is UTF-8 (RFC 6532 §3.7)."""
    header = b"" if content.startswith(b"\r\n") else _header_part(content)
    if header.isascii():
        return False
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _returned_type(kind: str, content: bytes, utf8: bool) -> str:
    """The media type of a report's returned part, ``content`` (the message, or its
    header), given as RFC 3462 names it (``kind``): RFC 6533's global type
    (``message/global``, ``message/global-headers``) in a report on an
    internationalised message (``utf8``), and wherever the returned header holds UTF-8
    (:func:`_header_holds_utf8`: mail sent without SMTPUTF8 by a mailer that wrote its
    header raw), which ``message/rfc822`` and ``text/rfc822-headers`` may not enclose
    (RFC 2046 §5.2.1; RFC 6533 §6.3, RFC 6532 §3.7)."""
    return _GLOBAL_TYPES[kind] if utf8 or _header_holds_utf8(content) else kind


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of a report: the text, the status, or the returned message."""

    content_type: str
    description: str
    body: bytes
    """In wire form, each line ending in CRLF (or empty)."""
    quoted: bool = False
    """``body`` is quoted-printable (RFC 2045 §6.7)."""

    def seven_bit(self) -> _Part | None:
        """This part with no 8-bit octet: as it is, or quoted-printable when its type is
        text or one of RFC 6533's (:data:`_QUOTABLE`); None for another ``message``
        type, which no encoding may hide (RFC 2046 §5.2.1)."""
        if self.body.isascii():
            return self
        if not self.content_type.startswith("text/") and self.content_type not in _QUOTABLE:
            return None
        quoted = binascii.b2a_qp(self.body, istext=True)
        return replace(self, body=quoted, quoted=True)


def _assemble(fields: Sequence[str], boundary: str, parts: Sequence[_Part]) -> bytes:
    """A ``multipart/report`` in wire form: ``fields`` (the header but its MIME fields),
    then ``parts``, the second being the status part, whose media subtype is the
    report-type (RFC 6522 §3). A part that holds 8-bit octets says 8bit (RFC 2045 §6.1:
    7bit is assumed), and so does the multipart that encloses it (RFC 2045 §6.4)."""
    report_type = parts[1].content_type.partition("/")[2]
    lines = [
        *fields,
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type={report_type};",
        f'\tboundary="{boundary}"',
    ]
    if not all(part.body.isascii() for part in parts):
        lines.append("Content-Transfer-Encoding: 8bit")
    lines += ["", _PREAMBLE, ""]
    wire = [("\r\n".join(lines) + "\r\n").encode("utf-8")]
    for part in parts:
        head = [
            f"--{boundary}",
            f"Content-Type: {part.content_type}",
            f"Content-Description: {part.description}",
        ]
        if part.quoted:
            head.append("Content-Transfer-Encoding: quoted-printable")
        elif not part.body.isascii():
            head.append("Content-Transfer-Encoding: 8bit")
        wire += [("\r\n".join(head) + "\r\n\r\n").encode("utf-8"), part.body, b"\r\n"]
    wire.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(wire)


_BOUNDARY: Final = re.compile(r'boundary="([^"]+)"')


def _disassemble(report: bytes) -> tuple[list[str], str, list[_Part]] | None:
    """What :func:`_assemble` made ``report`` from; None for anything else. The boundary
    holds 64 random bits, so a returned message does not hold it by chance."""
    end = report.find(b"\r\n\r\n")
    try:
        head = report[: max(end, 0)].decode("utf-8")
    except UnicodeDecodeError:
        return None
    found = _BOUNDARY.search(head)
    if found is None:
        return None
    boundary = found.group(1)
    fields: list[str] = []
    mime = False
    for line in head.split("\r\n"):
        if not line.startswith(("\t", " ")):
            name = line.partition(":")[0].lower()
            mime = name == "mime-version" or name.startswith("content-")
        if not mime:
            fields.append(line)
    pieces = report[end + 4 :].split(f"\r\n--{boundary}".encode("ascii"))
    if len(pieces) != 5 or pieces[-1] != b"--\r\n":
        return None
    parts = []
    for piece in pieces[1:-1]:
        part_head, _, body = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        values = {}
        for line in part_head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            values[name.strip().lower()] = value.strip()
        if values.get("content-transfer-encoding", "8bit") != "8bit":
            return None  # not the form the builder writes
        parts.append(
            _Part(values.get("content-type", ""), values.get("content-description", ""), body)
        )
    return fields, boundary, parts


def seven_bit_form(report: bytes) -> bytes | None:
    """The 7-bit form of a report built here, for a server without 8BITMIME (RFC 6152
    §3: convert it or return it; a report, from ``<>``, cannot be returned): the same
    report with the returned message as its header only, as RFC 3461 §4.3 allows
    (``text/rfc822-headers``, or ``message/global-headers`` for ``message/global``),
    its notification saying so, and each part that holds 8-bit octets quoted-printable:
    the text, the header, and an RFC 6533 report's UTF-8 status (RFC 6533 §6.1, §6.3
    allow it over a 7-bit transport). None when there is none: not a report of this
    module's, or one whose own header holds UTF-8 (a UTF-8 address, which needs
    SMTPUTF8 in the envelope too, RFC 6531 §3.4)."""
    found = _disassemble(report)
    if found is None:
        return None
    fields, boundary, (text, status, returned) = found
    if returned.content_type in _HEADERS_ONLY:
        whole = _what_follows(returned.content_type).encode("utf-8") + b"\r\n"
        returned = _Part(
            _HEADERS_ONLY[returned.content_type], _HEADER_ONLY, _header_part(returned.body)
        )
        if text.body.endswith(whole):
            ending = _what_follows(returned.content_type).encode("utf-8") + b"\r\n"
            text = replace(text, body=text.body.removesuffix(whole) + ending)
    seven_bit = [part.seven_bit() for part in (text, status, returned)]
    if None in seven_bit:
        return None
    converted = _assemble(fields, boundary, [part for part in seven_bit if part is not None])
    return converted if converted.isascii() else None


def build_bounce(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    failed: Sequence[ReportedRecipient],
    original: bytes,
    envid: str | None = None,
    headers_only: bool = False,
    too_large: bool = False,
    expired_after: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    """The bounce for ``failed``, addressed to ``recipient`` (the original sender).

    ``original`` is the message as queued (wire form); ``arrival`` and
    ``now`` are seconds since the epoch; ``envid`` is the sender's ``ENVID``
    (xtext, RFC 3461 §4.4) and ``headers_only`` its ``RET=HDRS``. ``too_large``: the
    caller found the message too large to return whole (the disk would not store the
    bounce with it), as one over :data:`MAX_RETURNED_MESSAGE` is; RFC 3461 §4.3 lets
    the header alone come back, and the text then says why, where it would otherwise
    read as though the sender had asked for it.
    ``expired_after`` (``5d``) says the message spent that long in the queue;
    each recipient's diagnostic is then its last error. ``utf8`` (the message
    came with SMTPUTF8) makes an RFC 6533 report, as any non-ASCII address does.
    ``for_sender``: the report goes to the postmaster (``recipient``) instead of this
    sender, which its text names (:func:`_on_behalf_text`).
    """
    if not failed:
        raise ValueError("a bounce needs at least one failed recipient")
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {email.utils.formatdate(arrival, localtime=True)}) could not be "
        "delivered to the recipients below, and no further attempt will be made."
    )
    if expired_after is not None:
        explanation += (
            f" It was retried for {expired_after} without success; the last error "
            "for each recipient is below."
        )
    too_large = too_large or (not headers_only and len(original) > MAX_RETURNED_MESSAGE)
    if too_large:
        explanation += " It was too large to return whole: only its header comes back."
    returned, kind, description = original, "message/rfc822", _WHOLE
    if headers_only or too_large:
        returned = _header_part(original)
        kind, description = _HEADERS_ONLY[kind], _HEADER_ONLY
    return _build_report(
        subject="Undelivered Mail Returned to Sender",
        explanation=explanation,
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=arrival,
        now=now,
        reported=failed,
        envid=envid,
        returned=(returned, kind, description),
        utf8=utf8,
        for_sender=for_sender,
    )


def build_success_report(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    reported: Sequence[ReportedRecipient],
    original: bytes,
    envid: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    """The report asked for with ``NOTIFY=SUCCESS`` (RFC 3461 §4.1): ``reported`` were
    ``delivered`` here, or ``relayed`` to a server that does not speak DSN. Only the
    message's header comes back."""
    if not reported:
        raise ValueError("a report needs at least one recipient")
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {email.utils.formatdate(arrival, localtime=True)}) was delivered to "
        "the mailboxes below, or passed on to a system that does not report delivery, "
        "as you asked."
    )
    return _build_report(
        subject="Successful Mail Delivery Report",
        explanation=explanation,
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=arrival,
        now=now,
        reported=reported,
        envid=envid,
        returned=(_header_part(original), "text/rfc822-headers", "Message headers"),
        utf8=utf8,
        for_sender=for_sender,
    )


def build_delay_notice(
    *,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    delayed: Sequence[ReportedRecipient],
    original: bytes,
    retry_until: float,
    envid: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    """The warning that mail is still waiting (RFC 3464 §2.3.3 ``Action: delayed``),
    sent once, as Postfix's ``delay_warning_time`` does: each of ``delayed`` with its
    last error and ``Will-Retry-Until`` (§2.3.7). Only the message's header comes
    back; the message itself stays queued."""
    if not delayed:
        raise ValueError("a delay notice needs at least one recipient")
    until = email.utils.formatdate(retry_until, localtime=True)
    explanation = (
        f"This is the mail system at {reporting_mta}. Your message (queue id {queue_id}, "
        f"received {email.utils.formatdate(arrival, localtime=True)}) has not yet been "
        f"delivered to the recipients below. Delivery will be retried until {until}; "
        "you do not need to send it again. If it cannot be delivered by then, "
        "you will be told."
    )
    return _build_report(
        subject="Delayed Mail (still being retried)",
        explanation=explanation,
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=arrival,
        now=now,
        reported=[replace(item, action="delayed") for item in delayed],
        envid=envid,
        returned=(_header_part(original), "text/rfc822-headers", "Message headers"),
        retry_until=until,
        utf8=utf8,
        for_sender=for_sender,
    )


def _build_report(
    *,
    subject: str,
    explanation: str,
    reporting_mta: str,
    recipient: str,
    queue_id: str,
    arrival: float,
    now: float,
    reported: Sequence[ReportedRecipient],
    envid: str | None,
    returned: tuple[bytes, str, str],
    retry_until: str | None = None,
    utf8: bool = False,
    for_sender: str | None = None,
) -> Report:
    utf8 = utf8 or not recipient.isascii() or any(not r.address.isascii() for r in reported)
    if for_sender is not None:
        explanation += " " + _on_behalf_text(for_sender, utf8)
    # RFC 2046 §5.1.1: 1 to 70 characters; a long host name is cut short.
    boundary = f"{queue_id}.{secrets.token_hex(8)}/{reporting_mta}"[:70]
    arrival_date = email.utils.formatdate(arrival, localtime=True)
    date = email.utils.formatdate(now, localtime=True)
    text = textwrap.wrap(explanation, 72)
    for item in reported:
        text.append("")
        shown = item.remote_mta and mta_name(item.remote_mta)
        where = f"host {shown} said" if shown and item.from_remote else ""
        # A word longer than the line is broken too: a line stays within RFC 5322's 998.
        said = f"{where}: " if where else ""
        text += textwrap.wrap(
            f"<{_shown_address(item.address)}>: {said}{_one_line(item.diagnostic, utf8)}",
            72,
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    content, content_type, description = returned
    content_type = _returned_type(content_type, content, utf8)
    text += ["", _what_follows(content_type)]
    status_type = "message/delivery-status"
    if utf8:
        status_type = _GLOBAL_TYPES[status_type]
    status = []
    if envid is not None:  # RFC 3464 §2.2.1, decoded from xtext (RFC 3461 §6.3)
        status.append(f"Original-Envelope-Id: {_one_line(decode_xtext(envid), utf8)}")
    status += [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Queue-ID: {queue_id}",
        f"Arrival-Date: {arrival_date}",
    ]
    for item in reported:
        status.append("")
        if item.original_recipient is not None:
            original = _original_recipient(item.original_recipient, utf8)
            if original is not None:
                status.append(f"Original-Recipient: {original}")
        status += [
            f"Final-Recipient: {_address_field(item.address, utf8)}",
            f"Action: {item.action}",
            f"Status: {item.status}",
        ]
        if item.remote_mta:
            status.append(f"Remote-MTA: dns; {mta_name(item.remote_mta)}")
        kind = "smtp" if item.from_remote else "x-local"
        status += diagnostic_field(kind, _diagnostic_lines(item, utf8))
        if item.action in ("failed", "delayed"):
            status.append(f"Last-Attempt-Date: {date}")
        if item.action == "delayed" and retry_until is not None:
            status.append(f"Will-Retry-Until: {retry_until}")
    if content.endswith(b"\r"):  # a last line ending in CR alone: finish it, not a bare CR
        content += b"\n"
    elif content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    fields = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        _to_field(recipient),
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no automatic answer to this
    ]
    parts = [
        _Part("text/plain; charset=utf-8", "Notification", _lines(text)),
        _Part(status_type, "Delivery report", _lines(status)),
        _Part(content_type, description, content),
    ]
    return Report(_assemble(fields, boundary, parts), international=utf8)


def _lines(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")
