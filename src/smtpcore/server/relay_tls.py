"""The relay's TLS policy: how hard the delivery worker insists on TLS, per Postfix's levels.

- ``may`` (the default, Postfix's ``smtp_tls_security_level = may``):
  opportunistic TLS (RFC 3207, RFC 7435). STARTTLS when the exchanger offers
  it, the certificate unchecked (MX records are not authenticated, so a name
  check would prove nothing); a 454 to STARTTLS means the session goes on in
  plaintext (the client's ``starttls=None``, RFC 3207 §4; a client a
  ``client_factory`` gives credentials raises instead, and is tried again in
  plaintext over a new connection, as after a failed handshake), and a failed
  handshake, after which the connection is unusable, that the same exchanger is
  tried again in plaintext over a new one; never that mail waits.
- ``encrypt``: TLS or nothing, the certificate unchecked. An exchanger
  without STARTTLS, or whose handshake fails, is a temporary failure
  (``4.7.4`` / ``4.7.5``, as Postfix says), so the next one is tried and the
  message waits rather than crossing the network in the clear.
- ``verify``: ``encrypt``, and the certificate must chain to the system's
  trust store (or ``--relay-ca``) and name the exchanger (the MX host name,
  or the ``--relay-host`` name).

One message may ask for more or for less than the configured policy (RFC 8689):

- a message that came with ``REQUIRETLS`` on its ``MAIL`` (§4.1) goes only to
  an exchanger that gives ``verify``'s TLS and offers REQUIRETLS itself, and
  is sent with ``REQUIRETLS`` again (§4.2.1), whatever the policy; when no
  exchanger qualifies it is returned with ``5.7.30`` (§4.2.1, §5), never sent
  in the clear. The reports on it hold its header and are queued with
  ``REQUIRETLS`` too (§5), so the same rule holds for them;
- a message without it whose header has ``TLS-Required: No`` (§3) goes under
  ``may``: opportunistic TLS, and plaintext when TLS fails, even where the
  policy would demand more (§4.2.2).
"""

from __future__ import annotations

import enum
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["MessageTLS", "RelayTLS", "message_tls", "relay_tls_context", "tls_required_no"]


class RelayTLS(enum.Enum):
    """``--relay-tls``: ``may``, ``encrypt`` or ``verify``."""

    MAY = "may"
    ENCRYPT = "encrypt"
    VERIFY = "verify"

    @property
    def required(self) -> bool:
        """Whether plaintext delivery is refused."""
        return self is not RelayTLS.MAY


def relay_tls_context(policy: RelayTLS, cafile: Path | None = None) -> ssl.SSLContext:
    """The client context for ``policy``: verifying (with ``cafile`` when given, else the
    system's trust store) for ``verify``, encrypting only for the other two."""
    context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    if policy is not RelayTLS.VERIFY:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class MessageTLS:
    """The TLS one message gets on its way out."""

    level: RelayTLS
    requiretls: bool = False
    """RFC 8689 §4.2.1: only to an exchanger that offers REQUIRETLS over verified TLS,
    with ``REQUIRETLS`` on ``MAIL``; an exchanger that does not is not this message's."""
    label: str = ""
    """What the delivery log calls it (``tls_policy=``): the level's name, ``requiretls``
    or ``tls-required-no``."""


_UNFOLD: Final = re.compile(rb"\r?\n(?=[ \t])")
_TLS_REQUIRED_NO: Final = re.compile(rb"tls-required[ \t]*:[ \t]*no[ \t]*", re.IGNORECASE)


def tls_required_no(header: bytes) -> bool:
    """Whether the header section has ``TLS-Required: No`` (RFC 8689 §3: the field name
    and ``No`` in any case, folding white space around the value)."""
    unfolded = _UNFOLD.sub(b"", header)
    return any(_TLS_REQUIRED_NO.fullmatch(line) for line in unfolded.splitlines())


def message_tls(configured: RelayTLS, *, requiretls: bool, header: bytes) -> MessageTLS:
    """The TLS for a message under the ``configured`` policy: ``REQUIRETLS`` asks for
    ``verify`` and more; ``TLS-Required: No`` (ignored under REQUIRETLS, RFC 8689 §4.1)
    for ``may``."""
    if requiretls:
        return MessageTLS(RelayTLS.VERIFY, requiretls=True, label="requiretls")
    if tls_required_no(header):
        return MessageTLS(RelayTLS.MAY, label="tls-required-no")
    return MessageTLS(configured, label=configured.value)
