"""The 7-bit form of a queued 8-bit message, for an exchanger without 8BITMIME.

RFC 6152 §3: a server that cannot send 8-bit content on "must either return the
message as undeliverable or convert it to 7-bit". Returning is no answer for mail
from the null sender (a report, which gets none, RFC 5321 §4.5.5), and a needless
bounce for the rest; so, as Postfix does by default, the relay converts: each leaf
part (RFC 2046) whose body holds 8-bit octets goes quoted-printable (RFC 2045
§6.7), its ``Content-Transfer-Encoding`` rewritten, and a multipart or
``message/rfc822`` labelled ``8bit`` or ``binary`` becomes ``7bit`` once its
insides are 7-bit (RFC 2045 §6.4). A message with no MIME at all becomes a
``text/plain; charset=unknown-8bit`` one (RFC 1428 §3).

A ``message/global`` or ``message/global-headers`` part whose enclosed header
holds UTF-8 (a report relayed from another MTA, RFC 6533 §6) has no 7-bit header,
but may itself be encoded (RFC 6532 §3.5): it goes quoted-printable whole, as a
leaf. Every other enclosed message is converted inside, never encoded (RFC 2046
§5.2.1). Only these types, ``message/rfc822`` and ``message/news`` (an article,
a message) enclose a message (sendmail's mime8to7 recurses into ``message/rfc822``
alone): a ``message/partial`` body is a fragment, a ``message/external-body`` one
a reference, both 7bit only (RFC 2046 §5.2.2, §5.2.3), and another ``message``
type is opaque (RFC 2046 §5.2.4), encoded only where its definition allows (RFC 2045
§6.4 as RFC 6532 §3.5 relaxes it), so 8-bit octets in any of them have no 7-bit
form (as sendmail refuses them). Nor have they under a ``multipart/signed``, whose
octets are the signed ones (RFC 1847 §2.1): its parts go as they are or not at all.

A report's status part (``message/delivery-status``,
``message/disposition-notification`` and their ``global`` forms) encloses no message
but blocks of fields: a leaf, quoted-printable whole where it is a ``global`` one
with UTF-8 fields (RFC 6533 §6.1, §7), else 7-bit only (RFC 3464 §2.1, RFC 8098
§3.1).

What has no 7-bit form is :class:`NotConvertible`: 8-bit octets in a header
field (RFC 2047 encoded words need a charset the message does not name), in a
part already encoded (a quoted-printable or base64 body holds no 8-bit octet),
in a 7-bit status part or another part never rewritten (above), or outside any
part (a preamble or an epilogue); and a line over 998 octets (RFC 5321 §4.5.3.1.6)
in the same places (a lenient queue may hold one; no 7-bit hop takes it). A leaf
with no transfer encoding (``7bit``, ``8bit``, ``binary`` or none) that holds such a
line goes quoted-printable, as for 8-bit octets: its encoded lines are at most 76
characters, and decode to the line as it was. A message nested deeper than
:data:`MAX_NESTING`, of more than :data:`MAX_PARTS` parts or of more than
:data:`MAX_PIECES` pieces read one at a time (header lines, body lines cut at a bare
LF) is :class:`NotConvertible` too: each costs the conversion, on every delivery
attempt, however few its octets.

The message is read twice, a block at a time, so that memory holds a block whatever
its size: :func:`plan_seven_bit` walks it once to find what to convert (one bit
per MIME part), whether it can be, and the size of the converted form;
:class:`SevenBitReader` walks it again, writing the converted form as it is read.
Both walks share one parser, :func:`_events`, which decides at a message part's
header whether it encloses a message or is encoded whole, by reading the enclosed
header ahead and back. Lines are at most 998 octets and CRLF in 8BITMIME content
(RFC 5321 §4.5.3.1.6); a longer one (binary content) is read in pieces of
:data:`READ_LIMIT` octets.

The parser steps line by line only where a line can change what follows: in a
header, and at a delimiter of an enclosing multipart (RFC 2046 §5.1.1; a line that
starts with ``--`` and delimits none stays in its run, for a dict lookup). The body
lines between, whole lines of at most 998 octets with no bare CR or LF, go by as one
run (:class:`_Scanner`): checked,
measured and encoded a run at a time with C-level searches and ``binascii``, to the
same octets the line-by-line encoder writes (:func:`~smtpcore.server._quoted.quoted_run`).
"""

from __future__ import annotations

import email.message
import enum
import functools
import io
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Final, NamedTuple

from smtpcore._driver._content import sent_size
from smtpcore.server._encoding_field import transfer_encoding
from smtpcore.server._quoted import quoted_printable, quoted_run

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "MAX_BOUNDARY",
    "MAX_FIELD",
    "MAX_LINE",
    "MAX_NESTING",
    "MAX_PARTS",
    "MAX_PIECES",
    "NotConvertible",
    "READ_LIMIT",
    "SevenBitPlan",
    "SevenBitReader",
    "plan_seven_bit",
]

READ_LIMIT: Final = 1000
"""Octets read at a time: a whole line of 8BITMIME content, 998 octets and CRLF."""

MAX_LINE: Final = 998
"""The longest line, CRLF aside, that a 7-bit hop takes (RFC 5321 §4.5.3.1.6); a leaf
with no transfer encoding that holds a longer one goes quoted-printable, and a longer
one anywhere else is :class:`NotConvertible`."""

MAX_NESTING: Final = 100
"""How deep multiparts and enclosed messages may nest (Postfix's
``mime_nesting_limit``); deeper is :class:`NotConvertible`."""

MAX_PARTS: Final = 5000
"""How many MIME entities a message may hold, itself, its body parts and the messages
they enclose counted; more is :class:`NotConvertible`. Each costs tens of microseconds
to convert however few its octets, so that a message of tiny parts cost the relay
seconds a megabyte on every attempt; this bounds that cost to a fraction of a second a
message. Real mail comes nowhere near: a digest of a thousand messages, each a
multipart of two, is four thousand."""

MAX_PIECES: Final = 100_000
"""How many pieces a message may hold that the conversion reads one at a time: header
lines (fields and continuation lines), and body lines with a bare CR or LF (a lenient
queue's; each LF cuts one) or over :data:`MAX_LINE` octets, a piece each of
:data:`READ_LIMIT` octets or to the bare LF. More is :class:`NotConvertible`. Each costs
a few microseconds however few its octets (a header of ``X:`` fields cost 1.5 s a
megabyte); other body lines go a run at a time, delimiters are bounded by
:data:`MAX_PARTS`. A body's pieces count less one for each 32 octets they hold, so
that only tiny ones add up: a lenient queue's file of bare-LF lines, each a piece, longer
than that on average (a CSV's), converts however many its lines. A hundred thousand is
5,000 parts of twenty header lines each; a real message has a few hundred."""

_OCTETS_A_PIECE: Final = 32
"""The octets a body piece read alone pays for itself with: :data:`MAX_PIECES` counts a
body's pieces less one for each 32 of their octets, so that a lenient queue's file of
bare-LF lines (a CSV's of 48 octets, 110,000 of them in a 5 MB message) converts as it
did, while tiny pieces (``a`` and a bare LF) are still bounded. Pieces of 32 octets on
average cost a few microseconds each, 0.25 s a megabyte at most: what a real file of
bare-LF lines costs anyway."""

MAX_FIELD: Final = 8192
"""The longest ``Content-Type`` or ``Content-Transfer-Encoding`` field read for its
value; a longer one is :class:`NotConvertible`."""

MAX_BOUNDARY: Final = READ_LIMIT - 4
"""The longest boundary whose close delimiter (``--``, the boundary, ``--``) fits in
one read; RFC 2046 §5.1.1 allows 70 characters. A longer one is :class:`NotConvertible`."""

_SCAN_BLOCK: Final = 65536
"""The octets read from the message at a time: a run of body lines is at most this and a
line (:class:`_Scanner`). The tests read with smaller blocks, to cut lines anywhere."""

_BATCH: Final = 65536
"""The octets :class:`SevenBitReader` writes at a time, at least (the client's chunk)."""

_HEADER_LINE: Final = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")
"""A line that belongs to a header: a field (a name and a colon, RFC 5322 §2.2), a
continuation, or a misplaced ``From`` envelope line; the email package's own test
(``email.feedparser.headerRE``), so that the header ends where readers end it."""

_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
"""Field-name characters only: printable ASCII but ``:`` (RFC 5322 §3.6.8 ftext)."""

_BARE_CR_OR_LF: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")
"""A CR or LF that is not half of a CRLF: an octet of its line (binary content), which
only the line-by-line reading (:func:`_pieces`) takes as it does."""

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

_UNKNOWN_CHARSET_FIELDS: Final = b"Content-Type: text/plain; charset=unknown-8bit\r\n"
"""What a message with no MIME gets for its 8-bit body (RFC 1428 §3)."""


class NotConvertible(ValueError):
    """The message has no 7-bit form; the reason says why, for the bounce and the log."""


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
    """Rewritten, as the plan found so far (:meth:`SevenBitPlan.mark`); the second
    reading asks the plan, whose parts these are not."""
    growth: int = 0
    """How much the 7-bit form adds to the part so far, if it is rewritten (not known
    until its body has been read): :func:`plan_seven_bit` counts it in once it is."""

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
    """``data`` is a run of whole body lines joined by CRLF (:meth:`_Scanner.run`), the
    last one's CRLF left out as for a line: each at most :data:`MAX_LINE` octets, with
    no bare CR or LF, and none a delimiter."""


def _pieces(file: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """The content as ``(octets, ends_line)``: each line without its CRLF, a line longer
    than :data:`READ_LIMIT` in pieces. A bare CR or LF (binary content) is an octet of
    the line, not its end; a CR at the end of a read waits for the next."""
    held = b""
    while read := file.readline(READ_LIMIT):
        piece, held = held + read, b""
        if piece.endswith(b"\r\n"):
            yield piece[:-2], True
            continue
        if piece.endswith(b"\r"):
            piece, held = piece[:-1], b"\r"
        if piece:
            yield piece, False
    if held:
        yield held, False


class _Scanner:
    """The message read ``block_size`` octets at a time, given either as :func:`_pieces`
    gives it, a piece of a line at a time (:meth:`piece`), or, where the parser needs no
    line on its own, as a run of whole lines (:meth:`run`). Holds a block and a line at
    most."""

    def __init__(self, file: BinaryIO, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"a block of {block_size} octets reads nothing")
        self._file = file
        self._block_size = block_size
        self._buffer = b""
        self._start = 0
        self._at_end = False
        self._held_cr = False
        self._last_crlf = -1
        """Where the buffer's last CRLF is: a run ends there at the latest."""
        self._bare_at = -1
        """Where the first bare CR or LF at or after ``_bare_searched`` is (the buffer's
        length if none): searched once per stretch, so that a buffer is scanned once
        however many runs it is cut into."""
        self._bare_searched = 0
        self._long_at = -1
        """Where the first line over :data:`MAX_LINE` octets at or after ``_long_searched``
        starts (:meth:`_first_long_line`)."""
        self._long_searched = 0

    @property
    def position(self) -> int:
        """The offset in the file of what comes next, at a line's start."""
        assert not self._held_cr  # a CR held back is mid-line
        return self._file.tell() - (len(self._buffer) - self._start)

    def piece(self) -> tuple[bytes, bool] | None:
        """The next piece exactly as :func:`_pieces` gives it, or None at the end. Each
        turn takes a read; only a read of a lone CR, held back, gives nothing yet. A
        read that ends at a buffered LF, the common case, is cut out at once."""
        start = self._start
        newline = self._buffer.find(b"\n", start, start + READ_LIMIT)
        if newline != -1 and not self._held_cr:
            self._start = newline + 1
            if newline > start and self._buffer[newline - 1] == 13:
                return self._buffer[start : newline - 1], True
            return self._buffer[start : newline + 1], False  # a bare LF: an octet
        while read := self._readline():
            piece = b"\r" + read if self._held_cr else read
            self._held_cr = False
            if piece.endswith(b"\r\n"):
                return piece[:-2], True
            if piece.endswith(b"\r"):
                piece, self._held_cr = piece[:-1], True
            if piece:
                return piece, False
        if self._held_cr:
            self._held_cr = False
            return b"\r", False
        return None

    def run(self, *, delimiters: Mapping[bytes, int]) -> bytes | None:
        """The whole lines from here to the last CRLF buffered, joined by CRLF (the last
        one's left out), up to the first that is not regular: a delimiter of one of the
        enclosing multiparts' ``delimiters`` (RFC 2046 §5.1.1), one with a bare CR or
        LF, or one over :data:`MAX_LINE` octets. None where the next line is such a one,
        or not buffered whole: that line is read in pieces (:meth:`piece`). Called at a
        line's start; each cut is one C-level search of the block, and a line that
        starts with ``--`` but delimits nothing a dict lookup (:func:`_before_delimiter`)."""
        if self._held_cr:
            return None
        if len(self._buffer) - self._start < READ_LIMIT:
            self._fill(READ_LIMIT)
        buffer, start = self._buffer, self._start
        end = self._last_crlf if self._last_crlf >= start else -1
        if end != -1 and (bare := self._first_bare_cr_or_lf()) < end:
            end = buffer.rfind(b"\r\n", start, bare)
        if end != -1 and (long_line := self._first_long_line()) <= end:
            end = long_line - 2 if long_line > start else -1
        if delimiters and end != -1:  # after the cuts above: searched to ``end`` only
            end = _before_delimiter(buffer, start, end, delimiters)
        if end == -1:
            return None
        self._start = end + 2
        return buffer[start:end]

    def _first_bare_cr_or_lf(self) -> int:
        """Where the first bare CR or LF from here is, the buffer's length if there is
        none: the regular expression runs only past a stretch the counts (C-level, and
        faster) do not clear."""
        if self._bare_searched <= self._start <= self._bare_at:
            return self._bare_at
        found = _BARE_CR_OR_LF.search(self._buffer, self._start)
        self._bare_searched = self._start
        self._bare_at = len(self._buffer) if found is None else found.start()
        return self._bare_at

    def _first_long_line(self) -> int:
        """Where the first line over :data:`MAX_LINE` octets from here starts, two past
        the buffer's last CRLF if there is none before it: searched once per stretch, as
        :meth:`_first_bare_cr_or_lf` is, so that runs cut short by delimiters do not
        search the rest of the block again each. Lines here are the octets between two
        CRLFs, as a run's are (one with a bare CR or LF is cut from the run anyway)."""
        if self._long_searched <= self._start <= self._long_at:
            return self._long_at
        self._long_searched = self._start
        self._long_at = _long_line_start(self._buffer, self._start, self._last_crlf)
        return self._long_at

    def _readline(self) -> bytes:
        """What ``file.readline(READ_LIMIT)`` reads: through the first LF, at most
        :data:`READ_LIMIT` octets."""
        self._fill(READ_LIMIT)
        start = self._start
        end = self._buffer.find(b"\n", start, start + READ_LIMIT)
        end = min(start + READ_LIMIT, len(self._buffer)) if end == -1 else end + 1
        self._start = end
        return self._buffer[start:end]

    def _fill(self, wanted: int) -> None:
        """Read blocks until ``wanted`` octets are buffered, or the file ends."""
        if self._at_end or len(self._buffer) - self._start >= wanted:
            return
        blocks = [self._buffer[self._start :]]
        buffered = len(blocks[0])
        while buffered < wanted:  # ends at the file's end at the latest
            block = self._file.read(self._block_size)
            if not block:
                self._at_end = True
                break
            blocks.append(block)
            buffered += len(block)
        self._buffer, self._start = b"".join(blocks), 0
        self._last_crlf = self._buffer.rfind(b"\r\n")
        self._bare_searched, self._bare_at = 0, -1
        self._long_searched, self._long_at = 0, -1
        if _pairs_up(self._buffer, self._last_crlf):
            self._bare_at = len(self._buffer)


def _pairs_up(buffer: bytes, end: int) -> bool:
    """Whether every CR and LF before ``end`` is half of a CRLF: the counts say so."""
    crlf = buffer.count(b"\r\n", 0, end)
    return buffer.count(b"\r", 0, end) == crlf == buffer.count(b"\n", 0, end)


def _long_line_start(buffer: bytes, start: int, end: int) -> int:
    """Where the first line after ``start`` (a line's start) over :data:`MAX_LINE` octets
    starts, ``end + 2`` where every line to the CRLF at ``end`` is shorter. The last CRLF
    within :data:`MAX_LINE` octets and a CRLF of a line's start proves every line before
    it short: one search per 1000 octets, as :func:`~smtpcore._lines.line_length_exceeded`
    does."""
    line_start = start
    while line_start <= end:  # each turn moves past a CRLF
        newline = buffer.rfind(b"\r\n", line_start, min(line_start + MAX_LINE + 2, end + 2))
        if newline == -1:
            return line_start
        line_start = newline + 2
    return end + 2


_DASH_LINE: Final = re.compile(rb"\r\n--([^\r\n]*)")
"""A line after a CRLF that starts with ``--``, the only kind a delimiter is (RFC 2046
§5.1.1), and what follows the dashes, to its CRLF: a run's lines are whole, with no bare
CR or LF. Greedy and with no padding of its own, so that it matches a line in one pass;
the padding (spaces and tabs) is stripped after, as :func:`_delimiter` strips it. A lazy
name before ``[ \t]*`` backtracked once per padding octet at each octet of it, quadratic
in the line: a megabyte of ``--``, 990 spaces and ``x`` took seconds."""


def _before_delimiter(buffer: bytes, start: int, end: int, delimiters: Mapping[bytes, int]) -> int:
    """``end``, or the CRLF before the first line from ``start`` to the CRLF at ``end``
    that delimits one of ``delimiters``; -1 where the line at ``start`` does. A line of
    ``--`` that delimits nothing costs one C-level match and a dict lookup or two, not
    a piece and an event of its own: such lines, however many, go in the run."""
    if buffer.startswith(b"--", start):
        first = buffer[start : buffer.index(b"\r\n", start)]
        if _delimiter(first, delimiters) is not None:
            return -1
    for line in _DASH_LINE.finditer(buffer, start, end + 2):
        name = line[1].rstrip(b" \t")
        if name in delimiters or (name[-2:] == b"--" and name[:-2] in delimiters):
            return line.start()
    return end


def _delimiter(line: bytes, delimiters: Mapping[bytes, int]) -> tuple[int, bool] | None:
    """Which enclosing boundary ``line`` delimits, innermost first, and whether it
    closes; None for a line of content. Transport padding (spaces and tabs) may follow
    (RFC 2046 §5.1.1); an outer boundary ends the parts inside it too.

    One lookup whatever the nesting: ``delimiters`` maps each boundary to the index of
    the innermost multipart that has it. The line less ``--`` and its padding is a
    boundary (a delimiter), or, less a closing ``--`` too, one that closes; where both
    readings name one, the inner wins (``a--`` and ``a`` both read ``--a--``)."""
    if not line.startswith(b"--"):
        return None
    name = line[2:].rstrip(b" \t")
    opens = delimiters.get(name)
    closes = delimiters.get(name[:-2]) if name.endswith(b"--") else None
    if closes is not None and (opens is None or closes > opens):
        return closes, True
    return None if opens is None else (opens, False)


class _Parser:
    """The MIME structure of a message read line by line (RFC 2045, RFC 2046): which
    part each piece belongs to and what it is. Holds the boundaries of the enclosing
    multiparts and the two fields it reads, never a body. ``file`` is the message being
    read, seekable: an enclosed header is read ahead in it (:meth:`_header_is_8bit`),
    from ``position()``, the offset in it of the line the next piece starts."""

    def __init__(self, file: BinaryIO, position: Callable[[], int]) -> None:
        self._file = file
        self._position = position
        self._parts = 0
        self._pieces_alone = 0
        """The pieces read so far that :data:`MAX_PIECES` counts (:meth:`feed`): a
        header's, and a body line's that is not whole and regular, which is what a run
        holds, so that both readings count the same."""
        self._piece_octets = 0
        """The octets of the body's pieces counted in ``_pieces_alone``: each
        :data:`_OCTETS_A_PIECE` of them buys a piece back (:meth:`feed`)."""
        self._frames: list[tuple[bytes, _Part, int | None]] = []
        """The enclosing multiparts, the outermost first: each one's boundary, and the
        index of the outer frame with the same boundary it hides (:meth:`_pop_frames`)."""
        self._delimiters: dict[bytes, int] = {}
        """Each enclosing boundary and the index of its innermost frame (:func:`_delimiter`)."""
        self._part = self._new_part(depth=0, top=True)
        self._in_header = True
        self._kept: bytearray | None = None
        self._is_encoding = False
        self._line_start = True
        self._padded: _Part | None = None
        """The multipart whose delimiter line goes on past a read: padding follows."""

    def _new_part(self, depth: int, *, top: bool = False, digest: bool = False) -> _Part:
        if depth > MAX_NESTING:
            raise NotConvertible(f"MIME parts nest deeper than {MAX_NESTING}")
        if self._parts == MAX_PARTS:
            raise NotConvertible(f"more than {MAX_PARTS} MIME parts")
        part = _Part(self._parts, depth, top=top)
        if digest:  # RFC 2046 §5.1.5
            part.default_type = "message/rfc822"
        self._parts += 1
        return part

    def events(self, scanner: _Scanner) -> Iterator[_Event]:
        """Every piece of the message ``scanner`` reads: a run of body lines as one event
        where no line of it can change what follows (:meth:`_Scanner.run`), else a piece
        at a time (:meth:`feed`). Each turn reads on."""
        while True:
            if self._line_start and self._padded is None and not self._in_header:
                run = scanner.run(delimiters=self._delimiters)
                if run is not None:
                    kind = _Kind.FRAME if self._part.encloses else _Kind.BODY
                    yield _Event(kind, run, True, self._part, whole_lines=True)
                    continue
            piece = scanner.piece()
            if piece is None:
                return
            yield from self.feed(*piece)

    def feed(self, data: bytes, ends_line: bool) -> tuple[_Event, ...]:
        """The events of one piece of a line: one, or more where a line that is not a
        header field ends a header (or two) and starts the body."""
        starts, self._line_start = self._line_start, ends_line
        if self._in_header or not ends_line or b"\r" in data or b"\n" in data:
            # one no run holds, counted the same by both readings; a body's less its
            # octets' share, so that only pieces shorter than _OCTETS_A_PIECE add up
            self._pieces_alone += 1
            self._piece_octets += 0 if self._in_header else len(data)
            if self._pieces_alone - self._piece_octets // _OCTETS_A_PIECE > MAX_PIECES:
                raise NotConvertible(
                    f"more than {MAX_PIECES} header lines and pieces of lines cut at a "
                    f"bare LF or over {MAX_LINE} octets (a body's pieces count one less "
                    f"for each {_OCTETS_A_PIECE} octets they hold)"
                )
        if self._padded is not None:
            events: tuple[_Event, ...] = (self._padding(data, ends_line),)
        elif starts and data[:2] == b"--" and (found := _delimiter(data, self._delimiters)):
            events = (self._delimited(data, ends_line, *found),)
        else:
            events = self._classified(data, ends_line, starts)
        return events

    def _push_frame(self, multipart: _Part) -> None:
        boundary = multipart.boundary
        assert boundary is not None  # only a multipart with one frames parts
        hidden = self._delimiters.get(boundary)
        self._delimiters[boundary] = len(self._frames)
        self._frames.append((boundary, multipart, hidden))

    def _pop_frames(self, start: int) -> None:
        """End the multiparts from ``start`` in, the innermost first: each one's boundary
        delimits no more, or again names the outer multipart it hid. A step per multipart
        ended, not per one left open, so that deep nesting costs no more a part."""
        while len(self._frames) > start:
            boundary, _, hidden = self._frames.pop()
            if hidden is None:
                del self._delimiters[boundary]
            else:
                self._delimiters[boundary] = hidden

    def _classified(self, data: bytes, ends_line: bool, starts: bool) -> tuple[_Event, ...]:
        """A piece that is not a delimiter's. A line that is neither a field nor a
        continuation ends the header where there is no empty line, as the email package
        reads it: it is the body's first line, and the header's end comes before it.
        Recursive once or twice at most: a part with no field is never enclosing."""
        if not self._in_header:
            kind = _Kind.FRAME if self._part.encloses else _Kind.BODY
            return (_Event(kind, data, ends_line, self._part),)
        if starts and ends_line and not data:
            return (self._header_end(empty_line=True),)
        if starts and not _HEADER_LINE.match(data):
            _check_field_name_ends(data, ends_line)
            return (self._header_end(empty_line=False), *self._classified(data, ends_line, starts))
        return (self._field(data, ends_line, starts),)

    def _padding(self, data: bytes, ends_line: bool) -> _Event:
        """A piece of a delimiter line past its first read: transport padding (RFC 2046
        §5.1.1), spaces and tabs only, and left out. Anything else would make the line
        content after all, known only now that its start is written as a delimiter: no
        7-bit form."""
        multipart = self._padded
        assert multipart is not None  # feed() calls this only while padding
        if data.strip(b" \t"):
            raise NotConvertible(
                "a line that starts as a MIME delimiter runs past "
                f"{READ_LIMIT} octets and is not one"
            )
        if ends_line:
            self._padded = None
        return _Event(_Kind.FRAME, b"", ends_line, multipart)

    def _field(self, data: bytes, ends_line: bool, starts: bool) -> _Event:
        """A piece of a header line: a field's first line starts it (and says whether
        it is one of the two read), any other piece continues it (RFC 5322 §2.2.3)."""
        part = self._part
        if starts and data[:1] not in (b" ", b"\t"):
            name = data.partition(b":")[0].strip().lower()
            self._is_encoding = name == b"content-transfer-encoding"
            self._kept = None
            if self._is_encoding and not part.has_encoding:
                part.has_encoding = True  # the first one counts, empty or not, as for readers
                self._kept = part.encoding
            elif name == b"content-type" and not part.has_content_type:
                part.has_content_type = True  # the first one counts, as in the email package
                self._kept = part.content_type
            elif name == b"mime-version":
                part.has_mime_version = True
            value = data.partition(b":")[2]
        else:
            value = data
        if self._kept is not None:
            if len(self._kept) + len(value) > MAX_FIELD:
                raise NotConvertible(f"a MIME header field over {MAX_FIELD} octets")
            self._kept += value
        return _Event(_Kind.FIELD, data, ends_line, part, self._is_encoding)

    def _header_end(self, *, empty_line: bool) -> _Event:
        """The header's end: the part's type is known, and says what its body is."""
        part = self._part
        self._kept, self._is_encoding = None, False
        part.resolve()
        if part.holds_message and empty_line and self._encoded_whole(part):
            part.holds_message = part.encloses = False
        event = _Event(_Kind.HEADER_END, b"", empty_line, part)
        if part.boundary is not None:
            self._push_frame(part)
            self._in_header = False
        elif part.holds_message:
            self._part = self._new_part(part.depth + 1)
            self._part.enclosed_message = True
            self._part.signed = part.signed or part.media_type == _SIGNED  # RFC 1847 §2.1
            self._part.after_unended_header = not empty_line
        else:
            self._in_header = False
        return event

    def _encoded_whole(self, part: _Part) -> bool:
        """Whether a message part is a leaf, encoded whole: a type that may be (RFC 6532
        §3.5) whose enclosed header holds UTF-8, which no 7-bit header can say."""
        return part.media_type in _ENCODABLE_MESSAGES and self._header_is_8bit()

    def _header_is_8bit(self) -> bool:
        """Whether the header that starts at the file's position holds 8-bit octets: read
        ahead to its end, as :meth:`_classified` ends it (an empty line, a line that is no
        field, a delimiter), then back, so that both readings decide at the enclosing
        part's header. Each enclosed header is read ahead once, so the message is read
        at most twice over."""
        resume = self._file.tell()
        self._file.seek(self._position())
        try:
            starts = True
            for data, ends_line in _pieces(self._file):
                if starts and _ends_header(data, ends_line, self._delimiters):
                    return False
                if not data.isascii():
                    return True
                starts = ends_line
            return False
        finally:
            self._file.seek(resume)

    def _delimited(self, data: bytes, ends_line: bool, index: int, closes: bool) -> _Event:
        """A delimiter line: the next body part's header follows, or, closing, the
        multipart's epilogue (RFC 2046 §5.1.1); inner multiparts end with it. Its first
        read decides: the rest of a longer line is padding, and the last line of the
        message, with no CRLF, is a whole line too. The padding of such a line is left
        out (transport padding is the transport's to add and remove), so that no line
        of the 7-bit form is longer than RFC 5321 §4.5.3.1.6 allows."""
        _, multipart, _ = self._frames[index]
        if not ends_line:
            self._padded, data = multipart, data.rstrip(b" \t")
        self._pop_frames(index + (0 if closes else 1))
        self._kept, self._is_encoding = None, False
        if closes:
            self._part, self._in_header = multipart, False
        else:
            digest = multipart.media_type == "multipart/digest"
            self._part = self._new_part(multipart.depth + 1, digest=digest)
            # Signed content: a multipart/signed's parts, or under one (RFC 1847 §2.1);
            # inline, as a part costs Python calls on every delivery attempt.
            self._part.signed = multipart.signed or multipart.media_type == _SIGNED
            self._in_header = True
        return _Event(_Kind.FRAME, data, ends_line, multipart)


def _ends_header(line_start: bytes, ends_line: bool, delimiters: dict[bytes, int]) -> bool:
    """Whether a line whose first piece is ``line_start`` ends a header: the empty line,
    a line that is no field, or a delimiter of an enclosing multipart."""
    if ends_line and not line_start:
        return True
    if not _HEADER_LINE.match(line_start):
        _check_field_name_ends(line_start, ends_line)
        return True
    return bool(delimiters) and _delimiter(line_start, delimiters) is not None


def _check_field_name_ends(line_start: bytes, ends_line: bool) -> None:
    """:class:`NotConvertible` for a header line whose first read, all field-name
    characters, does not end it: its colon may come later, making it a field (RFC 5322
    §2.2), which only the whole line shows. Taken for the body's first line, the fields
    after it would be encoded as body; and a header line that long has no 7-bit form
    anyway (RFC 5321 §4.5.3.1.6). A shorter first read that does not end its line is
    the message's last line, which ends there."""
    if ends_line or len(line_start) < READ_LIMIT - 1:  # a CR held back: one octet less
        return
    if _FIELD_NAME.fullmatch(line_start):
        raise NotConvertible(f"a header line over {READ_LIMIT} octets")


def _is_binary_leaf(part: _Part) -> bool:
    """A leaf labelled ``binary`` (RFC 3030 §3), which always goes quoted-printable."""
    return part.label == "binary" and not part.encloses


def _events(
    file: BinaryIO, *, runs: bool = True, block_size: int = _SCAN_BLOCK
) -> Iterator[_Event]:
    """Every piece of the message, classified by :class:`_Parser`. With ``runs``, read
    ``block_size`` octets at a time, and a run of body lines as one event where it can
    be (:class:`_Scanner`); without, the plain reading, a piece of a line at a time
    (:func:`_pieces`), which the tests hold the other equal to, octet for octet.
    Without ``runs``, ``block_size`` is ignored, not even checked: :func:`_pieces` reads
    a line at a time, at most :data:`READ_LIMIT` octets."""
    if not runs:
        parser = _Parser(file, file.tell)
        return (event for piece in _pieces(file) for event in parser.feed(*piece))
    scanner = _Scanner(file, block_size)
    return _Parser(file, lambda: scanner.position).events(scanner)


@dataclass(slots=True)
class SevenBitPlan:
    """What :func:`plan_seven_bit` found: the parts to rewrite, one bit each (by their
    order in the message), so that the second reading knows at a part's header what
    its body holds; and the size of the 7-bit form, to declare (RFC 1870 §3)."""

    rewritten: bytearray = field(default_factory=bytearray)
    quoted_parts: int = 0
    """How many leaf parts go quoted-printable."""
    size: int = 0
    """The octets of the 7-bit form on the wire, exactly: what :class:`SevenBitReader`
    gives, a bare CR or LF (queued under a lenient framing policy) counted as the CRLF
    the client sends it as (:func:`~smtpcore._driver._content.sent_size`)."""

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
    new one written at the end of its header, its body quoted-printable; everything
    else as it is. :meth:`SevenBitPlan.count` names the same kinds (its
    ``writes_otherwise``), to measure the rest without writing them: a kind
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


def _seven_bit_pieces(events: Iterator[_Event], plan: SevenBitPlan) -> Iterator[bytes]:
    """The message ``events`` classify, as :func:`plan_seven_bit` planned it, in batches
    of at least :data:`_BATCH` octets (but the last): a reader's buffer is filled from a
    few joins, not a step per line. The plan is asked once per run of a part's events."""
    part, rewritten = None, False
    batch: list[bytes] = []
    batched = 0
    for event in events:
        if event.part is not part:
            part, rewritten = event.part, plan.is_rewritten(event.part)
        written = _rewritten(event) if rewritten else _as_is(event)
        batch.append(written)
        batched += len(written)
        if batched >= _BATCH:
            yield b"".join(batch)
            batch.clear()
            batched = 0
    yield b"".join(batch)


class SevenBitReader(io.RawIOBase):
    """The 7-bit form of a message, read as a file, written as it is read.

    ``open_source`` opens the message (the queue file) for each reading. Seekable, as
    the SMTP client needs to send a message again in a new transaction (RFC 5321
    §4.5.3.1.8): a seek starts the reading over and skips to the offset.

    Its reads may run in a worker thread while the event loop closes it (a cancelled
    send): opening the source and closing hold one lock, so that a read that starts
    after the close raises rather than reopen the queue file for no one to close."""

    def __init__(self, open_source: Callable[[], BinaryIO], plan: SevenBitPlan) -> None:
        super().__init__()
        self._source_lock = threading.Lock()
        self._open_source = open_source
        self._plan = plan
        self._source: BinaryIO | None = None
        self._pieces: Iterator[bytes] = iter(())
        self._pending = b""
        self._position = 0

    @property
    def quoted_parts(self) -> int:
        """How many parts go quoted-printable (for the log)."""
        return self._plan.quoted_parts

    @property
    def size(self) -> int:
        """The octets of the 7-bit form, known before it is read (for ``SIZE=``)."""
        return self._plan.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` whole, short only at the end: the client sends each read as
        a BDAT chunk or a write, so a read of one encoded line each made a chunk, and a
        wait for its reply, of every line. Memory holds the buffer and one line's
        encoding."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                self._pending = next(self._started_pieces(), b"")
                if not self._pending:
                    break
            taken = self._pending[: len(view) - filled]
            self._pending = self._pending[len(taken) :]
            view[filled : filled + len(taken)] = taken
            filled += len(taken)
        self._position += filled
        return filled

    def _started_pieces(self) -> Iterator[bytes]:
        if self._source is None:
            with self._source_lock:
                if self.closed:
                    raise ValueError("I/O operation on closed file")
                self._source = self._open_source()
            self._pieces = (
                piece for piece in _seven_bit_pieces(_events(self._source), self._plan) if piece
            )
        return self._pieces

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("the 7-bit form's size is not known before it is read")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        if offset < self._position:
            self._restart()
        while self._position < offset and self.read(offset - self._position):
            pass
        return self._position

    def _restart(self) -> None:
        self._close_source()
        self._pending, self._position = b"", 0

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        self._pieces = iter(())

    def close(self) -> None:
        with self._source_lock:
            super().close()
            self._close_source()
