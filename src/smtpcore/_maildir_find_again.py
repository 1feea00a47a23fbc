"""A listed Maildir message found again where another reader renamed it since the listing.

Another POP3 or IMAP reader of the same Maildir may move a message from ``new/`` to
``cur/``, or change its flags (``cur/X:2,`` to ``cur/X:2,S``), while a session holds
its listing. :class:`_FindsAgain` finds the file by its unique name, as Dovecot does,
for RETR and TOP (through :mod:`smtpcore._maildir_found`) and for UPDATE, and keeps
the listing's entry up to date; where two files may be the message, it refuses
rather than pick one by the order of a directory listing. Blocking: a listing of
``new/`` and ``cur/``, run in a worker thread or by a plain reader.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

from smtpcore._maildir_entry import _Entry, _file_if_seen, _renamed, _some_names
from smtpcore._maildir_listed import _KeepsListing
from smtpcore._maildir_names import names_of, unique_name

__all__ = ["_FindsAgain"]


class _FindsAgain(_KeepsListing):
    """A message of the session's listing found again under its new name."""

    def _find_again(self, number: int) -> None:
        """Find the file message ``number`` became since the listing (``new/`` to
        ``cur/``, its flags changed), by its unique name as Dovecot finds it, and keep it
        in the listing from now on; ``FileNotFoundError`` when none is, and an
        ``OSError`` when more than one may be (see :meth:`_find`). Blocking: a listing
        of ``new/`` and ``cur/``."""
        folders = self._directories().folders
        entry = self._entry(number)
        moved = self._find(entry, folders)
        if moved is None:
            raise FileNotFoundError(errno.ENOENT, "renamed since", entry.name)
        assert self._entries is not None
        self._entries[number - 1] = moved

    def _find(self, entry: _Entry, folders: Mapping[str, int]) -> _Entry | None:
        """The file in ``new/`` or ``cur/`` that the listed ``entry`` became, or None: one
        of the same full name (moved between the two), else the one file of the same
        unique name (its flags changed). Names of one file (one device and inode: a
        move cut short, see :mod:`smtpcore._maildir_move`) are one: the name of the same
        full name, else the first, ``cur`` first, with the others as its
        :attr:`_Entry.links`, for UPDATE to remove (a DELE that left one would see the
        message come back). Two or more files, and none of the full name, is ambiguous
        (a copy beside a rename): an ``OSError``, so that no RETR reads and no DELE
        removes a file chosen by the order of a directory listing. Linear in the names
        of the unique name, however many links a file has."""
        base = unique_name(entry.name)
        found = [f for f in names_of(folders, base) if f != (entry.folder, entry.name)]
        if not found:
            return None
        files = {(sub, name): _file_if_seen(folders[sub], name) for sub, name in found}
        chosen = next((f for f in found if f[1] == entry.name), None)  # moved as it was
        if chosen is None:
            if len(found) > 1 and (len(set(files.values())) > 1 or None in files.values()):
                raise OSError(
                    errno.EEXIST,
                    f"{len(found)} files hold message {base} since it was listed: "
                    + _some_names(name for _, name in found),
                )
            chosen = min(found, key=lambda f: (f[0] != "cur", f[1]))
        file = files[chosen]
        others = [f for f in found if f != chosen and file is not None and files[f] == file]
        return _renamed(entry, *chosen, others, file)
