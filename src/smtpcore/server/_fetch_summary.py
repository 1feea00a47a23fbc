"""The line ``fetch`` prints for each message it stores: its number, its size, and
who sent it, when and about what, read from its header.

Apart because it reads mail, not POP3: the header is gathered from the chunks as they
stream (:class:`_Head`, bounded by :data:`HEAD_LIMIT`) and parsed by the standard
library's :mod:`email` package, RFC 2047 words decoded, and nothing of it is trusted
to print as it came (:func:`printable`)."""

from __future__ import annotations

import email.header
import email.message
import email.parser
import email.policy

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
    escaped by :func:`printable` like the rest)."""
    raw = header.get(name)
    if raw is None:
        return ""
    text = str(raw)
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):  # a malformed or unknown encoding
        return text
