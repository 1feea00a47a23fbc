"""BINARYMIME (RFC 3030 §3): content of any octets, sent with BDAT only.

Its one parameter value, ``BODY=BINARYMIME``, is read by the 8BITMIME entry,
which asks whether this one is in force. Content so declared has no line
rules, and DATA is refused for it (RFC 3030 §3: "503 5.5.1").
"""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._extension import Extension

__all__ = ["BINARYMIME"]

BINARYMIME: Final = Extension(
    "BINARYMIME",
    "RFC 3030",
    "binary content (BODY=BINARYMIME), sent with BDAT",
    option="binarymime",
    depends=("CHUNKING", "8BITMIME"),
)
