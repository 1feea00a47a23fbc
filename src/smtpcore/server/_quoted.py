"""Body lines quoted-printable (RFC 2045 §6.7), as :mod:`smtpcore.server.downgrade`
writes a leaf it converts to 7-bit: a piece of a line at a time
(:func:`quoted_printable`, the plain encoder), or a run of whole lines at once
(:func:`quoted_run`, one ``binascii`` call, to the same octets). The tests hold the
two equal."""

from __future__ import annotations

import binascii
import heapq
import re
from collections.abc import Iterator
from typing import Final

_QP_LINE: Final = 75
"""The characters of an encoded line before its soft break's ``=`` (RFC 2045 §6.7 rule
5: 76 in all)."""

_SOFT_BREAK_BEFORE_DASH: Final = re.compile(rb"=\n-")
"""A soft break before a ``-``, which :func:`_folded` does not place (it keeps the ``-``
on the line before, or writes it ``=2D``)."""

_LONG_DASH_LINE: Final = re.compile(rb"^-[^\n]{73}", re.MULTILINE)
"""An encoded line that starts with ``-`` and is longer than :func:`_folded` keeps whole
once its ``-`` is written ``=2D``: 73 characters after the ``-`` at least."""

_LONG_PADDED_LINE: Final = re.compile(rb"^[^\n]{73,}=(?:20|09)$", re.MULTILINE)
"""An encoded line of 76 characters or more that ends in a space or tab encoded after the
fact (``binascii.b2a_qp`` of text encodes the one before a line break, but counted it as
one character): a line on its own would have had a soft break before it."""


def quoted_printable(data: bytes, ends_line: bool) -> bytes:
    """A piece of a line, quoted-printable (RFC 2045 §6.7): ``=`` and every octet
    outside printable ASCII as ``=XX`` (a bare CR or LF too: only CRLF is a line
    break), space and tab at the end encoded, lines of at most 76 characters with soft
    breaks; the line's end kept as a hard break, a piece's end a soft one.

    No encoded line starts with ``-``: a soft break, or the start of a piece (each
    starts an encoded line), would otherwise let ``--boundary`` begin one, and readers
    would take it for a delimiter, which RFC 2046 §5.1.1 forbids an encoding to make.
    Such a ``-`` goes ``=2D`` (rule 1 lets any octet be encoded), and the lines are
    folded again around it; so are they where the piece's own soft break would make
    its last line 77 characters."""
    encoded = binascii.b2a_qp(data, istext=False)
    lines = encoded.split(b"=\n")
    starts_with_dash = encoded.startswith(b"-") or b"\n-" in encoded
    if starts_with_dash or (not ends_line and len(lines[-1]) > _QP_LINE):
        lines = _folded(b"".join(lines))
    if ends_line:
        return b"=\r\n".join(lines) + b"\r\n"
    return b"=\r\n".join(lines) + b"=\r\n" if data else b""


def quoted_run(lines: bytes) -> bytes:
    """Whole lines joined by CRLF (the last one's CRLF left out), none with a bare CR or
    LF, as the downgrade's block scan cuts them, quoted-printable octet for octet as
    :func:`quoted_printable` writes each line: ``binascii.b2a_qp`` of the run as text
    (LF line breaks) encodes each line as it encodes the line alone, once a ``-`` that
    starts a line is written ``=2D``, but for the lines :func:`_lines_encoded_otherwise`
    finds, which are encoded again alone. One ``b2a_qp`` call and one pass of each
    search of its output (three at most), however many such lines."""
    if b"\r\n" not in lines:  # one line (a tiny part's): no run to search
        return quoted_printable(lines, True)
    encoded = binascii.b2a_qp(lines.replace(b"\r\n", b"\n") + b"\n", istext=True)
    found = _lines_encoded_otherwise(encoded)
    at = next(found, None)
    if at is None:
        return _crlf_lines(encoded)
    source = lines.split(b"\r\n")
    written: list[bytes] = []
    done = index = 0  # where the next line to write starts in ``encoded``, its index
    while at is not None:  # each turn writes the lines through the one ``at`` is in
        start = _hard_line_start(encoded, done, at)
        if start > done:
            index += encoded.count(b"\n", done, start) - encoded.count(b"=\n", done, start)
            written.append(_crlf_lines(encoded[done:start]))
        written.append(quoted_printable(source[index], True))
        done, index = _hard_line_end(encoded, at) + 1, index + 1
        at = next((offset for offset in found if offset >= done), None)
    written.append(_crlf_lines(encoded[done:]))
    return b"".join(written)


def _lines_encoded_otherwise(encoded: bytes) -> Iterator[int]:
    """Offsets in ``encoded`` (``b2a_qp`` of whole lines as text), in order, one at least
    in each line that is not the line's encoding alone (:func:`quoted_run`): a soft
    break before a ``-``, a line that starts with one too long for :func:`_folded` to
    keep whole, a line too long for the space or tab that ends it. Each search runs
    once, and only where a C-level test finds what it looks for."""
    searches = []
    if b"=\n-" in encoded:
        searches.append(_SOFT_BREAK_BEFORE_DASH.finditer(encoded))
    if encoded.startswith(b"-") or b"\n-" in encoded:
        searches.append(_LONG_DASH_LINE.finditer(encoded))
    if b"=20\n" in encoded or b"=09\n" in encoded:
        searches.append(_LONG_PADDED_LINE.finditer(encoded))
    return heapq.merge(*((match.start() for match in search) for search in searches))


def _hard_line_start(encoded: bytes, done: int, at: int) -> int:
    """Where the line of ``encoded`` that ``at`` is in starts, ``done`` at the earliest
    (a line's start): after the last line break before ``at`` that is not a soft one
    (``=`` before it)."""
    newline = encoded.rfind(b"\n", done, at)
    while newline > 0 and encoded[newline - 1] == ord("="):  # moves back each turn
        newline = encoded.rfind(b"\n", done, newline)
    return done if newline == -1 else newline + 1


def _hard_line_end(encoded: bytes, at: int) -> int:
    """Where the line break after ``at`` that is not a soft one is: ``encoded`` ends with
    one."""
    newline = encoded.index(b"\n", at)
    while encoded[newline - 1] == ord("="):  # moves on each turn
        newline = encoded.index(b"\n", newline + 1)
    return newline


def _crlf_lines(encoded: bytes) -> bytes:
    """Whole lines of ``b2a_qp``'s output (LF line breaks), each the line's encoding
    alone, as :func:`quoted_printable` writes them: a ``-`` that starts a line written
    ``=2D`` (none starts a soft-broken piece, :func:`_lines_encoded_otherwise`), CRLF
    line breaks."""
    dashes_escaped = encoded.replace(b"\n-", b"\n=2D")
    if dashes_escaped.startswith(b"-"):
        dashes_escaped = b"=2D" + dashes_escaped[1:]
    return dashes_escaped.replace(b"\n", b"\r\n")


def _folded(encoded: bytes) -> list[bytes]:
    """One encoded line cut into lines of at most :data:`_QP_LINE` characters, never
    inside an ``=XX``, a ``-`` that starts one written ``=2D``."""
    lines = []
    start = 0
    while start < len(encoded):
        head = b""
        if encoded[start] == ord("-"):
            head, start = b"=2D", start + 1
        end = start + _QP_LINE - len(head)
        if end < len(encoded) and (escape := encoded.find(b"=", end - 2, end)) != -1:
            end = escape
        lines.append(head + encoded[start:end])
        start = end
    return lines
