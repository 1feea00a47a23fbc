"""smtpcore.maildrop: files and folders of a Maildir the server cannot read.

A file another agent wrote ``0600`` under its own uid refused the whole login with
``-ERR [SYS/TEMP]`` (which fetchmail and mpop retry at every poll, for ever), and
nothing in the log named it. Now such a file is left out of the listing, with a
WARNING naming it, and comes in a later session under the same unique-id; a folder
that cannot be read, or a message file that became unreadable, is refused with the
code ``_cannot_open`` gives (``SYS/PERM`` for a permission), logged once, naming it.

The suite may run as root, whom a mode does not stop: files are made unreadable by
making ``os.open`` (``os.stat``, ``os.scandir``, ``os.unlink``) refuse them.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import poplib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from peers import running_pop3_server, write_maildir
from smtpcore.maildrop import (
    READ_SIZE,
    Maildir,
    MaildirStore,
    Maildrop,
    MaildropError,
    Mailstore,
    MessageUnavailable,
    POP3Session,
)

T = TypeVar("T")
LOGGER = "smtpcore.pop3.server"
PASSWORDS = {"alice": "wonderland"}
MESSAGES = [b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond\n", b"Subject: three\n\nthird\n"]


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def refuse(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    names: set[str],
    error: int = errno.EACCES,
) -> None:
    """Make ``os.<name>`` fail with ``error`` for a file named in ``names`` (as relative
    to a folder's descriptor, or as a path ending so): what a file another uid wrote
    ``0600`` gives a server without ``CAP_DAC_OVERRIDE``, as root or not."""
    real: Callable[..., Any] = getattr(os, name)

    def refusing(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, str | os.PathLike) and os.path.basename(os.fspath(path)) in names:
            raise OSError(error, os.strerror(error), os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, name, refusing)


def refuse_folder(monkeypatch: pytest.MonkeyPatch, folder: Path, error: int) -> None:
    """Make ``os.scandir`` of the open folder ``folder`` fail with ``error``."""
    real = os.scandir
    inode = folder.stat().st_ino

    def scandir(path: Any = ".") -> Any:
        if isinstance(path, int) and os.fstat(path).st_ino == inode:
            raise OSError(error, os.strerror(error))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def mentions(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("call", ["open", "stat"])
def test_an_unreadable_file_is_left_out_with_a_warning_and_comes_back_under_its_uid(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    call: str,
) -> None:
    """One file that cannot be read (to be sized: its name has no ``,W=``) refused the
    whole maildrop. It is left out now, the others numbered in order for the session
    (RFC 1939 §5), with one WARNING naming it and the error; once readable, a later
    session lists it under the unique-id it always had (its name, RFC 1939 §7), and the
    others under theirs: no message comes twice."""
    paths = write_maildir(tmp_path / "alice", MESSAGES)
    with monkeypatch.context() as patched:
        refuse(patched, call, {paths[1].name})
        maildir = Maildir(tmp_path / "alice")
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            first = run(maildir.messages())
        run(maildir.close())
    assert [m.uid for m in first] == [paths[0].name, paths[2].name]
    [warning] = mentions(caplog, paths[1].name)
    assert warning.levelno == logging.WARNING
    assert repr(str(paths[1])) in warning.getMessage()
    assert "Permission denied" in warning.getMessage()

    later = run(Maildir(tmp_path / "alice").messages())
    assert [m.uid for m in later] == [p.name for p in paths]


@pytest.mark.parametrize("suffix", ["", ",S=12,W=13"], ids=["read", "named-size"])
def test_an_unreadable_file_hides_no_readable_one_of_the_same_unique_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    suffix: str,
) -> None:
    """A file in ``cur/`` that the server cannot read (its ``stat`` works, as for a
    ``0600`` file of another uid), named as a readable message in ``new/``, was listed
    first, so that the readable one was dropped as its copy and then it as unreadable:
    neither listed, and a warning that said the unreadable one was. Anyone who could
    write into ``cur/`` hid a message so. The readable one is listed now, and the one
    warning names the unreadable file as not listed; no copy is claimed."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    base = f"1700000001.M1P1.test{suffix}"
    (path / "new" / base).write_bytes(b"the message\n")
    planted = path / "cur" / f"{base}:2,"
    planted.write_bytes(b"planted file\n")
    refuse(monkeypatch, "open", {planted.name})
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        listing = run(maildir.messages())
    assert [(m.uid, m.size) for m in listing] == [(base, 13)]
    assert b"".join(maildir.open(1)) == b"the message\n"
    run(maildir.close())
    [warning] = caplog.records
    assert warning.getMessage().startswith(f"maildrop: {str(planted)!r} is not listed: ")
    assert "share the unique name" not in warning.getMessage()


def test_a_copy_is_named_only_beside_the_file_finally_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Three files of one unique name, the first unreadable: the second is listed, and
    the warning about a copy names the second as listed and the third as not."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    base = "1700000001.M1P1.test"
    planted = path / "cur" / f"{base}:2,"
    listed = path / "cur" / f"{base}:2,S"
    copy = path / "new" / base
    for file in (planted, listed, copy):
        file.write_bytes(file.name.encode() + b"\n")
    refuse(monkeypatch, "open", {planted.name})
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.uid for m in run(maildir.messages())] == [base]
    assert b"".join(maildir.open(1)) == listed.name.encode() + b"\n"
    run(maildir.close())
    [unreadable] = mentions(caplog, "is not listed")
    assert repr(str(planted)) in unreadable.getMessage()
    [hidden] = mentions(caplog, "share the unique name")
    assert f"{str(listed)!r} is listed, {str(copy)!r} is not" in hidden.getMessage()
    assert len(caplog.records) == 2


def test_a_failure_that_is_not_the_files_own_refuses_the_listing_for_now_and_logs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of descriptors is the server's state, not the file's: leaving the file out
    would show the client a maildrop with holes at random. The listing is refused
    ``SYS/TEMP``, and the WARNING names the file it was reading."""
    paths = write_maildir(tmp_path / "alice", MESSAGES)
    refuse(monkeypatch, "open", {paths[0].name}, errno.EMFILE)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(MaildropError) as raised:
        run(Maildir(tmp_path / "alice").messages())
    assert raised.value.code == "SYS/TEMP"
    [warning] = mentions(caplog, paths[0].name)
    assert "Too many open files" in warning.getMessage()
    assert raised.value.logged


@pytest.mark.parametrize(("error", "code"), [(errno.EACCES, "SYS/PERM"), (errno.EIO, "SYS/TEMP")])
def test_a_folder_that_cannot_be_read_refuses_the_maildrop_and_names_the_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: int,
    code: str,
) -> None:
    """``new/`` that cannot be listed: the maildrop cannot be served as a whole, and is
    refused, with the code ``_cannot_open`` gives the same cause (a permission is
    permanent: no retry cures it, RFC 3206 §4) and a WARNING naming the folder."""
    write_maildir(tmp_path / "alice", MESSAGES)
    refuse_folder(monkeypatch, tmp_path / "alice" / "new", error)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(MaildropError) as raised:
        run(Maildir(tmp_path / "alice").messages())
    assert raised.value.code == code
    assert str(raised.value) == f"Cannot read the maildrop: {os.strerror(error)}"
    [warning] = caplog.records
    assert repr(str(tmp_path / "alice" / "new")) in warning.getMessage()


def test_a_message_file_unreadable_at_retr_is_refused_permanently_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file whose name gives its size (``,W=``) is listed unread; if it cannot be
    read at RETR, the answer is ``SYS/PERM`` (as ``_cannot_open`` answers a permission
    refused) and one WARNING names it."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    name = "1700000001.M1P1.test,S=20,W=21"
    (path / "new" / name).write_bytes(b"Subject: w\n\nbody\n..")
    maildir = Maildir(path)
    assert [m.uid for m in run(maildir.messages())] == [name]
    refuse(monkeypatch, "open", {name})
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(MaildropError) as raised:
        next(iter(maildir.open(1)))
    run(maildir.close())
    assert raised.value.code == "SYS/PERM"
    assert str(raised.value) == "Cannot read the message: Permission denied"
    [warning] = caplog.records
    assert repr(str(path / "new" / name)) in warning.getMessage()
    assert raised.value.logged


def test_deleted_messages_that_cannot_be_removed_are_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """UPDATE that cannot remove deleted messages says which (the first) and how many,
    in one WARNING, however many there are."""
    paths = write_maildir(tmp_path / "alice", MESSAGES)
    maildir = Maildir(tmp_path / "alice")
    run(maildir.messages())
    refuse(monkeypatch, "unlink", {p.name for p in paths})
    removed = "3 deleted messages could not be removed"
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(MaildropError, match=removed),
    ):
        run(maildir.update(deleted={1, 2, 3}, retrieved=set()))
    run(maildir.close())
    [warning] = caplog.records
    assert repr(str(paths[0])) in warning.getMessage() and "(3 deleted" in warning.getMessage()


# -- over the wire ---------------------------------------------------------------


def test_a_server_serves_the_rest_of_a_maildrop_and_refuses_an_unreadable_message(
    adapter: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The audit's case, on both adapters: a file with no ``,W=`` that cannot be read,
    and one with it. The login succeeds with the readable messages; RETR of the other is
    ``-ERR [SYS/PERM]``; each file is named once in the log, and nothing else is said
    of either."""
    path = tmp_path / "mail" / "alice"
    paths = write_maildir(path, MESSAGES)
    sized = path / "new" / "1700000009.M9P9.test,S=20,W=21"
    sized.write_bytes(b"Subject: w\n\nbody\n..")
    refuse(monkeypatch, "open", {paths[1].name, sized.name})
    store = MaildirStore(tmp_path / "mail", PASSWORDS)
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server(adapter, store) as server,
    ):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        assert client.pass_("wonderland").startswith(b"+OK Logged in, 3 messages")
        assert [line.split()[1] for line in client.uidl()[1]] == [
            paths[0].name.encode(),
            paths[2].name.encode(),
            sized.name.encode(),
        ]
        with pytest.raises(poplib.error_proto) as raised:
            client.retr(3)
        refusal = b"-ERR [SYS/PERM] Cannot read the message: Permission denied"
        assert raised.value.args[0] == refusal
        assert client.retr(2)[1] == [b"Subject: three", b"", b"third"]
        client.quit()
    assert len(mentions(caplog, paths[1].name)) == 1
    assert len(mentions(caplog, sized.name)) == 1
    assert len(mentions(caplog, "Permission denied")) == 2


class _Refusing(Mailstore):
    """A store of an embedder's own, whose maildrops cannot be opened."""

    def __init__(self, error: MaildropError) -> None:
        self.error = error

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        return True

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        raise self.error


@pytest.mark.parametrize(("logged", "lines"), [(False, 1), (True, 0)], ids=["unlogged", "logged"])
def test_a_stores_own_refusal_is_logged_once_unless_the_store_logged_it(
    adapter: str, caplog: pytest.LogCaptureFixture, logged: bool, lines: int
) -> None:
    """An embedder's store that refuses a maildrop left no trace: the server now logs
    the refusal it was not told the store logged (``error.logged = True``), naming the
    hook."""
    text = "Mailbox on a broken disk"
    error = MaildropError(text)
    if logged:
        error.logged = True
    store = _Refusing(error)
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server(adapter, store) as server,
    ):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        with pytest.raises(poplib.error_proto, match="SYS/TEMP"):
            client.pass_("any")
        client.quit()
    found = mentions(caplog, "Mailbox on a broken disk")
    assert len(found) == lines
    if found:
        assert "open_maildrop('alice')" in found[0].getMessage()
        assert found[0].levelno == logging.WARNING


class _OverQuota(MaildropError):
    """An embedder's error that sets its code itself and never calls
    ``MaildropError.__init__``, as one written against 0.x may."""

    def __init__(self) -> None:
        Exception.__init__(self, "Over quota")
        self.code = "SYS/PERM"


def test_an_embedders_error_that_skips_maildroperrors_init_is_answered_and_logged(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Such an error was answered with its ``-ERR`` before ``logged`` came; reading an
    attribute only ``__init__`` set broke the session (the client got EOF). ``logged``
    is a class attribute, False: the refusal is answered, and logged by the server."""
    store = _Refusing(_OverQuota())
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server(adapter, store) as server,
    ):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        with pytest.raises(poplib.error_proto) as raised:
            client.pass_("any")
        assert raised.value.args[0] == b"-ERR [SYS/PERM] Over quota"
        client.quit()
    assert [r.levelno for r in mentions(caplog, "Over quota")] == [logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


ADDRESS = "alice@abc.example"


def reference_store(tmp_path: Path) -> tuple[Mailstore, Path]:
    """The reference server's store, whose one user has a Maildir of
    :data:`MESSAGES`, and the path of that Maildir."""
    from smtpcore.server.config import ServerConfig
    from smtpcore.server.mailserver import MailServer
    from smtpcore.server.pop3 import POP3Store

    config = ServerConfig(domains=("abc.example",), users={ADDRESS: "pw"}, data_dir=tmp_path)
    server = MailServer(config)
    store = POP3Store(config, server.authenticator(), credentials=server.credentials)
    key = config.user_key(ADDRESS)
    assert key
    write_maildir(config.mailboxes_dir / key, MESSAGES)
    return store, config.mailboxes_dir / key


def test_the_reference_servers_line_of_a_login_whose_maildrop_failed_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reference server's line for a login refused because the maildrop could not
    be read said ``method=-``, as if no password had been right: it shows the
    mechanism now, and that the maildrop failed, with the answer's code."""
    store, maildir = reference_store(tmp_path)
    refuse_folder(monkeypatch, maildir / "new", errno.EACCES)
    with (
        caplog.at_level(logging.INFO),
        running_pop3_server("asyncio", store) as pop3,
    ):
        client = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
        client.user(ADDRESS)
        with pytest.raises(poplib.error_proto, match="Cannot read the maildrop"):
            client.pass_("pw")
        client.quit()
    [line] = mentions(caplog, "pop3: disconnect from")
    text = line.getMessage()
    assert " method=USER " in text, text
    assert "(maildrop failed: [SYS/PERM] Cannot read the maildrop: Permission denied" in text


# -- RETR and TOP of a file that cannot be read -----------------------------------


def fail_reads(monkeypatch: pytest.MonkeyPatch, path: Path, after: int = 0) -> None:
    """Make ``os.read`` of the file at ``path`` fail with ``EIO`` (a bad block) once
    ``after`` reads of it have succeeded: the file opens, and its content does not
    come."""
    real = os.read
    inode = path.stat().st_ino
    done = [0]

    def read(fd: int, count: int) -> bytes:
        if os.fstat(fd).st_ino == inode:
            if done[0] >= after:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            done[0] += 1
        return real(fd, count)

    monkeypatch.setattr(os, "read", read)


def test_eio_reading_a_message_is_refused_and_names_the_file(
    adapter: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``EIO`` comes at the read, not at the open: it escaped ``Maildir.open`` as a raw
    ``OSError``, answered ``-ERR [SYS/TEMP] Internal error`` with an ERROR traceback
    that named no file. It is the file's refusal now, as one that cannot be opened:
    ``[SYS/TEMP]`` (a retry may find the block read), one WARNING naming the file."""
    path = tmp_path / "mail" / "alice"
    write_maildir(path, [])
    name = "1700000009.M9P9.test,S=20,W=21"
    (path / "new" / name).write_bytes(b"Subject: w\n\nbody\n..")
    fail_reads(monkeypatch, path / "new" / name)
    store = MaildirStore(tmp_path / "mail", PASSWORDS)
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server(adapter, store) as server,
    ):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        with pytest.raises(poplib.error_proto) as raised:
            client.retr(1)
        refusal = b"-ERR [SYS/TEMP] Cannot read the message: Input/output error"
        assert raised.value.args[0] == refusal
        client.quit()
    [warning] = mentions(caplog, name)
    assert warning.levelno == logging.WARNING
    assert repr(str(path / "new" / name)) in warning.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_eio_once_a_message_streams_closes_the_session_and_names_the_file_once(
    adapter: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read that fails after ``+OK`` and part of the message cannot become ``-ERR``:
    the session is closed, the message unfinished (the client deletes nothing), the
    file named in one WARNING, with no traceback and no second line from the server;
    the lock is released, so the next session logs in."""
    path = tmp_path / "mail" / "alice"
    [big] = write_maildir(path, [b"Subject: big\n\n" + (b"x" * 75 + b"\n") * 14000])
    store = MaildirStore(tmp_path / "mail", PASSWORDS)
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server(adapter, store) as server,
    ):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")  # the listing has read it whole, to size it
        fail_reads(monkeypatch, big, after=2)  # past the first write's worth, sent
        with pytest.raises(poplib.error_proto, match="EOF"):
            client.retr(1)
        client.close()
        again = poplib.POP3("127.0.0.1", server.port, timeout=10)
        again.user("alice")
        assert again.pass_("wonderland").startswith(b"+OK Logged in, 1 message (")
        again.quit()
    [warning] = mentions(caplog, big.name)
    assert "Input/output error" in warning.getMessage()
    assert "past octet" in warning.getMessage()
    assert not mentions(caplog, "broke off")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_message_refused_again_and_again_is_named_once_a_session(
    adapter: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each RETR or TOP of a listed file that cannot be read logged a WARNING, without
    bound (500 RETR, 500 lines). The first names the file; the others are answered the
    same with no line, as a listing names a file it leaves out once; the next session
    names it again."""
    path = tmp_path / "mail" / "alice"
    write_maildir(path, [])
    name = "1700000009.M9P9.test,S=20,W=21"
    (path / "new" / name).write_bytes(b"Subject: w\n\nbody\n..")
    refuse(monkeypatch, "open", {name, f"{name}:2,"})  # QUIT moves it to cur/
    store = MaildirStore(tmp_path / "mail", PASSWORDS)
    refusal = b"-ERR [SYS/PERM] Cannot read the message: Permission denied"
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server(adapter, store) as server,
    ):
        for _ in range(2):
            client = poplib.POP3("127.0.0.1", server.port, timeout=10)
            client.user("alice")
            client.pass_("wonderland")
            for top in [False, True] * 10:
                with pytest.raises(poplib.error_proto) as raised:
                    client.top(1, 0) if top else client.retr(1)
                assert raised.value.args[0] == refusal
            client.quit()
    assert len(mentions(caplog, name)) == 2


def test_a_grown_message_refused_again_is_named_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file grown past its listed size is refused at each RETR; the warning that
    names it is given once a session, as for a file that cannot be read."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    grown = path / "new" / "1700000002.M2P2.test,S=4,W=5"
    grown.write_bytes(b"two\n" + b"x" * (READ_SIZE + 10))
    maildir = Maildir(path)
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            with pytest.raises(MessageUnavailable):
                next(iter(maildir.open(1)))
    run(maildir.close())
    [warning] = caplog.records
    assert repr(str(grown)) in warning.getMessage()


def test_a_lock_the_kernel_refuses_keeps_its_wording_and_names_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``flock`` failing for another cause than another session's lock (``ENOLCK``)
    is ``Cannot lock the maildrop``, as it always was (it read ``Cannot open the
    maildrop`` for a while), ``SYS/TEMP``, and a WARNING names the lock file."""
    write_maildir(tmp_path / "alice", MESSAGES)

    def flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", flock)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(MaildropError) as raised:
        Maildir(tmp_path / "alice").lock()
    assert str(raised.value) == f"Cannot lock the maildrop: {os.strerror(errno.ENOLCK)}"
    assert raised.value.code == "SYS/TEMP"
    [warning] = caplog.records
    assert repr(str(tmp_path / "alice" / "smtpcore-pop3.lock")) in warning.getMessage()


def test_the_reference_server_says_a_maildrop_in_use_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second session of a user whose maildrop is locked got the session's line
    (``maildrop failed: [IN-USE] ...``) and the server's own ``open_maildrop(...)
    refused`` line too. The session's line says it all: it is the one line."""
    store, _ = reference_store(tmp_path)
    with (
        caplog.at_level(logging.DEBUG, logger="smtpcore"),
        running_pop3_server("asyncio", store) as pop3,
    ):
        first = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
        first.user(ADDRESS)
        first.pass_("pw")
        second = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
        second.user(ADDRESS)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_("pw")
        second.quit()
        first.quit()
    [line] = mentions(caplog, "already locked")
    assert "(maildrop failed: [IN-USE] " in line.getMessage()
