"""ASCII forms of UTF-8 header text, for a downgraded message (RFC 6858 §3).

Three encodings and one line rule, kept apart from the field rewriting that picks
among them (:mod:`smtpcore.pop3._downgrade`): RFC 2047 encoded-words for text in
unstructured fields and phrases, RFC 2231 for MIME parameter values, and RFC 5322
folding, which only ever puts a line break before white space that is already
there, so that unfolding gives back the field exactly.
"""

from __future__ import annotations

import base64
import re
from typing import Final

__all__ = [
    "FOLD_AT",
    "MAX_LINE",
    "comment",
    "encoded_words",
    "fold",
    "parameter",
    "phrase",
    "unquoted",
    "unstructured",
]

FOLD_AT: Final = 78
"""The line length folding aims at (RFC 5322 §2.1.1: SHOULD be no more than 78
characters); every word this module writes is shorter, so no line it folds passes
998 (the MUST) unless a word it was given is that long."""

MAX_LINE: Final = 998
"""RFC 5322 §2.1.1: a line is at most 998 characters, its CR LF aside."""

_WORD_OCTETS: Final = 45
"""UTF-8 octets in one encoded-word: 60 characters of base64, 72 with the
``=?utf-8?b?`` and ``?=`` around them, within RFC 2047 §2's 75."""

_WORD: Final = re.compile(r"[ \t]*[^ \t]+|[ \t]+")
"""A word and the white space before it; or white space that ends the text."""

_PLAIN_LIMIT: Final = 70
"""Longest word (with its white space) an unstructured field keeps as it is: a
longer one is encoded, so that it can be folded."""

_ATTRIBUTE_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)
"""Characters an RFC 2231 ``extended-other-values`` writes as themselves."""

_PARAMETER_SECTION: Final = 48
"""Octets of a parameter value in one RFC 2231 section, before percent-encoding."""


def encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 B encoded-words in UTF-8, each at most 75 characters and
    each holding whole characters (§5: a character is never split between words)."""
    words = []
    chunk = bytearray()
    for char in text:
        octets = char.encode("utf-8", "surrogatepass")
        if len(chunk) + len(octets) > _WORD_OCTETS:
            words.append(_b_word(bytes(chunk)))
            chunk.clear()
        chunk += octets
    if chunk or not words:
        words.append(_b_word(bytes(chunk)))
    return words


def _b_word(octets: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(octets).decode('ascii')}?="


def _plain(word: str) -> bool:
    """Whether an unstructured field may keep ``word`` (with the white space before
    it) as it is: ASCII, short enough to fold, and nothing a reader would take for an
    encoded-word (``=?``) and decode into other text."""
    return word.isascii() and len(word) <= _PLAIN_LIMIT and "=?" not in word


def unstructured(text: str) -> str:
    """An unstructured field's value (RFC 5322 §3.2.5, unfolded) in ASCII that decodes
    back to ``text`` (RFC 2047 §5 (1)): words kept where :func:`_plain` allows, each run
    of the others, and the white space between them, as encoded-words. White space
    between encoded-words is no part of the text, so they may be folded apart; white
    space next to a kept word is kept, where a reader keeps it."""
    pieces = _WORD.findall(text.rstrip(" \t"))
    out: list[str] = []
    run: list[str] = []
    for piece in pieces:
        if _plain(piece):
            if run:
                out.append(_encoded_run(run))
                run = []
            out.append(piece)
        else:
            run.append(piece)
    if run:
        out.append(_encoded_run(run))
    return "".join(out)


def _encoded_run(run: list[str]) -> str:
    """Words that are not kept plain, as encoded-words: the white space before the
    first stays outside, where it separates them from what comes before (a long run
    of it goes inside, and one space outside, as a word must be separated)."""
    text = "".join(run)
    word = text.lstrip(" \t")
    space = text[: len(text) - len(word)]
    if len(space) > _PLAIN_LIMIT:
        word, space = text, " "
    return space + " ".join(encoded_words(word))


def phrase(text: str) -> str:
    """A display name (RFC 5322 §3.2.5 ``phrase``) in ASCII: as it is where it is
    ASCII, else its text (a quoted-string's content, unescaped) as encoded-words,
    which RFC 2047 §5 (3) allows in place of a phrase's words."""
    text = text.strip(" \t")
    if text.isascii():
        return text
    return " ".join(encoded_words(unquoted(text)))


def unquoted(text: str) -> str:
    """A quoted-string's content, quoted-pairs unescaped (RFC 5322 §3.2.4); any other
    ``text`` as it is."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return _unescaped(text[1:-1])
    return text


def _unescaped(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def comment(text: str) -> str:
    """A comment (RFC 5322 §3.2.2) whose text, parentheses off, is ``text``: as it is
    where it is ASCII, else its text (quoted-pairs unescaped) as encoded-words, which
    RFC 2047 §5 (2) allows in a comment."""
    if text.isascii():
        return f"({text})"
    return "(" + " ".join(encoded_words(_unescaped(text))) + ")"


def parameter(name: str, value: str) -> str:
    """A MIME parameter whose value is not ASCII, as RFC 2231 writes it: UTF-8,
    percent-encoded (§4), in numbered sections (§3) where it is long."""
    octets = value.encode("utf-8", "surrogatepass")
    sections = [
        octets[i : i + _PARAMETER_SECTION] for i in range(0, len(octets), _PARAMETER_SECTION)
    ]
    if len(sections) <= 1:
        return f"{name}*=utf-8''{_percent(octets)}"
    charset = "utf-8''"
    return "; ".join(
        f"{name}*{n}*={charset if n == 0 else ''}{_percent(section)}"
        for n, section in enumerate(sections)
    )


def _percent(octets: bytes) -> str:
    return "".join(
        chr(octet) if chr(octet) in _ATTRIBUTE_CHARS else f"%{octet:02X}" for octet in octets
    )


def fold(name: str, value: str) -> str:
    """The field ``name: value`` as lines of at most :data:`FOLD_AT` characters where
    its words allow, each ending CR LF: a line break goes in before white space of
    ``value`` (RFC 5322 §2.2.3), never elsewhere, so unfolding restores ``value``. A
    value that starts with a word gets one space after the colon."""
    line = f"{name}:"
    if value[:1] not in (" ", "\t", ""):
        value = " " + value
    lines = []
    limit = MAX_LINE  # the first word stays beside the name where it can: readers
    for piece in _WORD.findall(value):  # keep white space folded in before it
        if len(line) + len(piece) > limit and line.strip(" \t"):
            lines.append(line)
            line = ""
        line += piece
        limit = FOLD_AT
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"
