"""The mechanism a ``Content-Transfer-Encoding`` field names (RFC 2045 §6.1), read as
the email package reads it, in one pass.

The field is structured (RFC 822 §3.1.4): comments, nested, may come before and after
the mechanism, and anything after its first token is not part of it (``8bit (sent by
Foo)``, ``8bit;``). The email package's own reading (``header_factory``) is what
readers of the message go by, but it slices the value at each step of a comment: about
150 ms for 8 KB of nested comments, which a message can repeat in every one of its
parts. This reading finds the same token with a regular expression a comment mark;
``tests/test_server_encoding_field.py`` holds the two equal.
"""

from __future__ import annotations

import functools
import re
from typing import Final

_SPACES: Final = re.compile(r"[ \t]\s*")
"""Folding white space as the email package reads it (``get_fws``): a space or a tab
starts it, and it takes every white space character after."""

_COMMENT_MARK: Final = re.compile(r"[()\\]")
"""What changes a comment's depth: its parentheses, and a backslash, which quotes the
character after it (a quoted-pair, RFC 5322 §3.2.1)."""

_TOKEN: Final = re.compile(r'[^ \t()<>@,:;\\"\[\]/?=]+')
"""A token (RFC 2045 §5.1): up to a space, a tab or a tspecial, as the email package
ends one (``TOKEN_ENDS``); other controls are in it."""


@functools.lru_cache(maxsize=256)
def transfer_encoding(value: bytes) -> str:
    """The mechanism, lower case; ``7bit`` where the value names none (RFC 2045 §6.1:
    an absent or empty one is ``7bit``). Octets outside ASCII read as U+FFFD, as
    :mod:`smtpcore.server.downgrade` decodes every field it reads. Remembered: the parts
    of a message mostly say the same."""
    text = value.decode("ascii", "replace")
    token = _TOKEN.match(text, _past_comments(text))
    return "7bit" if token is None else token.group().strip().lower()


def _past_comments(text: str) -> int:
    """Where the first token may start: past spaces, tabs and comments. The text's end
    inside a comment ends it (the email package's ``get_comment``)."""
    at, depth = 0, 0
    while at < len(text):
        if depth == 0:
            if spaces := _SPACES.match(text, at):
                at = spaces.end()
            if not text.startswith("(", at):
                return at
            at, depth = at + 1, 1
            continue
        mark = _COMMENT_MARK.search(text, at)
        if mark is None:
            return len(text)
        at = mark.end()
        if mark.group() == "\\":
            at += 1
        else:
            depth += 1 if mark.group() == "(" else -1
    return at
