"""Hiding a credential a server says back, across the reads that cut it.

A transcript keeps one entry per read, and TCP may cut a server's line
anywhere: a server echoing ``PASS <password>`` can leave half of the
password in one entry and half in the next. So the server's reads are
searched as one stream, and every octet of a match is hidden in whichever
entries it spans. A form shorter than :data:`UNAMBIGUOUS` octets is hidden
only where it stands as a word (bounded by the start or end of the stream, a
space, CR or LF): a short password (``OK``, ``1``) is also part of words and
numbers that say nothing of it. A longer one (every PLAIN form, the base64
of a password of four octets or more) says nothing else, and is hidden
wherever it appears: a server may quote it in parentheses or before a colon.
Summaries and notes are text that quotes the server's bytes as reprs, or as
the text a reply was decoded to, so the credential is sought there in both.
Both are one pass per credential: no match rescans what is around it, and a
long form is matched without overlap.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Final

from smtpcore.testing._wire import Exchange

__all__ = [
    "UNAMBIGUOUS",
    "credential_forms",
    "hide_in_bytes",
    "hide_in_server_reads",
    "hide_in_text",
]

_MARKED: Final = re.compile(rb"\x01+")
UNAMBIGUOUS: Final = 8
"""A credential form this long or longer is hidden wherever it appears, not only as a word."""


def credential_forms(user: str, password: str) -> tuple[bytes, ...]:
    """Every form a password takes on the wire when ``user`` logs in with it, and so
    every form a server may quote back: as it is (POP3 PASS, RFC 1939 §7), in base64
    as LOGIN sends it (draft-murchison-sasl-login §2), and as PLAIN's base64 message
    with no authorization identity or with the user's (RFC 4616 §2). SMTP AUTH and
    POP3 AUTH carry the same SASL forms (RFC 4954 §4, RFC 5034 §4). CRAM-MD5 and
    SCRAM send a digest, no form of the password."""
    secret = password.encode()
    identity = user.encode()
    plain = [b"\0" + identity + b"\0" + secret, identity + b"\0" + identity + b"\0" + secret]
    return (secret, base64.b64encode(secret), *(base64.b64encode(p) for p in plain))


def hide_in_server_reads(
    transcript: Sequence[Exchange], secrets: Sequence[bytes], shown: bytes
) -> tuple[Exchange, ...]:
    """``transcript`` with ``shown`` in place of each run of octets of the server's
    reads that belong to one of ``secrets`` (a short one standing as a word); client entries and
    notes are left as they are (the battery hides its own writes where it makes them)."""
    reads = [entry.data for entry in transcript if entry.side == "server"]
    marks = [bytearray(len(data)) for data in reads]
    starts = _stream_offsets(reads)
    for secret in filter(None, secrets):
        for start, end in _words_in_stream(reads, secret):
            _mark(marks, starts, start, end)
    hidden = iter([_shown(data, mark, shown) for data, mark in zip(reads, marks, strict=True)])
    return tuple(
        replace(entry, data=next(hidden)) if entry.side == "server" else entry
        for entry in transcript
    )


def hide_in_bytes(data: bytes, secrets: Sequence[bytes], shown: bytes) -> bytes:
    """``data``, one piece of what a server sent, with ``shown`` in place of each of
    ``secrets`` (a short one standing as a word), as :func:`hide_in_server_reads`
    finds them. For a line a summary quotes cut short: hidden before the cut, for
    a cut through a secret leaves its start, which the whole secret no longer
    matches once the summary is written."""
    mark = bytearray(len(data))
    for secret in filter(None, secrets):
        for start, end in _words_in_stream([data], secret):
            mark[start:end] = b"\x01" * (end - start)
    return _shown(data, mark, shown)


def hide_in_text(text: str, secrets: Sequence[bytes], shown: bytes) -> str:
    """``text`` (a summary or a note) with ``shown`` in place of each of ``secrets`` as a
    bytes repr writes it or as a decoded reply holds it (a short one standing as a
    word). A summary quotes server bytes in many cuts (a whole line, several in one
    repr, an excerpt from mid-line, a list of prefixes), so the secret is sought in
    the text itself, never by the lines it came from: one substitution per form,
    linear in the text."""
    replacement = _repr_body(shown)
    for secret in filter(None, secrets):
        for form in _text_forms(secret):
            pattern = re.escape(form) if len(secret) >= UNAMBIGUOUS else _word_in_text(form)
            text = re.sub(pattern, lambda _: replacement, text)
    return text


def _text_forms(secret: bytes) -> set[str]:
    """How text may hold ``secret``: as ``repr`` of bytes writes it (a repr quoted with
    ``'`` escapes the quote, one quoted with ``"``, chosen when ``'`` is in the bytes and
    ``"`` is not, leaves it bare; other octets are escaped the same either way), and as
    a reply's text is decoded, UTF-8 or else Latin-1 (RFC 6531 §3.7.4.1 lets a reply
    carry UTF-8): a non-ASCII password comes back as the text it was typed as."""
    single_quoted = repr(secret + b'"')[2:-2]
    decoded = {secret.decode("latin-1")}
    with contextlib.suppress(UnicodeDecodeError):
        decoded.add(secret.decode("utf-8"))
    return {single_quoted, single_quoted.replace("\\'", "'"), *decoded}


def _repr_body(data: bytes) -> str:
    """``data`` as ``repr`` writes it between the quotes."""
    return repr(data)[2:-1]


def _word_in_text(form: str) -> str:
    """A pattern of ``form`` standing as a word in text holding reprs: bounded by the
    start or end of the text, a space, a quote, or an escape (``\\r``, ``\\n``, ``\\t``,
    ``\\xhh``)."""
    before = r"(?:\A|(?<=[ '\"])|(?<=\\[rnt])|(?<=\\x[0-9a-f]{2}))"
    after = r"(?=\Z|[ '\"]|\\[rnt]|\\x[0-9a-f]{2})"
    return before + re.escape(form) + after


def _words_in_stream(reads: Sequence[bytes], secret: bytes) -> Iterator[tuple[int, int]]:
    """Stream offsets ``(start, end)`` of each ``secret`` in the reads joined (a read
    may cut it anywhere), standing as a word where it is shorter than
    :data:`UNAMBIGUOUS`. A longer one is matched without overlap: sought at every
    offset, a password that repeats itself (``aaaaaaaa``) would be compared and
    marked whole at each, work that grows with its length times the stream's."""
    if len(secret) >= UNAMBIGUOUS:
        pattern = re.compile(re.escape(secret))
    else:
        pattern = re.compile(rb"(?<![^ \r\n])(?=" + re.escape(secret) + rb"(?![^ \r\n]))")
    for found in pattern.finditer(b"".join(reads)):
        yield found.start(), found.start() + len(secret)


def _stream_offsets(reads: Sequence[bytes]) -> list[int]:
    offsets, at = [], 0
    for data in reads:
        offsets.append(at)
        at += len(data)
    return offsets


def _mark(marks: list[bytearray], starts: list[int], start: int, end: int) -> None:
    """Mark the stream's octets ``start`` to ``end`` in the reads they span."""
    while start < end:
        read = bisect.bisect_right(starts, start) - 1
        local = start - starts[read]
        count = min(end - start, len(marks[read]) - local)
        marks[read][local : local + count] = b"\x01" * count
        start += count


def _shown(data: bytes, mark: bytearray, shown: bytes) -> bytes:
    """``data`` with ``shown`` in place of each run of marked octets."""
    pieces, kept = [], 0
    for run in _MARKED.finditer(mark):
        pieces += [data[kept : run.start()], shown]
        kept = run.end()
    return b"".join([*pieces, data[kept:]])
