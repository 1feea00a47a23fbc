"""The relay's TLS policy: how hard the delivery worker insists on TLS, per Postfix's levels.

- ``may`` (the default, Postfix's ``smtp_tls_security_level = may``):
  opportunistic TLS (RFC 3207, RFC 7435). STARTTLS when the exchanger offers
  it, the certificate unchecked (MX records are not authenticated, so a name
  check would prove nothing); a 454 to STARTTLS or a failed handshake means
  the same exchanger is tried again in plaintext, never that mail waits.
- ``encrypt``: TLS or nothing, the certificate unchecked. An exchanger
  without STARTTLS, or whose handshake fails, is a temporary failure
  (``4.7.4`` / ``4.7.5``, as Postfix says), so the next one is tried and the
  message waits rather than crossing the network in the clear.
- ``verify``: ``encrypt``, and the certificate must chain to the system's
  trust store (or ``--relay-ca``) and name the exchanger (the MX host name,
  or the ``--relay-host`` name).
"""

from __future__ import annotations

import enum
import ssl
from pathlib import Path

__all__ = ["RelayTLS", "relay_tls_context"]


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
