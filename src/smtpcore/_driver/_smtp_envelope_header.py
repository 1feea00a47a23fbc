"""A message's header section as octets: where it ends, its lines, and the ``Bcc``
and ``Resent-Bcc`` fields (RFC 5322 §3.6.3) kept out of the content that is sent.

Only the header section is ever split or copied, never the body: a message may
be as large as its server takes.
"""

from __future__ import annotations

import copy
import email.message
import email.policy
from collections.abc import Iterable, Sequence
from typing import Final

from smtpcore._driver._header_octets import FIELD_NAME
from smtpcore._header_end import header_end

__all__ = [
    "HIDDEN_FIELDS",
    "header_lines",
    "hidden_fields_blanked",
    "unobsolete_names",
    "without_hidden_fields",
]


def _header_section(content: bytes) -> bytes:
    """The header section of a message's wire form (:func:`header_end`): up to its
    first line that is neither a field nor a fold, which may be the first."""
    return content[: header_end(content)]


HIDDEN_FIELDS: Final = ("Bcc", "Resent-Bcc")
"""The fields whose recipients the others must not see (RFC 5322 §3.6.3): the envelope
reads them, the content goes without them (:func:`_email_bytes`,
:func:`without_hidden_fields`)."""


def header_lines(content: bytes) -> list[bytes]:
    """The lines of ``content``'s header section, line endings kept: up to its first
    line that is neither a field nor a fold, or all of it. Only the header section is
    split (:func:`header_end`): a message may be as large as its server takes."""
    return content[: header_end(content)].splitlines(keepends=True)


def unobsolete_names(lines: Iterable[bytes]) -> bytes:
    """``lines`` with the obsolete white space before a field's colon removed (RFC 5322
    §4.5.3), which stops :mod:`email`'s parser at the field: for reading the fields,
    not for sending them. Only a line that starts a field is touched; a folded line
    (white space first, RFC 5322 §2.2.3) may hold `` :`` in a quoted string."""
    return b"".join(map(_unobsolete_name, lines))


def _unobsolete_name(line: bytes) -> bytes:
    """``line`` with no white space between the field name that starts it and its colon."""
    name = FIELD_NAME.match(line)
    if name is None or name.end() == len(name.group(1)) + 1:  # not a field, or no space
        return line
    return name.group(1) + b":" + line[name.end() :]


def without_hidden_fields(content: bytes) -> bytes:
    """``content`` (a message as bytes) without its ``Bcc`` and ``Resent-Bcc`` fields
    and their folded lines (:data:`HIDDEN_FIELDS`, RFC 5322 §3.6.3), obsolete forms
    included; every other octet as it came (a signature over them stays good)."""
    head = header_lines(content)
    kept = [line for line, hidden in zip(head, _hidden_lines(head), strict=True) if not hidden]
    if len(kept) == len(head):
        return content
    return b"".join(kept) + content[sum(map(len, head)) :]


def hidden_fields_blanked(content: bytes) -> bytes:
    """``content`` with each line of its ``Bcc`` and ``Resent-Bcc`` fields emptied, its
    line end kept: the lines :func:`without_hidden_fields` sends, each numbered as in
    ``content`` (for naming a line that cannot be sent by its place in the file)."""
    head = header_lines(content)
    hidden = _hidden_lines(head)
    if not any(hidden):
        return content
    lines = [_line_end(line) if gone else line for line, gone in zip(head, hidden, strict=True)]
    return b"".join(lines) + content[sum(map(len, head)) :]


def _hidden_lines(head: Sequence[bytes]) -> list[bool]:
    """Whether each line of ``head`` belongs to a hidden field (:data:`HIDDEN_FIELDS`),
    a folded line going with its field."""
    names = {name.lower().encode() for name in HIDDEN_FIELDS}
    hidden: list[bool] = []
    dropping = False
    for line in head:
        if line[:1] not in (b" ", b"\t"):  # a folded line goes with its field
            name = FIELD_NAME.match(line)
            dropping = name is not None and name.group(1).lower() in names
        hidden.append(dropping)
    return hidden


def _line_end(line: bytes) -> bytes:
    """The CRLF, CR or LF that ends ``line`` (a line of :func:`header_lines`), if any."""
    return line[len(line.rstrip(b"\r\n")) :]


def _email_bytes(message: email.message.Message, *, utf8: bool) -> bytes:
    """The wire form of an email message: CRLF line endings, the ``Bcc`` and
    ``Resent-Bcc`` fields left out (RFC 5322 §3.6.3: those recipients stay
    hidden), and its header fields in UTF-8 in an SMTPUTF8 transaction (RFC 6532
    §3), in ASCII otherwise whatever the policy's ``utf8`` (RFC 2047 encoded
    words: UTF-8 header fields need SMTPUTF8, RFC 6531 §3.2)."""
    outgoing = copy.copy(message)
    for name in HIDDEN_FIELDS:
        del outgoing[name]
    policy = message.policy.clone(linesep="\r\n")
    if isinstance(policy, email.policy.EmailPolicy):  # compat32 has no utf8
        policy = policy.clone(utf8=utf8)
    return outgoing.as_bytes(policy=policy)
