"""A POP3 login on a disk with no free inode. The maildrop's lock file
(``smtpcore-pop3.lock``) was made at the first login only: a user who had never logged
in got ``-ERR [SYS/TEMP] Cannot open the maildrop: No space left on device``, and could
not log in to delete mail and free space. The server now makes it with the Maildir."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from smtpcore.maildrop import Maildir as MaildropMaildir
from smtpcore.maildrop import MaildropError, MaildropInUse
from smtpcore.server.config import ServerConfig
from smtpcore.server.mailboxes import LocalMailboxes, ServedMaildir
from smtpcore.server.maildir import Maildir

LOCK = "smtpcore-pop3.lock"


def _no_free_inodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making a file fails with ``ENOSPC``; opening one that is there succeeds."""
    real_open = os.open

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & os.O_CREAT:
            try:
                return real_open(path, flags & ~os.O_CREAT, mode, dir_fd=dir_fd)
            except FileNotFoundError:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_)


def _logs_in(path: Path) -> bool:
    maildrop = MaildropMaildir(path)
    try:
        maildrop.lock()
    except MaildropError:
        return False
    try:
        second = MaildropMaildir(path)
        with pytest.raises(MaildropInUse):  # still one session at a time
            second.lock()
    finally:
        asyncio.run(maildrop.close())
    return True


def test_a_mailbox_made_at_start_takes_a_login_with_no_free_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailboxes = _mailboxes(tmp_path)
    mailboxes.create_all()
    path = mailboxes.config.mailbox_path("john@abc.example")
    assert (path / LOCK).stat().st_size == 0
    _no_free_inodes(monkeypatch)
    assert _logs_in(path)


def _mailboxes(tmp_path: Path) -> LocalMailboxes:
    config = ServerConfig(
        domains=("abc.example",), users={"john@abc.example": "pw"}, data_dir=tmp_path / "data"
    )
    config.data_dir.mkdir()
    return LocalMailboxes(config)


def test_a_mailbox_made_by_a_delivery_takes_a_login_with_no_free_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailboxes = _mailboxes(tmp_path)
    mailboxes.deliver("john@abc.example", "", b"Subject: one\r\n\r\nx\r\n")
    _no_free_inodes(monkeypatch)
    assert _logs_in(mailboxes.config.mailbox_path("john@abc.example"))


def test_a_maildir_the_server_does_not_serve_gets_no_lock_file(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "box")  # fetch --to-maildir's, a user's own for mutt
    box.deliver(b"", [b"Subject: one\r\n\r\nx\r\n"])
    assert sorted(entry.name for entry in box.path.iterdir()) == ["cur", "new", "tmp"]


def test_a_link_in_place_of_the_lock_file_is_left_for_the_login_to_refuse(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    box = ServedMaildir(tmp_path / "box")
    box.path.mkdir()
    (box.path / LOCK).symlink_to(victim)
    box.create()
    assert not victim.exists()
    assert not _logs_in(box.path)
