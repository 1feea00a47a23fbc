"""A listed POP3 Maildir message's content, for RETR and TOP: opened, read, refused.

:meth:`~smtpcore.maildrop.Maildir.open` opens the file at the name the listing has for
it, or has it found again (:mod:`smtpcore._maildir_found`); :class:`_ReadsContent` is
how: the file opened through the folder's descriptor, read a chunk at a time within
its listed size and a read's worth (:mod:`smtpcore._maildir_read`), closed however the
reading ends, and a file that cannot be opened or read refused as the client should
see it, named in a WARNING once a session for each message. Kept apart from the
listing and UPDATE, which run once a session: this is what every RETR and TOP runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Final, TypeVar

from smtpcore._maildir_entry import _Entry, _found_there, _open_entry
from smtpcore._maildir_faults import refusal, refused, told
from smtpcore._maildir_find_again import _FindsAgain
from smtpcore._maildir_read import READ_SIZE, _chunks, _TooLarge
from smtpcore._maildrop_errors import MaildropError, MessageUnavailable
from smtpcore._pop3_size import WireSize

__all__ = ["_ReadsContent"]

_T = TypeVar("_T")

_RETR_SLACK: Final = READ_SIZE
"""Octets RETR reads of a file past its listed size before it gives up. An honest
size is never below the file's octets (CRLF on the wire only adds to them, and
Dovecot's ``,W=`` counts each octet at least once); the slack spares a writer whose
count is a little off, and bounds what a file grown since its listing costs."""
logger: Final = logging.getLogger("smtpcore.pop3.server")


def _grown(path: Path, listed: int, size: int) -> None:
    """Warn that RETR or TOP of ``path`` stopped: the file holds more than the size the
    listing gave (its ``,W=`` is wrong, or the file was written to since)."""
    logger.warning(
        "maildrop: %r holds %d octets or more, past the %d listed for it: not sent "
        "(a message file is not changed once delivered)",
        str(path),
        size,
        listed,
    )


def _missized(entry: _Entry, path: Path, sent: int) -> None:
    """Warn that message file ``path`` was served whole, ``sent`` octets on the wire, where
    the listing gave ``entry.size``: LIST, STAT and RETR's ``+OK`` said the wrong size
    (RFC 1939 §5 asks for the exact one), and a client that holds a server to it
    (fetchmail's "not the expected length") sees a fault in the server."""
    why = (
        "its name's ,W= does not count it as sent (a size written wrong, a bare CR)"
        if entry.cached is None
        else "the file changed since it was listed"
    )
    logger.warning(
        "maildrop: %r is %d octets as sent, not the %d listed for it: %s",
        str(path),
        sent,
        entry.size,
        why,
    )


class _ReadsContent(_FindsAgain):
    """The content of the session's messages, read from their files. ``_refused`` and
    ``_missized_uids`` are set by ``Maildir.__init__``, which says what they hold."""

    _refused: set[str]
    _missized_uids: set[str]

    def _at_listed_name(self, number: int, use: Callable[[Mapping[str, int], _Entry], _T]) -> _T:
        """``use(folders, entry)`` of message ``number`` as the listing has it,
        ``folders`` the descriptors of the maildrop's folders."""
        folders = self._directories().folders  # first: opening anew may forget the listing
        return use(folders, self._entry(number))

    def _open_listed(self, number: int) -> tuple[int, int]:
        """The descriptor and size of message ``number``'s file at the name the listing
        has for it (see :func:`~smtpcore._maildir_read._open_message`);
        ``FileNotFoundError`` where it is gone, :class:`MaildropError` where it cannot
        be opened."""
        try:
            return self._at_listed_name(number, _open_entry)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._unread(number, exc, "read the message") from exc

    def _sought_again(self, number: int) -> None:
        """:meth:`_find_again`, failing as a reader of message ``number`` sees it:
        unavailable where no file is it, refused (logged) where more than one may be.
        None is made where the file a search given up found (this one waited for it) is
        at the listed name now."""
        if self._at_listed_name(number, _found_there):
            return
        try:
            self._find_again(number)
        except FileNotFoundError:
            raise MessageUnavailable() from None
        except OSError as exc:
            raise self._unread(number, exc, "read the message") from exc

    def _found_content(self, number: int) -> Generator[bytes, None, None]:
        """:meth:`_content` of message ``number`` once found again (see :meth:`open`):
        :class:`MessageUnavailable` where it is gone again."""
        try:
            fd, size = self._open_listed(number)
        except FileNotFoundError:
            raise MessageUnavailable() from None
        return self._content(number, fd, size)

    def _content(self, number: int, fd: int, size: int) -> Generator[bytes, None, None]:
        """The chunks of the open file ``fd`` of message ``number`` (see :meth:`open`),
        which they close. Started before it is returned, so that closing it, or
        dropping it unread, closes ``fd``: a generator never started runs no
        ``finally``."""
        chunks = self._chunks_of(number, fd, size)
        next(chunks)
        return chunks

    def _chunks_of(self, number: int, fd: int, size: int) -> Generator[bytes, None, None]:
        done = 0
        sent = WireSize()
        try:
            yield b""  # started (see _content)
            entry = self._entry(number)
            for chunk in _chunks(fd, size, entry.size + _RETR_SLACK):
                done += len(chunk)
                sent.feed(chunk)
                yield chunk
            if sent.total != entry.size and entry.uid not in self._missized_uids:
                self._missized_uids.add(entry.uid)
                _missized(entry, self.path / entry.folder / entry.name, sent.total)
        except _TooLarge as exc:
            if self._first_refusal(entry):
                _grown(self.path / entry.folder / entry.name, entry.size, exc.size)
            raise told(MessageUnavailable("The message changed since it was listed")) from None
        except OSError as exc:
            doing = f"read the message past octet {done}" if done else "read the message"
            raise self._unread(number, exc, doing) from exc
        finally:
            os.close(fd)

    def _unread(self, number: int, exc: OSError, doing: str) -> MaildropError:
        """The error for message ``number``, whose file could not be opened or read for
        ``exc`` (see :func:`~smtpcore._maildir_faults.refused`): its path named in a
        WARNING the first time in the session, and only then. A read that fails once
        the message is streaming (``EIO``) is refused so too: the server answers
        ``-ERR`` if it has sent nothing yet, and else closes the session, the message
        unfinished (RFC 1939 §3: no ``.``, so the client deletes nothing)."""
        entry = self._entry(number)
        if self._first_refusal(entry):
            return refused(self.path / entry.folder / entry.name, exc, doing)
        return refusal(exc, doing)

    def _first_refusal(self, entry: _Entry) -> bool:
        """Whether ``entry`` is refused for the first time in the session (see
        :attr:`_refused`); it is noted as refused now."""
        uid = entry.uid
        first = uid not in self._refused
        self._refused.add(uid)
        return first
