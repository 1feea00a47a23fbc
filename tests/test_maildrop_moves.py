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
import poplib
from pathlib import Path

import pytest

from peers import running_pop3_server, write_maildir
from smtpcore.maildrop import Maildir, MaildirStore, MaildropError
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


NO_LINK_ERRORS = sorted({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK})


def refuse_links(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """Make ``os.link`` fail with ``error``: a file system without hard links (``EPERM``
    from FAT, ``EOPNOTSUPP`` from some FUSE ones), ``fs.protected_hardlinks`` on a file
    of another uid (``EPERM``), a file with as many links as it may have (``EMLINK``)."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "link", no_links)


@pytest.mark.parametrize("error", [errno.EROFS, errno.EACCES], ids=errno.errorcode.get)
def test_a_move_failing_otherwise_leaves_the_messages_where_they_are_with_one_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: int,
) -> None:
    """A ``link`` that fails for a cause a ``rename`` would meet as well (a read-only
    file system, a folder the server may not write) keeps the messages in ``new/``,
    still listed, and one line says so for the whole UPDATE, with how many: not a
    line a message at every QUIT."""
    paths = write_maildir(tmp_path / "alice", [b"1\n", b"2\n", b"3\n"])
    refuse_links(monkeypatch, error)
    maildir = Maildir(tmp_path / "alice")
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1, 2, 3}))
    run(maildir.close())
    assert names(tmp_path / "alice") == sorted(f"new/{p.name}" for p in paths)
    [warning] = caplog.records
    assert "3 kept message(s) not moved" in warning.getMessage()
    assert repr(str(paths[0])) in warning.getMessage()


@pytest.mark.parametrize("error", NO_LINK_ERRORS, ids=errno.errorcode.get)
def test_where_the_kernel_refuses_hard_links_a_kept_message_still_moves_to_cur(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: int,
) -> None:
    """A refused ``link`` left every kept message in ``new/``, unflagged, with a WARNING
    at every QUIT, for ever. The move falls back to a ``rename`` onto a free name: each
    message ends in ``cur/`` with its flags, under one name, and nothing is said."""
    paths = write_maildir(tmp_path / "alice", [b"1\n", b"2\n", b"3\n"])
    refuse_links(monkeypatch, error)
    maildir = Maildir(tmp_path / "alice")
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1, 3}))
    run(maildir.close())
    assert caplog.records == []
    assert names(tmp_path / "alice") == [
        f"cur/{paths[0].name}:2,S",
        f"cur/{paths[1].name}:2,",
        f"cur/{paths[2].name}:2,S",
    ]
    assert (tmp_path / "alice" / "cur" / f"{paths[1].name}:2,").read_bytes() == b"2\n"


def test_without_hard_links_a_move_still_replaces_no_file_under_the_new_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The fallback ``rename`` is made only onto a name that is free: a readable
    ``new/X`` listed in place of an unreadable ``cur/X:2,`` stays where it is, the
    other file whole, and the WARNING names both files, as with hard links."""
    path = maildir_with(
        tmp_path / "alice",
        {f"new/{UID}": b"Subject: listed\n\nhello\n", f"cur/{UID}:2,": b"another uid's\n"},
    )
    refuse(monkeypatch, "open", {f"{UID}:2,"})
    refuse_links(monkeypatch, errno.EPERM)
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [UID]
        run(maildir.update(deleted=set(), retrieved=set()))
    run(maildir.close())
    assert (path / "cur" / f"{UID}:2,").read_bytes() == b"another uid's\n"
    assert (path / "new" / UID).read_bytes() == b"Subject: listed\n\nhello\n"
    [warning] = mentions(caplog, "another file has that name")
    assert repr(str(path / "new" / UID)) in warning.getMessage()
    assert repr(str(path / "cur" / f"{UID}:2,")) in warning.getMessage()


def test_without_hard_links_a_name_already_of_the_same_file_finishes_the_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another reader's move cut short in the session leaves ``cur/X:2,S`` a second
    name of the listed ``new/X``; on a file system that refuses links now, the name the
    message moves to is the file itself: the old name goes, with no warning."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    maildir = Maildir(path)
    assert len(run(maildir.messages())) == 1
    os.link(path / "new" / UID, path / "cur" / f"{UID}:2,S")  # the other reader's
    refuse_links(monkeypatch, errno.EPERM)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert caplog.records == []
    assert names(path) == [f"cur/{UID}:2,S"]
    assert (path / "cur" / f"{UID}:2,S").read_bytes() == b"Subject: one\n\nfirst\n"


@pytest.mark.parametrize(
    ("retrieved", "deleted"),
    [(True, False), (False, True), (True, True)],
    ids=["retr-kept", "dele", "retr-dele"],
)
def test_a_message_renamed_beside_its_own_second_name_is_one_file_not_two(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, retrieved: bool, deleted: bool
) -> None:
    """``cur/X:2,`` is listed with ``new/X`` its second name (a move cut short), and
    another reader renames ``cur/X:2,`` to ``cur/X:2,S`` in the session: two names of
    its unique name, one file, which finding the message again counted as two and
    refused as ambiguous (RETR ``-ERR``, DELE not done). It is one file: RETR reads
    it, and UPDATE leaves the message one name, or none for a DELE (a deleted message
    never comes back under its other name)."""
    content = b"Subject: one\n\nfirst\n"
    path = maildir_with(tmp_path / "alice", {f"cur/{UID}:2,": content})
    os.link(path / "cur" / f"{UID}:2,", path / "new" / UID)
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [UID]
        (path / "cur" / f"{UID}:2,").rename(path / "cur" / f"{UID}:2,S")  # the other's
        if retrieved:
            assert b"".join(maildir.open(1)) == content
        run(
            maildir.update(
                deleted={1} if deleted else set(), retrieved={1} if retrieved else set()
            )
        )
    run(maildir.close())
    assert caplog.records == []
    assert names(path) == ([] if deleted else [f"cur/{UID}:2,S"])


def test_a_second_name_of_the_message_found_again_is_kept_when_it_is_another_file(
    tmp_path: Path,
) -> None:
    """Found again, the message's other names are removed only while each is still
    that file: a copy put under one meanwhile is another message, and stays."""
    content = b"Subject: one\n\nfirst\n"
    path = maildir_with(tmp_path / "alice", {f"cur/{UID}:2,": content})
    os.link(path / "cur" / f"{UID}:2,", path / "new" / UID)
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "cur" / f"{UID}:2,").rename(path / "cur" / f"{UID}:2,S")
    (path / "new" / UID).unlink()
    (path / "new" / UID).write_bytes(b"a copy\n")
    with pytest.raises(MaildropError, match="2 files hold message"):
        list(maildir.open(1))
    with pytest.raises(MaildropError, match="1 deleted messages could not be removed"):
        run(maildir.update(deleted={1}, retrieved=set()))
    run(maildir.close())
    assert names(path) == [f"cur/{UID}:2,S", f"new/{UID}"]
    assert (path / "new" / UID).read_bytes() == b"a copy\n"


def test_two_names_of_one_file_in_new_and_cur_are_one_message_over_pop3(
    tmp_path: Path, adapter: str
) -> None:
    """``new/X`` and ``cur/X:2,S``, one file: LIST and UIDL show one message, RETR sends
    it once, and DELE then QUIT removes both names."""
    content = b"Subject: one\n\nfirst\n"
    path = maildir_with(tmp_path / "mail" / "alice", {f"new/{UID}": content})
    os.link(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    with running_pop3_server(adapter, store) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        assert client.pass_("wonderland").startswith(b"+OK Logged in, 1 message")
        assert client.list()[1] == [f"1 {len(content) + 3}".encode()]
        assert client.uidl()[1] == [f"1 {UID}".encode()]
        assert client.retr(1)[1] == [b"Subject: one", b"", b"first"]
        client.dele(1)
        client.quit()
    assert names(path) == []


@pytest.mark.parametrize(
    ("retrieved", "deleted"),
    [(True, False), (False, True), (True, True)],
    ids=["retr-kept", "dele", "retr-dele"],
)
def test_a_message_moved_under_its_full_name_beside_a_second_name_is_one_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, retrieved: bool, deleted: bool
) -> None:
    """``new/X`` is listed; in the session another reader renames it to ``cur/X`` and a
    move of its own cut short leaves ``cur/X:2,S`` a second name of that file. Found
    again under its full name, the message was taken without its other names: a DELE
    removed ``cur/X`` only, and the deleted message came back at the next login under
    ``cur/X:2,S``. Every name of the file goes now, or all but one for a kept one."""
    content = b"Subject: one\n\nfirst\n"
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": content})
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [UID]
        (path / "new" / UID).rename(path / "cur" / UID)  # the other reader's
        os.link(path / "cur" / UID, path / "cur" / f"{UID}:2,S")
        if retrieved:
            assert b"".join(maildir.open(1)) == content
        run(
            maildir.update(
                deleted={1} if deleted else set(), retrieved={1} if retrieved else set()
            )
        )
    run(maildir.close())
    assert caplog.records == []
    assert names(path) == ([] if deleted else [f"cur/{UID}:2,S"])
    again = Maildir(path)
    assert [m.uid for m in run(again.messages())] == ([] if deleted else [UID])
    run(again.close())


def test_a_copy_beside_the_name_a_message_was_moved_to_is_left_as_it_was(
    tmp_path: Path,
) -> None:
    """Found again under its full name, a message's other names are the names of its
    own file only: a copy under ``cur/X:2,S`` is another file, and a DELE leaves it."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "new" / UID).rename(path / "cur" / UID)
    (path / "cur" / f"{UID}:2,S").write_bytes(b"a copy\n")
    run(maildir.update(deleted={1}, retrieved=set()))
    run(maildir.close())
    assert names(path) == [f"cur/{UID}:2,S"]
    assert (path / "cur" / f"{UID}:2,S").read_bytes() == b"a copy\n"


def test_an_ambiguous_message_names_a_few_of_its_files_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A message found again among many files of its unique name is refused as
    ambiguous, and the WARNING listed every name: thousands of files made it a line
    of a megabyte. It names the first five and says how many more there are."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "new" / UID).unlink()
    for number in range(12):
        (path / "cur" / f"{UID}:2,{number:02d}").write_bytes(b"copy %d\n" % number)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(MaildropError):
        list(maildir.open(1))
    run(maildir.close())
    [warning] = caplog.records
    text = warning.getMessage()
    assert f"12 files hold message {UID}" in text
    assert f"{UID}:2,04 and 7 more" in text
    assert f"{UID}:2,05" not in text


def test_flags_set_on_a_second_name_of_a_message_are_kept_when_that_name_goes(
    tmp_path: Path,
) -> None:
    """``cur/X:2,F`` and ``cur/X:2,R`` are one file (another reader's move cut short);
    UPDATE removes one of the names, and the flag set on it went with it. The name
    kept has the flags of both, in ASCII order; of the flags of a name removed,
    only the letters (``x`` of ``x-1``)."""
    content = b"Subject: one\n\nfirst\n"
    path = maildir_with(tmp_path / "alice", {f"cur/{UID}:2,F": content})
    os.link(path / "cur" / f"{UID}:2,F", path / "cur" / f"{UID}:2,R")
    os.link(path / "cur" / f"{UID}:2,F", path / "new" / f"{UID}:2,x-1")  # never listed
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [UID]
    run(maildir.update(deleted=set(), retrieved=set()))
    run(maildir.close())
    assert names(path) == [f"cur/{UID}:2,FRx"]
    assert (path / "cur" / f"{UID}:2,FRx").read_bytes() == content


def test_flags_of_a_name_removed_from_a_message_found_again_are_kept(tmp_path: Path) -> None:
    """``new/X`` is listed; another reader renames it ``cur/X:2,F``, and a move cut short
    leaves ``cur/X:2,R`` on the same file. RETR finds it again; QUIT keeps one name
    with every flag, ``S`` as well."""
    content = b"Subject: one\n\nfirst\n"
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": content})
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "new" / UID).rename(path / "cur" / f"{UID}:2,F")
    os.link(path / "cur" / f"{UID}:2,F", path / "cur" / f"{UID}:2,R")
    assert b"".join(maildir.open(1)) == content
    run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert names(path) == [f"cur/{UID}:2,FRS"]
