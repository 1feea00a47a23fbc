"""Channel binding (RFC 5056) as the SASL mechanisms see it: data given by the session.

A ``-PLUS`` mechanism (RFC 5802 §6) ties the authentication to the TLS
connection it runs over, so that a man in the middle who terminates TLS
cannot relay the exchange. What ties it is a value both TLS ends compute
and nobody else can: for TLS 1.3, ``tls-exporter`` (RFC 9266), 32 octets of
keying material exported with the label ``EXPORTER-Channel-Binding`` and an
empty context. The mechanisms never read it themselves: the session asks
its TLS layer and hands the octets in, so this package stays free of I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final, TypeAlias

from smtpcore._words import ascii_upper

__all__ = [
    "TLS_EXPORTER",
    "TLS_EXPORTER_LABEL",
    "TLS_EXPORTER_LENGTH",
    "ChannelBindings",
    "needs_channel_binding",
    "offered_mechanisms",
]

TLS_EXPORTER: Final = "tls-exporter"
"""The channel binding type of RFC 9266, the default for TLS 1.3."""
TLS_EXPORTER_LABEL: Final = b"EXPORTER-Channel-Binding"
"""The exporter label of RFC 9266 §2 (no terminating NUL); the context is empty."""
TLS_EXPORTER_LENGTH: Final = 32
"""Octets of keying material ``tls-exporter`` exports (RFC 9266 §2)."""

ChannelBindings: TypeAlias = Mapping[str, bytes]
"""The channel binding data a session has, by type (``{"tls-exporter": ...}``)."""

CB_NAME: Final = re.compile(r"[A-Za-z0-9.-]+")
"""RFC 5802 §7 ``cb-name``: the channel binding type in a ``p=`` gs2 flag."""


def needs_channel_binding(mechanism: str) -> bool:
    """True for a ``-PLUS`` mechanism, which cannot run without channel binding data.

    The suffix is the convention of GS2 (RFC 5801 §4) that SCRAM follows
    (RFC 5802 §4): the name alone says it.
    """
    return ascii_upper(mechanism).endswith("-PLUS")


def offered_mechanisms(names: Iterable[str], bindings: ChannelBindings) -> list[str]:
    """``names`` without the ``-PLUS`` mechanisms when the session has no binding data.

    A server advertises a ``-PLUS`` mechanism only where it can run it: over
    a TLS layer that gives the data. Advertising it elsewhere would also
    make a client that can bind refuse the plain variant's ``y`` flag as a
    downgrade (RFC 5802 §6).
    """
    return [name for name in names if bindings or not needs_channel_binding(name)]
