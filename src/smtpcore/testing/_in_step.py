"""Which line each SMTP reply answers, and the replies no correct server gives it.

:func:`~smtpcore.testing.play_smtp_session` pairs the replies it reads with the
lines it wrote, in order. When a server sends a reply too many, written apart
from the one before, it can arrive after the player looked for replies already
waiting: it is taken for the next line's, and every later reply is one behind.
Nothing in the timing shows it; a reply that cannot answer the line it is paired
with does. Only pairings that are impossible for a correct server count (RFC
5321 §4.3.2, RFC 4954 §4, RFC 3207 §4, Postfix's XCLIENT_README), never a merely
unusual one: 354 to anything but DATA, 334 or 235 to anything but AUTH or a line
read as an answer to a 334 challenge, 220 to anything but STARTTLS or XCLIENT.
Left out because a correct server does give them: 221 to a command other than
QUIT (Postfix answers its ``smtpd_forbidden_commands`` so, then closes), 250 to
DATA or QUIT, any 4yz or 5yz (421 may answer anything).

A line is judged only where the player knows how the server reads it: a line
that holds hostile bytes, or the end of one command and the start of another,
may be anything, and after something a correct server may frame otherwise than
the player (a hostile line that starts DATA or BDAT, DATA content pipelined
before its 354, a BDAT the server does not know) no later line is judged.

LMTP changes none of this: its one reply per accepted recipient at the end of
content (RFC 2033 §4.2) is 250 or a 4yz or 5yz, none of which is judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from smtpcore.smtp import (
    Auth,
    AuthResponse,
    Bdat,
    Data,
    EndOfMessage,
    Event,
    MessageData,
    StartTls,
    Xclient,
)
from smtpcore.smtp._commands import format_command
from smtpcore.testing._accepted import ends_message
from smtpcore.testing._group_bytes import pieces

__all__ = ["ONLY_ANSWERS", "Line", "Lines", "Pairing", "impossible", "shown"]

ONLY_ANSWERS: Final[Mapping[int, tuple[tuple[type[Event], ...], str]]] = {
    220: ((StartTls, Xclient), "RFC 3207 §4; XCLIENT_README"),
    235: ((Auth, AuthResponse), "RFC 4954 §4"),
    334: ((Auth, AuthResponse), "RFC 4954 §4"),
    354: ((Data,), "RFC 5321 §4.3.2"),
}
"""Reply codes a correct server gives to some lines only, with the lines (besides the
greeting, and for 334 and 235 any line after a 334) and where that is said."""

_SASL: Final = frozenset({235, 334})
"""Codes that answer any line read as an answer to a 334 challenge (RFC 4954 §4)."""
_UNKNOWN_VERBS: Final = (500, 502)
"""A BDAT answered so is one the server does not know: its chunk is read as lines."""

Line = Event | None
"""What a reply answers as the server reads it: a command (an AUTH answer, the end of
DATA content, a BDAT and its chunk), or None where the player cannot tell."""


def shown(line: Line) -> str:
    """``line`` as a reader of a failure wants it."""
    if line is None:
        return "a line holding hostile bytes"
    if isinstance(line, EndOfMessage):
        return "the end of the message's content"
    if isinstance(line, AuthResponse):
        return "an answer to a 334 challenge"
    text = format_command(line).decode("utf-8", "replace").rstrip("\r\n")
    text = text if len(text) <= 60 else text[:59] + "…"
    return f"{text} and its chunk" if isinstance(line, Bdat) and line.size else text


def _line(items: Sequence[Event | bytes]) -> Line:
    """What the items of one line are to the server, or None if it cannot be told."""
    events = [item for item in items if not isinstance(item, bytes)]
    if not items or len(events) < len(items):
        return None
    head, *rest = events
    if not rest:
        return None if isinstance(head, MessageData) else head
    content = all(isinstance(item, MessageData) for item in rest[:-1])
    if isinstance(head, Bdat) and content and isinstance(rest[-1], MessageData):
        return head
    if isinstance(head, MessageData) and content and isinstance(rest[-1], EndOfMessage):
        return rest[-1]
    return None


def _changes_framing(line: bytes) -> bool:
    """Whether a hostile line may make a correct server read what follows as content
    or a chunk: one whose verb is DATA or BDAT (verbs are case-insensitive, RFC 5321
    §2.4), a space before it allowed, as a lenient server may."""
    return line.lstrip()[:4].upper() in (b"DATA", b"BDAT")


def refused_as_a_web_request(line: bytes) -> bool:
    """Whether Postfix's smtpd answers ``line`` with ``221`` and closes: its
    ``smtpd_forbidden_commands`` name an HTTP or proxy request (``GET``, ``POST``,
    ``CONNECT``) and a command that starts with no letter."""
    words = line.split(maxsplit=1)
    if not words:
        return False
    verb = words[0].upper()
    return verb in (b"GET", b"POST", b"CONNECT") or not verb[:1].isalpha()


@dataclass(slots=True)
class Lines:
    """The lines written so far, as the server reads them, across groups: a line a
    group leaves open ends in the next one."""

    written: list[Line] = field(default_factory=list)
    """What each reply due answers, in order."""
    judging: bool = True
    """False once something was written that a correct server may frame otherwise."""
    web_requests: set[int] = field(default_factory=set)
    """Where in :attr:`written` a line the player cannot read is one a server may end
    the session for (:func:`refused_as_a_web_request`)."""
    message_ends: list[int] = field(default_factory=list)
    """How many message ends (:func:`~smtpcore.testing._accepted.ends_message`) each
    line in :attr:`written` holds: the reply to it is theirs."""
    _open: list[Event | bytes] = field(default_factory=list)
    _open_bytes: bytearray = field(default_factory=bytearray)

    def write(self, group: Sequence[Event | bytes]) -> list[Line]:
        """Take the group written; what each reply it makes due answers."""
        lines: list[Line] = []
        data_written = False
        for item, piece, answered in pieces(group):
            if isinstance(item, MessageData | EndOfMessage) and data_written:
                self.judging = False  # content before its 354: a refused DATA reads it
            data_written |= isinstance(item, Data)
            self._open.append(item)
            self._open_bytes += piece
            if answered:
                line = _line(self._open)
                if line is None and self._may_change_framing():
                    self.judging = False
                if line is None and refused_as_a_web_request(bytes(self._open_bytes)):
                    self.web_requests.add(len(self.written) + len(lines))
                lines.append(line)
                self.message_ends.append(sum(map(ends_message, self._open)))
                self._open, self._open_bytes = [], bytearray()
        self.written += lines
        return lines

    def _may_change_framing(self) -> bool:
        """Whether the open line, which cannot be told, may make a correct server read
        what follows otherwise than the player: a hostile DATA or BDAT line, hostile
        bytes joined with content, or commands and content joined in a way no session
        writes them."""
        items = self._open
        if not any(isinstance(item, bytes) for item in items):
            return True
        if any(isinstance(item, Data | Bdat | MessageData | EndOfMessage) for item in items):
            return True
        return _changes_framing(bytes(self._open_bytes))

    def answered(self, line: Line, code: int) -> None:
        """Take ``code`` as the answer to ``line``."""
        if isinstance(line, Bdat) and code in _UNKNOWN_VERBS:
            self.judging = False


@dataclass(frozen=True, slots=True)
class Pairing:
    """A reply that cannot answer the line it was paired with."""

    code: int
    line: Line
    owed_before: bool
    """Whether a line written after it in its group could take it: a reply owed
    before it did not come. Otherwise one before it was owed to no command."""
    could_be_owed: bool
    """Whether any line written could take it."""

    def reason(self, where: str) -> str:
        """Why the play stops, the reply being in the answers to ``where``."""
        cite = ONLY_ANSWERS[self.code][1]
        said = (
            f"replies out of step: {self.code} answered {shown(self.line)} in {where},"
            f" a reply no correct server gives it ({cite})"
        )
        if self.owed_before:
            return f"{said}; a reply owed before it did not come"
        if self.could_be_owed:
            return f"{said}; a reply before it was owed to no command"
        return f"{said}; no line written could be owed it"


def impossible(lines: Lines, index: int, code: int, previous: Sequence[int]) -> Pairing | None:
    """The pairing of reply ``code`` with ``lines.written[index]`` if no correct server
    makes it, else None. The lines after it are those of its own group: the player
    reads a group's replies before it writes the next. ``previous`` are the codes of
    the replies read just before it (334 among them: the server read the line as an
    answer to a challenge)."""
    if not lines.judging or code not in ONLY_ANSWERS:
        return None
    line = lines.written[index]
    if line is None:
        return None
    takers = ONLY_ANSWERS[code][0]
    if isinstance(line, takers) or (code in _SASL and 334 in previous):
        return None

    def could_take(other: Line) -> bool:
        return other is None or isinstance(other, takers)

    owed_before = any(could_take(other) for other in lines.written[index + 1 :])
    could_be_owed = owed_before or any(could_take(other) for other in lines.written[:index])
    return Pairing(code, line, owed_before, could_be_owed)
