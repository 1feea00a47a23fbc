"""The base of :class:`~smtpcore.handler.Session` and
:class:`~smtpcore.maildrop.POP3Session`: what few sessions ever hold.

Both kinds of session share these lazily set slots and the properties that read
them, so they live apart from either session's own fields.
"""

from __future__ import annotations

from typing import Any


class _RarelySet:
    """What few sessions ever hold, kept out of ``__init__``: slots set the first time
    they are needed, read through properties that make up for an unset one. An idle
    server holds thousands of sessions, and opens one per connection; each that never
    needs these spends neither the time to set them nor an empty dictionary (64 bytes).
    Not dataclass fields, they stay out of the repr and ``dataclasses.replace``, as
    the application's own state should; pickling keeps them."""

    __slots__ = ("_extra", "_peer_stands_in_for")
    _extra: dict[str, Any]
    _peer_stands_in_for: str
    peer: tuple[str, int] | None  # each session's own field

    @property
    def extra(self) -> dict[str, Any]:
        """Room for the application's own state about this session."""
        try:
            return self._extra
        except AttributeError:
            extra: dict[str, Any] = {}
            self._extra = extra
            return extra

    @extra.setter
    def extra(self, value: dict[str, Any]) -> None:
        self._extra = value

    @property
    def peer_stands_in_for(self) -> str | None:
        """Set when ``peer`` is the address of the trusted proxy the client came
        through, whose PROXY header named the client by no address (proxy-protocol.txt
        §2.1 ``UNKNOWN``, §2.2 ``LOCAL`` or the UNIX family): that client as the log
        names it, ``unix:<path>`` (a Unix socket's, escaped) or ``unknown``. The log
        then never names the proxy alone as the client (``unknown via proxy
        [192.0.2.1]:4000``), so that fail2ban cannot ban the proxy for it. None for
        every other session."""
        try:
            return self._peer_stands_in_for
        except AttributeError:
            return None

    @peer_stands_in_for.setter
    def peer_stands_in_for(self, value: str | None) -> None:
        if value is not None:
            self._peer_stands_in_for = value
        elif hasattr(self, "_peer_stands_in_for"):  # XCLIENT named the client
            del self._peer_stands_in_for

    @property
    def client_address(self) -> str | None:
        """The client's IP address, to judge it by (relaying: :meth:`Router.route
        <smtpcore.routing.Router.route>`'s ``client_address``; access lists): ``peer``'s,
        or None when the client is unknown. It is unknown when a trusted proxy's PROXY
        header named none (``UNKNOWN``, ``LOCAL``, a Unix socket's path:
        ``peer_stands_in_for`` is set, and ``peer`` is the proxy's own address, which
        this never is: a proxy on loopback would make each such client a loopback
        one, which ``Router``'s default ``trusted_networks`` trusts), when an SMTP
        client's XCLIENT called its address unavailable, and on a Unix-socket
        listener. An XCLIENT proxy that named no ``ADDR`` is its own client here."""
        peer = self.peer
        if peer is None or self.peer_stands_in_for is not None:
            return None
        return peer[0]
