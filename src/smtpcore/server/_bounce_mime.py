"""A report's MIME structure (RFC 6522 ``multipart/report``): the type the returned
message goes back as (RFC 3464, RFC 6533 ``message/global``), the parts and their
assembly, and the 7-bit form of a report for a server without 8BITMIME.

What goes into the parts is :mod:`smtpcore.server.bounce`'s; how they are put
together, and taken apart again for :func:`seven_bit_form`, is here.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

__all__ = [
    "GLOBAL_TYPES",
    "HEADERS_ONLY",
    "HEADER_ONLY",
    "WHOLE",
    "Part",
    "assemble",
    "header_part",
    "returned_type",
    "seven_bit_form",
    "what_follows",
]

GLOBAL_TYPES: Final = {
    "message/rfc822": "message/global",
    "text/rfc822-headers": "message/global-headers",
    "message/delivery-status": "message/global-delivery-status",
}
"""RFC 6533 §6: the media types of a report on an internationalised message."""


HEADERS_ONLY: Final = {
    "message/rfc822": "text/rfc822-headers",
    "message/global": "message/global-headers",
}
"""The type of a returned message's header alone, by the type of the whole (RFC 3462 §2,
RFC 6533 §6.4)."""
WHOLE: Final = "Undelivered message"
HEADER_ONLY: Final = "Undelivered message headers"
"""The descriptions of a bounce's returned part, whole or the header only."""
_PREAMBLE: Final = "This is a MIME-encapsulated message."
_QUOTABLE: Final = frozenset(
    {"message/global", "message/global-headers", "message/global-delivery-status"}
)
"""The ``message`` types that may be quoted-printable over a 7-bit transport (RFC 6532
§3.5, RFC 6533 §6.1, §6.3), where RFC 2046 §5.2.1 forbids it to the others."""


def what_follows(returned_type: str) -> str:
    """The notification's last sentence: what the report holds after it, the message or
    its header only (RFC 3461 §4.3), by the returned part's type."""
    if returned_type in HEADERS_ONLY.values():
        return "The delivery report and the header of your message follow."
    return "The delivery report and your message follow."


def header_part(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def _header_holds_utf8(content: bytes) -> bool:
    """Whether the header section of ``content`` (a message, or its header alone) holds
    UTF-8 beyond ASCII: an internationalised header (RFC 6532 §3), whatever the
    envelope said. 8-bit octets that are not UTF-8 (Latin-1 from an old mailer) make
    no such header: ``message/global`` is UTF-8 (RFC 6532 §3.7)."""
    header = b"" if content.startswith(b"\r\n") else header_part(content)
    if header.isascii():
        return False
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def returned_type(kind: str, content: bytes, utf8: bool) -> str:
    """The media type of a report's returned part, ``content`` (the message, or its
    header), given as RFC 3462 names it (``kind``): RFC 6533's global type
    (``message/global``, ``message/global-headers``) in a report on an
    internationalised message (``utf8``), and wherever the returned header holds UTF-8
    (:func:`_header_holds_utf8`: mail sent without SMTPUTF8 by a mailer that wrote its
    header raw), which ``message/rfc822`` and ``text/rfc822-headers`` may not enclose
    (RFC 2046 §5.2.1; RFC 6533 §6.3, RFC 6532 §3.7)."""
    return GLOBAL_TYPES[kind] if utf8 or _header_holds_utf8(content) else kind


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a report: the text, the status, or the returned message."""

    content_type: str
    description: str
    body: bytes
    """In wire form, each line ending in CRLF (or empty)."""
    quoted: bool = False
    """``body`` is quoted-printable (RFC 2045 §6.7)."""

    def seven_bit(self) -> Part | None:
        """This part with no 8-bit octet: as it is, or quoted-printable when its type is
        text or one of RFC 6533's (:data:`_QUOTABLE`); None for another ``message``
        type, which no encoding may hide (RFC 2046 §5.2.1)."""
        if self.body.isascii():
            return self
        if not self.content_type.startswith("text/") and self.content_type not in _QUOTABLE:
            return None
        quoted = binascii.b2a_qp(self.body, istext=True)
        return replace(self, body=quoted, quoted=True)


def assemble(fields: Sequence[str], boundary: str, parts: Sequence[Part]) -> bytes:
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


def _disassemble(report: bytes) -> tuple[list[str], str, list[Part]] | None:
    """What :func:`assemble` made ``report`` from; None for anything else. The boundary
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
            Part(values.get("content-type", ""), values.get("content-description", ""), body)
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
    if returned.content_type in HEADERS_ONLY:
        whole = what_follows(returned.content_type).encode("utf-8") + b"\r\n"
        returned = Part(
            HEADERS_ONLY[returned.content_type], HEADER_ONLY, header_part(returned.body)
        )
        if text.body.endswith(whole):
            ending = what_follows(returned.content_type).encode("utf-8") + b"\r\n"
            text = replace(text, body=text.body.removesuffix(whole) + ending)
    seven_bit = [part.seven_bit() for part in (text, status, returned)]
    if None in seven_bit:
        return None
    converted = assemble(fields, boundary, [part for part in seven_bit if part is not None])
    return converted if converted.isascii() else None
