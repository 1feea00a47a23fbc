"""What each event of the 7-bit conversion is written as: as it came, or rewritten (a
``Content-Transfer-Encoding`` of ``quoted-printable`` or ``7bit``, RFC 2045 §6.4,
§6.7; ``text/plain; charset=unknown-8bit`` for a message with no MIME, RFC 1428 §3).
Apart because both walks use it: the plan to measure the converted form, the reader
to write it."""

from __future__ import annotations

from typing import Final

from smtpcore.server._downgrade_parts import _Event, _Kind, _Part
from smtpcore.server._quoted import quoted_printable, quoted_run

__all__ = ["_as_is", "_rewritten"]

_UNKNOWN_CHARSET_FIELDS: Final = b"Content-Type: text/plain; charset=unknown-8bit\r\n"
"""What a message with no MIME gets for its 8-bit body (RFC 1428 §3)."""


def _added_fields(part: _Part) -> bytes:
    """The fields a converted part's header ends with: its new encoding, and for a
    message with no MIME, the top one or an enclosed one, its declaration (RFC 2045 §4;
    RFC 1428 §3 for the type)."""
    encoding = b"quoted-printable" if not part.encloses else b"7bit"
    added = b"Content-Transfer-Encoding: " + encoding + b"\r\n"
    if (part.top or part.enclosed_message) and not part.has_mime_version:
        if not part.has_content_type:
            added = _UNKNOWN_CHARSET_FIELDS + added
        added = b"MIME-Version: 1.0\r\n" + added
    return added


def _as_is(event: _Event) -> bytes:
    """What ``event`` writes in a part not rewritten: its octets as they came; a
    header's end (whose data is empty) its empty line, if it had one."""
    return event.data + b"\r\n" if event.ends_line else event.data


def _rewritten(event: _Event) -> bytes:
    """What ``event`` writes in a rewritten part: its encoding field left out and the
    new one written at the end of its header, its body quoted-printable; everything else
    as it is. :meth:`~smtpcore.server._downgrade_plan.SevenBitPlan.count` names the same
    kinds (its ``writes_otherwise``), to measure the rest without writing them: a kind
    rewritten here is one to add there."""
    if event.kind is _Kind.FIELD and event.is_encoding:
        return b""
    if event.kind is _Kind.HEADER_END:
        return _rewritten_header_end(event)
    if event.kind is _Kind.BODY and event.whole_lines:
        return quoted_run(event.data)
    if event.kind is _Kind.BODY:
        return quoted_printable(event.data, event.ends_line)
    return _as_is(event)


def _rewritten_header_end(event: _Event) -> bytes:
    """The new fields and the empty line, which the header may not have had (a line
    that is no field ended it). A message part's header with no empty line ends at the
    first line of the message it encloses, whose header is empty: that part writes the
    empty line, before its own new fields if it is rewritten, so that they are not read
    as the enclosing header's (RFC 2046 §5.2.1: a message/rfc822 part is never
    encoded); if it is not rewritten, the line ends both headers as it did."""
    part = event.part
    before = b"\r\n" if part.after_unended_header else b""
    after = b"" if part.holds_message and not event.ends_line else b"\r\n"
    return before + _added_fields(part) + after
