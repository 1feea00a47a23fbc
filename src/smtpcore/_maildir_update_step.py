"""The UPDATE step of a POP3 Maildir (RFC 1939 §6), run on the session's listing after QUIT.

:func:`~smtpcore._maildir_update._update_maildir` removes and moves the files;
:class:`_Updates` is the step of a :class:`~smtpcore.maildrop.Maildir` that runs it,
in the worker thread, through the folders it holds and on the listing it kept,
finding again a message another reader renamed. Apart from that module, which works
on paths and descriptors alone and stays free of the maildrop's threads.
"""

from __future__ import annotations

from collections.abc import Collection

from smtpcore._maildir_find_again import _FindsAgain
from smtpcore._maildir_update import _update_maildir
from smtpcore._maildrop_errors import MaildropError

__all__ = ["_Updates"]


class _Updates(_FindsAgain):
    """The UPDATE of a Maildir's listed messages (RFC 1939 §6), after QUIT."""

    def _update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        folders = self._directories().folders  # first: opening anew may forget the listing
        entries = self._entries
        if entries is None:
            if deleted:
                raise MaildropError(
                    f"{len(deleted)} deleted messages could not be removed: "
                    "the maildrop was not listed, or changed since it was"
                )
            return
        _update_maildir(
            self.path, folders, entries, deleted, retrieved, self._size_cache, self._find_again
        )
