"""An exchanger's words as the relay keeps them: each reply transcribed on one line
(RFC 3461 §9.2), its enhanced status found, and any text cut to :data:`MAX_KEPT_TEXT`
characters. Apart from the session because the queue, the log, the reports and the
tools keep and read these texts too."""

from __future__ import annotations

import itertools
import re
from typing import Final

from smtpcore.smtp import Reply

__all__ = [
    "MAX_KEPT_TEXT",
    "kept_text",
    "reply_dsn",
    "reply_text",
    "transcribe",
    "while_sending_end_of_data",
]

MAX_KEPT_TEXT: Final = 2048
"""The most characters of an exchanger's words the relay keeps, for one recipient's
reply or one session's error: what its queue file, its log line, ``queue list`` and a
report hold (a report's Diagnostic-Code is cut further, to 900 octets). A reply may
run to 100 lines of 4,096 octets (the client's limits), and a hostile hop gave each
of 100 recipients one: 40 MB of envelope and of log for a 149-octet message. Postfix
keeps 2,048 octets of a multi-line reply (``var_line_limit`` in ``smtp_chat_resp``),
"to defend against a denial of service attack"."""


def kept_text(text: str, tail: str = "") -> str:
    """``text`` as the relay stores and logs it: whole when it fits in
    :data:`MAX_KEPT_TEXT` characters, else its start (the first line or lines of a
    reply, where the code, status and reason are) and ``[... N more characters]``, in
    :data:`MAX_KEPT_TEXT` characters all told; ``tail``, kept whole, after it and
    within that count (what the relay says of the text, never to be cut off)."""
    kept = _kept_length(len(text), MAX_KEPT_TEXT - len(tail))
    kept_start = text if kept == len(text) else text[:kept] + _cut_mark(len(text) - kept)
    return kept_start + tail


def _kept_length(length: int, room: int = MAX_KEPT_TEXT) -> int:
    """How many characters :func:`kept_text` keeps of a text of ``length`` in ``room``."""
    if length <= room:
        return length
    return max(room - len(_cut_mark(length)), 0)  # the mark can only get shorter


_SENT_MORE_THAN_ONCE: Final = " while sending end of data -- message may be sent more than once"


def while_sending_end_of_data(why: str) -> str:
    """``why`` a session ended, for one that ended while an end of data (the final dot,
    or BDAT LAST) was unanswered: the exchanger may have taken the message, and the
    retry sends it again (RFC 5321 §6.1). Postfix's words (``lost connection with HOST
    while sending end of data -- message may be sent more than once``), kept whole
    however long ``why`` is; the one wording of the relay's lines and of a stop's."""
    return kept_text(why, _SENT_MORE_THAN_ONCE)


def _cut_mark(cut: int) -> str:
    return f" [... {cut} more characters]"


def reply_text(reply: Reply) -> str:
    """The reply as one line of text, cut to :func:`kept_text`: the exchanger's own
    words (RFC 3464 §2.3.6), as the relay keeps them for a recipient. Each line is
    written as it came, code and status first (``550-5.1.1 ...`` then ``550 5.1.1
    ...`` for the last), the lines joined by spaces: RFC 3461 §9.2's transcription of a
    multi-line reply, unfolded, as Postfix logs and reports one."""
    return transcribe(reply)[0]


def transcribe(reply: Reply) -> tuple[str, tuple[int, ...]]:
    """:func:`reply_text`, and where in it the reply's lines meet: the offset of the
    space before each line after the first, up to the cut. The text alone cannot tell
    (a line may say `` 550 `` itself, or hold a TAB a report writes as a space), so
    these go with it into the queue, for a report to fold its ``Diagnostic-Code`` at
    the reply's own lines."""
    status = f"{reply.status} " if reply.status is not None else ""
    last = len(reply.lines) - 1
    lines = [
        f"{reply.code}{' ' if index == last else '-'}{status}{line}".rstrip()
        for index, line in enumerate(reply.lines)
    ]
    whole = " ".join(lines)
    kept = _kept_length(len(whole))
    breaks = list(itertools.accumulate(len(line) + 1 for line in lines[:-1]))
    return kept_text(whole), tuple(end - 1 for end in breaks if end - 1 < kept)


_STATUS_TEXT: Final = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s|$)")


def reply_dsn(reply: Reply) -> str:
    """The reply's enhanced status; from its text when the server did not announce
    ENHANCEDSTATUSCODES but wrote one anyway, as many do; else ``X.0.0``."""
    if reply.status is not None:
        return str(reply.status)
    match = _STATUS_TEXT.match(" ".join(reply.lines))
    if match is not None and match.group(1) == str(reply.code)[0]:
        return match.group(0).strip()
    return f"{reply.code // 100}.0.0"
