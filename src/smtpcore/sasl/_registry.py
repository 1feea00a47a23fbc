"""Mechanisms by name, and the client's choice among those a server offers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from smtpcore.sasl._base import ClientMechanism, ServerMechanism
from smtpcore.sasl._crammd5 import CramMD5Client, CramMD5Server
from smtpcore.sasl._oauth import (
    OAuthBearerClient,
    OAuthBearerServer,
    XOAuth2Client,
    XOAuth2Server,
)
from smtpcore.sasl._plaintext import LoginClient, LoginServer, PlainClient, PlainServer
from smtpcore.sasl._scram import ScramSHA256Client, ScramSHA256Server

__all__ = ["CLIENT_MECHANISMS", "PREFERENCE", "SERVER_MECHANISMS", "choose_mechanism"]

PREFERENCE: Final = ("SCRAM-SHA-256", "OAUTHBEARER", "XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN")
"""Strongest first; see :func:`choose_mechanism` for why."""

CLIENT_MECHANISMS: Final[Mapping[str, type[ClientMechanism]]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            ScramSHA256Client,
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
            ScramSHA256Server,
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

    The order: SCRAM-SHA-256 first, because it never reveals the password,
    resists replay, and authenticates the server too (RFC 5802 §9).
    OAUTHBEARER and XOAUTH2 next: a bearer token is scoped, expiring and
    revocable, unlike a password; the standard one (RFC 7628) before Google's
    predecessor. CRAM-MD5 hides the password from an eavesdropper but not
    from a dictionary attack, and makes the server keep it. PLAIN and LOGIN
    show the password itself; PLAIN first, being standard (RFC 4616), one
    round trip, and able to carry an authzid.
    """
    offered_names = {name.upper() for name in offered}
    available_names = {name.upper() for name in available}
    for name in PREFERENCE:
        if name in offered_names and name in available_names:
            return name
    return None
