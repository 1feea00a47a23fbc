"""The reference server on a full disk: 452 4.3.1 at MAIL when there is no room for the
message (RFC 1870 §6.1), and after the content when a write finds the disk full."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import smtplib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtpcore.server import (
    MailServer,
    ServerConfig,
    _queue_content,
    freespace,
    maildir,
    queue,
    safefiles,
)
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from test_fail2ban_filter import _as_logged, _hosts

LOOPBACK = "127.0.0.1"
BLOCK = 4096
MiB = 1 << 20


def _config(tmp_path: Path, **options: Any) -> ServerConfig:
    """No floor unless the test asks for one: the temporary filesystem may be small."""
    return ServerConfig(
        domains=("abc.example",),
        users={"john@abc.example": "pw", "mary@abc.example": "pw"},
        data_dir=tmp_path / "data",
        hostname="mx.abc.example",
        **{
            "pop3_port": 0,
            "submission_port": 0,
            "auth_failure_delay": 0.0,
            "min_free_space": 0,
            **options,
        },
    )


def _serve(config: ServerConfig, client: Callable[[int], Any], listener: str = "smtp") -> Any:
    """Run ``client(port)`` in a thread against a server on ``config``."""

    async def main() -> Any:
        sock = socket.create_server((LOOPBACK, 0))
        async with MailServer(config, sockets={listener: sock}) as server:
            port = next(x.port for x in server.listeners if x.name == listener)
            return await asyncio.to_thread(client, port)

    return asyncio.run(asyncio.wait_for(main(), 30))


def _statvfs_saying(data_dir: Path, free: int) -> Callable[[Any], os.statvfs_result]:
    """``os.statvfs`` as it is on a data filesystem with ``free`` octets left to us."""
    real = os.statvfs

    def statvfs(path: Any) -> os.statvfs_result:
        if Path(path) != data_dir:
            return real(path)
        avail = free // BLOCK
        return os.statvfs_result((BLOCK, BLOCK, 1 << 20, avail, avail, 1000, 900, 900, 0, 255))

    return statvfs


def _mail_replies(commands: list[str]) -> Callable[[int], list[tuple[int, str]]]:
    def client(port: int) -> list[tuple[int, str]]:
        replies = []
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            for command in commands:
                code, text = smtp.docmd(command)
                replies.append((code, text.decode()))
                smtp.rset()
        return replies

    return client


# -- at MAIL: is there room? ---------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "size", "code"),
    [
        (MiB, None, 250),  # exactly the floor: room
        (MiB - BLOCK, None, 452),  # under the floor
        (MiB - BLOCK, 1000, 452),  # under the floor, whatever the SIZE
        (8 * MiB, 4 * MiB, 250),  # exactly 2 x SIZE: the spool file and a Maildir copy
        (8 * MiB - BLOCK, 4 * MiB, 452),  # under 2 x SIZE
        (6 * MiB, 4 * MiB, 452),  # 1.5 x SIZE: the copy would not fit beside the spool
        (6 * MiB - BLOCK, None, 250),  # no SIZE: the floor alone
        (6 * MiB - BLOCK, 0, 250),
    ],
)
def test_mail_is_refused_452_when_the_data_filesystem_has_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, size: int | None, code: int
) -> None:
    config = _config(tmp_path, min_free_space=MiB)
    monkeypatch.setattr(os, "statvfs", _statvfs_saying(config.data_dir, free))
    declared = "" if size is None else f" SIZE={size}"
    ((got, text),) = _serve(config, _mail_replies([f"MAIL FROM:<a@xyz.example>{declared}"]))
    assert got == code
    if code == 452:
        assert text == "4.3.1 Insufficient system storage"


def test_the_audits_96_kib_disk_refuses_a_declared_5_mb_message_at_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default floor too: 1.5 x the message size limit, as Postfix's."""
    config = _config(tmp_path, min_free_space=None)
    assert config.free_space_floor == config.max_message_size * 3 // 2
    monkeypatch.setattr(os, "statvfs", _statvfs_saying(config.data_dir, 96 * 1024))
    replies = _serve(config, _mail_replies(["MAIL FROM:<a@xyz.example> SIZE=5000000"]))
    assert replies == [(452, "4.3.1 Insufficient system storage")]


def test_a_statvfs_that_fails_refuses_no_mail_and_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, min_free_space=MiB)
    real = os.statvfs

    def refused(path: Any) -> os.statvfs_result:
        if Path(path) == config.data_dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "statvfs", refused)
    caplog.set_level(logging.WARNING, "smtpcore.mail")
    commands = ["MAIL FROM:<a@xyz.example> SIZE=1000", "MAIL FROM:<a@xyz.example>"]
    assert [code for code, _ in _serve(config, _mail_replies(commands))] == [250, 250]
    warnings = [r for r in caplog.records if "free space" in r.getMessage()]
    assert len(warnings) == 1


def test_a_spell_under_the_floor_is_logged_once_and_its_end_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every MAIL is refused while the disk is under the floor: the operator hears of
    it once, when it starts, and again when the free space is over the floor by the
    margin (a largest message, here 1 MiB): MAIL is taken at the floor already."""
    data_dir = tmp_path / "data"
    room = freespace.FreeSpace(data_dir, MiB, largest_message=MiB)
    assert room.spell_ends_at == 2 * MiB
    caplog.set_level(logging.INFO, "smtpcore.mail")
    answers = []
    for free in (2 * MiB, MiB - BLOCK, 0, MiB, 2 * MiB - BLOCK, 2 * MiB, MiB - BLOCK):
        monkeypatch.setattr(os, "statvfs", _statvfs_saying(data_dir, free))
        answers.append(room.allows(None))
    assert answers == [True, False, False, True, True, True, False]
    told = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in told] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert "under --min-free-space 1048576: MAIL gets 452 4.3.1" in told[0][1]
    assert "has 2097152 octets free again, over --min-free-space 1048576" in told[1][1]


@pytest.mark.parametrize(
    ("floor", "largest", "margin"),
    [(15 * MiB, 10 * MiB, 10 * MiB), (100 * MiB, MiB, 10 * MiB), (MiB, 0, MiB // 10), (0, 0, 0)],
)
def test_a_spell_ends_a_tenth_of_the_floor_or_a_largest_message_over_it(
    floor: int, largest: int, margin: int
) -> None:
    assert freespace.spell_margin(floor, largest) == margin


def test_free_space_hovering_at_the_floor_is_one_spell_told_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy disk's free space goes a block either way of the floor with each
    message: one warning for it all, and no line saying it is over."""
    data_dir = tmp_path / "data"
    room = freespace.FreeSpace(data_dir, MiB, largest_message=64 * 1024)
    caplog.set_level(logging.INFO, "smtpcore.mail")
    answers = set()
    for i in range(1000):
        free = MiB + (BLOCK if i % 2 else -BLOCK)
        monkeypatch.setattr(os, "statvfs", _statvfs_saying(data_dir, free))
        answers.add(room.allows(None))
    assert answers == {True, False}  # the floor itself still decides each MAIL
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_a_declared_size_too_big_for_the_disk_is_no_spell_to_warn_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setattr(os, "statvfs", _statvfs_saying(data_dir, 2 * MiB))
    caplog.set_level(logging.INFO, "smtpcore.mail")
    assert not freespace.FreeSpace(data_dir, MiB).allows(4 * MiB)
    assert caplog.records == []


def test_no_floor_and_no_size_asks_nothing_of_the_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []
    real = os.statvfs

    def statvfs(path: Any) -> os.statvfs_result:
        asked.append(path)
        return real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    room = freespace.FreeSpace(tmp_path, 0)
    assert room.allows(None) and room.allows(0)
    assert asked == []
    assert room.allows(1000)
    assert asked == [tmp_path]


@given(
    free=st.integers(min_value=0, max_value=1 << 50),
    floor=st.integers(min_value=0, max_value=1 << 40),
    declared=st.none() | st.integers(min_value=0, max_value=1 << 40),
    more=st.integers(min_value=0, max_value=1 << 40),
)
@example(free=6 * MiB, floor=0, declared=4 * MiB, more=0)  # 1.5 x: no room for the copy
def test_mail_is_taken_only_with_room_for_the_spool_and_a_copy_and_more_room_never_refuses(
    free: int, floor: int, declared: int | None, more: int
) -> None:
    """What is taken leaves the floor and fits twice over (the spool file and one
    Maildir copy); more free space takes what less took; a disk far bigger than both
    takes everything."""
    if freespace.fits(free, floor, declared):
        assert free >= floor
        assert declared is None or free - declared >= declared  # the copy beside the spool
        assert freespace.fits(free + more, floor, declared)
    huge = floor + 2 * (declared or 0) + more
    assert freespace.fits(huge, floor, declared)


def test_the_floor_is_an_option(tmp_path: Path) -> None:
    assert _config(tmp_path, min_free_space=0).free_space_floor == 0
    unlimited = _config(tmp_path, max_message_size=0, min_free_space=None)
    assert unlimited.free_space_floor == 0  # no limit: no floor
    with pytest.raises(ValueError, match="--min-free-space"):
        _config(tmp_path, min_free_space=-1)


# -- after the content: a write that finds the disk full -------------------------------


def _failing_once(real: Callable[..., Any], call: int, code: int) -> Callable[..., Any]:
    """``real``, whose ``call``-th call fails with ``code``: the disk was full then."""
    count = [0]

    def write(*args: Any) -> Any:
        count[0] += 1
        if count[0] == call:
            raise OSError(code, os.strerror(code))
        return real(*args)

    return write


def _send_twice(port: int) -> list[tuple[int, str]]:
    """A message of 200 KB, then a small one: the server goes on serving."""
    replies = []
    with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
        smtp.ehlo("client.example")
        for body in (b"x" * 76 + b"\r\n") * 2600, b"small\r\n":
            smtp.mail("a@xyz.example")
            smtp.rcpt("john@abc.example")
            code, text = smtp.data(b"Subject: t\r\n\r\n" + body)
            replies.append((code, text.decode()))
    return replies


def _only_the_small_message_kept(config: ServerConfig) -> None:
    """Nothing of the refused message stays in the queue or the mailbox."""
    for sub in ("tmp", "messages", "envelopes"):
        assert list((config.queue_dir / sub).iterdir()) == [], sub
    box = config.mailbox_path("john@abc.example")
    assert list((box / "tmp").iterdir()) == []
    (kept,) = Maildir(box).messages()
    assert kept.read_bytes().endswith(b"\nsmall\n")


FULL = (452, "4.3.1 Insufficient system storage")
TOO_BIG = (552, "5.3.4 Message too big for system")
WRITE_FAILURES = [(errno.ENOSPC, FULL), (errno.EDQUOT, FULL), (errno.EFBIG, TOO_BIG)]
"""What a write's errno earns: a full disk or a spent quota is temporary; a file size
limit (``ulimit -f``, the filesystem's largest file) is this message's size, for ever."""


@pytest.mark.parametrize(("code", "reply"), WRITE_FAILURES)
def test_a_spool_write_that_fails_for_want_of_room_is_answered_by_its_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reply: tuple[int, str]
) -> None:
    """The spool write fails part way through the content (the Received line went).
    Once the disk has room again, the next message is delivered."""
    config = _config(tmp_path)
    monkeypatch.setattr(queue.Spool, "write", _failing_once(queue.Spool.write, 3, code))
    first, second = _serve(config, _send_twice)
    assert first == reply
    assert second[0] == 250
    _only_the_small_message_kept(config)


@pytest.mark.parametrize(("code", "reply"), WRITE_FAILURES)
def test_a_maildir_copy_that_fails_for_want_of_room_is_answered_by_its_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reply: tuple[int, str]
) -> None:
    """The spool took the message; the mailbox copy does not fit. Once the disk has
    room again, the next message is delivered."""
    config = _config(tmp_path)
    monkeypatch.setattr(maildir.LFWriter, "write", _failing_once(maildir.LFWriter.write, 2, code))
    first, second = _serve(config, _send_twice)
    assert first == reply
    assert second[0] == 250
    _only_the_small_message_kept(config)


def _reject_then_traceback(records: list[logging.LogRecord]) -> str:
    """The one ``reject:`` line of a fault, which must come (at WARNING) right before
    the fault's traceback, the only one."""
    (reject,) = [r for r in records if "reject:" in r.getMessage()]
    (fault,) = [r for r in records if r.exc_info]
    assert records.index(fault) == records.index(reject) + 1
    assert reject.levelno == logging.WARNING
    assert _hosts(_as_logged(records)) == []  # a 451: the disk's fault, not the client's
    return reject.getMessage()


def test_any_other_fault_is_still_451_with_one_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault nobody expects keeps its traceback in the log; it is a refusal all the
    same, and gets the ``reject:`` line every refusal has, before the traceback."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path)
    monkeypatch.setattr(queue.Spool, "write", _failing_once(queue.Spool.write, 3, errno.EIO))
    first, second = _serve(config, _send_twice)
    assert first == (451, "4.3.0 Local error in processing")
    assert second[0] == 250
    _only_the_small_message_kept(config)
    line = _reject_then_traceback(caplog.records)
    assert ": reject: DATA from [127.0.0.1]:" in line, line
    assert ": 451 4.3.0 Local error in processing; " in line, line
    assert line.endswith(" (handle_data_chunk failed: Input/output error)"), line


def test_a_spool_file_that_cannot_be_created_is_a_reject_line_then_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``queue/tmp`` made unwritable (an audit's ``chattr +i``): the 451 after DATA was
    logged as a traceback and a disconnect line with ``messages=0``, and no ``reject:``
    line, where the operator guide promises one for every refusal."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path)
    create_new = _failing_once(safefiles.create_new, 1, errno.EPERM)
    monkeypatch.setattr(_queue_content, "create_new", create_new)  # as Spool calls it

    def send_twice(port: int) -> list[tuple[int, bytes | str]]:
        replies: list[tuple[int, bytes | str]] = []
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            for _ in range(2):
                smtp.mail("a@xyz.example")
                smtp.rcpt("john@abc.example")
                try:  # the 451 answers DATA itself, before any content
                    replies.append(smtp.data(b"Subject: t\r\n\r\nsmall\r\n"))
                except smtplib.SMTPDataError as refused:
                    replies.append((refused.smtp_code, refused.smtp_error))
                    smtp.rset()
        return replies

    first, second = _serve(config, send_twice)
    assert first == (451, b"4.3.0 Local error in processing")
    assert second[0] == 250
    _only_the_small_message_kept(config)
    line = _reject_then_traceback(caplog.records)
    assert line.startswith("NOQUEUE: reject: DATA from [127.0.0.1]:"), line
    assert "from=<a@xyz.example> to=<john@abc.example> helo=<client.example>" in line, line
    assert line.endswith(" (cannot create a spool file: Operation not permitted)"), line


def _relay_reusing_its_connection(messages: int) -> Callable[[int], list[int]]:
    """A relay that sends ``messages`` down one connection, each answered with its
    code; it goes on after a refusal, as a relay with a batch does."""

    def client(port: int) -> list[int]:
        codes = []
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("relay.example")
            for _ in range(messages):
                code = smtp.docmd("MAIL FROM:<a@xyz.example>")[0]
                if code == 250:
                    smtp.rcpt("john@abc.example")
                    try:
                        code = smtp.data(b"Subject: t\r\n\r\nx\r\n")[0]
                    except smtplib.SMTPDataError as refused:
                        code = refused.smtp_code
                codes.append(code)
                smtp.rset()
        return codes

    return client


def test_a_relay_is_not_cut_off_and_banned_for_spool_files_that_cannot_be_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """25 messages down one connection while ``queue/tmp`` refuses spool files: each
    ``451 4.3.0`` counted toward the session's error limit, and the 21st command got
    ``421 4.7.0 ... Too many errors``, which the fail2ban filter bans, for the server's
    own fault."""
    caplog.set_level(logging.INFO, "smtpcore")

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(_queue_content, "create_new", denied)
    assert _serve(_config(tmp_path), _relay_reusing_its_connection(25)) == [451] * 25
    assert _hosts(_as_logged(caplog.records)) == []
    assert "Too many errors" not in caplog.text


def test_a_relay_is_not_cut_off_and_banned_for_a_full_disk_at_mail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same relay while the disk is under ``--min-free-space``: 25 ``452 4.3.1``
    at MAIL, and no ``421``."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, min_free_space=1 << 60)
    assert _serve(config, _relay_reusing_its_connection(25)) == [452] * 25
    assert _hosts(_as_logged(caplog.records)) == []
    assert "Too many errors" not in caplog.text


def test_a_relay_is_not_cut_off_and_banned_for_a_file_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """25 messages, each well within the SIZE offered, that a file size limit (``EFBIG``:
    ``ulimit -f``, the filesystem's largest file) keeps out of the spool: each ``552 5.3.4
    Message too big for system``, which the filter passes by, and no ``421 4.7.0 ... Too
    many errors``, which it bans: the 21st command got one, for the server's own limit."""
    caplog.set_level(logging.INFO, "smtpcore")

    def write(self: queue.Spool, data: bytes) -> None:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(queue.Spool, "write", write)
    assert _serve(_config(tmp_path), _relay_reusing_its_connection(25)) == [552] * 25
    refused = [m for m in caplog.messages if "reject: DATA" in m]
    assert len(refused) == 25 and "552 5.3.4 Message too big for system" in refused[-1]
    assert _hosts(_as_logged(caplog.records)) == []
    assert "Too many errors" not in caplog.text


WHERE_THE_DISK_FILLS: dict[str, tuple[Any, str, int]] = {
    "spooling the content": (queue.Spool, "write", 3),
    "copying into the mailbox": (maildir.LFWriter, "write", 2),
}
"""The write that finds no room: the ``n``-th call of ``owner.name``; the first while the
content comes (the driver hears of it), the second once it is in (the server's commit)."""


@pytest.mark.parametrize(("code", "reply"), WRITE_FAILURES)
@pytest.mark.parametrize("where", WHERE_THE_DISK_FILLS)
def test_a_write_that_finds_no_room_is_one_reject_line_without_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    code: int,
    reply: tuple[int, str],
) -> None:
    """A full disk after DATA was answered as it should be, but logged as two or three
    tracebacks (``handle_data_chunk failed``, ``cannot store the message``) and no
    ``reject:`` line, where the operator guide promises one per refusal. It is one line
    now, shaped as every refusal, with the reason the write gave; no fail2ban filter
    line matches it (the disk is ours, not the client's fault), and the session goes on."""
    caplog.set_level(logging.INFO, "smtpcore")
    owner, name, call = WHERE_THE_DISK_FILLS[where]
    monkeypatch.setattr(owner, name, _failing_once(getattr(owner, name), call, code))
    config = _config(tmp_path)
    first, second = _serve(config, _send_twice)
    assert (first, second[0]) == (reply, 250)
    _only_the_small_message_kept(config)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    (record,) = [r for r in caplog.records if "reject:" in r.getMessage()]
    assert record.levelno == logging.WARNING  # heard at --log-level warning, as MAIL's
    line = record.getMessage()
    assert ": reject: DATA from [127.0.0.1]:" in line, line
    assert f": {reply[0]} {reply[1]}; " in line, line
    assert "from=<a@xyz.example> to=<john@abc.example> helo=<client.example>" in line, line
    assert line.endswith(f" ({os.strerror(code)})"), line
    assert _hosts(_as_logged(caplog.records)) == []


def test_lmtp_answers_452_for_each_recipient_whose_copy_finds_the_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One reply per recipient (RFC 2033 §4.2): john's copy is made, mary's finds the
    quota spent; john has the message, mary has nothing, and her refusal is one
    ``reject:`` line that names her, with no traceback."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, smtp_port=0, lmtp_port=1)
    real = LocalMailboxes.deliver_file

    def full_for_mary(self: LocalMailboxes, key: str, *args: Any) -> Path:
        if key == "mary@abc.example":
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real(self, key, *args)

    def send(port: int) -> list[tuple[int, str]]:
        with smtplib.LMTP(LOOPBACK, port, timeout=10) as lmtp:
            lmtp.ehlo("client.example")
            lmtp.mail("a@xyz.example")
            for recipient in ("john@abc.example", "mary@abc.example"):
                assert lmtp.rcpt(recipient)[0] == 250
            lmtp.putcmd("data")
            assert lmtp.getreply()[0] == 354
            lmtp.send(b"Subject: l\r\n\r\nhello\r\n.\r\n")
            return [(code, text.decode()) for code, text in (lmtp.getreply(), lmtp.getreply())]

    monkeypatch.setattr(LocalMailboxes, "deliver_file", full_for_mary)
    (john_code, _), mary = _serve(config, send, listener="lmtp")
    assert (john_code, mary) == (250, (452, "4.3.1 Insufficient system storage"))
    (kept,) = Maildir(config.mailbox_path("john@abc.example")).messages()
    assert kept.read_bytes().endswith(b"\nhello\n")
    assert Maildir(config.mailbox_path("mary@abc.example")).messages() == []
    for sub in ("tmp", "messages", "envelopes"):
        assert list((config.queue_dir / sub).iterdir()) == [], sub
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    (record,) = [r for r in caplog.records if "reject:" in r.getMessage()]
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert ": 452 4.3.1 Insufficient system storage; listener=lmtp " in line, line
    assert " to=<mary@abc.example> " in line and line.endswith(" (Disk quota exceeded)"), line
