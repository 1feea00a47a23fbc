"""Hostile wire bytes for fuzzing the four machines (SMTP and POP3, both roles).

The bytes are built from pieces a real peer sends (command verbs, reply codes,
parameters, paths) mixed with what broke machines before: digits that are not
ASCII (superscript two, Arabic-Indic and fullwidth digits), NUL, bare CR and
bare LF, dots at line starts and the content terminator, and raw octets. Real
pieces make the machines go deep into their states; the rest is what they must
refuse without an exception outside the ``ProtocolError`` family.
"""

from __future__ import annotations

from typing import Final

from hypothesis import strategies as st

from smtpcore.testing._numbers import hostile_numbers

__all__ = ["hostile_bytes", "other_spaces"]

_SMTP_COMMANDS: Final = (
    "EHLO a.example",
    "HELO a.example",
    "LHLO a.example",
    "MAIL FROM:<a@b.example>",
    "MAIL FROM:<>",
    "RCPT TO:<c@d.example>",
    "RCPT TO:<postmaster>",
    "DATA",
    "BDAT ",
    "LAST",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY x",
    "EXPN x",
    "HELP",
    "STARTTLS",
    "AUTH PLAIN",
    "AUTH LOGIN",
    "AGFiYwBhYmM=",
    "*",
    "=",
    "MAIL FROM:<a@b.example> SIZE=",
    " BODY=8BITMIME",
    " SMTPUTF8",
    " NOTIFY=SUCCESS",
    " RET=FULL",
)
_SMTP_REPLIES: Final = (
    "220 ",
    "221 ",
    "235 ",
    "250 ",
    "250-",
    "251 ",
    "252 ",
    "334 ",
    "354 ",
    "421 ",
    "452 ",
    "500 ",
    "535 ",
    "550 ",
    "554 ",
    "2.1.0 ",
    "5.1.1 ",
    "4.5.3 ",
    "250-SIZE ",
    "250 2.",
    "550 5.1.",
    "250 SIZE ",
    "PIPELINING",
    "CHUNKING",
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
    "STARTTLS",
    "AUTH PLAIN",
    "SMTPUTF8",
    "DSN",
    "mx.example",
)
_POP3_COMMANDS: Final = (
    "USER a",
    "PASS b",
    "APOP a 0123456789abcdef0123456789abcdef",
    "AUTH PLAIN",
    "AUTH",
    "CAPA",
    "STLS",
    "STAT",
    "LIST",
    "LIST ",
    "RETR ",
    "DELE ",
    "NOOP",
    "RSET",
    "TOP ",
    "TOP 1 ",
    "UIDL",
    "UIDL ",
    "QUIT",
    "UTF8",
    "*",
    "AGFiYwBhYmM=",
)
_POP3_RESPONSES: Final = (
    "+OK ",
    "-ERR ",
    "+ ",
    "+OK 2 320",
    "+OK 2 ",
    "1 120",
    "1 ",
    "2 200",
    "1 whqtswO00WBw418f9t5JxYwZ",
    "[IN-USE] ",
    "PIPELINING",
    "STLS",
    "SASL PLAIN",
    "USER",
    "TOP",
    "UIDL",
    "UTF8",
    "octets",
    "<1896.697170952@dbc.mtview.ca.us>",
)

_TRICKY: Final = (
    "\x00",
    "\r",
    "\n",
    "\r\n",
    "\r\n.\r\n",
    ".\r\n",
    ".",
    "..",
    " ",
    ":",
    "=",
    "<",
    ">",
    "@",
    "\r\n\x00.\r\n",
    "\r\n.\x00\r\n",
    "\n.\n",
    "\r.\r",
    "é",
    "\ufeff",
)


_NUMBER_DIGITS: Final = 20
"""The widest number slot among SMTP's (``size-value``, RFC 1870 §4). Not POP3's
widest: TOP's line count is read up to a command line's worth, 255 octets (RFC 2449
§4), so these runs are over-long for a message number but not for TOP's count;
``pop3_command_lines(hostile=True)`` draws the runs as wide as its line."""


_VOCABULARY: Final = {
    "smtp-client": _SMTP_COMMANDS,
    "smtp-server": _SMTP_REPLIES,
    "pop3-client": _POP3_COMMANDS,
    "pop3-server": _POP3_RESPONSES,
}


def hostile_bytes(*, sent_by: str, max_lines: int = 12) -> st.SearchStrategy[bytes]:
    """Hostile bytes as one side of a session might send them, to fuzz the other.

    ``sent_by`` is ``"smtp-client"`` (commands, for an SMTP server),
    ``"smtp-server"`` (replies, for an SMTP client), ``"pop3-client"`` or
    ``"pop3-server"``. Lines start with a word of that vocabulary, take a
    few tricky pieces as arguments (hostile numbers: signed, digits that are
    not ASCII, zero, huge, over-long, spaced or with trailing garbage, as
    ``SIZE=-1``, ``BDAT -0`` or ``TOP 1 -1``; NUL, bare CR and LF, dots and
    the content terminator) and mostly end in CRLF, so that
    a machine reads them as the command or reply they nearly are; some end
    in a bare LF or CR, or not at all; raw octets come between them.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.hostile_bytes(sent_by="smtp-client").example()  # doctest: +SKIP
    b'MAIL FROM:<a@b.example> SIZE=\\xc2\\xb2\\r\\nRSET\\n.'
    """
    try:
        words = _VOCABULARY[sent_by]
    except KeyError:
        raise ValueError(f"sent_by is one of {sorted(_VOCABULARY)}") from None
    number = hostile_numbers(max_digits=_NUMBER_DIGITS).map(lambda text: text.encode("utf-8"))
    tricky = st.one_of(
        st.sampled_from(_TRICKY + words).map(lambda text: text.encode("utf-8")), number
    )
    ending = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b""])
    line = st.tuples(
        st.sampled_from(words).map(lambda text: text.encode("utf-8")),
        st.lists(tricky, max_size=3).map(b"".join),
        ending,
    ).map(b"".join)
    numbered = st.tuples(
        st.sampled_from([word for word in words if word.endswith((" ", "="))]).map(
            lambda text: text.encode("utf-8")
        ),
        number,
        ending,
    ).map(b"".join)
    piece = st.one_of(line, line, numbered, tricky, st.binary(max_size=6))
    return st.lists(piece, max_size=max_lines).map(b"".join)


def other_spaces() -> st.SearchStrategy[str]:
    """One character ``str.split()`` takes for a separator, other than SPACE: a tab,
    the C0 separators U+001C to U+001F, NEL, and every Unicode space, line and
    paragraph separator (categories Zs, Zl, Zp) but U+0020.

    SMTP and POP3 separate words with SPACE alone (RFC 5321 §4.1.1, RFC 1939 §3):
    put one of these where a space goes, or at either end of an argument, and the
    line must be refused, never read as if a SPACE stood there.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.other_spaces().example()  # doctest: +SKIP
    '\\u3000'
    """
    return st.sampled_from("\t\x0b\x0c\x1c\x1d\x1e\x1f\x85") | st.characters(
        categories=["Zs", "Zl", "Zp"], exclude_characters=" "
    )
