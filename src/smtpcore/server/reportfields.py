"""How a report's status fields name an exchanger and quote what it said (RFC 3464
§2.3.5, §2.3.6; RFC 3461 §9.2, §9.3): apart from the report's assembly, so that the
grammar of these fields reads in one place."""

from __future__ import annotations

from collections.abc import Sequence
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


def diagnostic_field(kind: str, lines: Sequence[str]) -> list[str]:
    """The ``Diagnostic-Code`` field, as the lines of the header it takes, for text
    already fit for one field (no line breaks, within 998 octets) given in ``lines``:
    the pieces a reply's lines make of it (one piece for any other text). The field
    is folded before each piece after the first, as RFC 3461 §9.2 shows for a reply
    of several lines; nowhere else, and no piece is re-split, so the fold lines are
    exactly the reply's (a line whose text says `` 550 `` is not cut there). Unfolded
    (RFC 5322 §2.2.3), the field is ``kind; `` and the pieces joined by spaces; a fold
    only ever replaces a space, so no line gets longer than the unfolded one."""
    if isinstance(lines, str):  # a str is a Sequence[str] too: folded at every character
        raise TypeError("diagnostic_field takes the text's pieces, not one str")
    first, *rest = lines
    return [f"Diagnostic-Code: {kind}; {first}", *(f" {line}" for line in rest)]
