"""smtpcore.maildrop: UPDATE moves a message file without ever replacing another.

``rename()`` at UPDATE (``new/X`` to ``cur/X:2,``, or a flag added) replaced a file
already under the new name: one the listing had left out (unreadable, or a second
copy of the message), destroyed by a client that only logged in and quit. The move is
now a hard link then an unlink; a taken name leaves the message where it is.

The suite may run as root, whom a mode does not stop: a file is made unreadable by
making ``os.open`` refuse it (see ``test_maildrop_unreadable``).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from peers import write_maildir
from smtpcore.maildrop import Maildir
from test_maildrop_unreadable import LOGGER, mentions, refuse, run

UID = "1700000001.M1P1.test"


def maildir_with(path: Path, files: dict[str, bytes]) -> Path:
    """The Maildir ``path`` holding ``files`` (``new/NAME`` or ``cur/NAME``: content)."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_bytes(content)
    return path


def names(path: Path) -> list[str]:
    return sorted(f"{sub}/{name}" for sub in ("new", "cur") for name in os.listdir(path / sub))


def test_a_quit_replaces_no_unreadable_file_under_the_name_the_message_moves_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A readable ``new/X`` is listed in place of an unreadable ``cur/X:2,``; the UPDATE
    of a session that only QUITs moved ``new/X`` over it. Both stay as they were, and
    a WARNING names both."""
    path = maildir_with(
        tmp_path / "alice",
        {f"new/{UID}": b"Subject: listed\n\nhello\n", f"cur/{UID}:2,": b"another uid's\n"},
    )
    refuse(monkeypatch, "open", {f"{UID}:2,"})
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [UID]
        run(maildir.update(deleted=set(), retrieved=set()))
    run(maildir.close())
    assert (path / "cur" / f"{UID}:2,").read_bytes() == b"another uid's\n"
    assert (path / "new" / UID).read_bytes() == b"Subject: listed\n\nhello\n"
    [warning] = mentions(caplog, "not moved")
    assert repr(str(path / "new" / UID)) in warning.getMessage()
    assert repr(str(path / "cur" / f"{UID}:2,")) in warning.getMessage()


def test_a_retrieved_message_replaces_no_hidden_copy_under_its_seen_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The listed ``cur/X:2,`` RETRieved, then QUIT: its move to ``cur/X:2,S`` replaced
    the second copy there, which the listing had named as hidden behind it."""
    path = maildir_with(
        tmp_path / "alice",
        {f"cur/{UID}:2,": b"Subject: listed\n\nhello\n", f"cur/{UID}:2,S": b"the copy\n"},
    )
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert len(run(maildir.messages())) == 1
        run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert (path / "cur" / f"{UID}:2,S").read_bytes() == b"the copy\n"
    assert (path / "cur" / f"{UID}:2,").read_bytes() == b"Subject: listed\n\nhello\n"
    assert len(mentions(caplog, "not moved")) == 1


def test_a_kept_message_still_moves_to_cur_with_its_seen_flag_and_one_name(
    tmp_path: Path,
) -> None:
    [new] = write_maildir(tmp_path / "alice", [b"Subject: one\n\nfirst\n"])
    maildir = Maildir(tmp_path / "alice")
    run(maildir.messages())
    run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert names(tmp_path / "alice") == [f"cur/{new.name}:2,S"]
    moved = tmp_path / "alice" / "cur" / f"{new.name}:2,S"
    assert moved.read_bytes() == b"Subject: one\n\nfirst\n"
    assert moved.stat().st_nlink == 1


@pytest.mark.parametrize("deleted", [False, True], ids=["kept", "deleted"])
def test_a_move_cut_short_between_link_and_unlink_is_one_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deleted: bool
) -> None:
    """A crash between the link and the unlink leaves ``new/X`` and ``cur/X:2,S``, one
    file: it is listed once, with no warning of a copy, and its UPDATE removes the
    name it was moving from (both, for a DELE: a message deleted comes back never)."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    os.link(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [UID]
        run(maildir.update(deleted={1} if deleted else set(), retrieved=set()))
    run(maildir.close())
    assert caplog.records == []
    assert names(path) == ([] if deleted else [f"cur/{UID}:2,S"])


def test_a_message_found_again_under_its_other_name_keeps_that_name(tmp_path: Path) -> None:
    """A move cut short is listed as ``cur/X:2,S`` with ``new/X`` its other name;
    another reader (Dovecot's duplicate fixer) removes ``cur/X:2,S`` in the session,
    and RETR finds the message under ``new/X``. That name stayed among the entry's
    other names, and QUIT removed it as one: the message kept, its last name gone."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    os.link(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [UID]
    (path / "cur" / f"{UID}:2,S").unlink()  # the other reader's
    assert b"".join(maildir.open(1)) == b"Subject: one\n\nfirst\n"
    run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert len(names(path)) == 1
    (kept,) = names(path)
    assert (path / kept).read_bytes() == b"Subject: one\n\nfirst\n"


def test_a_link_to_another_file_is_never_taken_for_a_move_cut_short(tmp_path: Path) -> None:
    """Only a name of the very same file is removed with the message: a file put under
    that name since is another message, and stays."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    os.link(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "new" / UID).unlink()
    (path / "new" / UID).write_bytes(b"another\n")
    run(maildir.update(deleted={1}, retrieved=set()))
    run(maildir.close())
    assert names(path) == [f"new/{UID}"]
    assert (path / "new" / UID).read_bytes() == b"another\n"


def test_without_hard_links_a_message_stays_where_it_is_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A filesystem without hard links (``EPERM`` from ``link``, as FAT gives) keeps the
    messages in ``new/``, still listed, and one line says so for the whole UPDATE."""
    paths = write_maildir(tmp_path / "alice", [b"1\n", b"2\n", b"3\n"])

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    maildir = Maildir(tmp_path / "alice")
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1, 2, 3}))
    run(maildir.close())
    assert names(tmp_path / "alice") == sorted(f"new/{p.name}" for p in paths)
    [warning] = caplog.records
    assert "3 kept message(s) not moved" in warning.getMessage()
    assert repr(str(paths[0])) in warning.getMessage()
