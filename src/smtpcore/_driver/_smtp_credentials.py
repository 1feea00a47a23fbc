"""Which SASL mechanism an SMTP client runs, from its credentials and the server's offer.

The strongest mechanism both sides have (:func:`~smtpcore.sasl.choose_mechanism`),
never one that shows a reusable secret (PLAIN, LOGIN, bearer tokens) on a
plaintext connection unless the caller allows it (RFC 4954 §4). With the TLS
layer's channel binding data, a SCRAM ``-PLUS`` comes first (RFC 5802 §6, RFC 9266).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from smtpcore._driver._client_base import PLAINTEXT_AUTH_HINT
from smtpcore._driver._smtp_errors import AuthenticationNotAvailable
from smtpcore._secret import SECRET, secret_repr
from smtpcore._words import ascii_upper
from smtpcore.sasl import (
    CLIENT_MECHANISMS,
    PREFERENCE,
    TLS_EXPORTER,
    ClientMechanism,
    CramMD5Client,
    LoginClient,
    OAuthBearerClient,
    PlainClient,
    ScramSHA1Client,
    ScramSHA1PlusClient,
    ScramSHA256Client,
    ScramSHA256PlusClient,
    XOAuth2Client,
    choose_mechanism,
)
from smtpcore.smtp import ServerExtensions

__all__ = ["Credentials"]

_SCRAM: Final = {"SCRAM-SHA-256": ScramSHA256Client, "SCRAM-SHA-1": ScramSHA1Client}
_SCRAM_PLUS: Final = {
    "SCRAM-SHA-256-PLUS": ScramSHA256PlusClient,
    "SCRAM-SHA-1-PLUS": ScramSHA1PlusClient,
}
_PASSWORD_MECHANISMS: Final[dict[str, Callable[[str, str], ClientMechanism]]] = {
    **_SCRAM,
    "CRAM-MD5": CramMD5Client,
    "PLAIN": PlainClient,
    "LOGIN": LoginClient,
}


@dataclass(slots=True)
class Credentials:
    """What a client may authenticate with: a password, an OAuth token, or a ready
    mechanism (or a factory of one, for a client that connects more than once). The
    repr hides the password and the token."""

    username: str | None = None
    password: str | None = field(default=None, metadata=SECRET)
    oauth_token: str | None = field(default=None, metadata=SECRET)
    mechanism: ClientMechanism | Callable[[], ClientMechanism] | None = None
    allowed: Sequence[str] | None = None
    """Mechanism names to choose from (upper case), or None for any."""

    __repr__ = secret_repr

    def __post_init__(self) -> None:
        if (self.password is not None or self.oauth_token is not None) and not self.username:
            raise ValueError("a password or an oauth_token needs a username")
        if self.username is not None and self.password is None and self.oauth_token is None:
            raise ValueError("a username needs a password or an oauth_token")

    @property
    def given(self) -> bool:
        return self.username is not None or self.mechanism is not None

    def choose(
        self,
        extensions: ServerExtensions,
        *,
        tls: bool,
        allow_plaintext: bool,
        host: str,
        port: int,
        channel_bindings: Mapping[str, bytes] | None = None,
    ) -> ClientMechanism:
        """The mechanism to run with a server that offered ``extensions``; raises
        :class:`AuthenticationNotAvailable` when there is none.

        ``channel_bindings`` is the TLS layer's channel binding data by type: with
        ``tls-exporter`` among them a password may go by a SCRAM ``-PLUS``, and a
        plain SCRAM then says the client could have bound (``y``), so a server
        that offered -PLUS detects the downgrade (RFC 5802 §6). A mechanism that shows
        a reusable secret is chosen only with ``tls`` or ``allow_plaintext`` (the
        client's ``allow_plaintext_auth``, RFC 4954 §4); a given one is returned as it
        is, for the rule the client keeps for every login to refuse."""
        if "AUTH" not in extensions:
            raise AuthenticationNotAvailable("the server does not offer AUTH")
        offered = extensions.auth
        secure = tls or allow_plaintext
        given = self.mechanism
        if given is not None:
            mechanism = given if isinstance(given, ClientMechanism) else given()
            if ascii_upper(mechanism.name) not in offered:
                raise AuthenticationNotAvailable(f"the server does not offer {mechanism.name}")
            return mechanism  # the client's one rule for every login refuses it without TLS
        binding = (channel_bindings or {}).get(TLS_EXPORTER)
        names = list(_PASSWORD_MECHANISMS) if self.password is not None else []
        if binding and names:
            names[0:0] = _SCRAM_PLUS
        if self.oauth_token is not None:
            names += ["OAUTHBEARER", "XOAUTH2"]
        if self.allowed is not None:
            names = [name for name in names if name in self.allowed]
        usable = [name for name in names if secure or not CLIENT_MECHANISMS[name].requires_tls]
        name = choose_mechanism(offered, usable)
        if name is None:
            shared = [name for name in PREFERENCE if name in offered and name in names]
            if shared:
                detail = "needs TLS" if len(shared) == 1 else "need TLS"
                raise AuthenticationNotAvailable(
                    f"{', '.join(shared)} {detail} ({PLAINTEXT_AUTH_HINT})",
                    needs_tls=True,
                )
            raise AuthenticationNotAvailable(
                f"no mechanism in common: the server offers {' '.join(sorted(offered))}"
            )
        assert self.username is not None
        if name in _SCRAM_PLUS:
            assert self.password is not None and binding
            return _SCRAM_PLUS[name](self.username, self.password, channel_binding=binding)
        if name in _SCRAM:
            assert self.password is not None
            # "y" says the client could have bound but saw no -PLUS (RFC 5802 §6); a
            # client whose caller ruled out -PLUS, or ruled out the one offered, says "n".
            could_bind = (
                bool(binding)
                and any(plus in names for plus in _SCRAM_PLUS)
                and not any(plus in offered for plus in _SCRAM_PLUS)
            )
            return _SCRAM[name](self.username, self.password, channel_binding_supported=could_bind)
        if name in _PASSWORD_MECHANISMS:
            assert self.password is not None
            return _PASSWORD_MECHANISMS[name](self.username, self.password)
        assert self.oauth_token is not None
        if name == "XOAUTH2":
            return XOAuth2Client(self.username, self.oauth_token)
        oauth_host = host if host.isascii() else None
        return OAuthBearerClient(self.username, self.oauth_token, host=oauth_host, port=port)
