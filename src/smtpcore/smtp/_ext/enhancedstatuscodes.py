"""ENHANCEDSTATUSCODES (RFC 2034): replies carry class.subject.detail codes."""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._extension import Extension

__all__ = ["ENHANCEDSTATUSCODES"]

ENHANCEDSTATUSCODES: Final = Extension(
    "ENHANCEDSTATUSCODES",
    "RFC 2034",
    "replies carry an enhanced status code (RFC 3463)",
    option="enhanced_status_codes",
)
