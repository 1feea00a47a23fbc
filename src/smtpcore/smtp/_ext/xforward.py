"""XFORWARD (Postfix): a trusted content filter passes on who sent the next message.

Offered, with its attributes as the argument (``XFORWARD NAME ADDR PORT
PROTO HELO IDENT SOURCE``), only to a client the server trusts
(``trusted_forwarder``); to any other the command is unknown. The command
is :class:`~smtpcore.smtp.Xforward`, answered ``250``; what it says holds
for the next mail transaction only (Postfix's XFORWARD_README).
"""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._ext.xclient import unannounced
from smtpcore.smtp._extension import TRUSTED_FORWARDER, Extension
from smtpcore.smtp._forwarding import XFORWARD_ATTRIBUTES

__all__ = ["XFORWARD"]

XFORWARD: Final = Extension(
    "XFORWARD",
    "Postfix",
    "a trusted content filter passes on who sent the next message",
    option="xforward",
    arguments=lambda facts: " ".join(attribute.name for attribute in XFORWARD_ATTRIBUTES),
    verbs=("XFORWARD",),
    requires=(TRUSTED_FORWARDER,),
    client_check=unannounced,
)
