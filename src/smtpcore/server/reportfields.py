"""How a report's status fields quote what an exchanger said (RFC 3464 §2.3.6, RFC 3461
§9.2): apart from the report's assembly, so that the grammar of these fields reads in
one place."""

from __future__ import annotations

import re

__all__ = ["diagnostic_field"]


_CODE: re.Pattern[str] = re.compile(r"[2-5][0-9][0-9]-")


def diagnostic_field(kind: str, text: str) -> list[str]:
    """The ``Diagnostic-Code`` field for ``text``, one line of text already fit for a
    field (no line breaks, within 998 octets), as the lines of the field. An SMTP
    reply of several lines, transcribed as :func:`~smtpcore.server.exchanger.reply_text`
    writes it (``550-first 550 last``), is folded before each of its lines after the
    first, as RFC 3461 §9.2 shows: unfolded, the field is ``text`` again; a fold only
    ever comes before a space (RFC 5322 §2.2.3), so no line of it gets longer."""
    if kind != "smtp" or _CODE.match(text) is None:
        return [f"Diagnostic-Code: {kind}; {text}"]
    head, *rest = re.split(f" (?={text[:3]}[- ])", text)
    return [f"Diagnostic-Code: {kind}; {head}", *(f" {line}" for line in rest)]
