"""Whether a transaction the player wrote can have a recipient when DATA is answered.

RFC 5321 §3.3 and §4.1.4: DATA with no recipient accepted is refused, 503 or
554. A server that answers it 354 reads the commands that follow as content,
so the play would end on a reply that never comes; seen at the 354, the
defect is named for what it is. Lines the player cannot read (hostile bytes)
answered 2xx are counted as recipients the server may have taken, so that a
correct, lenient server is never blamed.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpcore.smtp import (
    Bdat,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Helo,
    Lhlo,
    Mail,
    Rcpt,
    Rset,
    StartTls,
)

__all__ = ["RecipientsSeen"]

_RESETS = (Mail, Rset, Ehlo, Helo, Lhlo, StartTls, EndOfMessage)
"""Lines after which no recipient is held, whatever their answer (RFC 5321 §4.1.4)."""


@dataclass(slots=True)
class RecipientsSeen:
    """The recipients the server may hold in the transaction so far."""

    possible: int = 0

    def answered(self, line: Event | None, code: int) -> bool:
        """Take ``code`` as the answer to ``line``; False when it is a 354 that no
        recipient could have earned (a DATA accepted with none)."""
        if code == 354 and not self.possible and (line is None or isinstance(line, Data)):
            return False  # a 354 paired with another line is the replies out of step
        if line is None or isinstance(line, Rcpt):
            self.possible += 200 <= code < 300
        elif isinstance(line, _RESETS) or (isinstance(line, Bdat) and line.last):
            self.possible = 0
        return True
