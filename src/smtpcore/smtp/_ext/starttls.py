"""STARTTLS (RFC 3207): upgrade the session to TLS; offered only before it is."""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._extension import NOT_TLS, Extension

__all__ = ["STARTTLS"]

STARTTLS: Final = Extension(
    "STARTTLS",
    "RFC 3207",
    "the session may be upgraded to TLS",
    option="starttls",
    verbs=("STARTTLS",),
    requires=(NOT_TLS,),
)
