"""One string for every session from the same peer address, at a bounded cost.

Many idle sessions from one client would each hold their own copy of its host
string; sharing them saves that. ``sys.intern`` would share them too, but an
interned string lives as long as the process on CPython 3.12.0 and 3.12.1
(gh-113993), one string more for every client that ever came. This cache holds
at most :data:`PEER_HOSTS_KEPT` of them and starts over when full.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PEER_HOSTS_KEPT", "shared_peer_host"]

PEER_HOSTS_KEPT: Final = 256
"""The most peer host strings kept for sharing (a few hundred: the busy clients)."""

_hosts: dict[str, str] = {}


def shared_peer_host(host: str) -> str:
    """``host``, or the equal string an earlier session from that address got."""
    shared = _hosts.get(host)
    if shared is None:
        if len(_hosts) >= PEER_HOSTS_KEPT:
            _hosts.clear()
        _hosts[host] = shared = host
    return shared
