"""``python -m smtpcore.testing check --stored-maildir DIR`` / ``--stored-dir DIR``.

Without them the command line had no way to give ``check_server`` its ``stored``:
``pipelined-end`` passed a server that answered 250 for a message and lost it. With
them it looks for each message it sent among the files that came into DIR during
the run, past the trace lines a server writes above the header.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Final

import pytest

from broken_servers import PipelinedRsetServer, SmallServer, serve
from smtpcore.testing import _smtp_end_checks, _stored_files
from smtpcore.testing.__main__ import main
from smtpcore.testing._stored_files import StoredFiles
from test_cli_serve import serve as serve_reference

TRACE: Final = (
    b"Return-Path: <check@smtpcore.test>\nDelivered-To: bob@abc.example\n"
    b"Received: from check.smtpcore.test by mx.abc.example; Mon, 7 Dec 2026 13:49:47 +0000\n"
)
_names = itertools.count()
MARK: Final = b"smtpcore pipelined-end"


def _maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True)
    return path


def _deliver(folder: Path, content: bytes) -> Path:
    """A message file as a Maildir writer leaves it: LF line ends, trace lines on top."""
    path = folder / f"{next(_names)}.M1P{os.getpid()}.check.test"
    path.write_bytes(TRACE + content.replace(b"\r\n", b"\n"))
    return path


class MaildirWriting(SmallServer):
    """Writes each message it keeps into ``folder``, as a delivery agent does."""

    def __init__(self, folder: Path, *, starttls: bool = False) -> None:
        super().__init__(starttls=starttls)
        self.folder = folder

    def end_of_message(self, content: bytes) -> bytes:
        kept = len(self.messages)
        reply = super().end_of_message(content)
        for message in self.messages[kept:]:
            _deliver(self.folder, message)
        return reply


class LosingMaildirWriting(MaildirWriting, PipelinedRsetServer):
    """Loses a message ended in the same read as RSET, answering it 250."""


class QueueingMaildirWriting(MaildirWriting):
    """Answers 250 first and writes the file a moment later, from another thread, as
    a queue hands a message to its delivery agent (Postfix's local(8))."""

    writers: ClassVar[list[threading.Timer]] = []
    """Every writer started, joined by the test: the server makes one object per
    connection."""

    def end_of_message(self, content: bytes) -> bytes:
        kept = len(self.messages)
        reply = SmallServer.end_of_message(self, content)
        for message in self.messages[kept:]:
            writer = threading.Timer(0.3, _deliver, (self.folder, message))
            self.writers.append(writer)
            writer.start()
        return reply


def _check(address: str, *options: str, timeout: str = "5") -> int:
    return main(["check", address, "--only", "pipelined-end", "--timeout", timeout, *options])


def test_stored_maildir_shows_a_message_the_server_answered_250_and_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maildir = _maildir(tmp_path / "Maildir")
    _deliver(maildir / "cur", b"Subject: an earlier run's\r\n\r\nold\r\n")
    factory = functools.partial(LosingMaildirWriting, maildir / "new")
    with serve(factory) as server:
        address = f"{server.host}:{server.port}"
        blind = _check(address)
        blind_out = capsys.readouterr().out
        # From the command line the store is asked up to --timeout: a loss waits it out.
        seeing = _check(address, "--stored-maildir", str(maildir), timeout="1")
        out = capsys.readouterr().out
    assert blind == 0, blind_out
    assert seeing == 1, out
    # The earlier run's file is not read: one message of this run's two came in.
    assert "messages 1 and 3 (of 3) not seen in the store though their ends got 250" in out, out
    assert "among the 1 messages" in out, out


@pytest.mark.parametrize("option", ["--stored-maildir", "--stored-dir"])
def test_stored_files_show_every_message_kept_by_a_correct_server(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maildir = _maildir(tmp_path / "Maildir")
    folder = maildir if option == "--stored-maildir" else maildir / "new"
    with serve(functools.partial(MaildirWriting, maildir / "new")) as server:
        status = _check(f"{server.host}:{server.port}", option, str(folder))
    out = capsys.readouterr().out
    assert status == 0, out
    assert "and each was seen in the store with the body sent" in out, out


def test_stored_maildir_waits_for_a_server_that_writes_after_its_250(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Looked at once, right after QUIT, its Maildir had neither message yet: a
    correct server was said to lose both."""
    maildir = _maildir(tmp_path / "Maildir")
    factory = functools.partial(QueueingMaildirWriting, maildir / "new")
    try:
        with serve(factory) as server:
            status = _check(f"{server.host}:{server.port}", "--stored-maildir", str(maildir))
    finally:
        for writer in QueueingMaildirWriting.writers:
            writer.join()
    out = capsys.readouterr().out
    assert status == 0, out
    assert "and each was seen in the store with the body sent" in out, out


def test_the_reference_servers_maildir_shows_every_message_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m smtpcore serve`` writes Return-Path and Received above the header, and
    keeps each body whole: the dot lines unstuffed, the BDAT chunks in order."""
    with serve_reference(tmp_path / "data", "abc.example", ["bob@abc.example:bob-pw"]) as served:
        maildir = tmp_path / "data" / "mailboxes" / "bob@abc.example"
        status = _check(
            f"127.0.0.1:{served.ports['smtp']}",
            "--recipient",
            "bob@abc.example",
            "--stored-maildir",
            str(maildir),
        )
        out = capsys.readouterr().out
        stored = served.mailbox("bob@abc.example")
    assert status == 0, out + served.log()
    assert "and each was seen in the store with the body sent" in out, out
    assert len(stored) == 3 and all(m.startswith(b"Return-Path: ") for m in stored), stored


@pytest.mark.parametrize(
    ("option", "layout", "said"),
    [
        ("--stored-maildir", None, "is not a directory"),
        ("--stored-maildir", "plain", "is not a Maildir: it has no new/ and cur/"),
        ("--stored-dir", None, "is not a directory"),
    ],
)
def test_a_stored_directory_that_is_not_there_is_a_usage_error(
    option: str, layout: str | None, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any connection (port 1 has no server): a typo would otherwise
    have every message said lost."""
    folder = tmp_path / "mail"
    if layout == "plain":
        folder.mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["check", "127.0.0.1:1", option, str(folder)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {str(folder)!r} {said}" in err, err


def test_stored_maildir_and_stored_dir_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maildir = _maildir(tmp_path / "Maildir")
    with pytest.raises(SystemExit) as exited:
        main(["check", "127.0.0.1:1", "--stored-maildir", str(maildir), "--stored-dir", "."])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_stored_files_reads_what_came_in_since_it_was_made(tmp_path: Path) -> None:
    """Files there before are left unread, moved from new/ to cur/ with flags too;
    dot files and directories are no messages; each file is read only so far."""
    maildir = _maildir(tmp_path / "Maildir")
    old = _deliver(maildir / "new", MARK + b" old\r\n")
    stored = StoredFiles(
        (maildir / "new", maildir / "cur"), maildir=True, max_octets=len(TRACE) + len(MARK) + 4
    )
    old.rename(maildir / "cur" / f"{old.name}:2,S")
    _deliver(maildir / "cur", MARK + b" new one\r\n")
    (maildir / "new" / ".hidden").write_bytes(MARK)
    (maildir / "new" / "a-directory").mkdir()
    assert stored() == [TRACE + MARK + b" new"]


def test_stored_files_keeps_only_files_holding_the_marker_and_reads_each_once(
    tmp_path: Path,
) -> None:
    """A big Maildir's other mail is read once and dropped, not kept in memory for
    every call; a message moved to cur/ with flags is not read again."""
    maildir = _maildir(tmp_path / "Maildir")
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    other = _deliver(maildir / "new", b"Subject: other mail\r\n\r\nhello\r\n")
    ours = _deliver(maildir / "new", b"\r\n" + MARK + b" 1\r\n")
    assert stored() == [TRACE + b"\n" + MARK + b" 1\n"]
    other.write_bytes(MARK)  # not read again: a Maildir file is written once
    ours.rename(maildir / "cur" / f"{ours.name}:2,S")
    assert stored() == [TRACE + b"\n" + MARK + b" 1\n"]


def test_a_maildir_name_loses_only_its_flags(tmp_path: Path) -> None:
    """Cut at its first ':', a name of this run that shares its start with an earlier
    one (``host:1``, ``host:2``) was taken for it and never read."""
    maildir = _maildir(tmp_path / "Maildir")
    (maildir / "cur" / "1733586000.M1P1.host:1:2,S").write_bytes(MARK + b" old")
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    (maildir / "new" / "1733586000.M1P1.host:2").write_bytes(MARK + b" new")
    assert stored() == [MARK + b" new"]


class _FailingEntry:
    """A directory entry whose ``stat`` fails, as one listed and then renamed does."""

    def __init__(self, entry: os.DirEntry[str], error: OSError) -> None:
        self.name, self.path, self.is_file = entry.name, entry.path, entry.is_file
        self.error = error

    def stat(self) -> os.stat_result:
        raise self.error


def _failing_stat(failures: dict[str, OSError]) -> Callable[[Path], object]:
    """An ``os.scandir`` whose entries named in ``failures`` raise theirs from ``stat``."""
    real = os.scandir

    @contextlib.contextmanager
    def scandir(folder: Path) -> Iterator[list[object]]:
        with real(folder) as entries:
            yield [
                _FailingEntry(entry, failures[entry.name]) if entry.name in failures else entry
                for entry in entries
            ]

    return scandir


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError(2, "gone"), PermissionError(13, "denied")],
    ids=["renamed-away", "unreadable"],
)
def test_stored_dir_passes_over_a_file_whose_stat_fails(
    error: OSError, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink writing ``NAME.tmp`` and renaming it to ``NAME.eml`` left scandir's
    entry for the tmp file behind: its ``stat()`` raised, ``stored()`` with it, and
    pipelined-end was skipped (44 of 104 calls in a loop against such a sink)."""
    stored = StoredFiles((tmp_path,), maildir=False)
    (tmp_path / "m1.tmp").write_bytes(MARK + b" 1")
    (tmp_path / "m2.eml").write_bytes(MARK + b" 2")
    monkeypatch.setattr(os, "scandir", _failing_stat({"m1.tmp": error}))
    assert stored() == [MARK + b" 2"]


def test_stored_files_passes_over_a_file_it_cannot_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One unreadable file skipped the check; it is read at a later call when it can be."""
    maildir = _maildir(tmp_path / "Maildir")
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    locked = _deliver(maildir / "new", MARK + b" 1\r\n")
    _deliver(maildir / "new", MARK + b" 2\r\n")
    real_open = open

    def refusing_open(path: str, mode: str) -> object:
        if path == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, mode)

    monkeypatch.setattr(_stored_files, "open", refusing_open, raising=False)
    assert stored() == [TRACE + MARK + b" 2\n"]
    monkeypatch.undo()
    assert sorted(stored()) == [TRACE + MARK + b" 1\n", TRACE + MARK + b" 2\n"]


class NamingSink(SmallServer):
    """Writes each message it keeps into ``folder`` under ``name_of()``'s name."""

    def __init__(
        self, folder: Path, name_of: Callable[[], str], *, starttls: bool = False
    ) -> None:
        super().__init__(starttls=starttls)
        self.folder = folder
        self.name_of = name_of

    def end_of_message(self, content: bytes) -> bytes:
        kept = len(self.messages)
        reply = super().end_of_message(content)
        for message in self.messages[kept:]:
            (self.folder / self.name_of()).write_bytes(TRACE + message.replace(b"\r\n", b"\n"))
        return reply


def _numbering() -> Callable[[], str]:
    """msg-1.eml, msg-2.eml, ...: a sink that numbers its files from 1 each time it
    starts, writing over a previous start's."""
    numbers = itertools.count(1)
    return lambda: f"msg-{next(numbers)}.eml"


def _by_the_hour() -> Callable[[], str]:
    """Names by the hour, then a count: an earlier file shares each name up to a ':'."""
    numbers = itertools.count(1)
    return lambda: f"2026-12-07T15:46:{next(numbers):02}.eml"


@pytest.mark.parametrize(
    ("name_of", "earlier"),
    [
        (_numbering, ["msg-1.eml", "msg-2.eml", "msg-3.eml"]),
        (_by_the_hour, ["2026-12-07T15:00:00.eml"]),
    ],
    ids=["written over", "colons in names"],
)
def test_stored_dir_reads_a_file_written_again_and_names_whole(
    name_of: Callable[[], Callable[[], str]],
    earlier: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A name there before the run was never read again, even written over, and every
    name was cut at its first ':' as if it were a Maildir's: a correct sink was said
    to lose both messages."""
    folder = tmp_path / "sink"
    folder.mkdir()
    for name in earlier:
        (folder / name).write_bytes(b"Subject: an earlier start's\n\nold, and longer than that\n")
    with serve(functools.partial(NamingSink, folder, name_of())) as server:
        status = _check(f"{server.host}:{server.port}", "--stored-dir", str(folder))
    out = capsys.readouterr().out
    assert status == 0, out
    assert "and each was seen in the store with the body sent" in out, out


def _set_mtime(folder: Path, seconds: int) -> None:
    """``folder``'s modification time set to whole ``seconds``, as a filesystem that
    keeps whole seconds leaves it."""
    os.utime(folder, ns=(seconds * 10**9, seconds * 10**9))


def _counting_listings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    listed: list[object] = []
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        listed.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return listed


def test_a_maildir_folder_that_did_not_change_is_not_listed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call listed both folders whole, a big Maildir's every file at each of
    the check's calls; a folder whose modification time stayed is passed over, and
    one a message came into is listed again. Order of events: made, called, one
    message delivered, called."""
    maildir = _maildir(tmp_path / "Maildir")
    _deliver(maildir / "cur", b"Subject: an earlier run's\r\n")
    an_hour_ago = int(time.time()) - 3600
    for folder in ("new", "cur"):
        _set_mtime(maildir / folder, an_hour_ago)
    listed = _counting_listings(monkeypatch)
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    assert len(listed) == 2
    assert stored() == []
    assert len(listed) == 2
    _deliver(maildir / "new", MARK + b" 1\r\n")
    assert stored() == [TRACE + MARK + b" 1\n"]
    assert listed[2:] == [maildir / "new"]


def test_a_message_delivered_in_the_second_of_a_listing_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where timestamps keep whole seconds, a message delivered in the second a call
    listed ``new/`` leaves its modification time as that call saw it: the folder is
    listed again until its time is settled. Order of events: a call lists new/, a
    message comes in within the same second, the next call finds it."""
    maildir = _maildir(tmp_path / "Maildir")
    this_second = int(time.time())
    for folder in ("new", "cur"):
        _set_mtime(maildir / folder, this_second)
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    assert stored() == []
    _deliver(maildir / "new", MARK + b" 1\r\n")
    _set_mtime(maildir / "new", this_second)
    assert stored() == [TRACE + MARK + b" 1\n"]


def test_a_file_that_could_not_be_read_is_read_later_in_a_folder_that_stayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder passed over while its time stays must not pass over a file its last
    listing could not read: it is listed again until every file was read."""
    maildir = _maildir(tmp_path / "Maildir")
    an_hour_ago = int(time.time()) - 3600
    _set_mtime(maildir / "cur", an_hour_ago)
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    locked = _deliver(maildir / "new", MARK + b" 1\r\n")
    _set_mtime(maildir / "new", an_hour_ago)
    real_open = open

    def refusing_open(path: str, mode: str) -> object:
        if path == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, mode)

    monkeypatch.setattr(_stored_files, "open", refusing_open, raising=False)
    assert stored() == []
    monkeypatch.undo()
    assert stored() == [TRACE + MARK + b" 1\n"]


def _marked(token: str, number: int) -> bytes:
    """A check message, its body the line ``pipelined-end`` looks for."""
    header = f"Message-ID: <{token}-{number}.check@smtpcore.test>\r\n\r\n".encode()
    return header + _smtp_end_checks._mark(token, number) + b"\r\n"


def _unseen_now(stored: Callable[[], list[bytes]], token: str, count: int) -> str:
    """What ``pipelined-end`` says of ``count`` messages when its wait is over."""
    sent = [_marked(token, number) for number in range(1, count + 1)]
    return _smtp_end_checks._unseen_in_time(stored, token, sent, 0)


def test_a_maildir_on_a_clock_behind_ours_loses_no_message(tmp_path: Path) -> None:
    """The Maildir's filesystem stamps whole seconds from a clock ten seconds behind
    ours (an NFS, SMB or sshfs server): a look after the first delivery trusted
    ``new/`` at that second, and the second delivery, in the same second of the
    store's clock, left its time as it was. The message was said lost; the last
    look lists every folder. Order of events: delivery, look, delivery, the check's
    verdict."""
    maildir = _maildir(tmp_path / "Maildir")
    store_second = int(time.time()) - 10
    _set_mtime(maildir / "cur", store_second - 3600)
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    _deliver(maildir / "new", _marked("skew", 1))
    _set_mtime(maildir / "new", store_second)
    assert len(stored()) == 1
    _deliver(maildir / "new", _marked("skew", 2))
    _set_mtime(maildir / "new", store_second)
    assert _unseen_now(stored, "skew", 2) == ""


def test_a_maildir_whose_time_was_set_back_loses_no_message(tmp_path: Path) -> None:
    """A restore (``cp -a``, ``rsync -t``) puts a folder's old time back after a
    message came in: the recorded listing still matched and the message was said
    lost. Order of events: made, delivery, the folder's time put back, verdict."""
    maildir = _maildir(tmp_path / "Maildir")
    an_hour_ago = int(time.time()) - 3600
    for folder in ("new", "cur"):
        _set_mtime(maildir / folder, an_hour_ago)
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    _deliver(maildir / "new", _marked("restored", 1))
    _set_mtime(maildir / "new", an_hour_ago)
    assert _unseen_now(stored, "restored", 1) == ""


def test_a_clock_stepped_back_loses_no_message(tmp_path: Path) -> None:
    """``new/`` listed when our clock read five seconds past its time; the clock
    steps back and a delivery lands in that same whole second again. Order of
    events: made, delivery stamped with the recorded second, verdict."""
    maildir = _maildir(tmp_path / "Maildir")
    recorded_second = int(time.time()) - 5
    _set_mtime(maildir / "new", recorded_second)
    _set_mtime(maildir / "cur", recorded_second - 3600)
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True)
    _deliver(maildir / "new", _marked("stepped", 1))
    _set_mtime(maildir / "new", recorded_second)
    assert _unseen_now(stored, "stepped", 1) == ""


def test_a_recorded_listing_expires_so_a_long_wait_sees_the_folder(tmp_path: Path) -> None:
    """A folder whose time was set back is listed again once its recorded listing
    is ten seconds old, whatever its time: a wait of minutes is not blind until the
    last look. Order of events on a fake clock: made at 0, delivery with the time
    put back, a call at 9.9 passes the folder over, a call at 10 finds it."""
    maildir = _maildir(tmp_path / "Maildir")
    an_hour_ago = int(time.time()) - 3600
    for folder in ("new", "cur"):
        _set_mtime(maildir / folder, an_hour_ago)
    now = [0.0]
    stored = StoredFiles((maildir / "new", maildir / "cur"), maildir=True, clock=lambda: now[0])
    _deliver(maildir / "new", _marked("expiry", 1))
    _set_mtime(maildir / "new", an_hour_ago)
    now[0] = 9.9
    assert stored() == []
    now[0] = 10.0
    assert stored() == [TRACE + _marked("expiry", 1).replace(b"\r\n", b"\n")]


def test_only_a_relisting_store_is_asked_again_before_a_message_is_said_lost() -> None:
    """A caller's own ``stored`` is asked once when the wait is 0, as before; the
    last look is :class:`StoredFiles`'s, which may pass folders over."""
    calls: list[str] = []

    def stored() -> list[bytes]:
        calls.append("stored")
        return []

    assert "message 1 (of 1) not seen" in _unseen_now(stored, "t", 1)
    assert calls == ["stored"]
    assert isinstance(StoredFiles((), maildir=True), _smtp_end_checks.Relisting)
