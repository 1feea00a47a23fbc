"""PIPELINING (RFC 2920): commands sent in groups, answered in order."""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._extension import Extension

__all__ = ["PIPELINING"]

PIPELINING: Final = Extension(
    "PIPELINING",
    "RFC 2920",
    "commands may be sent in groups without waiting for each reply",
    option="pipelining",
)
