"""Mechanisms by name, and the client's choice among those a server offers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from smtpcore._words import ascii_upper
from smtpcore.sasl._base_client import ClientMechanism
from smtpcore.sasl._base_server import ServerMechanism
from smtpcore.sasl._channel import TLS_EXPORTER, ChannelBindings
from smtpcore.sasl._crammd5 import CramMD5Client, CramMD5Server
from smtpcore.sasl._oauth import (
    OAuthBearerClient,
    OAuthBearerServer,
    XOAuth2Client,
    XOAuth2Server,
)
from smtpcore.sasl._plaintext import LoginClient, LoginServer, PlainClient, PlainServer
from smtpcore.sasl._scram_client import (
    ScramSHA1Client,
    ScramSHA1PlusClient,
    ScramSHA256Client,
    ScramSHA256PlusClient,
)
from smtpcore.sasl._scram_server import (
    ScramSHA1PlusServer,
    ScramSHA1Server,
    ScramSHA256PlusServer,
    ScramSHA256Server,
)

__all__ = [
    "CLIENT_MECHANISMS",
    "PREFERENCE",
    "SERVER_MECHANISMS",
    "choose_mechanism",
    "scram_client",
]

PREFERENCE: Final = (
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "OAUTHBEARER",
    "XOAUTH2",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
)
"""Strongest first; see :func:`choose_mechanism` for why."""

CLIENT_MECHANISMS: Final[Mapping[str, type[ClientMechanism]]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            ScramSHA256PlusClient,
            ScramSHA1PlusClient,
            ScramSHA256Client,
            ScramSHA1Client,
            OAuthBearerClient,
            XOAuth2Client,
            CramMD5Client,
            PlainClient,
            LoginClient,
        )
    }
)
SERVER_MECHANISMS: Final[Mapping[str, type[ServerMechanism]]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            ScramSHA256PlusServer,
            ScramSHA1PlusServer,
            ScramSHA256Server,
            ScramSHA1Server,
            OAuthBearerServer,
            XOAuth2Server,
            CramMD5Server,
            PlainServer,
            LoginServer,
        )
    }
)


def choose_mechanism(offered: Iterable[str], available: Iterable[str]) -> str | None:
    """The strongest mechanism both the server ``offered`` and the client has.

    Names compare without regard to case (an EHLO ``AUTH`` line may be in
    any case) and the canonical upper-case name is returned; names outside
    :data:`PREFERENCE` are ignored; ``None`` when nothing is shared.

    The order: SCRAM first, its ``-PLUS`` variants before the others: SCRAM
    never reveals the password, resists replay, and authenticates the server
    too (RFC 5802 §9), and a ``-PLUS`` variant also ties all that to the TLS
    connection, which defeats a man in the middle (RFC 5802 §6). A client
    that could bind must take a ``-PLUS`` the server offers, whatever its
    hash: were it to run a plain variant instead, it would have to say it
    could have bound (``y``), which such a server refuses as a downgrade.
    Within each, SHA-256 (RFC 7677) before SHA-1, the hash of RFC 5802 that
    older servers still offer alone. List ``-PLUS`` in ``available`` only
    when the session has channel binding data for it.
    OAUTHBEARER and XOAUTH2 next: a bearer token is scoped, expiring and
    revocable, unlike a password; the standard one (RFC 7628) before Google's
    predecessor. CRAM-MD5 hides the password from an eavesdropper but not
    from a dictionary attack, and makes the server keep it. PLAIN and LOGIN
    show the password itself; PLAIN first, being standard (RFC 4616), one
    round trip, and able to carry an authzid.
    """
    offered_names = {ascii_upper(name) for name in offered}
    available_names = {ascii_upper(name) for name in available}
    for name in PREFERENCE:
        if name in offered_names and name in available_names:
            return name
    return None


def scram_client(
    username: str,
    password: str,
    *,
    offered: Iterable[str],
    channel_bindings: ChannelBindings,
    authzid: str = "",
) -> ScramSHA256PlusClient | ScramSHA1PlusClient | ScramSHA256Client | ScramSHA1Client | None:
    """The SCRAM client mechanism RFC 5802 §6 has a client pick, or ``None``.

    ``offered`` is what the server lists (SMTP's EHLO ``AUTH``, POP3's CAPA
    ``SASL``) and ``channel_bindings`` the TLS layer's binding data, by type.
    With ``tls-exporter`` data and a ``-PLUS`` offered (SCRAM-SHA-256-PLUS,
    else SCRAM-SHA-1-PLUS), the client binds; with the data but no ``-PLUS``
    offered, it runs SCRAM-SHA-256 (else SCRAM-SHA-1) with the ``y`` flag,
    which a server that did offer ``-PLUS`` refuses (someone struck it from
    the list); with no data, the plain variant with ``n``. ``None`` when the
    server offers no SCRAM.
    """
    names = {ascii_upper(name) for name in offered}
    binding = channel_bindings.get(TLS_EXPORTER)
    if binding:
        for plus in (ScramSHA256PlusClient, ScramSHA1PlusClient):
            if plus.name in names:
                return plus(username, password, channel_binding=binding, authzid=authzid)
    for plain in (ScramSHA256Client, ScramSHA1Client):
        if plain.name in names:
            return plain(
                username, password, authzid=authzid, channel_binding_supported=bool(binding)
            )
    return None
