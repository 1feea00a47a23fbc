"""The first walk of the 7-bit conversion: what to convert (one bit per MIME part),
whether it can be (else :class:`NotConvertible`), and the size of the converted form.
Apart from the second walk, which writes what this one planned."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from smtpcore._driver._content import sent_size
from smtpcore.server._downgrade_limits import MAX_LINE, NotConvertible
from smtpcore.server._downgrade_parser import _events, _is_binary_leaf
from smtpcore.server._downgrade_parts import (
    _ENCODABLE_MESSAGES,
    _FIELD_BLOCKS,
    _SEVEN_BIT_MESSAGES,
    _SIGNED,
    _UNENCODED,
    _Event,
    _Kind,
    _Part,
)
from smtpcore.server._downgrade_rewrite import _as_is, _rewritten

__all__ = ["SevenBitPlan", "_planned", "plan_seven_bit"]


@dataclass(slots=True)
class SevenBitPlan:
    """What :func:`plan_seven_bit` found: the parts to rewrite, one bit each (by their
    order in the message), so that the second reading knows at a part's header what
    its body holds; and the size of the 7-bit form, to declare (RFC 1870 §3)."""

    rewritten: bytearray = field(default_factory=bytearray)
    quoted_parts: int = 0
    """How many leaf parts go quoted-printable."""
    size: int = 0
    """The octets of the 7-bit form on the wire, exactly: what
    :class:`~smtpcore.server._downgrade_reader.SevenBitReader` gives, a bare CR or LF
    (queued under a lenient framing policy) counted as the CRLF the client sends it as
    (:func:`~smtpcore._driver._content.sent_size`)."""

    def mark(self, part: _Part) -> None:
        byte, bit = divmod(part.ordinal, 8)
        if byte >= len(self.rewritten):
            self.rewritten.extend(bytes(byte + 1 - len(self.rewritten)))
        self.rewritten[byte] |= 1 << bit
        part.marked = True
        self.size, part.growth = self.size + part.growth, 0

    def is_rewritten(self, part: _Part) -> bool:
        byte, bit = divmod(part.ordinal, 8)
        return byte < len(self.rewritten) and bool(self.rewritten[byte] & (1 << bit))

    def count(self, event: _Event) -> None:
        """Add what ``event`` writes: as it is, and what its rewriting adds, now if its
        part is rewritten, else held on the part until it is (:meth:`mark`). Measured,
        not written, where the writing is the octets as they came (most events: a
        delimiter, a field, every event of a part that cannot be rewritten: only one
        under an identity encoding, RFC 2045 §6.2, can), so that a message of many
        small parts costs a few steps a line."""
        data = event.data
        has_bare_cr_or_lf = not event.whole_lines and (b"\r" in data or b"\n" in data)
        as_is = len(data) + 2 * event.ends_line
        if has_bare_cr_or_lf:
            as_is = sent_size(_as_is(event))
        self.size += as_is
        kind = event.kind  # what a rewritten part writes otherwise (:func:`_rewritten`)
        writes_otherwise = kind is _Kind.BODY or kind is _Kind.HEADER_END or event.is_encoding
        if not (writes_otherwise and event.part.label in _UNENCODED):
            return
        rewritten = _rewritten(event)
        growth = (sent_size(rewritten) if has_bare_cr_or_lf else len(rewritten)) - as_is
        if event.part.marked:
            self.size += growth
        else:
            event.part.growth += growth


def plan_seven_bit(file: BinaryIO) -> SevenBitPlan:
    """Read the message through once: the parts its 7-bit form rewrites and its size,
    or :class:`NotConvertible` with the reason it has none."""
    return _planned(_events(file))


def _planned(events: Iterator[_Event]) -> SevenBitPlan:
    """The plan of the message ``events`` classify (:func:`plan_seven_bit`). The line
    each event is of is measured as it is written unless rewritten (a delimiter's
    padding left out); a run of whole lines holds none over :data:`MAX_LINE` octets."""
    plan = SevenBitPlan()
    line_length = 0
    for event in events:
        line_length += 0 if event.whole_lines else len(event.data)
        _check(event, plan, long_line=line_length > MAX_LINE)
        plan.count(event)
        if event.ends_line:
            line_length = 0
    return plan


def _check(event: _Event, plan: SevenBitPlan, *, long_line: bool) -> None:
    """Mark the part of ``event`` for rewriting where it needs it, or raise
    :class:`NotConvertible` where it cannot be. ``long_line``: the event's line is over
    :data:`MAX_LINE` octets so far, which no 7-bit hop takes as it is and which cut
    would be corrupted (RFC 5321 §4.5.3.1.6); a leaf with no transfer encoding goes
    quoted-printable for it, as for 8-bit octets (its lines at most 76, RFC 2045 §6.7)."""
    part = event.part
    if event.kind is _Kind.HEADER_END:
        if part.encloses and part.label in ("8bit", "binary") and not part.signed:
            plan.mark(part)  # RFC 2045 §6.4: 7bit once its insides are
        elif _is_binary_leaf(part):
            if why := _never_rewritten(part):
                raise NotConvertible(f"a part labelled binary {why}")
            _quote(part, plan)  # RFC 3030 §3: its lines need not be lines at all
        return
    if event.kind is _Kind.FIELD and (b"\r" in event.data or b"\n" in event.data):
        raise NotConvertible(
            "a bare CR or LF in a header field (RFC 5322 §2.2), which readers take "
            "for a line's end and the conversion would not"
        )
    if long_line:
        _quote_or_refuse(event, plan, _LONG_LINE, "RFC 5321 §4.5.3.1.6")
    elif not event.data.isascii():
        _quote_or_refuse(
            event, plan, "8-bit octets", "RFC 2047 needs a charset the message does not name"
        )


_LONG_LINE: Final = f"a line over {MAX_LINE} octets"


def _quote_or_refuse(event: _Event, plan: SevenBitPlan, what: str, field_rule: str) -> None:
    """Mark the leaf ``event`` is of to go quoted-printable for ``what`` it holds, or
    raise :class:`NotConvertible` where nothing may be encoded: a header field
    (``field_rule`` says why), a preamble or epilogue, a part that is never rewritten
    (:func:`_never_rewritten`), a part already encoded."""
    part = event.part
    if event.kind is _Kind.FIELD:
        raise NotConvertible(f"{what} in a header field ({field_rule})")
    if event.kind is _Kind.FRAME:
        raise NotConvertible(f"{what} outside any MIME part (a preamble or epilogue)")
    if why := _never_rewritten(part):
        raise NotConvertible(f"{what} {why}")
    if part.label not in _UNENCODED:
        raise NotConvertible(f"{what} in a part already encoded {part.label}")
    _quote(part, plan)


def _never_rewritten(part: _Part) -> str | None:
    """Why the leaf ``part`` must go as it is, its 8-bit octets with no 7-bit form; None
    where it may go quoted-printable. Signed content (RFC 1847 §2.1), a 7-bit status
    part (:data:`_FIELD_BLOCKS`), and a ``message`` type that encloses no message and
    may not be encoded (:data:`_SEVEN_BIT_MESSAGES`)."""
    media_type = part.media_type
    if part.signed:
        return f"under a {_SIGNED} (RFC 1847 §2.1: the signed octets go as they are)"
    if media_type in _FIELD_BLOCKS:
        seven_bit_only = _FIELD_BLOCKS[media_type]
        return (
            None if seven_bit_only is None else f"in a {media_type} part ({seven_bit_only}: 7-bit)"
        )
    if not media_type.startswith("message/") or media_type in _ENCODABLE_MESSAGES:
        return None
    if seven_bit_only := _SEVEN_BIT_MESSAGES.get(media_type):
        return f"in a {media_type} part ({seven_bit_only}: 7-bit)"
    return (
        f"in a {media_type} part, which encloses no message (RFC 2046 §5.2.4) and is "
        "not encoded but where its definition allows (RFC 2045 §6.4, RFC 6532 §3.5)"
    )


def _quote(part: _Part, plan: SevenBitPlan) -> None:
    """Mark a leaf to go quoted-printable, once: one with 8-bit octets or a line over
    :data:`MAX_LINE` octets, and every one labelled ``binary``, whose long lines and
    bare CR or LF no 7-bit hop takes (RFC 3030 §3, RFC 5321 §4.5.3.1.6), 8-bit octets
    or not."""
    if not part.marked:
        plan.mark(part)
        plan.quoted_parts += 1
