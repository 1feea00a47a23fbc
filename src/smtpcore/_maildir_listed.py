"""A POP3 Maildir's listing, taken once a session and kept: message ``n`` is its ``n``-th entry.

:mod:`smtpcore._maildir_listing` takes a listing (names, sizes, unique-ids);
:class:`_KeepsListing` is what a :class:`~smtpcore.maildrop.Maildir` does with one:
takes it in the worker thread through the folders it holds, keeps the sizes it read
in the store's shared ``size_cache`` within a bound, and finds message ``n`` in it
for every command that names one (RFC 1939 §5: the numbers hold for the session).
"""

from __future__ import annotations

import threading
from typing import Final

from smtpcore._maildir_entry import _Entry
from smtpcore._maildir_folders import _HoldsFolders
from smtpcore._maildir_listing import SizeKey, _Listing
from smtpcore._maildrop_errors import MessageUnavailable

__all__ = ["_KeepsListing"]

_SIZES_KEPT: Final = 100_000
"""At most this many sizes in a ``size_cache``: one for a file removed by another
program (an IMAP server's expunge) is never asked again, so past the limit the
cache starts over (each size is worked out again at its message's next listing)."""
_SIZES_GUARD: Final = threading.Lock()
"""Held to add a size to a ``size_cache``, which the listings of several sessions
fill at once from their threads (the bound is checked and kept in one step)."""


class _KeepsListing(_HoldsFolders):
    """The session's listing of a Maildir (``_entries``, set by ``Maildir.messages``), and
    how it is taken and read. The attributes are set by ``Maildir.__init__``; the public
    ``max_sized_by_reading`` is not declared here, for autodoc would show the annotation
    in Maildir's API reference, where the attribute is documented."""

    _size_cache: dict[SizeKey, int]

    def _scan(self) -> list[_Entry]:
        folders = self._directories().folders
        self._listed_in = frozenset(folders)
        listing = _Listing(
            self.path,
            self._size_cache,
            self.max_sized_by_reading,  # type: ignore[attr-defined]  # Maildir's: see the class
            self._remember_size,
        )
        return listing.entries(folders)

    def _remember_size(self, key: SizeKey, size: int) -> None:
        """Keep ``size``, read by a listing, in the ``size_cache`` (see
        :data:`_SIZES_KEPT`)."""
        cache = self._size_cache
        with _SIZES_GUARD:
            if len(cache) >= _SIZES_KEPT:
                cache.clear()
            cache[key] = size

    def _entry(self, number: int) -> _Entry:
        entries = self._entries
        if entries is None or not 1 <= number <= len(entries):
            raise MessageUnavailable(f"No such message: {number}")
        return entries[number - 1]
