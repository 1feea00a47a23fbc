"""Who a connection is from when a proxy may speak for it, the same for every protocol.

A server given ``proxy_protocol_from`` (SMTP or POP3) believes HAProxy's
PROXY header (:mod:`smtpcore.proxy`) only from the proxies it names, and a
server given ``xclient_from`` believes XCLIENT only from those clients: both
are lists of addresses or networks, checked here. The header itself is read
here too, to its last octet and not one more (what follows may be a TLS
handshake); :meth:`~smtpcore._driver._session_opening.SessionOpening._client_from_proxy`
does the rest, whatever the protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Protocol, TypeAlias

from smtpcore._driver._logtext import loggable
from smtpcore._driver._timeouts import as_seconds
from smtpcore._driver._transport import Link
from smtpcore._ip import unmapped
from smtpcore.handler import TLSInfo
from smtpcore.proxy import ProxyHeader, ProxyProtocolError, parse_proxy_header

__all__ = [
    "DEFAULT_PROXY_TIMEOUT",
    "UNKNOWN_CLIENT",
    "Network",
    "SeenClient",
    "client_text",
    "counted_peer",
    "checked_proxy_timeout",
    "ip_peer",
    "networks",
    "peer_text",
    "proxied_tls",
    "read_proxy_header",
    "trusted",
    "unix_peer_text",
    "unnamed_client_text",
]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PROXY_TIMEOUT = 5.0
"""Seconds a trusted proxy has to send its whole PROXY header
(``proxy_protocol_timeout``), as Postfix's ``smtpd_upstream_proxy_timeout`` (5 s) and
Dovecot's ``haproxy_timeout`` (3 s): a proxy writes its header at once, so a header
still incomplete after that is a stalled or hostile peer, not a slow client, and must
not hold a session slot for the greeting's minutes."""


def checked_proxy_timeout(seconds: float) -> float:
    """``proxy_protocol_timeout`` as a float, if it is a wait that ends: more than zero
    seconds and finite (``ValueError`` otherwise, :func:`as_seconds`; a header never
    waited for would refuse every connection, one waited for forever would let a peer
    hold its slot)."""
    timeout = as_seconds("proxy_protocol_timeout", seconds)
    if timeout <= 0:
        raise ValueError(
            f"proxy_protocol_timeout must be a positive number of seconds, not {timeout!r}"
        )
    return timeout


def networks(specs: Sequence[str]) -> tuple[Network, ...]:
    """The networks of ``["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]`` (an address is
    a network of one); ValueError, naming it, for one that is neither."""
    if isinstance(specs, str):
        raise ValueError(f"a list of addresses or networks, not the one string {specs!r}")
    found = []
    for spec in specs:
        try:
            found.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            raise ValueError(f"{spec!r} is not an IP address or network") from None
    return tuple(found)


def trusted(peer: tuple[str, int] | None, nets: Sequence[Network]) -> bool:
    """Whether ``peer``'s IP address is in one of ``nets`` (never for a Unix socket)."""
    if peer is None or not nets:
        return False
    try:
        address = ipaddress.ip_address(unmapped(peer[0]))
    except ValueError:
        return False
    return any(address in network for network in nets)


def ip_peer(peer: tuple[str, int] | None) -> tuple[str, int] | None:
    """``peer`` if it is an IP address (what sessions are counted by), else None."""
    if peer is None:
        return None
    try:
        ipaddress.ip_address(peer[0])
    except ValueError:
        return None
    return peer


def counted_peer(header: ProxyHeader) -> tuple[str, int] | None:
    """The address a session behind a proxy is counted under for
    ``max_sessions_per_address``: the client the header names, and none when it names
    no client by an address (``UNKNOWN``, ``LOCAL``, an unspecified family, a
    datagram transport, a Unix socket's path). The proxy's address is never that
    client's: every client HAProxy's ``unix@`` listener takes comes through it
    (``UNKNOWN`` in version 1, a path in version 2), and counted under it, a few
    of them would fill its share and turn away the next of them, and the proxy's
    own ``LOCAL`` health check, which proxy-protocol.txt §2.2 has the receiver
    accept. ``max_sessions`` still bounds them all."""
    return None if header.source is None else ip_peer(header.source)


def peer_text(peer: tuple[str, int | None] | None) -> str:
    """``[192.0.2.1]:40312`` for the log (what fail2ban's ``<HOST>`` matches); a peer
    that is a UNIX socket's path, which a local user chooses, escaped as the log's
    other fields from a peer are. A port that is unknown is left out, ``[192.0.2.1]``,
    as an unknown peer is ``[unknown]``: the log invents no port (:func:`_known_port`)."""
    if peer is None:
        return "[unknown]"
    host, port = peer
    shown = f"[{host if host.isprintable() else loggable(host)}]"
    return f"{shown}:{port}" if _known_port(port) else shown


def _known_port(port: int | None) -> bool:
    """Whether ``port`` is a client's real source port. None is unknown (XFORWARD
    ``ADDR`` without ``PORT``), and so is 0, reserved (RFC 9293 §3.1, RFC 6335 §6): no
    TCP client sends from it, and a session whose XCLIENT named the ``ADDR`` alone
    holds it in :attr:`~smtpcore.handler.Session.peer`, whose port is an int."""
    return port is not None and port != 0


UNKNOWN_CLIENT = "unknown"
"""How the log names a client the PROXY header says nothing of (v1 ``UNKNOWN``, a v2
``LOCAL`` command or unspecified family)."""


class SeenClient(Protocol):
    """Who a session (or a message) is from, as the log names it."""

    @property
    def peer(self) -> tuple[str, int | None] | None:
        """The client's address and port (None if unknown), or its proxy's (see below)."""
        ...

    @property
    def peer_stands_in_for(self) -> str | None:
        """Set when ``peer`` is the trusted proxy's address, standing in for a client its
        PROXY header named by no address: that client, as the log names it."""
        ...


def client_text(client: SeenClient) -> str:
    """The client as every log line that names it shows it: :func:`peer_text` of its
    address, or, for a client its proxy named by no address,
    ``unix:/run/mua.sock via proxy [192.0.2.1]:4000`` (``unknown via proxy ...``).

    The proxy's address is not the client's: a line ``reject: PASS from
    [<proxy>]:port`` has fail2ban's ``[<HOST>]`` ban the proxy, and every client
    behind it, for one local user's wrong password. Whatever precedes the bracket
    keeps the filter, anchored at ``from [``, from reading the proxy's address."""
    if client.peer_stands_in_for is None:
        return peer_text(client.peer)
    return f"{client.peer_stands_in_for} via proxy {peer_text(client.peer)}"


def unnamed_client_text(header: ProxyHeader) -> str | None:
    """How the log names the client of a PROXY header that names it by no address
    (see :func:`client_text`): ``unix:<path>`` for the UNIX family,
    :data:`UNKNOWN_CLIENT` for a header that names none; None for a header that
    names its address."""
    if header.source is not None:
        return None
    if header.source_path is not None:
        return unix_peer_text(header.source_path)
    return UNKNOWN_CLIENT


def proxied_tls(header: ProxyHeader) -> TLSInfo | None:
    """The client's TLS, as a trusted proxy that terminated it says (its PP2_TYPE_SSL
    field with PP2_CLIENT_SSL set, proxy-protocol.txt §2.2.6), else None. The session
    records it as it records its own handshake's, so that what TLS gates (AUTH in
    plaintext, POP3's ``require_tls``) and what it offers (not STARTTLS or STLS again)
    read it one way, as Dovecot honours the field."""
    tls = header.tls
    if tls is None or not tls.ssl:
        return None
    return TLSInfo(tls.version, tls.cipher, terminated_by_proxy=True)


def unix_peer_text(path: str) -> str:
    """``unix:/run/client.sock`` for the log: a Unix socket's path, which a local user
    chooses, as one word with no bracket in it. A path ``/tmp/x [192.0.2.1]:25`` raw
    would show fail2ban's ``[<HOST>]`` an address; each space, bracket, backslash and
    unprintable character is written as its escape (``\\x20``, ``\\x5b``), so that
    the path still reads back whole."""
    return "unix:" + "".join(map(_path_character_text, path))


def _path_character_text(character: str) -> str:
    """``character`` as :func:`unix_peer_text` shows it: itself, or its escape."""
    if character.isprintable() and not character.isspace() and character not in "[]\\":
        return character
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


async def read_proxy_header(link: Link, timeout: float | None) -> ProxyHeader:
    """The PROXY header at the start of the connection, read within ``timeout``
    seconds, exactly: not an octet of what follows it is taken from ``link``.

    Raises :class:`~smtpcore.proxy.ProxyProtocolError` for a malformed header or a
    connection that ends before its header does, ``TimeoutError`` and ``OSError``
    as the link does.
    """
    data = b""
    async with link.deadline(timeout):
        while not isinstance(header := parse_proxy_header(data), ProxyHeader):
            chunk = await link.receive_some(header)
            if not chunk:
                raise ProxyProtocolError("connection closed inside the PROXY header")
            data += chunk
    return header
