"""The MIME model of the 7-bit conversion: a part as its header defines it (media
type, boundary, transfer encoding, whether it encloses a message), the media types
with rules of their own, and the events the parser gives. Apart because the parser,
the plan and the rewriting reader all read them."""

from __future__ import annotations

import email.message
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from smtpcore.server._downgrade_limits import MAX_BOUNDARY, NotConvertible
from smtpcore.server._encoding_field import transfer_encoding

__all__ = [
    "_ENCODABLE_MESSAGES",
    "_Event",
    "_FIELD_BLOCKS",
    "_Kind",
    "_Part",
    "_SEVEN_BIT_MESSAGES",
    "_SIGNED",
    "_UNENCODED",
]

_UNENCODED: Final = frozenset({"", "7bit", "8bit", "binary"})
"""The identity encodings (RFC 2045 §6.2), the only ones 8-bit octets may be under."""


_FIELD_BLOCKS: Final[Mapping[str, str | None]] = {
    "message/delivery-status": "RFC 3464 §2.1",
    "message/disposition-notification": "RFC 8098 §3.1",
    "message/global-delivery-status": None,
    "message/global-disposition-notification": None,
}
"""The ``message`` types whose body is not a message but blocks of fields (a report's
status, RFC 3464 §2.1, RFC 8098 §3.1, RFC 6533 §6.1, §7): leaves, never an enclosed
message, whose first block a reader would take for a header. Each maps to the RFC
section that makes it 7-bit only, where 8-bit octets have no 7-bit form; or to None for
the ``global`` ones, whose UTF-8 fields may be encoded (RFC 6533 §6.1, §7), and go
quoted-printable whole as any leaf does."""


_ENCODABLE_MESSAGES: Final = frozenset({"message/global", "message/global-headers"})
"""The ``message`` types that may be encoded (RFC 6532 §3.5, RFC 6533 §6.3): one whose
enclosed header holds UTF-8 goes quoted-printable whole."""


_ENCLOSING_MESSAGES: Final = frozenset({"message/rfc822", "message/news", *_ENCODABLE_MESSAGES})
"""The ``message`` types whose body is a message, converted inside (RFC 2046 §5.2.1,
RFC 6532 §3.7): sendmail's mime8to7 recurses into ``message/rfc822`` alone, but a
``message/news`` (obsolete since RFC 5537, but still sent) encloses a news article,
a message, as readers parse it."""


_SEVEN_BIT_MESSAGES: Final[Mapping[str, str]] = {
    "message/partial": "RFC 2046 §5.2.2",
    "message/external-body": "RFC 2046 §5.2.3",
}
"""The ``message`` types that enclose no whole message and are 7bit only, each with
the section that says so: a fragment rewritten no longer joins its other fragments
into the message (a converted fragment gained a header of its own). Any other
``message`` type that encloses none is opaque (RFC 2046 §5.2.4), and is encoded only
where its own definition allows it (RFC 2045 §6.4, as RFC 6532 §3.5 relaxes it), which
the relay cannot know: its 8-bit octets have no 7-bit form either."""


_SIGNED: Final = "multipart/signed"
"""The multipart whose parts' octets are signed as they are (RFC 1847 §2.1)."""


@dataclass(slots=True)
class _Part:
    """One MIME entity: the message itself, a body part, or an enclosed message."""

    ordinal: int
    depth: int
    top: bool = False
    default_type: str = "text/plain"
    content_type: bytearray = field(default_factory=bytearray)
    encoding: bytearray = field(default_factory=bytearray)
    has_encoding: bool = False
    has_content_type: bool = False
    has_mime_version: bool = False
    media_type: str = ""
    boundary: bytes | None = None
    label: str = ""
    """The declared transfer encoding, as readers read it (RFC 2045 §6.1: case and
    comments do not matter); empty when the field is absent. Known once the header is."""
    holds_message: bool = False
    """Whether the body is a message (RFC 2046 §5.2) whose insides are converted: the
    :data:`_ENCLOSING_MESSAGES` types, ``message/global`` too where its enclosed header
    is 7-bit (RFC 6532 §3.5 lets it be encoded, but its insides converted are what every
    reader reads the same). Known once the header is."""
    signed: bool = False
    """Under a ``multipart/signed``: its octets are signed, never rewritten (RFC 1847
    §2.1). Known from the enclosing part, when this one starts."""
    encloses: bool = False
    """Whether the body is more parts (a multipart with a boundary) or a message, whose
    insides are converted rather than the body encoded. Known once the header is."""
    enclosed_message: bool = False
    """The header of a message a message part encloses: rewritten, it declares MIME as
    the top one does (RFC 2045 §4: a message/rfc822 body's own header says MIME-Version
    when that message claims MIME, as a Content-Transfer-Encoding does)."""
    after_unended_header: bool = False
    """An enclosed message whose enclosing part's header ended at a line that is no
    field, with no empty line: that line ends this (empty) header too. Rewritten, this
    header writes the empty line the enclosing one lacked before its new fields, which
    would else join the enclosing header."""
    marked: bool = False
    """Rewritten, as the plan found so far
    (:meth:`~smtpcore.server._downgrade_plan.SevenBitPlan.mark`); the second reading
    asks the plan, whose parts these are not."""
    growth: int = 0
    """How much the 7-bit form adds to the part so far, if it is rewritten (not known
    until its body has been read):
    :func:`~smtpcore.server._downgrade_plan.plan_seven_bit` counts it in once it is."""

    def resolve(self) -> None:
        """Read the media type, boundary and encoding once the header is whole
        (:func:`_content_type`, :func:`~smtpcore.server._encoding_field.transfer_encoding`)."""
        content_type = bytes(self.content_type) if self.has_content_type else None
        self.media_type, self.boundary, self.holds_message = _content_type(
            self.default_type, content_type
        )
        self.label = transfer_encoding(bytes(self.encoding)) if self.has_encoding else ""
        self.encloses = self.boundary is not None or self.holds_message


class _ContentType(NamedTuple):
    media_type: str
    boundary: bytes | None
    holds_message: bool


@functools.lru_cache(maxsize=256)
def _content_type(default_type: str, content_type: bytes | None) -> _ContentType:
    """What a part's ``Content-Type`` says, read by the email package, so that quoting,
    comments and RFC 2231 parameters are understood as a reader of the message
    understands them (RFC 2045 §5.1). Remembered: parts with the same field, many in a
    message of many parts, are read the same, and reading builds a message object each
    time. The encoding is remembered apart, so that parts that differ in one field (an
    attachment's name) still find the other."""
    parsed = email.message.Message()
    parsed.set_default_type(default_type)
    if content_type is not None:
        parsed["Content-Type"] = content_type.decode("ascii", "replace")
    media_type = parsed.get_content_type()
    found = parsed.get_boundary() if parsed.get_content_maintype() == "multipart" else None
    boundary = None if not found else found.encode("ascii", "replace")
    if boundary is not None and len(boundary) > MAX_BOUNDARY:
        raise NotConvertible(f"a MIME boundary over {MAX_BOUNDARY} characters")
    holds_message = media_type in _ENCLOSING_MESSAGES
    return _ContentType(media_type, boundary, holds_message)


class _Kind(enum.Enum):
    FIELD = enum.auto()
    """A piece of a header field line."""
    HEADER_END = enum.auto()
    """The end of a part's header: the empty line (``ends_line``), or, with no empty
    line, the first line that is not a field (which follows as the body's)."""
    BODY = enum.auto()
    """A piece of a leaf part's body."""
    FRAME = enum.auto()
    """A delimiter line, or a piece of a preamble or epilogue (RFC 2046 §5.1.1)."""


class _Event(NamedTuple):
    """One piece of the message and what it is; a tuple, as one is made per line."""

    kind: _Kind
    data: bytes
    """The octets, without the line's CRLF."""
    ends_line: bool
    part: _Part
    is_encoding: bool = False
    """Part of the ``Content-Transfer-Encoding`` field."""
    whole_lines: bool = False
    """``data`` is a run of whole body lines joined by CRLF
    (:meth:`~smtpcore.server._downgrade_scanner._Scanner.run`), the last one's CRLF left
    out as for a line: each at most :data:`~smtpcore.server._downgrade_limits.MAX_LINE`
    octets, with no bare CR or LF, and none a delimiter."""
