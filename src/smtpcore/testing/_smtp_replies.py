"""Strategies for the server's side of SMTP: replies, as events and as bytes.

:func:`replies` builds :class:`~smtpcore.smtp.Reply` values of every class,
:func:`reply_lines` their wire form or, with ``hostile=True``, bytes a client
must refuse or survive. What a client reads, kept apart from what it writes.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final

from hypothesis import strategies as st

from smtpcore.smtp import EnhancedStatus, Reply

__all__ = [
    "replies",
    "reply_lines",
]


_REPLY_TEXT: Final = st.text(
    # RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126), printable ASCII.
    st.characters(min_codepoint=32, max_codepoint=126),
    max_size=40,
).map(lambda text: text.lstrip("0123456789. "))
_CODES: Final = (
    211,
    214,
    220,
    221,
    235,
    250,
    251,
    252,
    334,
    354,
    421,
    432,
    450,
    451,
    452,
    454,
    455,
    500,
    501,
    502,
    503,
    504,
    521,
    530,
    534,
    535,
    550,
    551,
    552,
    553,
    554,
    555,
    556,
)


def replies(
    *,
    codes: Sequence[int] | None = None,
    enhanced: bool = True,
    multiline: bool = True,
) -> st.SearchStrategy[Reply]:
    """Server replies of every class (RFC 5321 §4.2), single and multi-line.

    ``codes`` narrows the codes (all of RFC 5321's and its extensions' by
    default); with ``enhanced``, 2xx, 4xx and 5xx replies may carry an
    enhanced status code (RFC 3463). A 334 is one line holding nothing but
    a base64 challenge, perhaps empty (RFC 4954 §4).

    >>> sst.replies(codes=[250, 550]).example()  # doctest: +SKIP
    Reply(code=550, text=('no such user',), status=EnhancedStatus(5, 1, 1))
    """
    code = st.sampled_from(tuple(codes) if codes is not None else _CODES)
    lines = st.lists(_REPLY_TEXT, min_size=1, max_size=4 if multiline else 1)

    @st.composite
    def build(draw: st.DrawFn) -> Reply:
        number = draw(code)
        if number == 334:
            return Reply(334, base64.b64encode(draw(st.binary(max_size=60))).decode("ascii"))
        status = None
        if enhanced and number // 100 != 3 and draw(st.booleans()):
            status = EnhancedStatus(
                number // 100, draw(st.integers(0, 7)), draw(st.integers(0, 9))
            )
        return Reply(number, tuple(draw(lines)), status)

    return build()


_HOSTILE_REPLIES: Final = (
    b"250\r\n",
    b"250-\r\n250 \r\n",
    b"250-first\r\n251 other code\r\n",
    b"250 ok\n",
    b"250 ok\r",
    b"25 ok\r\n",
    b"2500 ok\r\n",
    b"600 ok\r\n",
    b"199 ok\r\n",
    "\u0662\u0665\u0660 ok\r\n".encode(),
    b"250_ok\r\n",
    b"250 ok\x00\r\n",
    b"250 \xff\xfe\r\n",
    b"\r\n",
    b"250-" + b"x" * 5000 + b"\r\n250 end\r\n",
    b"".join(b"250-line\r\n" for _ in range(150)) + b"250 end\r\n",
    b"421 4.3.2 shutting down\r\n",
    b"334 not base64!\r\n",
    b"354 go\r\n250 unsolicited\r\n",
)


def reply_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """A reply's wire bytes, as a server writes them.

    Valid by default (:func:`replies` serialized); ``hostile=True`` adds
    what a client must refuse or survive: missing or extra digits, codes out
    of range, non-ASCII digits, a code that changes inside a multi-line
    reply, a line ended by a bare LF (which a client reads as a line end) or
    a bare CR, NUL and invalid UTF-8, over-long lines and too many lines, a
    421 where another reply was due, a 334 whose text is not base64, and a
    reply glued to an unsolicited one.

    >>> from hypothesis import given
    >>> from smtpcore import ProtocolError
    >>> from smtpcore.smtp import ClientConnection
    >>> from smtpcore.testing import strategies as sst
    >>> sst.reply_lines(hostile=True).example()  # doctest: +SKIP
    b'250-first\\r\\n251 other code\\r\\n'
    >>> @given(sst.reply_lines(hostile=True))
    ... def test_a_greeting_is_read_or_refused(line):
    ...     client = ClientConnection("client.test")
    ...     client.receive_data(line)
    ...     try:
    ...         client.next_event()
    ...     except ProtocolError:
    ...         pass  # refused: anything else escaping is a bug
    >>> test_a_greeting_is_read_or_refused()
    """
    valid = replies().map(lambda reply: reply.to_bytes(reply.status))
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_HOSTILE_REPLIES))
