"""smtpcore.maildrop: the names of one message file at UPDATE, while other readers rename.

A move cut short leaves a message's file two names (``cur/X:2,F`` and ``new/X``); the
UPDATE removes the extra ones, all of them for a DELE. Another reader (Dovecot, a mail
user agent) may rename any of them in the session, or put another file under one, and
a name may fail to be looked at (``EIO``): a DELE never counts as done while a name of
the message is left, no flag another reader set is lost, and no other file is removed.
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


def before_renaming(
    monkeypatch: pytest.MonkeyPatch, name: str, then: Callable[[], object]
) -> None:
    """Run ``then`` (another reader's move) once, just before the server's first
    ``os.rename`` or ``os.unlink`` of ``name``: after every check it made of it."""
    done: list[bool] = []

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if path == name and not done:
                done.append(True)
                then()
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(os, "unlink", wrap(os.unlink))


def test_a_file_renamed_onto_a_name_between_its_check_and_its_removal_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``new/X`` listed; another reader renames it ``cur/X:2,F``, a move cut short
    leaves ``cur/X:2,R`` on the same file, and RETR finds the message again. Just
    after the UPDATE has checked that ``cur/X:2,R`` is the message's file, another
    reader renames a different file onto it: the removal destroyed that file. It is
    kept now, under its name, and nothing is said."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    (path / "tmp" / "copy").write_bytes(b"a copy\n")
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "new" / UID).rename(path / "cur" / f"{UID}:2,F")
    os.link(path / "cur" / f"{UID}:2,F", path / "cur" / f"{UID}:2,R")
    assert b"".join(maildir.open(1)) == CONTENT
    before_renaming(
        monkeypatch,
        f"{UID}:2,R",
        lambda: (path / "tmp" / "copy").rename(path / "cur" / f"{UID}:2,R"),
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert caplog.records == []
    assert (path / "cur" / f"{UID}:2,R").read_bytes() == b"a copy\n"
    assert (path / "cur" / f"{UID}:2,FRS").read_bytes() == CONTENT
    assert names(path) == [f"cur/{UID}:2,FRS", f"cur/{UID}:2,R"]


def test_a_file_that_cannot_have_its_name_back_is_kept_aside_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As above, and a third file is put under ``cur/X:2,R`` before the one taken
    aside can go back: neither is replaced; the one aside keeps a name readers skip,
    and a WARNING names both, for someone to rename it back."""
    path = maildir_with(tmp_path / "alice", {f"cur/{UID}:2,F": CONTENT})
    os.link(path / "cur" / f"{UID}:2,F", path / "cur" / f"{UID}:2,R")
    (path / "tmp" / "copy").write_bytes(b"a copy\n")
    maildir = Maildir(path)
    run(maildir.messages())

    def two_readers() -> None:
        (path / "tmp" / "copy").rename(path / "cur" / f"{UID}:2,R")
        real_link = os.link

        def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            if dst == f"{UID}:2,R":
                (path / "cur" / f"{UID}:2,R").write_bytes(b"a third\n")
            return real_link(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "link", link)

    before_renaming(monkeypatch, f"{UID}:2,R", two_readers)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted={1}, retrieved=set()))
    run(maildir.close())
    [aside] = [name for name in os.listdir(path / "cur") if name.startswith(".")]
    assert (path / "cur" / aside).read_bytes() == b"a copy\n"
    assert (path / "cur" / f"{UID}:2,R").read_bytes() == b"a third\n"
    [warning] = mentions(caplog, "rename it back")
    assert repr(str(path / "cur" / aside)) in warning.getMessage()
    assert repr(str(path / "cur" / f"{UID}:2,R")) in warning.getMessage()
