"""Which of a played session's messages the server accepted, refused, or left unknown.

A fuzzing property wants "what the server stored is what it accepted", exactly,
and a server may lawfully refuse a drawn message (a line too long, a bare LF, a
size over its limit). So :func:`~smtpcore.testing.play_smtp_session` pairs the
reply to each message's end (DATA's final dot, ``BDAT ... LAST``) with that
message, and gives each message one of three fates:

- accepted: its end got a 250 (RFC 5321 §4.1.1.4 and §4.3.2, RFC 3030 §2) in a
  transaction whose MAIL got a 2yz, at least one RCPT a 2yz, and every BDAT chunk
  before it a 2yz, none of them written before that MAIL;
- refused: its end got a 4yz or 5yz, or it was never written whole (DATA got no
  354, so its content was left out; the play ended before its end);
- unknown: anything the play cannot vouch for: its end was written and its reply
  not read in step (missing, the session ended before it, its group's replies
  out of step), a 250 where the transaction above was not whole, held a chunk
  written before its MAIL (left from a transaction reset or failed) or a line the
  player cannot read accepted inside it, or a reply that is neither 250 nor
  4yz/5yz (another 2yz, such as a 221, says nothing of the message; a garbled
  line). A single reply owed to no command anywhere in the play may have put
  every later pairing a step behind, so then every message written is unknown.

SMTP only: an LMTP end of content owes one reply per accepted recipient
(RFC 2033 §4.2), which the player does not play.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from smtpcore.smtp import Bdat, Ehlo, EndOfMessage, Event, Helo, Mail, Rcpt, Rset, StartTls

__all__ = ["Fate", "MessageFates", "ends_message", "stored_content"]


class Fate(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNKNOWN = "unknown"


def ends_message(item: object) -> bool:
    """Whether ``item`` is the end of a message's content (the reply to it says
    whether the message was taken)."""
    return isinstance(item, EndOfMessage) or (isinstance(item, Bdat) and item.last)


def stored_content(content: bytes, *, by_data: bool) -> bytes:
    """What a correct server stores for a message's ``content``: DATA content not
    ending in CRLF goes on the wire with a CRLF before the final dot, which ends its
    last line (RFC 5321 §4.1.1.4) and so is content; BDAT octets are stored as sent."""
    if by_data and content and not content.endswith(b"\r\n"):
        return content + b"\r\n"
    return content


def _fate_of(code: int) -> Fate:
    if 200 <= code < 300:
        return Fate.ACCEPTED
    return Fate.REFUSED if 400 <= code < 600 else Fate.UNKNOWN


def _end_fate(code: int) -> Fate:
    """Only 250 takes a message (RFC 5321 §4.3.2, RFC 3030 §2): another 2yz to its
    end (a 221, say) answers some other line, so the message's fate is unknown."""
    return Fate.ACCEPTED if code == 250 else Fate.UNKNOWN if code < 400 else _fate_of(code)


_STARTS_OVER = (Rset, Ehlo, Helo, StartTls)
"""Commands that, accepted, end any transaction (RFC 5321 §4.1.1.5, §4.1.4; RFC 3207 §4.2)."""


@dataclass(slots=True)
class _Transaction:
    """What the replies read so far say of the open mail transaction."""

    mail: bool = False
    recipients: int = 0
    doubt: bool = False
    """A reply the transaction cannot be judged by: a chunk refused, a line the
    player cannot read accepted, a garbled reply to MAIL or RCPT, a chunk of the
    message written before its MAIL."""
    chunks: bool = False
    """A BDAT chunk was answered since the last message end: its octets are part of
    the next message's drawn content, stored by no server if a MAIL comes after it."""

    def whole(self) -> bool:
        return self.mail and self.recipients > 0 and not self.doubt

    def answered(self, line: Event | None, fate: Fate) -> None:
        """Take the reply (as its fate) to ``line``, which ends no message."""
        self.chunks |= isinstance(line, Bdat)
        if fate is Fate.REFUSED:  # a refused command changes nothing (RFC 5321 §4.1.1)
            if isinstance(line, Bdat):
                self.doubt = True  # RFC 3030 §2: the transaction failed
            return
        if fate is Fate.UNKNOWN:
            self.doubt |= line is None or isinstance(line, (Mail, Rcpt, Bdat, *_STARTS_OVER))
            return
        if isinstance(line, Mail):
            self.mail, self.recipients, self.doubt = True, 0, self.chunks
        elif isinstance(line, Rcpt):
            self.recipients += 1
        elif isinstance(line, _STARTS_OVER):
            self.mail, self.recipients, self.doubt = False, 0, False
        elif line is None:
            self.doubt = True  # it may have been MAIL, RCPT or RSET to the server


@dataclass(slots=True)
class MessageFates:
    """The fate of each message of a session, taken from the replies as they are read."""

    count: int
    """How many messages the session holds (``len(ClientSession.messages)``)."""
    ends: int = 0
    """Message ends written whole or left out so far: the next message's index."""
    fates: dict[int, Fate] = field(default_factory=dict)
    never_written: set[int] = field(default_factory=set)
    _transaction: _Transaction = field(default_factory=_Transaction)
    _group: dict[int, Fate] = field(default_factory=dict)
    """Fates from the replies of the group being read, taken once it is whole."""

    def left_out(self, items: Sequence[object]) -> None:
        """Take the head of a group the player did not write: its messages are refused."""
        for item in items:
            if ends_message(item):
                self.never_written.add(self.ends)
                self.ends += 1

    def written(self, ends: int) -> int:
        """Count a line written whole that holds ``ends`` message ends; the index of
        its first."""
        first, self.ends = self.ends, self.ends + ends
        return first

    def answered(self, line: Event | None, first_end: int, ends: int, code: int) -> None:
        """Take reply ``code`` to ``line``, which holds ``ends`` message ends from the
        ``first_end``-th message on."""
        if not ends:
            self._transaction.answered(line, _fate_of(code))
            return
        fate = _end_fate(code)
        if ends > 1 or (fate is Fate.ACCEPTED and not self._transaction.whole()):
            fate = Fate.UNKNOWN
        for index in range(first_end, first_end + ends):
            self._group[index] = fate
        self._transaction = _Transaction()  # the end of content ends the transaction

    def group_read(self, *, trusted: bool) -> None:
        """The group's replies are read: take their fates if ``trusted`` (all came in
        step, or the server ended the session after them), else leave them unknown."""
        if trusted:
            self.fates.update(self._group)
        self._group.clear()

    def indexes(self, fate: Fate, *, surplus: bool) -> tuple[int, ...]:
        """The messages (indexes in the session's) whose fate is ``fate``: one never
        written whole is refused, one written and not judged unknown, and every one
        written is unknown where ``surplus`` (a reply owed to no command was read)."""
        return tuple(index for index in range(self.count) if self._fate(index, surplus) is fate)

    def _fate(self, index: int, surplus: bool) -> Fate:
        if index in self.never_written or index >= self.ends:
            return Fate.REFUSED
        if surplus:
            return Fate.UNKNOWN
        return self.fates.get(index, Fate.UNKNOWN)
