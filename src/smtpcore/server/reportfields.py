"""How a report's status fields name an exchanger and quote what it said (RFC 3464
§2.3.5, §2.3.6; RFC 3461 §9.2, §9.3): apart from the report's assembly, so that the
grammar of these fields reads in one place."""

from __future__ import annotations

import re
from ipaddress import IPv6Address, ip_address

__all__ = ["diagnostic_field", "mta_name"]


def mta_name(host: str) -> str:
    """``host`` as a ``dns`` mta-name: a domain name, or an IP address as the domain
    literal RFC 5321 §4.1.3 writes (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``), never
    the bare address (RFC 3461 §9.3), which no parser of a domain takes. A smart host
    given as an address is named so; a link-local one's scope (``fe80::1%eth0``) is
    this machine's interface, no part of an address literal, and is left out."""
    try:
        address = ip_address(host)
    except ValueError:
        return host  # a name, or an address literal already
    if isinstance(address, IPv6Address):
        return f"[IPv6:{IPv6Address(int(address))}]"  # rebuilt from its number: no scope
    return f"[{address}]"


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
