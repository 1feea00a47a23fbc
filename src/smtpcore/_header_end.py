"""Where a message's header ends, by the line ends the wire reads (RFC 5322 §2.1).

A POP3 server sends a stored bare CR or bare LF as CR LF (RFC 1939 §3,
:func:`smtpcore.maildrop.pop3_size`), so a header ends at the first line end that
another line end follows at once: CR LF, CR alone or LF alone, in any mix. Every
reader of a header (the UTF-8 scan, the downgrade, the SMTP envelope) finds its
end here, so that what one takes for header another never takes for body.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["HEADER_END", "header_end"]

HEADER_END: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?=[\r\n])")
"""The line end of a header's last line: one followed by another line end (which
starts with CR or LF). A CR that the octets end on, whose LF may still come, is
matched by a search of everything read, never of a part."""


def header_end(message: bytes) -> int:
    """Octets of ``message``'s header, its last line end included: 0 where the
    message starts with an empty line, all of it where no empty line follows."""
    if message[:1] in (b"\r", b"\n"):
        return 0
    found = HEADER_END.search(message)
    return len(message) if found is None else found.end()
