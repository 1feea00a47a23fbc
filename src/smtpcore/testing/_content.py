"""Strategies for message content and for the way a network cuts bytes apart.

Content stresses framing (RFC 5321 §4.5.2 dot-stuffing, §4.5.3.1.6 the
1000-octet line): lines that start with dots, a lone ".", lines at and
around the limit, 8-bit and UTF-8 bytes; on request, the sequences that two
implementations may read as different ends of a message (SMTP smuggling).
"""

from __future__ import annotations

import itertools
from typing import Final

from hypothesis import strategies as st

__all__ = ["SMUGGLING_SEQUENCES", "chunk_sizes", "chunkings", "message_contents"]

SMUGGLING_SEQUENCES: Final = (
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\x00\r\n.\r\n",
    b"\r\r\n.\r\n",
    b"\n\r\n.\r\n",
    b"\r\n. \r\n",
    b"\r\n.\t\r\n",
    b"\r\n .\r\n",
)
"""End-of-data look-alikes: ``LF.LF``, ``CR.CR``, ``LF.CRLF``, ``CRLF.LF``,
``CR.CRLF`` and their neighbours, NUL included, and dot lines with a blank
beside the dot (``CRLF.SP CRLF``, ``CRLF.TAB CRLF``, ``CRLF SP.CRLF``: only
``CRLF.CRLF`` ends data, RFC 5321 §4.1.1.4). A server that ends a message
on any of them lets a client smuggle a second message past a filter."""

_LINE_LIMIT: Final = 1000  # RFC 5321 §4.5.3.1.6, CRLF included

_CLEAN_LINES: Final = st.one_of(
    st.sampled_from(
        [
            b"Subject: test",
            b"From: john@abc.example",
            b"",
            b".",
            b"..",
            b"...",
            b".leading dot",
            b"..two leading dots",
            b"body text",
            b"-- ",
            b"From the start",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.encode),
)
_LONG_LINES: Final = st.sampled_from(
    [b"x" * 996, b"x" * 997, b"x" * (_LINE_LIMIT - 2), b"." + b"x" * (_LINE_LIMIT - 4)]
)
"""At the limit: 998 octets and CRLF (the stuffing dot is not counted)."""
_OVER_LIMIT_LINES: Final = st.sampled_from([999, 1000, 1001, 5000]).map(lambda n: b"y" * n)
_EIGHT_BIT_LINES: Final = st.one_of(
    st.text(st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF), max_size=30).map(str.encode),
    st.binary(max_size=30).map(lambda data: bytes(b | 0x80 for b in data)),
)
_BINARY_PIECES: Final = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n.\r\n", b"\xff"]),
    _OVER_LIMIT_LINES.map(lambda part: part + b"\r\n"),
)
"""What only ``BODY=BINARYMIME`` content may hold (RFC 3030 §3): any octets, NUL,
bare CR and LF, lines of any length, and DATA's end line, which means nothing in BDAT."""


def message_contents(
    *,
    eight_bit: bool = True,
    long_lines: bool = True,
    over_limit: bool = False,
    smuggling: bool = False,
    binary: bool = False,
    max_lines: int = 30,
) -> st.SearchStrategy[bytes]:
    """Message content as the client means it, before dot-stuffing: CRLF lines.

    Valid by default: lines that start with dots, a lone ``.``, empty lines,
    with ``long_lines`` lines of 996 to 998 octets (at the 1000-octet limit
    of RFC 5321 §4.5.3.1.6 once CRLF is counted; a stuffing dot is not),
    with ``eight_bit`` 8-bit and UTF-8 lines (for ``BODY=8BITMIME``).
    ``over_limit=True`` adds lines of 999 octets and more, which a server
    refuses with 500 5.6.0 after reading to the end. ``smuggling=True`` splices in
    :data:`SMUGGLING_SEQUENCES`, bare CRs and LFs and NULs; a correct server
    treats none of them as the end of the message. ``binary=True`` splices in
    what only binary content may hold (``BODY=BINARYMIME``, sent with BDAT
    only, RFC 3030 §3): runs of any octets, NUL, bare CRs and LFs, lines of
    any length, ``CRLF.CRLF``; no line rule applies to it.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.message_contents(smuggling=True).example()  # doctest: +SKIP
    b'Subject: test\\r\\n\\n.\\nMAIL FROM:<admin@pqr.example>\\r\\n'
    """
    lines = [_CLEAN_LINES]
    if long_lines:
        lines.append(_LONG_LINES)
    if over_limit:
        lines.append(_OVER_LIMIT_LINES)
    if eight_bit:
        lines.append(_EIGHT_BIT_LINES)
    line = st.one_of(lines)
    crlf_lines = st.lists(line, max_size=max_lines).map(
        lambda parts: b"".join(part + b"\r\n" for part in parts)
    )
    if not (smuggling or binary):
        return crlf_lines
    pieces = [line.map(lambda part: part + b"\r\n")]
    if smuggling:
        pieces += [
            st.sampled_from(SMUGGLING_SEQUENCES),
            st.sampled_from([b"\r", b"\n", b"\x00", b".", b"MAIL FROM:<admin@pqr.example>\r\n"]),
        ]
    if binary:
        pieces.append(_BINARY_PIECES)
    return st.lists(st.one_of(pieces), max_size=max_lines).map(b"".join)


def chunk_sizes(*, max_size: int = 64) -> st.SearchStrategy[list[int]]:
    """Sizes of the successive reads a network may deliver, cycled by the harnesses.

    ``[1]`` (one byte at a time) comes up often; otherwise a few sizes
    between 1 and ``max_size``. Give them to a pair's ``client_chunks`` or
    ``server_chunks``.

    >>> from hypothesis import given
    >>> from smtpcore.smtp import Ehlo
    >>> from smtpcore.testing import ConnectionPair
    >>> from smtpcore.testing import strategies as sst
    >>> sst.chunk_sizes().example()  # doctest: +SKIP
    [3, 1, 17]
    >>> @given(sst.chunk_sizes(), sst.chunk_sizes())
    ... def test_ehlo_however_cut(up, down):
    ...     pair = ConnectionPair(client_chunks=up, server_chunks=down)
    ...     pair.send(Ehlo("client.test"))
    ...     assert pair.answers[-1].reply.code == 250
    >>> test_ehlo_however_cut()
    """
    return st.one_of(
        st.just([1]),
        st.lists(st.integers(1, max_size), min_size=1, max_size=8),
    )


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into the pieces a network may deliver, in order.

    Includes the whole at once, one byte at a time, and cuts at arbitrary
    points, with a bias towards cuts inside ``CRLF`` and next to dots.
    ``b"".join(pieces) == data`` always holds.

    >>> from hypothesis import given
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.chunkings(b"EHLO a.example\\r\\n"))
    ... def test_pieces_join_back(pieces):
    ...     assert b"".join(pieces) == b"EHLO a.example\\r\\n"
    >>> test_pieces_join_back()
    """
    if not data:
        return []
    mode = draw(st.sampled_from(["whole", "bytes", "cuts", "cuts"]))
    if mode == "whole" or len(data) == 1:
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    tricky = [i for i in range(1, len(data)) if data[i - 1 : i + 1] in (b"\r\n", b"\n.", b".\r")]
    point = st.integers(1, len(data) - 1)
    if tricky:
        point = st.one_of(point, st.sampled_from(tricky))
    cuts = sorted(set(draw(st.lists(point, max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
