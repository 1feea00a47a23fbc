"""Regex strategies that name their alphabet.

Hypothesis's ``st.from_regex`` without ``alphabet=`` intersects each character
class with every character the utf-8 codec encodes, a table it builds on first
use (seconds) and caches in ``.hypothesis/``. A user's first test in a fresh
directory would then fail ``HealthCheck.too_slow``. The grammars drawn here are
ASCII, or list the few non-ASCII letters they use, so each regex says which.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from hypothesis import strategies as st

__all__ = ["ASCII", "regex"]

ASCII: Final = st.characters(codec="ascii")


def regex(
    pattern: str, *, alphabet: Collection[str] | st.SearchStrategy[str] = ASCII
) -> st.SearchStrategy[str]:
    """Strings that fully match ``pattern``, drawn from ``alphabet`` (ASCII unless told)."""
    return st.from_regex(pattern, fullmatch=True, alphabet=alphabet)
