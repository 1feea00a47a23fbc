"""The one parser both walks of the 7-bit conversion share: scanned pieces and runs
turned into events of MIME parts (RFC 2045, RFC 2046), deciding at a message part's
header whether it encloses a message or is encoded whole, within the bounds of
:mod:`~smtpcore.server._downgrade_limits`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO, Final

from smtpcore.server._downgrade_limits import (
    _OCTETS_A_PIECE,
    MAX_FIELD,
    MAX_LINE,
    MAX_NESTING,
    MAX_PARTS,
    MAX_PIECES,
    READ_LIMIT,
    NotConvertible,
)
from smtpcore.server._downgrade_parts import _ENCODABLE_MESSAGES, _SIGNED, _Event, _Kind, _Part
from smtpcore.server._downgrade_scanner import _SCAN_BLOCK, _delimiter, _pieces, _Scanner

__all__ = ["_events", "_is_binary_leaf"]

_HEADER_LINE: Final = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")
"""A line that belongs to a header: a field (a name and a colon, RFC 5322 §2.2), a
continuation, or a misplaced ``From`` envelope line; the email package's own test
(``email.feedparser.headerRE``), so that the header ends where readers end it."""


_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
"""Field-name characters only: printable ASCII but ``:`` (RFC 5322 §3.6.8 ftext)."""


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
