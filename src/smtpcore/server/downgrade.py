"""The 7-bit form of a queued 8-bit message, for an exchanger without 8BITMIME.

RFC 6152 §3: a server that cannot send 8-bit content on "must either return the
message as undeliverable or convert it to 7-bit". Returning is no answer for mail
from the null sender (a report, which gets none, RFC 5321 §4.5.5), and a needless
bounce for the rest; so, as Postfix does by default, the relay converts: each leaf
part (RFC 2046) whose body holds 8-bit octets goes quoted-printable (RFC 2045
§6.7), its ``Content-Transfer-Encoding`` rewritten, and a multipart or
``message/rfc822`` labelled ``8bit`` or ``binary`` becomes ``7bit`` once its
insides are 7-bit (RFC 2045 §6.4). A message with no MIME at all becomes a
``text/plain; charset=unknown-8bit`` one (RFC 1428 §3).

A ``message/global`` or ``message/global-headers`` part whose enclosed header
holds UTF-8 (a report relayed from another MTA, RFC 6533 §6) has no 7-bit header,
but may itself be encoded (RFC 6532 §3.5): it goes quoted-printable whole, as a
leaf. Every other enclosed message is converted inside, never encoded (RFC 2046
§5.2.1). Only these types, ``message/rfc822`` and ``message/news`` (an article,
a message) enclose a message (sendmail's mime8to7 recurses into ``message/rfc822``
alone): a ``message/partial`` body is a fragment, a ``message/external-body`` one
a reference, both 7bit only (RFC 2046 §5.2.2, §5.2.3), and another ``message``
type is opaque (RFC 2046 §5.2.4), encoded only where its definition allows (RFC 2045
§6.4 as RFC 6532 §3.5 relaxes it), so 8-bit octets in any of them have no 7-bit
form (as sendmail refuses them). Nor have they under a ``multipart/signed``, whose
octets are the signed ones (RFC 1847 §2.1): its parts go as they are or not at all.

A report's status part (``message/delivery-status``,
``message/disposition-notification`` and their ``global`` forms) encloses no message
but blocks of fields: a leaf, quoted-printable whole where it is a ``global`` one
with UTF-8 fields (RFC 6533 §6.1, §7), else 7-bit only (RFC 3464 §2.1, RFC 8098
§3.1).

What has no 7-bit form is :class:`NotConvertible`: 8-bit octets in a header
field (RFC 2047 encoded words need a charset the message does not name), in a
part already encoded (a quoted-printable or base64 body holds no 8-bit octet),
in a 7-bit status part or another part never rewritten (above), or outside any
part (a preamble or an epilogue); and a line over 998 octets (RFC 5321 §4.5.3.1.6)
in the same places (a lenient queue may hold one; no 7-bit hop takes it). A leaf
with no transfer encoding (``7bit``, ``8bit``, ``binary`` or none) that holds such a
line goes quoted-printable, as for 8-bit octets: its encoded lines are at most 76
characters, and decode to the line as it was. A message nested deeper than
:data:`MAX_NESTING`, of more than :data:`MAX_PARTS` parts or of more than
:data:`MAX_PIECES` pieces read one at a time (header lines, body lines cut at a bare
LF) is :class:`NotConvertible` too: each costs the conversion, on every delivery
attempt, however few its octets.

The message is read twice, a block at a time, so that memory holds a block whatever
its size: :func:`plan_seven_bit` walks it once to find what to convert (one bit
per MIME part), whether it can be, and the size of the converted form;
:class:`SevenBitReader` walks it again, writing the converted form as it is read.
Both walks share one parser, :func:`~smtpcore.server._downgrade_parser._events`, which
decides at a message part's header whether it encloses a message or is encoded whole, by
reading the enclosed header ahead and back. Lines are at most 998 octets and CRLF in
8BITMIME content (RFC 5321 §4.5.3.1.6); a longer one (binary content) is read in pieces
of :data:`READ_LIMIT` octets.

The parser steps line by line only where a line can change what follows: in a
header, and at a delimiter of an enclosing multipart (RFC 2046 §5.1.1; a line that
starts with ``--`` and delimits none stays in its run, for a dict lookup). The body
lines between, whole lines of at most 998 octets with no bare CR or LF, go by as one run
(:class:`~smtpcore.server._downgrade_scanner._Scanner`): checked, measured and encoded a
run at a time with C-level searches and ``binascii``, to the same octets the
line-by-line encoder writes (:func:`~smtpcore.server._quoted.quoted_run`).

This module is the conversion's public face; each part has a module of its own: the
bounds (``_downgrade_limits``), the scanner (``_downgrade_scanner``), the MIME part
model and its events (``_downgrade_parts``), the parser (``_downgrade_parser``), the
first walk (``_downgrade_plan``), what an event is written as (``_downgrade_rewrite``)
and the second walk (``_downgrade_reader``).

The bounds named here are ``_downgrade_limits``'s, imported by the modules that apply
them: :data:`MAX_FIELD`, :data:`MAX_NESTING`, :data:`MAX_PARTS` and :data:`MAX_PIECES`
by ``_downgrade_parser``, :data:`MAX_BOUNDARY` by ``_downgrade_parts``,
:data:`READ_LIMIT` by ``_downgrade_parser`` and ``_downgrade_scanner``, :data:`MAX_LINE`
by those two and ``_downgrade_plan``. Each holds its own binding, so setting a name on
this module (as tuning a bound by patching ``downgrade.MAX_PARTS`` did before the split)
changes nothing the conversion reads.
"""

from __future__ import annotations

from smtpcore.server._downgrade_limits import (
    MAX_BOUNDARY,
    MAX_FIELD,
    MAX_LINE,
    MAX_NESTING,
    MAX_PARTS,
    MAX_PIECES,
    READ_LIMIT,
    NotConvertible,
)
from smtpcore.server._downgrade_plan import SevenBitPlan, plan_seven_bit
from smtpcore.server._downgrade_reader import SevenBitReader

__all__ = [
    "MAX_BOUNDARY",
    "MAX_FIELD",
    "MAX_LINE",
    "MAX_NESTING",
    "MAX_PARTS",
    "MAX_PIECES",
    "NotConvertible",
    "READ_LIMIT",
    "SevenBitPlan",
    "SevenBitReader",
    "plan_seven_bit",
]
