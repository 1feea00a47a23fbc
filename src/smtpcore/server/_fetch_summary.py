"""The line ``fetch`` prints for each message it stores: its number, its size, and
who sent it, when and about what, read from its header.

Apart because it reads mail, not POP3: the header is gathered from the chunks as they
stream (:class:`_Head`, bounded by :data:`HEAD_LIMIT`), read as UTF-8 (RFC 6532 §3:
a header field may hold it raw) and parsed by the standard library's :mod:`email`
package, RFC 2047 words decoded, and nothing of it is trusted to print as it came
(:func:`printable`)."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import re
from email.header import decode_header

from smtpcore.server.tools import printable


def _summary(number: int, size: int, head: bytes) -> str:
    """``3: 1234 octets, from <...>, "subject"``: one line per fetched message, from its
    ``size`` and ``head``, the header as far as :class:`_Head` kept it."""
    header = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    sender = printable(_header_text(header, "From") or "(no From)")
    subject = printable(_header_text(header, "Subject") or "(no Subject)")
    date = printable(_header_text(header, "Date"))
    when = f", {date}" if date else ""
    return f'{number}: {size} octets, from {sender}{when}: "{subject}"'


HEAD_LIMIT = 64 * 1024
"""Octets of a fetched message's header kept for its summary line."""


class _Head:
    """The start of a message up to and including the empty line that ends its header
    (RFC 5322 §2.1), at most :data:`HEAD_LIMIT` octets, gathered from chunks as they
    come, for the summary line."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = False

    def feed(self, chunk: bytes) -> None:
        if self.complete:
            return
        searched = max(len(self.data) - 3, 0)
        self.data += chunk[: HEAD_LIMIT - len(self.data)]
        end = 0 if self.data.startswith(b"\r\n") else self.data.find(b"\r\n\r\n", searched)
        if end >= 0:
            del self.data[end + (2 if end == 0 else 4) :]  # "no header at all": the empty line
            self.complete = True
        elif len(self.data) >= HEAD_LIMIT:
            self.complete = True


def _header_text(header: email.message.Message, name: str) -> str:
    """A field's text as it came, RFC 2047 words decoded (what they decode to is
    escaped by :func:`printable` like the rest). The text between the words is left
    as it is, raw UTF-8 included (RFC 6532 §3): ``make_header`` takes it for ASCII
    and fails on it."""
    raw = next((value for key, value in header.raw_items() if key.lower() == name.lower()), None)
    if raw is None:
        return ""
    text = _utf8(_FOLD.sub("", raw))
    if "=?" not in text:  # no RFC 2047 word: nothing to decode
        return text
    try:
        return _decode_words(text)
    except (ValueError, LookupError, UnicodeError):  # a malformed or unknown encoding
        return text


_FOLD = re.compile(r"\r?\n(?=[ \t])")
"""A line break that folds a field (RFC 5322 §2.2.3), taken out to unfold it."""

_ENCODED_WORD = re.compile(r"=\?[^?]*?\?[qQbB]\?.*?\?=")
"""An RFC 2047 encoded word, as :mod:`email.header` finds one (its ``ecre``)."""


def _utf8(value: str) -> str:
    """A field's value read as UTF-8, as RFC 6532 §3 allows it raw (SMTPUTF8 mail);
    an octet that is not UTF-8 as U+FFFD. The header is parsed from bytes, so that
    only CR and LF end its lines (parsed as text, NEL and U+2028 would, and a
    ``Subject`` could bring a ``From`` of its own); compat32 keeps each non-ASCII
    octet apart as a surrogate escape (``raw_items`` gives it so; ``get`` gives an
    ``unknown-8bit`` header, which printed two U+FFFD for ``ü``)."""
    if value.isascii():
        return value
    return value.encode("ascii", "surrogateescape").decode("utf-8", "replace")


def _decode_words(text: str) -> str:
    """``text`` with each RFC 2047 word decoded and the white space between two
    words dropped (RFC 2047 §6.2); the text around them is not touched (the
    standard library's ``decode_header`` would give it back through
    ``raw-unicode-escape``, reading ``C:\\u00e9`` as ``C:é``)."""
    pieces: list[str] = []
    last = 0  # where the last word ended: 0 before the first
    for word in _ENCODED_WORD.finditer(text):
        between = text[last : word.start()]
        if not (last and between.isspace()):
            pieces.append(between)
        pieces.append(_decoded_word(word.group()))
        last = word.end()
    pieces.append(text[last:])
    return "".join(pieces)


def _decoded_word(word: str) -> str:
    """One RFC 2047 word in its charset, an octet that is not of it as U+FFFD."""
    return "".join(
        part.decode(charset or "ascii", "replace") if isinstance(part, bytes) else part
        for part, charset in decode_header(word)
    )
