"""A message of a Maildir listing, and where it is found again since.

An entry names its file by folder and name, as the listing found it; another reader
may rename it meanwhile (``new/X`` to ``cur/X:2,S``), and the maildrop then finds it
again by its unique name (see :mod:`smtpcore._maildir_find_again`), keeping the entry up to date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from smtpcore._maildir_move import file_of
from smtpcore._maildir_read import _open_message

__all__ = ["_Entry", "_file_if_seen", "_found_there", "_open_entry", "_renamed", "_some_names"]


@dataclass(frozen=True, slots=True)
class _Entry:
    folder: str
    """``cur`` or ``new``: the file is named relative to that folder's descriptor."""
    name: str
    """The file's name in its folder."""
    size: int
    """Its size as listed (:attr:`smtpcore.maildrop.MessageInfo.size`)."""
    uid: str
    """Its unique-id as listed (:attr:`smtpcore.maildrop.MessageInfo.uid`)."""
    cached: tuple[int, int, int, int] | None = None
    """The ``size_cache`` key of a file sized by reading it: a message deleted at
    UPDATE takes its size out of the cache with it."""
    links: tuple[tuple[str, str], ...] = ()
    """Other names (folder and name) of this very file, which a move at an earlier
    UPDATE left when it was cut short between its link and its unlink (see
    :mod:`smtpcore._maildir_move`): this UPDATE removes them, as long as they still
    name the file (:attr:`inode`)."""
    inode: tuple[int, int] | None = None
    """The device and inode of the file, where it has :attr:`links` or was found again."""
    found_again: bool = False
    """Whether a session found it again under another name (another reader renamed it):
    its DELE lists its names anew (see :func:`~smtpcore._maildir_names.remove_message`)."""


def _open_entry(folders: Mapping[str, int], entry: _Entry) -> tuple[int, int]:
    """:func:`_open_message` of a listed message's file."""
    return _open_message(folders[entry.folder], entry.name)


def _found_there(folders: Mapping[str, int], entry: _Entry) -> bool:
    """Whether ``entry`` was found again and its name still holds the file found (one
    device and inode, as a removal tells it): not a link, a FIFO or another file put
    under the name since."""
    found = entry.inode
    if not entry.found_again or found is None:
        return False
    return _file_if_seen(folders[entry.folder], entry.name) == found


def _renamed(
    entry: _Entry,
    sub: str,
    name: str,
    others: Iterable[tuple[str, str]] = (),
    file: tuple[int, int] | None = None,
) -> _Entry:
    """``entry`` found again as ``name`` in ``sub``, with ``others`` more names of its
    file, whose device and inode is ``file`` when known."""
    links = dict.fromkeys(entry.links)  # a dict: thousands of links cost no more than one
    links.pop((sub, name), None)  # the name found is no longer one of the other names
    links.update(dict.fromkeys(others))
    return replace(
        entry,
        folder=sub,
        name=name,
        links=tuple(links),
        inode=file or entry.inode,
        found_again=True,
    )


def _file_if_seen(folder: int, name: str) -> tuple[int, int] | None:
    """:func:`~smtpcore._maildir_move.file_of`, None where the name cannot be looked at
    (``EIO``) as well: for a listing, which goes on without it (the name is not taken
    for the message's), never for a decision to remove or keep a name."""
    try:
        return file_of(folder, name)
    except OSError:
        return None


_NAMES_SHOWN: Final = 5
"""How many names an error about a message's files lists: a file with thousands of
links would make a WARNING line a megabyte long."""


def _some_names(names: Iterable[str]) -> str:
    """The first :data:`_NAMES_SHOWN` of ``names`` in order, and how many are left out."""
    every = sorted(names)
    shown = ", ".join(every[:_NAMES_SHOWN])
    left = len(every) - _NAMES_SHOWN
    return f"{shown} and {left} more" if left > 0 else shown
