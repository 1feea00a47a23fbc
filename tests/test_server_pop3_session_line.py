"""The reference server's POP3 session line counts the deletions its UPDATE made.

The line said ``deleted=N`` from the DELE marks as soon as UPDATE was asked, so a QUIT
whose UPDATE was refused (a search still in flight past QUIT's deadline) or failed
claimed removals that never happened, both files left on disk.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from smtpcore.maildrop import Maildir, MaildropError, POP3Session
from smtpcore.server.pop3 import POP3Store, _LoggedMaildir
from test_maildrop_moves import maildir_with, names
from test_maildrop_unreadable import run

MESSAGES = {"new/1700000001.M1P1.test": b"one\n", "new/1700000002.M2P2.test": b"two\n"}


def logged_maildir(root: Path) -> _LoggedMaildir:
    store = cast(POP3Store, SimpleNamespace(root=root, listener="pop3"))
    maildir = _LoggedMaildir(store, POP3Session("pop.test", user="alice"), "alice")
    maildir.lock()
    run(maildir.messages())
    return maildir


def session_line(caplog: pytest.LogCaptureFixture) -> str:
    [line] = [r.getMessage() for r in caplog.records if "disconnect from" in r.getMessage()]
    return line


def test_an_update_that_fails_counts_no_deletion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = maildir_with(tmp_path / "alice", MESSAGES)
    maildir = logged_maildir(tmp_path)

    def failing(self: Maildir, deleted: object, retrieved: object) -> None:
        raise MaildropError("the maildrop is still busy")

    monkeypatch.setattr(Maildir, "_update", failing)
    with caplog.at_level(logging.INFO, logger="smtpcore.mail"):
        with pytest.raises(MaildropError):
            run(maildir.update({2}, set()))
        run(maildir.close())
    line = session_line(caplog)
    assert "deleted=0 (UPDATE failed: 1 marked deleted, none counted)" in line
    assert len(names(path)) == 2


def test_an_update_done_counts_its_deletions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = maildir_with(tmp_path / "alice", MESSAGES)
    maildir = logged_maildir(tmp_path)
    with caplog.at_level(logging.INFO, logger="smtpcore.mail"):
        run(maildir.update({2}, set()))
        run(maildir.close())
    line = session_line(caplog)
    assert "deleted=1 duration=" in line
    assert len(names(path)) == 1


def test_a_quit_whose_wait_for_earlier_work_is_given_up_says_no_update_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QUIT's wait for work an earlier command gave up on (:meth:`Maildir.before_update`)
    given up in its turn: no UPDATE starts, and the line says so, not "no QUIT"."""
    path = maildir_with(tmp_path / "alice", MESSAGES)
    maildir = logged_maildir(tmp_path)
    held = threading.Event()

    async def session() -> None:
        with pytest.raises(TimeoutError):  # an earlier command's work, given up
            await asyncio.wait_for(maildir._in_thread(lambda: held.wait(10)), 0.01)
        with pytest.raises(TimeoutError):  # QUIT's wait for it
            await asyncio.wait_for(maildir.before_update(), 0.01)
        held.set()
        await maildir.before_update()  # landed
        await maildir.close()

    with caplog.at_level(logging.INFO, logger="smtpcore.mail"):
        run(session())
    line = session_line(caplog)
    assert "deleted=0 (UPDATE not started: earlier work still ran, nothing removed)" in line
    assert len(names(path)) == 2


def test_an_update_given_up_says_its_outcome_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An UPDATE whose wait is given up (the ``store`` timeout) is no failure: its thread
    runs on and removes the messages, so the line says the outcome is unknown, not that
    UPDATE failed."""
    path = maildir_with(tmp_path / "alice", MESSAGES)
    maildir = logged_maildir(tmp_path)
    held = threading.Event()
    update = Maildir._update

    def held_update(self: Maildir, deleted: Collection[int], retrieved: Collection[int]) -> None:
        held.wait(10)
        update(self, deleted, retrieved)

    monkeypatch.setattr(Maildir, "_update", held_update)

    async def session() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(maildir.update({2}, set()), 0.01)
        await maildir.close()  # logs the line; the lock waits for the thread
        held.set()
        await maildir.before_update()  # landed

    with caplog.at_level(logging.INFO, logger="smtpcore.mail"):
        run(session())
    line = session_line(caplog)
    assert "deleted=0 (UPDATE given up: 1 marked deleted, outcome unknown)" in line
    assert len(names(path)) == 1  # its thread removed the message after all
