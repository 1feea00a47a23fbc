"""smtpcore.maildrop: the names of one message file at UPDATE, while other readers rename.

A move cut short leaves a message's file two names (``cur/X:2,F`` and ``new/X``); the
UPDATE removes the extra ones, all of them for a DELE. Another reader (Dovecot, a mail
user agent) may rename any of them in the session, or put another file under one, and
a name may fail to be looked at (``EIO``): a DELE never counts as done while a name of
the message is left, and no flag another reader set is lost.
The other reader's moves are injected between the server's own calls, in order, by
wrapping the ``os`` functions.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smtpcore.maildrop import Maildir, MaildropError
from test_maildrop_moves import UID, maildir_with, names
from test_maildrop_unreadable import LOGGER, mentions, refuse, run

CONTENT = b"Subject: one\n\nfirst\n"


def listed_twice_named(path: Path) -> Maildir:
    """A maildrop whose one message is listed as ``cur/X:2,F`` with ``new/X`` its
    other name (a move cut short), listed."""
    maildir_with(path, {f"cur/{UID}:2,F": CONTENT})
    os.link(path / "cur" / f"{UID}:2,F", path / "new" / UID)
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [UID]
    return maildir


@pytest.mark.parametrize("retrieved", [False, True], ids=["dele", "retr-dele"])
def test_a_deleted_message_whose_other_name_another_reader_renamed_leaves_no_name(
    tmp_path: Path, retrieved: bool
) -> None:
    """Listed as ``cur/X:2,F`` with ``new/X``; another reader moves ``new/X`` to
    ``cur/X:2,`` in the session, as it moves every new message. The DELE removed the
    two names it knew and reported success, and the deleted message came back at the
    next login under ``cur/X:2,``. Every name of the file goes."""
    path = tmp_path / "alice"
    maildir = listed_twice_named(path)
    (path / "new" / UID).rename(path / "cur" / f"{UID}:2,")  # the other reader's
    if retrieved:
        assert b"".join(maildir.open(1)) == CONTENT
    run(maildir.update(deleted={1}, retrieved={1} if retrieved else set()))
    run(maildir.close())
    assert names(path) == []
    again = Maildir(path)
    assert run(again.messages()) == []
    run(again.close())


def fail_stat(monkeypatch: pytest.MonkeyPatch, failing: Callable[[str], bool]) -> None:
    """Make ``os.stat`` fail with ``EIO`` for a file whose name ``failing`` picks."""
    real = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, str) and failing(os.path.basename(path)):
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)


@pytest.mark.parametrize("listed", [True, False], ids=["listed-name", "other-name"])
def test_a_name_that_cannot_be_looked_at_fails_the_dele_rather_than_stay_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: bool
) -> None:
    """``cur/X:2,F`` and ``cur/X:2,R``, one file; at UPDATE a ``stat`` fails with ``EIO``,
    of the listed name or of the other one. A name that could not be looked at was
    taken for another file's, left, and the DELE reported done: the deleted message
    came back. The DELE fails now (RFC 1939 §6: QUIT answers ``-ERR``), and the message
    is there, whole, for the next session to delete."""
    path = maildir_with(tmp_path / "alice", {f"cur/{UID}:2,F": CONTENT})
    os.link(path / "cur" / f"{UID}:2,F", path / "cur" / f"{UID}:2,R")
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [UID]
    fail_stat(
        monkeypatch,
        (lambda name: name == f"{UID}:2,F") if listed else (lambda name: name != f"{UID}:2,F"),
    )
    with pytest.raises(MaildropError, match="1 deleted messages could not be removed"):
        run(maildir.update(deleted={1}, retrieved=set()))
    run(maildir.close())
    monkeypatch.undo()
    assert names(path) == [f"cur/{UID}:2,F", f"cur/{UID}:2,R"]
    again = Maildir(path)
    run(again.messages())
    run(again.update(deleted={1}, retrieved=set()))
    run(again.close())
    assert names(path) == []


def test_flags_of_another_name_stay_on_it_when_the_merged_name_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``cur/X:2,F`` listed, ``cur/X:2,R`` another name of its file, and a copy the
    server cannot read already under ``cur/X:2,FR``. The UPDATE removed ``X:2,R``, then
    found the merged name taken: the R flag was gone, and the WARNING said the flags
    were unchanged. The move comes first now: refused, it leaves every name."""
    path = maildir_with(tmp_path / "alice", {f"cur/{UID}:2,F": CONTENT})
    os.link(path / "cur" / f"{UID}:2,F", path / "cur" / f"{UID}:2,R")
    (path / "cur" / f"{UID}:2,FR").write_bytes(b"a copy\n")
    refuse(monkeypatch, "open", {f"{UID}:2,FR"})
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [UID]
        run(maildir.update(deleted=set(), retrieved=set()))
    run(maildir.close())
    assert names(path) == [f"cur/{UID}:2,F", f"cur/{UID}:2,FR", f"cur/{UID}:2,R"]
    assert (path / "cur" / f"{UID}:2,R").read_bytes() == CONTENT
    assert (path / "cur" / f"{UID}:2,FR").read_bytes() == b"a copy\n"
    [warning] = mentions(caplog, "another file has that name")
    assert "its flags unchanged" in warning.getMessage()


def after_listing(monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]) -> list[str]:
    """Run ``then`` (another reader's move) once, just after the server's first
    ``os.listdir`` of a folder; the calls the server makes are noted, in order."""
    calls: list[str] = []
    real = os.listdir

    def listdir(*args: Any) -> Any:
        listed = real(*args)
        calls.append("listdir")
        if calls.count("listdir") == 2:  # new/ and cur/: the UPDATE's shared listing
            calls.append("renamed")
            then()
        return listed

    monkeypatch.setattr(os, "listdir", listdir)
    return calls


def test_a_name_another_reader_makes_after_the_updates_listing_is_removed_by_a_dele(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages 1 and 2 deleted. Message 1's file is linked into another maildrop too
    (one delivery to two users), so its DELE lists ``new/`` and ``cur/``, a listing the
    UPDATE shares. Message 2 is ``cur/Y:2,F`` with ``new/Y`` its other name; another
    reader moves ``new/Y`` to ``cur/Y:2,S`` just after that listing. The DELE of 2 took
    its names from the listing, missed ``cur/Y:2,S``, and QUIT said +OK: message 2 came
    back at the next login. A message with other names has them listed anew."""
    other_uid = "1700000002.M1P1.test"
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    bob = maildir_with(tmp_path / "bob", {})
    os.link(path / "new" / UID, bob / "new" / UID)
    (path / "new" / other_uid).write_bytes(b"second\n")
    os.link(path / "new" / other_uid, path / "cur" / f"{other_uid}:2,F")
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [UID, other_uid]
    calls = after_listing(
        monkeypatch,
        lambda: (path / "new" / other_uid).rename(path / "cur" / f"{other_uid}:2,S"),
    )
    run(maildir.update(deleted={1, 2}, retrieved=set()))
    run(maildir.close())
    monkeypatch.undo()
    assert calls[:3] == ["listdir", "listdir", "renamed"]
    assert names(path) == []
    assert names(bob) == [f"new/{UID}"]
    again = Maildir(path)
    assert run(again.messages()) == []
    run(again.close())


def test_a_file_linked_into_other_maildrops_costs_one_listing_an_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message's file linked into another maildrop too: each DELE asks for the
    names of its unique name, and they share one listing of ``new/`` and ``cur/``, so
    that the UPDATE stays linear in the messages."""
    uids = [f"17000000{n:02}.M1P1.test" for n in range(10)]
    path = maildir_with(tmp_path / "alice", {f"new/{uid}": CONTENT for uid in uids})
    bob = maildir_with(tmp_path / "bob", {})
    for uid in uids:
        os.link(path / "new" / uid, bob / "new" / uid)
    maildir = Maildir(path)
    assert len(run(maildir.messages())) == len(uids)
    calls = after_listing(monkeypatch, lambda: None)
    run(maildir.update(deleted=set(range(1, len(uids) + 1)), retrieved=set()))
    run(maildir.close())
    monkeypatch.undo()
    assert calls == ["listdir", "listdir", "renamed"]
    assert names(path) == []
    assert len(names(bob)) == len(uids)


def test_deles_of_messages_with_a_second_name_list_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message a move cut short (``new/X`` and ``cur/X:2,F``, one file), all
    deleted. Each DELE listed ``new/`` and ``cur/`` anew, two listings a message, so
    that the UPDATE was quadratic, with the maildrop's lock held. The names the session
    knows are removed directly, and a folder is listed only where another reader has
    been at a message: none here."""
    uids = [f"17000000{n:02}.M1P1.test" for n in range(20)]
    path = maildir_with(tmp_path / "alice", {f"new/{uid}": CONTENT for uid in uids})
    for uid in uids:
        os.link(path / "new" / uid, path / "cur" / f"{uid}:2,F")
    maildir = Maildir(path)
    assert len(run(maildir.messages())) == len(uids)
    calls = after_listing(monkeypatch, lambda: None)
    run(maildir.update(deleted=set(range(1, len(uids) + 1)), retrieved=set()))
    run(maildir.close())
    monkeypatch.undo()
    assert calls.count("listdir") <= 2
    assert names(path) == []


def test_a_dele_failed_at_another_name_names_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Listed as ``cur/X:2,F`` with ``new/X`` its other name, which cannot be looked at
    (``EIO``) at UPDATE. The WARNING named ``cur/X:2,F``, which was fine: it names
    ``new/X``, for the operator to look at the name that failed."""
    path = tmp_path / "alice"
    maildir = listed_twice_named(path)
    fail_stat(monkeypatch, lambda name: name == UID)
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(MaildropError, match="1 deleted messages could not be removed"),
    ):
        run(maildir.update(deleted={1}, retrieved=set()))
    run(maildir.close())
    monkeypatch.undo()
    [warning] = mentions(caplog, "not removed at UPDATE")
    assert repr(str(path / "new" / UID)) in warning.getMessage()
    assert names(path) == [f"cur/{UID}:2,F", f"new/{UID}"]


def test_a_kept_message_whose_old_name_cannot_be_removed_is_warned_as_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``new/X`` kept: linked to ``cur/X:2,``, then its old name cannot be looked at
    (``EIO``) to be removed. The WARNING said it was not moved and stayed where it was,
    its flags unchanged, while it had both names: it says so now, and the next
    listing takes the two for one message, whose UPDATE removes the old name."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [UID]
    fail_stat(monkeypatch, lambda name: name == UID)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved=set()))
    run(maildir.close())
    monkeypatch.undo()
    assert names(path) == [f"cur/{UID}:2,", f"new/{UID}"]
    assert not mentions(caplog, "stay where they are")
    [warning] = mentions(caplog, "this old name could not be removed")
    assert repr(str(path / "new" / UID)) in warning.getMessage()
    again = Maildir(path)
    assert [m.uid for m in run(again.messages())] == [UID]
    run(again.update(deleted=set(), retrieved=set()))
    run(again.close())
    assert names(path) == [f"cur/{UID}:2,"]
