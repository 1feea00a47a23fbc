"""The messages a server under test stored, read from the files it wrote them to.

``python -m smtpcore.testing check --stored-maildir DIR`` (or ``--stored-dir DIR``)
gives :func:`~smtpcore.testing.check.check_server` its ``stored`` this way, for a
server run by someone else: ``pipelined-end`` finds each message it sent by a body
line, so the ``Return-Path:``, ``Received:`` or ``Delivered-To:`` lines a server
(the reference server, Postfix's local, Dovecot's LMTP) writes above the header do
not stop the match. Only files that came in since the run began are read, and only
their first :data:`MAX_MESSAGE_OCTETS`: a sink's Maildir keeps every earlier run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["MAX_MESSAGE_OCTETS", "StoredFiles", "maildir_folders", "message_folders"]

MAX_MESSAGE_OCTETS: Final = 64 * 1024
"""How much of each file is read: a check's message is a few hundred octets, and
the trace and filter headers a server adds above it a few kilobytes at most."""

_RESCANS: Final = 3
"""Listings tried when a file goes between its listing and its reading (a reader
moved it from ``new/`` to ``cur/``, renaming it): the next listing has it."""


def maildir_folders(text: str) -> tuple[Path, ...]:
    """``new/`` and ``cur/`` of the Maildir ``text`` names; ``ValueError`` saying what
    is wrong when it is none, so that a typo is a usage error, not a message said lost."""
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"{text!r} is not a directory")
    folders = (path / "new", path / "cur")
    if not all(folder.is_dir() for folder in folders):
        raise ValueError(
            f"{text!r} is not a Maildir: it has no new/ and cur/ (give the mailbox's "
            "own directory; a server may make it only at its first delivery)"
        )
    return _readable(folders)


def message_folders(text: str) -> tuple[Path, ...]:
    """The directory ``text`` names, which holds one file per message; ``ValueError``
    when it is none."""
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"{text!r} is not a directory")
    return _readable((path,))


def _readable(folders: tuple[Path, ...]) -> tuple[Path, ...]:
    """``folders``, each listed once now: one this user cannot read is refused before
    the run, which would otherwise skip ``pipelined-end`` at its end."""
    for folder in folders:
        try:
            os.listdir(folder)
        except OSError as exc:
            raise ValueError(f"cannot list {str(folder)!r}: {exc.strerror}") from None
    return folders


def _key(name: str) -> str:
    """A message file's name without a Maildir's ``:2,`` flags, which a reader changes."""
    return name.split(":", 1)[0]


class StoredFiles:
    """A ``stored`` for :func:`~smtpcore.testing.check.check_server`: the content of
    each file in ``folders`` that was not there when this was made (by name, flags
    aside), the first ``max_octets`` of each. Names starting with a dot, and what is
    no regular file, are no messages."""

    def __init__(self, folders: Sequence[Path], *, max_octets: int = MAX_MESSAGE_OCTETS) -> None:
        self._folders = tuple(folders)
        self._max_octets = max_octets
        self._before = frozenset(_key(path.name) for path in self._listing())

    def _listing(self) -> list[Path]:
        found: list[Path] = []
        for folder in self._folders:
            with os.scandir(folder) as entries:
                found += [
                    Path(entry.path)
                    for entry in entries
                    if not entry.name.startswith(".") and entry.is_file()
                ]
        return found

    def __call__(self) -> list[bytes]:
        for _ in range(_RESCANS - 1):
            try:
                return self._read_new()
            except FileNotFoundError:
                continue
        return self._read_new()

    def _read_new(self) -> list[bytes]:
        contents: list[bytes] = []
        for path in self._listing():
            if _key(path.name) not in self._before:
                with path.open("rb") as file:
                    contents.append(file.read(self._max_octets))
        return contents
