"""The folders and lock file a POP3 Maildir works through, held from its lock to its close.

:mod:`smtpcore._maildir_open` opens them (one descriptor each, never through a link
where the user could put one); :class:`_HoldsFolders` is what a
:class:`~smtpcore.maildrop.Maildir` does with them: opens them at the first use of a
maildrop that was not locked, takes a set opened anew (at the lock) in place of the
one it held, keeping its listing only while every folder the listing named is there
again, and closes them when the session is over. Kept apart from the listing, the content
and UPDATE, which all work through these descriptors and never open one themselves.
"""

from __future__ import annotations

from pathlib import Path

from smtpcore._maildir_entry import _Entry
from smtpcore._maildir_open import _cannot_open, _open_maildir, _Opened
from smtpcore._maildrop_errors import MaildropError
from smtpcore._maildrop_flight import _OneAtATime

__all__ = ["_HoldsFolders"]


class _HoldsFolders(_OneAtATime):
    """The descriptors a Maildir works through (see :class:`_Opened`), opened once and
    released by the worker-thread rule (:class:`_OneAtATime`) when no work is left in
    flight. The attributes are set by ``Maildir.__init__``, which says what each is."""

    path: Path
    _opened: _Opened | None
    _entries: list[_Entry] | None
    _listed_in: frozenset[str]

    def _directories(self) -> _Opened:
        """The open directories, opened now for a maildrop used without :meth:`lock`.

        A Maildir that does not exist holds no message (none was delivered yet): it
        has no folders, and is looked for again at the next use."""
        opened = self._opened
        if opened is not None:
            return opened
        with self._guard:
            if self._closed:
                raise MaildropError("The session is over")
            if self._opened is None:
                opened = self._open_anew(create=False, missing_ok=True)
                if opened.root < 0:
                    return opened
                self._work_through(opened)
                return opened
            return self._opened

    def _open_anew(self, *, create: bool, missing_ok: bool = False) -> _Opened:
        """The Maildir opened (see :class:`_Opened`), or, if ``missing_ok`` and it does
        not exist, no folders (``root`` -1)."""
        try:
            return _open_maildir(self.path, create=create)
        except FileNotFoundError as exc:
            if missing_ok:
                return _Opened(-1, {})
            raise _cannot_open(self.path, exc) from exc
        except OSError as exc:
            raise _cannot_open(self.path, exc) from exc

    def _work_through(self, opened: _Opened) -> None:
        """Make ``opened`` the maildrop's descriptors, closing those it held. The listing
        names its files by folder and name, as a path would: it is kept if each folder it
        was taken from is in ``opened`` again, and forgotten if one is gone, to be taken
        again. A folder replaced meanwhile is the same name: each message is looked for
        there by its name, then by its unique name, so a file that is no longer there
        is unavailable and no other message is ever taken for it. Names, not device and
        inode: once closed, a removed folder's inode is given to the next one made
        (ext4 does at once), so an identity would hold or fail by the filesystem.
        Under the guard."""
        if self._entries is not None and not self._listed_in <= opened.folders.keys():
            self._entries = None
        self._unlock()
        self._opened = opened

    def _unlock(self) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()
