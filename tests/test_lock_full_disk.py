"""The data directory's lock (``smtpcore.lock``) on a full disk. A clean stop truncated
the file to nothing, so the next start needed a new block to write its process id: on
a full disk ``serve`` and ``queue delete`` refused to start (exit 2), and nothing could
free the space (no POP3, no delivery, no tool). The mark is now written in place."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from smtpcore.server import ConfigError, MailServer, mailserver, queuectl
from smtpcore.server.queuectl import (
    LOCK_NAME,
    MARK_SIZE,
    TOOL_MARK,
    release_lock,
    running_server,
    take_lock,
)
from test_server_app import _config, _listening, _run


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk with no free block: a write, or a truncate, that reaches past the blocks a
    file already has fails with ``ENOSPC``; within them it succeeds, as on a real one."""
    real_write, real_pwrite, real_ftruncate = os.write, os.pwrite, os.ftruncate

    def room(fd: int, end: int) -> None:
        if end > os.fstat(fd).st_blocks * 512:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(fd: int, data: bytes) -> int:
        room(fd, os.lseek(fd, 0, os.SEEK_CUR) + len(data))
        return real_write(fd, data)

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        room(fd, offset + len(data))
        return real_pwrite(fd, data, offset)

    def ftruncate(fd: int, length: int) -> None:
        if length > os.fstat(fd).st_size:
            room(fd, length)
        real_ftruncate(fd, length)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "ftruncate", ftruncate)


def _held(data_dir: Path) -> bool:
    probe = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    try:
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(probe)
    return False


def test_a_server_starts_again_after_a_clean_stop_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_lock(take_lock(tmp_path, "4242"))
    assert running_server(tmp_path) is None
    _fill_the_disk(monkeypatch)
    fd = take_lock(tmp_path, "4343")
    try:
        assert running_server(tmp_path) == 4343
    finally:
        release_lock(fd)
    assert running_server(tmp_path) is None
    fd = take_lock(tmp_path, TOOL_MARK)  # the queue tool, after
    try:
        assert running_server(tmp_path) == -1 and _held(tmp_path)
    finally:
        release_lock(fd)
    monkeypatch.undo()
    assert (tmp_path / LOCK_NAME).stat().st_size == MARK_SIZE


def test_a_stale_mark_is_cleared_and_replaced_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed with SIGKILL under an earlier version left ``pid\\n``: the next
    one writes over it in the block it has."""
    (tmp_path / LOCK_NAME).write_text("98765\n")
    _fill_the_disk(monkeypatch)
    fd = take_lock(tmp_path, "4242")
    try:
        assert running_server(tmp_path) == 4242
    finally:
        release_lock(fd)
    assert running_server(tmp_path) is None


def test_an_empty_lock_on_a_full_disk_is_taken_unmarked_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An earlier version's clean stop left the file empty, with no block: the lock is
    held all the same, unmarked (no process id to signal), and the operator is told."""
    (tmp_path / LOCK_NAME).write_bytes(b"")
    _fill_the_disk(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="smtpcore.mail"):
        fd = take_lock(tmp_path, "4242")
    try:
        assert _held(tmp_path)
        assert running_server(tmp_path) == -1  # no one to signal
        assert "No space left on device" in caplog.text and "4242" in caplog.text
    finally:
        release_lock(fd)
    assert running_server(tmp_path) is None


def test_a_mark_cut_short_by_a_full_disk_names_no_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops part way would leave the start of a process id: another
    process's. It counts as not written."""
    (tmp_path / LOCK_NAME).write_bytes(b"")
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real_pwrite(fd, data[:2], offset))
    fd = take_lock(tmp_path, "4242")
    try:
        assert running_server(tmp_path) == -1
    finally:
        release_lock(fd)


def _no_room_for_a_mark(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """While the flag returned is set, a mark cannot be written (the disk is full)."""
    full = [True]
    real_write_mark = queuectl._write_mark

    def write_mark(fd: int, mark: str) -> None:
        if full[0] and mark:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_mark(fd, mark)

    monkeypatch.setattr(queuectl, "_write_mark", write_mark)
    return full


def test_a_server_running_unmarked_marks_its_lock_once_the_disk_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark was tried once, at start: a server that took the lock unmarked stayed so,
    and every ``queue`` tool (and a second ``serve``) waited and gave up, "in use by the
    queue tool", long after the disk had room. The server tries again until it is
    marked."""
    config = _config(tmp_path, "abc.example", {})
    full = _no_room_for_a_mark(monkeypatch)
    monkeypatch.setattr(mailserver, "MARK_RETRY", 0.01, raising=False)
    monkeypatch.setattr(queuectl, "_TOOL_WAIT", 0.2)

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}):
            assert running_server(config.data_dir) == -1  # no one to signal
            with pytest.raises(ConfigError, match="a server that could not mark the lock"):
                take_lock(config.data_dir, TOOL_MARK)
            full[0] = False  # the disk has room again
            while running_server(config.data_dir) != os.getpid():
                await asyncio.sleep(0.01)

    _run(main)
    assert running_server(config.data_dir) is None


def test_the_queue_tool_taking_the_lock_unmarked_logs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its mark names no process to signal: nothing is lost without it."""
    _no_room_for_a_mark(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="smtpcore.mail"):
        release_lock(take_lock(tmp_path, TOOL_MARK))
    assert caplog.records == []


def test_a_queue_tool_waiting_when_the_server_marks_its_lock_hands_it_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``queue flush`` begun while a server on a full disk held the lock unmarked waited,
    as for another tool; the server marked it meanwhile (the disk had room), and the tool
    said the data directory "is in use by another smtpcore server", naming the server it
    should have handed the command to. It hands it over now, as when it finds the server
    at once. The server here is a ``sleep`` (the process the mark names), which the
    command's SIGUSR1 ends."""
    from smtpcore.server import cli, queuetool
    from smtpcore.server.queue import Queue

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    server = subprocess.Popen(["sleep", "60"])
    lock = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    looks: list[tuple[str, int | None]] = []
    real_running_server = queuectl.running_server

    def first_look(data_dir: Path) -> int | None:
        """The tool's look before it waits: the lock is not marked yet."""
        looks.append(("first", holder := real_running_server(data_dir)))
        return holder

    def marked_while_waiting(data_dir: Path) -> int | None:
        """The tool's look from within its wait: the server has marked the lock by then."""
        if len(looks) == 1:
            assert queuectl.mark_lock(lock, str(server.pid)) is None
        looks.append(("waiting", holder := real_running_server(data_dir)))
        return holder

    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the server's, unmarked: the file is empty
        assert running_server(tmp_path) == -1
        monkeypatch.setattr(queuetool, "running_server", first_look)
        monkeypatch.setattr(queuectl, "running_server", marked_while_waiting)
        status = cli.main(["queue", "--data-dir", str(tmp_path), "flush"])
        out, err = capsys.readouterr()
        assert (status, err) == (0, "")
        assert out == (
            "queue flush: every message queued now (1): "
            f"handed to the running server (pid {server.pid})\n"
        )
        assert looks == [("first", -1), ("waiting", server.pid)]
        assert server.wait(30) == -signal.SIGUSR1
        [(_, command)] = queuectl.read_commands(tmp_path / "queue")
        assert (command.action, command.ids) == ("flush", (entry.id,))
    finally:
        server.kill()
        server.wait()
        os.close(lock)
