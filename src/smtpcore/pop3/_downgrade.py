"""The surrogate of a message that needs UTF-8 mode, for a session outside it
(RFC 6856 §2.1, §5; RFC 6858 §3).

RFC 6858 presents such a message to a conventional client as a "synthetic"
one: the header rewritten in ASCII, the body as it is. Each field that holds
UTF-8 is rewritten by its kind; every other field, and every octet after the
header, goes as stored:

- an address field (From, To, Cc, Delivered-To, Errors-To...): a mailbox whose
  address is ASCII keeps it, its display name and comments as RFC 2047
  encoded-words; one whose address is UTF-8 has no ASCII form, and becomes an empty
  group named after it (``=?utf-8?b?...?= :;``), which a client shows and cannot
  reply to (RFC 6858 §2: incomplete rather than modified); such a member of a group
  is left out of it (groups do not nest);
- ``Content-Type`` and ``Content-Disposition``: a UTF-8 parameter value in RFC
  2231 form, a UTF-8 comment left out;
- a msg-id field (Message-ID, In-Reply-To, References...): its ASCII msg-ids,
  each UTF-8 one left out, the field too where none is left (RFC 2047 §5 allows no
  encoded-word in a msg-id);
- Received: left out, as its clauses hold addresses, where no encoded-word may
  stand (RFC 2047 §5); RFC 6858 §2: incomplete rather than modified;
- Return-Path: the null path ``<>``. An addr-spec can hold no encoded-word, and a
  client builds its envelope sender from this field: fetchmail, without it, takes
  the From field's, which is an empty group here, and sends ``MAIL FROM:<=?...>``.
  With ``<>`` no bounce goes anywhere, rather than to a made-up address;
- Date, MIME-Version, Content-Transfer-Encoding, Content-Language and the List-*
  fields: their UTF-8 comments left out, the field where UTF-8 remains (no
  encoded-word belongs in their grammar);
- any other field (unstructured, as RFC 5322 §3.6.8 makes an optional field): its
  text as encoded-words (RFC 2047 §5 (1)), which a reader decodes back to it;
- a structured field never holds an encoded-word outside a phrase or a comment:
  what its rule cannot write in ASCII within 998 octets (a mailbox or parameter
  with a word too long to fold, a UTF-8 parameter name) is left out, one item at
  a time, and the field where nothing of it is left;
- a line that holds UTF-8 and is no field (no colon, or a name that is not one)
  is left out; one in ASCII goes as stored, as every ASCII field does.

:func:`presented` is the one place that decides what a message's first chunks
become: as stored, this surrogate, or :data:`NEEDS_UTF8`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final

from smtpcore._header_end import header_end
from smtpcore.pop3._events import Err
from smtpcore.pop3._header_words import (
    MAX_LINE,
    comment,
    fold,
    parameter,
    phrase,
    unquoted,
    unstructured,
)
from smtpcore.pop3._utf8_content import NEEDS_UTF8, HeaderScan

__all__ = ["ascii_surrogate", "presented"]

_ADDRESS_FIELDS: Final = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "delivered-to",
        "x-original-to",
        "disposition-notification-to",
        "return-receipt-to",
        "errors-to",
    }
)
"""Fields whose value is a mailbox or address list (RFC 5322 §3.6.2, §3.6.3, §3.6.6;
RFC 8098 §2.1 Disposition-Notification-To; the trace and reply fields mailers add:
Delivered-To, X-Original-To, Return-Receipt-To, Errors-To)."""

_PARAMETER_FIELDS: Final = frozenset({"content-type", "content-disposition"})
"""Fields whose values end in MIME parameters (RFC 2045 §5.1, RFC 2183 §2)."""

_MSG_ID_FIELDS: Final = frozenset(
    {"message-id", "in-reply-to", "references", "resent-message-id", "content-id"}
)
"""Fields whose value is one msg-id or a list of them (RFC 5322 §3.6.4, RFC 2045 §7)."""

_OTHER_STRUCTURED: Final = frozenset(
    {
        "date",
        "resent-date",
        "mime-version",
        "content-transfer-encoding",
        "content-language",
        "list-id",
        "list-help",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-subscribe",
        "list-post",
        "list-owner",
        "list-archive",
    }
)
"""Other structured fields (RFC 5322 §3.3, §3.6.1; RFC 2045 §4, §6; RFC 3282; RFC
2369, RFC 2919, RFC 8058), where an encoded-word is no part of the grammar: their
UTF-8 comments are left out, and the field where UTF-8 remains."""


_MSG_ID: Final = re.compile(r"<[^<>]*>")

_WORD_ROOM: Final = MAX_LINE - len("Resent-Message-ID: ")
"""The longest word a structured field's rewriting keeps: one that fits on a line
beside the longest name of such a field, which no folding can break."""

_FIELD_NAME: Final = re.compile(r"[\x21-\x39\x3b-\x7e]+")
"""RFC 5322 §3.6.8 ``field-name``: printable ASCII but the colon."""

_LINE_BREAK: Final = re.compile(r"\r?\n")


def presented(scan: HeaderScan, read: list[bytes], *, downgrade: bool) -> list[bytes] | Err:
    """What a session outside UTF-8 mode is sent of a message whose first chunks are
    ``read``, read until ``scan`` was done: :data:`NEEDS_UTF8` where the message needs
    UTF-8 mode and is not to be (or cannot be) downgraded; else the chunks to send
    before the rest, ``read`` itself where the message goes as stored. A header that
    went on past the lookahead is never downgraded: its end was not read."""
    if not scan.needs_utf8:
        return read
    if not downgrade or scan.overran:
        return NEEDS_UTF8
    data = b"".join(read)
    return [_downgraded(data, len(data) if scan.header_size is None else scan.header_size)]


def ascii_surrogate(message: bytes) -> bytes:
    """``message`` (its whole header at least, and any of what follows) with its header
    rewritten in ASCII as RFC 6858 §3 asks; the rest unchanged. Not
    :func:`smtpcore.server.downgrade`, which makes 8-bit content 7-bit for a relay."""
    return _downgraded(message, header_end(message))


def _downgraded(data: bytes, header_size: int) -> bytes:
    """``data`` with its first ``header_size`` octets, its header, rewritten."""
    return _downgrade_header(data[:header_size]) + data[header_size:]


def _downgrade_header(header: bytes) -> bytes:
    """Each field of ``header`` (its lines, the empty one after them excluded) as it is
    where it is ASCII, rewritten where it holds UTF-8."""
    out = []
    for field in _fields(header):
        out.append(field if field.isascii() else _rewritten(field))
    return b"".join(out)


def _fields(header: bytes) -> list[bytes]:
    """``header``'s fields, each with its continuation lines and line ends: each
    joined once from its lines, so that a field of many short continuation lines
    costs what its octets do (adding each line to the field so far recopied it)."""
    fields: list[list[bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return [b"".join(lines) for lines in fields]


def _rewritten(field: bytes) -> bytes:
    """A field that holds UTF-8, in ASCII, folded; nothing for a line that is no field."""
    text = field.decode("utf-8", "replace")
    name, colon, value = text.partition(":")
    if not colon or _FIELD_NAME.fullmatch(name) is None:
        return b""
    value = _LINE_BREAK.sub("", value.rstrip("\r\n"))
    value = value.replace("\r", " ").replace("\n", " ")  # bare ones: no line breaks
    rewritten = _RULES.get(name.lower(), unstructured)(value)
    if rewritten is None:
        return b""
    folded = fold(name, rewritten)
    if any(len(line) > MAX_LINE for line in folded.split("\r\n")):
        return b""  # cannot be: each rule keeps only words that fit
    return folded.encode("ascii")


def _fits(item: str) -> bool:
    """Whether ``item`` of a structured field can be folded within the line limit:
    each of its words fits beside the field's name (:data:`_WORD_ROOM`)."""
    return all(len(word) <= _WORD_ROOM for word in item.split())


def _msg_ids(value: str) -> str | None:
    """A msg-id field's ASCII msg-ids, None where none is left: a UTF-8 one (RFC 6532
    §3.2 allows it) has no ASCII form, and its comments go with it."""
    ids = [found for found in _MSG_ID.findall(value) if found.isascii() and _fits(found)]
    return "".join(f" {found}" for found in ids) or None


def _lexed(text: str) -> Iterator[tuple[int, str, int, bool]]:
    """Each character of ``text`` with its index, the comment depth after it (RFC 5322
    §3.2.2: comments nest) and whether it stands outside quoted-strings and comments,
    where a separator means one; a quoted-pair's character never does."""
    depth = 0
    quoted = escaped = False
    for at, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif depth:
            depth += (char == "(") - (char == ")")
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        else:
            yield at, char, 0, True
            continue
        yield at, char, depth, False


def _split_top(value: str, separators: str) -> list[tuple[str, str]]:
    """``value`` cut at each of ``separators`` that is outside quoted-strings, comments
    and angle brackets: the pieces, each with the separator that ended it ("" for the
    last)."""
    pieces: list[tuple[str, str]] = []
    start = 0
    angle = False
    for at, char, _, plain in _lexed(value):
        if not plain:
            continue
        if not angle and char in separators:
            pieces.append((value[start:at], char))
            start = at + 1
        elif char == "<":
            angle = True
        elif char == ">":
            angle = False
    pieces.append((value[start:], ""))
    return pieces


def _address_list(value: str) -> str | None:
    """An address field's value with each mailbox that holds UTF-8 rewritten (see the
    module's docstring); groups kept, their UTF-8 names encoded. A mailbox with a word
    too long to fold is left out, and the field where nothing is left."""
    items: list[str] = []
    group: tuple[str, list[str]] | None = None
    for text, separator in _split_top(value, ",:;"):
        if separator == ":" and group is None:
            group = (text, [])
            continue
        item = _mailbox(text, in_group=group is not None)
        if not _fits(item):
            item = ""
        if group is None:
            if item:
                items.append(item)
            continue
        if item:
            group[1].append(item)
        if separator in (";", ""):
            items.append(f"{phrase(group[0])} : {', '.join(group[1])};")  # RFC 2047 §5 (3)
            group = None
    return " " + ", ".join(items) if items else None


def _mailbox(text: str, *, in_group: bool) -> str:
    """One mailbox of an address list, in ASCII: "" where it is left out. Its
    comments are set apart first (``a@b.example (Jöhn)``): UTF-8 in one makes no
    address UTF-8."""
    text = text.strip(" \t")
    if text.isascii():
        return text
    pieces = _split_top(text, "<")
    if len(pieces) > 1:
        display = pieces[0][0]
        address, _, after = "<".join(piece for piece, _ in pieces[1:]).partition(">")
        if address.isascii():
            kept = [phrase(display), f"<{address}>", _comments_of(after)]
            return " ".join(part for part in kept if part)
        name = display if display.strip(" \t") else address
    else:
        address, comments = _uncommented(text)
        if address.isascii() and address:
            return " ".join([address, *map(comment, comments)])
        name = text
    if in_group:
        return ""
    return f"{phrase(name)} :;"


def _uncommented(text: str) -> tuple[str, list[str]]:
    """``text`` without its comments (RFC 5322 §3.2.2), white space trimmed, and the
    comments' text, parentheses off (nested ones kept in their text)."""
    kept: list[str] = []
    comments: list[str] = []
    start = before = 0
    for at, _, depth, _ in _lexed(text):
        if not before and depth:  # a comment opens
            kept.append(text[start:at])
            start = at + 1
        elif before and not depth:  # and closes
            comments.append(text[start:at])
            start = at + 1
        before = depth
    (comments if before else kept).append(text[start:])  # an unclosed one runs to the end
    return "".join(kept).strip(" \t"), comments


def _comments_of(text: str) -> str:
    """The comments in ``text`` (what follows a mailbox's ``>``), in ASCII."""
    return " ".join(map(comment, _uncommented(text)[1]))


def _parameters(value: str) -> str | None:
    """A MIME field's value with each UTF-8 parameter value in RFC 2231 form, and
    comments that hold UTF-8 left out. A parameter that cannot be so written (a UTF-8
    name, one already in RFC 2231 form, or given in it beside, no ``=``, a word too
    long to fold) is left out; the field where its type holds UTF-8, as it has no
    ASCII form."""
    pieces = _split_top(value, ";")
    first = _ascii_comments(pieces[0][0])
    if not first.isascii() or not first or not _fits(first):
        return None
    out = [first]
    extended = {
        piece.partition("*")[0].strip(" \t").lower()
        for piece, _ in pieces[1:]
        if "*" in piece.partition("=")[0]
    }  # names given in RFC 2231 form already: a second one would make two
    for piece, _ in pieces[1:]:
        piece = _ascii_comments(piece)
        if piece.isascii():
            if piece and _fits(piece):
                out.append(piece)
            continue
        name, equals, raw = piece.partition("=")
        name = name.strip(" \t")
        if not equals or not name.isascii() or _FIELD_NAME.fullmatch(name) is None or "*" in name:
            continue
        if _fits(name) and name.lower() not in extended:
            out.append(parameter(name, unquoted(raw.strip(" \t"))))
    return " " + "; ".join(out)


def _ascii_comments(text: str) -> str:
    """``text``, trimmed, without its comments where any of them holds UTF-8: a MIME
    value's comments are no part of it, and some readers take them for one."""
    stripped = text.strip(" \t")
    if stripped.isascii():
        return stripped
    bare, comments = _uncommented(stripped)
    return bare if any(not c.isascii() for c in comments) else stripped


def _ascii_or_left_out(value: str) -> str | None:
    """A structured field's value without its UTF-8 comments; None where UTF-8 remains."""
    kept = _ascii_comments(value)
    return " " + kept if kept.isascii() and kept and _fits(kept) else None


def _null_path(value: str) -> str:
    del value
    return " <>"


def _left_out(value: str) -> None:
    del value


_RULES: Final[dict[str, Callable[[str], str | None]]] = {
    "return-path": _null_path,
    "received": _left_out,
    **dict.fromkeys(_MSG_ID_FIELDS, _msg_ids),
    **dict.fromkeys(_ADDRESS_FIELDS, _address_list),
    **dict.fromkeys(_PARAMETER_FIELDS, _parameters),
    **dict.fromkeys(_OTHER_STRUCTURED, _ascii_or_left_out),
}
"""Each structured field's rule: its value in ASCII, None to leave the field out. A
field not named here is unstructured (RFC 5322 §3.6.8: an optional field's value
is), its text as encoded-words (:func:`unstructured`)."""
