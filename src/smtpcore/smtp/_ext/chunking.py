"""CHUNKING (RFC 3030): content sent in BDAT chunks of a declared size."""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._extension import Extension

__all__ = ["CHUNKING"]

CHUNKING: Final = Extension(
    "CHUNKING",
    "RFC 3030",
    "content in BDAT chunks of a declared size, never dot-stuffed",
    option="chunking",
    verbs=("BDAT",),
)
