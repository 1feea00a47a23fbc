"""What a POP3 check's result says of the server's lines: each quoted as a bytes repr,
cut short, and the password hidden first, in whatever form the battery sent it.

A result is printed and shared, and a server may say the password back (in an
error, in a listing): every line a POP3 summary quotes, and every transcript kept,
goes through :class:`_QuotesServerLines`, a base class of
:class:`~smtpcore.testing._pop3_probe.POP3Probe`. It is apart from the probe's
sessions because it never touches the wire: it only knows the credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from smtpcore.testing._battery import CheckResult
from smtpcore.testing._hiding import (
    credential_forms,
    hide_in_bytes,
    hide_in_server_reads,
    hide_in_text,
)
from smtpcore.testing._pop3_wire import HIDDEN, POP3Wire
from smtpcore.testing._wire import excerpt_reads

if TYPE_CHECKING:
    from smtpcore.testing._delivery import Delivery

__all__ = ["_QuotesServerLines"]

_WRONG: Final = b"-not-the-password"


def _cut(line: bytes, *, tail: bool = False) -> bytes:
    """``line`` cut at :data:`_SHOWN_OCTETS`, or just past a :data:`HIDDEN` the cut
    would split: ``<hid`` says less than the whole mark. With ``tail``, its last
    :data:`_SHOWN_OCTETS` octets, or from just before a :data:`HIDDEN` the cut would
    split."""
    if not tail:
        mark = line.find(HIDDEN, _SHOWN_OCTETS - len(HIDDEN) + 1, _SHOWN_OCTETS + len(HIDDEN) - 1)
        return line[: mark + len(HIDDEN) if mark >= 0 else _SHOWN_OCTETS]
    edge = max(0, len(line) - _SHOWN_OCTETS)
    mark = line.find(HIDDEN, max(0, edge - len(HIDDEN) + 1), edge + len(HIDDEN) - 1)
    return line[mark if mark >= 0 else edge :]


_SHOWN_OCTETS: Final = 40
_SHOWN_LINES: Final = 4


class _QuotesServerLines:
    """The probe's quoting of server lines and hiding of the credentials, in summaries
    and transcripts; the fields are :class:`~smtpcore.testing._pop3_probe.POP3Probe`'s."""

    user: str
    password: str
    delivery: Delivery | None

    def wrong_password(self) -> bytes:
        """A password the server must refuse: the user's, lengthened (RFC 1939 §7)."""
        return self.password.encode() + _WRONG

    def _credentials(self) -> tuple[bytes, ...]:
        """Every form the password takes on the wire (:func:`credential_forms`), the
        wrong password the battery writes, and the delivery's forms."""
        delivered = tuple(self.delivery.secrets()) if self.delivery else ()
        own = credential_forms(self.user, self.password)
        return (*own, self.wrong_password(), *delivered)

    def hide_credentials(self, result: CheckResult) -> CheckResult:
        """``result`` with :data:`HIDDEN` where a server says the password back, in
        any form the battery sent it, standing as a word: across the reads that cut
        it in the transcript, and as a bytes repr writes it in the summary and the
        notes, which quote server bytes whole, in excerpts and in lists
        (:mod:`~smtpcore.testing._hiding`). What the battery wrote is hidden where it
        wrote it (:meth:`POP3Wire.send_login`). Only a word is hidden: a short
        password (``1``) is also part of numbers that say nothing of it. Results are
        printed and shared; the password has no business in them."""
        secrets = self._credentials()
        transcript = tuple(
            replace(entry, note=hide_in_text(entry.note, secrets, HIDDEN)) if entry.note else entry
            for entry in hide_in_server_reads(result.transcript, secrets, HIDDEN)
        )
        summary = hide_in_text(result.summary, secrets, HIDDEN)
        return replace(result, summary=summary, transcript=transcript)

    def lines_said(self, lines: Sequence[bytes]) -> str:
        """``lines``, one or more the server sent, for a summary: how many, then the
        first :data:`_SHOWN_LINES` quoted as bytes reprs without their line ends, the
        password hidden (as :meth:`hide_credentials` hides it) and only then cut at
        :data:`_SHOWN_OCTETS`: cut first, a line would show the start of a password
        it cut through, which hiding the summary no longer finds. Every line a POP3
        summary quotes goes through here. A caller says "no response" in words where
        none came: an empty list printed says nothing a reader can use."""
        quoted = [self.line_said(line) for line in lines[:_SHOWN_LINES]]
        if len(lines) > _SHOWN_LINES:
            quoted.append(f"{len(lines) - _SHOWN_LINES} more")
        count = "1 line" if len(lines) == 1 else f"{len(lines)} lines"
        return f"{count} ({', '.join(quoted)})"

    def line_said(self, line: bytes, *, tail: bool = False) -> str:
        """One line the server sent, for a summary: a bytes repr without its line end,
        the password hidden, then cut (:meth:`lines_said`). With ``tail``, its last
        octets, line end kept: where what is wrong is how the line ends (a bare LF in
        a message, ``dot-stuffing``), hidden first and cut after, as ever."""
        hidden = hide_in_bytes(line, self._credentials(), HIDDEN)
        return repr(_cut(hidden, tail=True) if tail else _cut(hidden.rstrip(b"\r\n")))

    def keep_little_of(self, client: POP3Wire) -> None:
        """Keep of ``client``'s reads, a session ended whose reads no longer matter (a
        look that found nothing new), the first and last octets of each
        (:func:`~smtpcore.testing._wire.excerpt_reads`), the password hidden first
        as in :meth:`hide_credentials`: the transcript of a check of many sessions is
        then bounded by one session's :data:`~smtpcore.testing._wire.MAX_RECEIVED`,
        not by that times their number, and no verdict changes."""
        hidden = hide_in_server_reads(client.transcript, self._credentials(), HIDDEN)
        client.transcript[:] = excerpt_reads(hidden)
