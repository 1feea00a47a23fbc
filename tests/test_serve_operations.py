"""The operator's tools on a running ``python -m smtpcore serve`` (issue 13, items 11 and
12): ``queue list|flush|delete|hold|release`` with the server running and without,
SIGHUP reloading users and certificates without dropping a session, SIGTERM letting a
message in flight finish."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from peers import free_port
from relay_remote import remote
from smtpcore.server.cutshort import CUT_IN_END_OF_DATA
from smtpcore.server.queue import Queue
from test_cli_serve import LOOPBACK, ROOT, _until, serve

ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"


def _queue(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "smtpcore", "queue", "--data-dir", str(data_dir), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _submit(port: int, rcpt: str, subject: str) -> None:
    with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
        smtp.login("john@abc.example", "john-pw")
        smtp.sendmail("john@abc.example", [rcpt], f"Subject: {subject}\r\n\r\nhi\r\n".encode())


def test_queue_tools_on_a_running_server(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    zone.write_text(ZONE)
    data = tmp_path / "abc"
    replies = {"a@pqr.example": b"451 4.3.0 busy", "b@pqr.example": b"451 4.3.0 busy"}
    with remote(rcpt_replies=replies) as server:
        relay = ("--resolver", f"static:{zone}", "--remote-port", str(server.port))
        no_retry = ("--retry-after", "1h", "--max-retry-after", "2h")
        with serve(
            data,
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=relay + no_retry,
        ) as abc:
            _submit(abc.ports["submission"], "a@pqr.example", "first")
            _submit(abc.ports["submission"], "b@pqr.example", "second")
            _until(lambda: abc.log().count("status=deferred") == 2, "two deferrals", abc)
            listing = _queue(data, "list")
            assert listing.returncode == 0, listing.stderr
            assert listing.stdout.count("451 4.3.0 busy") == 2
            assert "from <john@abc.example>" in listing.stdout
            assert "-- 2 messages" in listing.stdout
            lines = listing.stdout.splitlines()  # in directory order, as mailq's
            first = lines[lines.index("    <a@pqr.example>  (451 4.3.0 busy)") - 1].split()[0]
            assert _queue(data, "hold", first).returncode == 0
            _until(lambda: f"{first}: on hold" in abc.log(), "the hold", abc)
            assert f"{first} (held)" in _queue(data, "list").stdout
            server.rcpt_replies.clear()
            flushed = _queue(data, "flush")  # the held one stays
            assert flushed.returncode == 0, flushed.stderr
            assert "flush: every message queued now (2): handed to the running" in flushed.stdout
            _until(lambda: abc.queued() == 1, "the second delivered", abc)
            assert [t.recipients for t in server.transactions] == [["b@pqr.example"]]
            assert _queue(data, "release", first.lower()).returncode == 0
            _until(lambda: abc.queued() == 0, "the released one delivered", abc)
            _submit(abc.ports["submission"], "a@pqr.example", "third")
            _until(lambda: len(server.transactions) == 3, "the third", abc)
            missing = _queue(data, "delete", "0123456789")
            assert missing.returncode == 2 and "no message 0123456789" in missing.stderr
            assert abc.stop() == 0
    assert [t.recipients for t in server.transactions][1] == ["a@pqr.example"]


def test_queue_list_marks_a_message_in_delivery_and_no_stale_mark(tmp_path: Path) -> None:
    """``queue list`` did not say which messages were in delivery (``mailq`` puts ``*``
    after the id of its active queue's). A message whose relay session is open is now
    listed ``ID*``; its mark goes with the session (here cut by a stop, which logs its
    recipient deferred), and a mark a dead server left names nothing: neither listed
    with no server running nor after the next start, which delivers the message."""
    zone = tmp_path / "zone"
    zone.write_text(ZONE)
    data = tmp_path / "abc"
    active = data / "queue" / "active"
    relay_options: tuple[str, ...] = ("--resolver", f"static:{zone}", "--stop-timeout", "1s")
    with remote(data_replies=[b""], hold=30.0) as server:  # the first dot: no answer
        relay_options += ("--remote-port", str(server.port))
        with serve(data, "abc.example", ["john@abc.example:john-pw"], extra=relay_options) as abc:
            _submit(abc.ports["submission"], "a@pqr.example", "first")
            _until(lambda: len(server.transactions) == 1, "the hanging session", abc)
            (queue_id,) = Queue(data / "queue").ids()
            listing = _queue(data, "list")
            assert listing.returncode == 0, listing.stderr
            assert listing.stdout.splitlines()[0].startswith(f"{queue_id}*  age ")
            assert abc.stop() == 0
            # The dot went out, unanswered: the exchanger may have the message.
            assert f"status=deferred ({CUT_IN_END_OF_DATA})" in abc.log()
        server.release.set()
        assert not list(active.iterdir())
        (active / queue_id).write_text(f"{abc.process.popen.pid}\n")  # as if it crashed
        listing = _queue(data, "list")
        assert listing.stdout.splitlines()[0].startswith(f"{queue_id}  age ")
        with serve(
            data, "abc.example", ["john@abc.example:john-pw"], extra=relay_options
        ) as again:
            _until(lambda: again.queued() == 0, "the message delivered after the start", again)
            assert not list(active.iterdir())
            assert again.stop() == 0
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"]] * 2


def test_queue_tools_without_a_server(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "queue")
    queue.open()
    kept = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    gone = queue.add(b"Subject: two\r\n\r\nx\r\n", "", ["b@pqr.example"])
    assert _queue(tmp_path, "hold", kept.id).returncode == 0
    assert queue.load(kept.id).held
    deleted = _queue(tmp_path, "delete", gone.id)
    assert deleted.returncode == 0 and "1 message\n" in deleted.stdout
    listing = _queue(tmp_path, "list").stdout
    assert f"{kept.id} (held)" in listing and gone.id not in listing
    assert "from <MAILER-DAEMON>" not in listing
    assert _queue(tmp_path, "release", "ALL").returncode == 0
    assert not queue.load(kept.id).held
    assert _queue(tmp_path / "nowhere", "list").returncode == 2


def test_queue_list_shows_a_success_report_owed_and_delete_says_it_is_dropped(
    tmp_path: Path,
) -> None:
    """An entry whose recipients are all sent but that still owes a success report
    (RFC 3461 §6.2) was listed with no recipient at all: an operator could delete it as
    empty and lose the report without a word."""
    from dataclasses import replace

    from smtpcore.server.queue import RecipientStatus

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    sent = replace(entry.recipients[0], status=RecipientStatus.SENT, report_owed="relayed")
    queue.update(replace(entry.with_recipients({"a@pqr.example": sent}), held=True))
    listing = _queue(tmp_path, "list").stdout
    assert f"{entry.id} (held)" in listing
    assert "    (owes a success report for <a@pqr.example>)" in listing
    deleted = _queue(tmp_path, "delete", entry.id)
    assert deleted.returncode == 0, deleted.stderr
    assert (
        f"{entry.id}: the success report owed for <a@pqr.example> is dropped with it"
        in deleted.stdout
    )
    assert "1 message\n" in deleted.stdout and not queue.entries()


def test_a_command_for_all_a_stopped_server_left_spares_mail_queued_after_it(
    tmp_path: Path,
) -> None:
    """``ALL`` handed to a server that stopped before carrying it out is the messages
    queued when it was given: the tool, carrying it out first, deleted mail accepted
    afterwards too (and held it, for a ``hold ALL`` given on an empty queue). A command
    for ALL on an empty queue leaves no file at all: ``"ids": []`` is every message to a
    server of an earlier version, which knows no ``"all"``."""
    import json

    from smtpcore.server.queuectl import QueueCommand, apply_left_offline, submit

    queue = Queue(tmp_path / "queue")
    queue.open()
    before = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    submit(tmp_path / "queue", QueueCommand("delete"), pid=0)
    queue.remove(before.id)
    held = submit(tmp_path / "queue", QueueCommand("hold"), pid=0)  # the queue is empty now
    assert held.pinned and held.ids == ()
    files = sorted((tmp_path / "queue" / "commands").glob("*.json"))
    assert [json.loads(path.read_text())["ids"] for path in files] == [[before.id]]
    after = queue.add(b"Subject: two\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    assert apply_left_offline(queue, 0.0, tell=lambda line: None) == 1
    assert [(entry.id, entry.held) for entry in queue.entries()] == [(after.id, False)]


def test_a_command_for_all_left_by_an_older_version_is_pinned_when_first_read(
    tmp_path: Path,
) -> None:
    """A command file from before ``ALL`` was pinned holds no ids and no ``"all"``: every
    message as found when carried out. A start that read it and was stopped before it
    was on disk left it so, and the next one reached mail accepted in between. It is
    pinned, and written so, when first read."""
    import json

    from smtpcore.server.queuectl import apply_left_offline, read_commands

    queue = Queue(tmp_path / "queue")
    queue.open()
    before = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    commands = tmp_path / "queue" / "commands"
    commands.mkdir()
    (commands / "01-older.json").write_text(json.dumps({"action": "delete", "ids": []}))
    [(path, command)] = read_commands(tmp_path / "queue")  # a start, then a stop
    assert (command.ids, command.pinned) == ((before.id,), True)
    assert json.loads(path.read_text()) == {"action": "delete", "ids": [before.id], "all": True}
    after = queue.add(b"Subject: two\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    assert apply_left_offline(queue, 0.0, tell=lambda line: None) == 1
    assert [entry.id for entry in queue.entries()] == [after.id]
    assert list(commands.iterdir()) == []


def test_a_command_for_all_behind_one_that_cannot_be_read_is_pinned_all_the_same(
    tmp_path: Path,
) -> None:
    """An older version's ``delete ALL`` given after a command file the server could not
    read was left unpinned (the reading stopped at that file): the start accepted mail,
    and once the file could be read, the next reading pinned the delete to that mail
    too. It is pinned at the first reading, though carried out only after that file."""
    import json

    from smtpcore.server.queuectl import read_commands

    queue = Queue(tmp_path / "queue")
    queue.open()
    before = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    commands = tmp_path / "queue" / "commands"
    commands.mkdir()
    unreadable = commands / "00000000000000000001-aaaaaaaa.json"
    unreadable.mkdir()  # IsADirectoryError: an OSError, as a file of root's, 0600, gives
    older = commands / "00000000000000000002-bbbbbbbb.json"
    older.write_text(json.dumps({"action": "delete", "ids": []}))
    told: list[str] = []
    assert read_commands(tmp_path / "queue", told.append) == []  # a start
    assert f"{unreadable}: cannot read this queue command" in told[0]
    assert json.loads(older.read_text()) == {"action": "delete", "ids": [before.id], "all": True}
    queue.add(b"Subject: two\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    unreadable.rmdir()  # the operator has made it readable
    [(path, command)] = read_commands(tmp_path / "queue")
    assert (path, command.ids, command.pinned) == (older, (before.id,), True)


def test_commands_a_stopped_server_left_come_before_the_tools_own(tmp_path: Path) -> None:
    """A server that stops or crashes before a command's actions are on disk leaves its
    file for the next start. The tool, with no server running, acted on the files and
    left that command there: ``release`` now, then the next start carried out the
    ``hold`` given before it, and the message ended held."""
    from smtpcore.server.queuectl import QueueCommand, read_commands, submit

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    submit(tmp_path / "queue", QueueCommand("hold", (entry.id,)), pid=0)  # left by a crash
    released = _queue(tmp_path, "release", entry.id)
    assert released.returncode == 0, released.stderr
    assert read_commands(tmp_path / "queue") == []
    assert not queue.load(entry.id).held
    assert "queue: 1 command a stopped server left carried out first" in released.stdout


def test_the_tool_refuses_its_own_command_behind_a_waiting_one_it_cannot_read(
    tmp_path: Path,
) -> None:
    """With no server running, the tool said of a waiting command it could not read that
    it waits, with those after it, then carried out its own, given later, at once: the
    waiting ``hold`` was carried out over the ``release`` once readable. It now carries
    out those before it and refuses its own, in one line naming the file."""
    from smtpcore.server.queuectl import QueueCommand, submit

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    submit(tmp_path / "queue", QueueCommand("hold", (entry.id,)), pid=0)  # left by a crash
    unreadable = tmp_path / "queue" / "commands" / "99999999999999999999-later.json"
    unreadable.mkdir()  # IsADirectoryError: an OSError, as a file of root's, 0600, gives
    released = _queue(tmp_path, "release", entry.id)
    assert released.returncode == 2, released.stdout
    assert released.stderr.splitlines() == [
        f"smtpcore queue: {unreadable}: cannot read this command, given before yours "
        "(Is a directory); nothing more done: make it readable for this user, or remove "
        "it, and try again"
    ]
    assert queue.load(entry.id).held  # the hold before it carried out, the release not
    assert [path.name for path in unreadable.parent.iterdir()] == [unreadable.name]


def test_a_queue_tool_holding_the_lock_is_waited_for_and_no_stale_pid_is_signalled(
    tmp_path: Path,
) -> None:
    """The pid a stopped server left in the lock file is no one to signal while the queue
    tool holds the lock: a second tool waits for the first and does the work itself, and
    a server that starts meanwhile waits too, then serves."""
    from smtpcore.server.queuectl import offline_lock, running_server

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "smtpcore.lock").write_text(f"{bystander.pid}\n")  # a server's, stopped
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        argv = [sys.executable, "-m", "smtpcore", "queue", "--data-dir", str(tmp_path)]
        with offline_lock(tmp_path):
            assert running_server(tmp_path) == -1
            second = subprocess.Popen(
                [*argv, "hold", entry.id], env=env, stdout=subprocess.PIPE, text=True
            )
            time.sleep(0.5)  # the second tool is waiting for the lock now
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 0 and "1 message" in out, out
        assert bystander.poll() is None and queue.load(entry.id).held
        held = threading.Event()

        def hold_a_second() -> None:
            with offline_lock(tmp_path):
                held.set()
                time.sleep(1.0)

        tool = threading.Thread(target=hold_a_second)
        tool.start()
        held.wait(10)
        with serve(tmp_path, "abc.example", ["john@abc.example:pw"]):
            pass  # listening once the tool let go: it waited rather than fail
        tool.join()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_lock_taken_only_by_a_queue_tools_probe_is_waited_for_not_refused(
    tmp_path: Path,
) -> None:
    """``running_server`` (every ``queue`` run) takes a shared lock for a moment; a
    server's start landing in that moment probed again, found the lock free, and
    refused to start "in use by another smtpcore server". Here the probe's lock is held
    for a fifth of a second: the start waits for it."""
    import fcntl

    from smtpcore.server.queuectl import LOCK_NAME, take_lock

    probe = os.open(tmp_path / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    release = threading.Timer(0.2, fcntl.flock, (probe, fcntl.LOCK_UN))
    release.start()
    try:
        os.close(take_lock(tmp_path, "4242"))
    finally:
        release.join()
        os.close(probe)
    assert (tmp_path / LOCK_NAME).read_text().strip() == "4242"


def test_a_stale_process_id_is_cleared_before_the_lock_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed with SIGKILL leaves its process id in the lock file. The next
    process to take the lock (a server starting, a ``queue`` tool) held it a moment with
    that id still there, and a ``queue`` command run in that moment signalled whatever
    process has the id now: SIGUSR1, which kills it. Here a command runs in that moment,
    just as the lock is taken, and the process with the stale id lives."""
    import fcntl

    from smtpcore.server.queuectl import (
        LOCK_NAME,
        QueueCommand,
        release_lock,
        running_server,
        submit,
        take_lock,
    )

    queue = Queue(tmp_path / "queue")
    queue.open()
    queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    real_flock = fcntl.flock
    probed: list[int | None] = []

    def flock(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        if operation & fcntl.LOCK_EX and not probed:  # what a `queue` command does now
            probed.append(pid := running_server(tmp_path))
            if pid is not None and pid > 0:
                submit(tmp_path / "queue", QueueCommand("hold"), pid)

    victim = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{victim.pid}\n")  # a server's, killed
        monkeypatch.setattr(fcntl, "flock", flock)
        release_lock(take_lock(tmp_path, "4242"))
        monkeypatch.undo()
        with pytest.raises(subprocess.TimeoutExpired):
            victim.wait(0.3)
        assert probed == [-1]  # taken, not yet marked: no one to signal
    finally:
        victim.kill()
        victim.wait()


def test_commands_are_carried_out_in_the_order_given_whatever_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Command files were named after the wall clock and carried out in name order: a
    clock stepped back between ``hold ALL`` and ``release ALL`` (NTP, ``date -s``) ran
    the release first, and the mail stayed held."""
    from smtpcore.server.queuectl import (
        QueueCommand,
        apply_left_offline,
        read_commands,
        submit,
    )

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    submit(tmp_path / "queue", QueueCommand("hold"), pid=0)
    stepped_back = time.time_ns() - 5_000_000_000
    monkeypatch.setattr(time, "time_ns", lambda: stepped_back)
    submit(tmp_path / "queue", QueueCommand("release"), pid=0)
    submit(tmp_path / "queue", QueueCommand("flush"), pid=0)  # the same clock again
    monkeypatch.undo()
    commands = read_commands(tmp_path / "queue")
    assert [command.action for _, command in commands] == ["hold", "release", "flush"]
    assert apply_left_offline(queue, 0.0, tell=lambda line: None) == 3
    assert not queue.load(entry.id).held


def test_command_numbers_past_twenty_digits_keep_the_order_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting command numbered 99999999999999999999 (a clock once set to the year
    5138) made the next one 100000000000000000000, which was not counted as waiting:
    every later submit tried that name again, for ever, and name order put it first.
    Numbers of any length count and are read in number order, and a name that can never
    be taken is given up after a bound."""
    import json

    from smtpcore.server.config import ConfigError
    from smtpcore.server.queuectl import QueueCommand, read_commands, submit

    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    commands = tmp_path / "queue" / "commands"
    commands.mkdir()
    (commands / "99999999999999999999.json").write_text(
        json.dumps({"action": "hold", "ids": [entry.id], "all": True})
    )
    link, links = os.link, []

    def counted(*args: Any) -> None:
        links.append(args)
        if len(links) > 10:  # spinning: fail, not hang
            raise RuntimeError("os.link called again and again")
        link(*args)

    monkeypatch.setattr(os, "link", counted)
    submit(tmp_path / "queue", QueueCommand("release"), pid=0)
    submit(tmp_path / "queue", QueueCommand("flush"), pid=0)
    assert len(links) == 2
    found = read_commands(tmp_path / "queue")
    assert [(path.name, command.action) for path, command in found] == [
        ("99999999999999999999.json", "hold"),
        ("100000000000000000000.json", "release"),
        ("100000000000000000001.json", "flush"),
    ]

    def taken(*args: Any) -> None:
        links.append(args)
        raise FileExistsError(args[1])

    monkeypatch.setattr(os, "link", taken)
    with pytest.raises(ConfigError, match="no name free for a queue command after 1000 tries"):
        submit(tmp_path / "queue", QueueCommand("delete"), pid=0)
    assert len(links) == 2 + 1000
    assert sorted(path.name for path in commands.iterdir()) == sorted(p.name for p, _ in found)


NOBODY = 65534


def _chown_tree(top: Path, uid: int) -> None:
    for where, dirs, files in os.walk(top):
        for name in (where, *(os.path.join(where, f) for f in (*dirs, *files))):
            os.chown(name, uid, uid)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act on another user's queue")
def test_the_queue_tool_refuses_to_change_another_users_queue(tmp_path: Path) -> None:
    """Run as root (``sudo``) on the queue of a server that runs as another user, the
    tool rewrote an envelope as root, mode 0600: the server could not read it and set
    the message aside as damaged, neither delivered nor bounced. Its command files for a
    running server were root's too, and never read. It now refuses, naming the owner;
    ``list`` only reads, and works."""
    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: one\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    _chown_tree(tmp_path, NOBODY)
    held = _queue(tmp_path, "hold", entry.id)
    assert held.returncode == 2, held.stdout
    owner = f"uid {NOBODY}"
    assert f"--data-dir: {tmp_path / 'queue'} belongs to " in held.stderr
    assert owner in held.stderr and "run the queue tool as that user" in held.stderr
    envelope = queue.envelope_path(entry.id).stat()
    assert envelope.st_uid == NOBODY and not queue.load(entry.id).held
    assert not (tmp_path / "queue" / "commands").exists()
    listed = _queue(tmp_path, "list")
    assert listed.returncode == 0 and listed.stdout.startswith(entry.id), listed.stderr


def _read_commands_as_nobody(queue_dir: Path) -> str:
    """What ``read_commands`` finds and logs in a child process that runs as ``nobody``
    (forked, not run: this Python may be where ``nobody`` cannot reach it)."""
    import logging

    from smtpcore.server.log import logger
    from smtpcore.server.queuectl import read_commands

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(write, "w") as out:
                handler = logging.StreamHandler(out)
                handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
                logger.addHandler(handler)
                out.write(f"{[command.action for _, command in read_commands(queue_dir)]}\n")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as found:
        text = found.read()
    os.waitpid(child, 0)
    return text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to make files another user cannot read")
def test_the_server_logs_queue_commands_it_cannot_read() -> None:
    """A commands directory, or a command file, the server's user may not read (root's,
    left by ``sudo queue`` of an earlier version) read as no command at all, silently,
    and such a file was removed as damaged: the operator's command was lost, though the
    tool had said the server had it. Both are now logged, and the file kept."""
    import tempfile

    from smtpcore.server.queuectl import QueueCommand, submit

    with tempfile.TemporaryDirectory() as top:  # tmp_path's parents are root's, 0700
        queue_dir = Path(top) / "queue"
        Queue(queue_dir).open()
        _chown_tree(Path(top), NOBODY)
        submit(queue_dir, QueueCommand("hold", ("0123456789",)), pid=0)  # as root
        commands = queue_dir / "commands"
        [command] = commands.glob("*.json")
        os.chmod(command, 0o600)
        for unreadable, what in (
            (commands, "the queue commands"),
            (command, "this queue command"),
        ):
            os.chown(commands, NOBODY if unreadable is command else 0, NOBODY)
            found = _read_commands_as_nobody(queue_dir)
            assert found.endswith("[]\n"), found
            assert f"ERROR {unreadable}: cannot read {what}: Permission denied" in found
            assert command.exists()


def test_a_damaged_queue_command_is_dropped_and_a_good_one_kept_until_done(
    tmp_path: Path,
) -> None:
    """A command file nested too deep for the JSON reader raised RecursionError out of
    ``read_commands``, which stopped the server's start, every time."""
    from smtpcore.server.queuectl import QueueCommand, read_commands, submit

    submit(tmp_path, QueueCommand("hold", ("0123456789",)), pid=0)
    commands = tmp_path / "commands"
    for name, damage in (("0-deep", "[" * 100_000), ("1-not-json", "{"), ("2-list", "[]")):
        (commands / f"{name}.json").write_text(damage)
    [(path, command)] = read_commands(tmp_path)
    assert command == QueueCommand("hold", ("0123456789",))
    assert list(commands.glob("*.json")) == [path]  # removed by whoever carries it out


def test_sighup_reloads_users_and_certificates_without_dropping_a_session(
    tmp_path: Path,
) -> None:
    import trustme

    users = tmp_path / "users"
    users.write_text("john@abc.example:john-pw\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cas = []
    for _ in range(2):
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        cas.append((ca, issued))

    def install(index: int) -> ssl.SSLContext:
        ca, issued = cas[index]
        issued.private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return context

    first = install(0)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--users-file", str(users))
    with serve(tmp_path / "abc", "abc.example", [], listeners=("smtp",), extra=tls) as abc:
        held_open = smtplib.SMTP(LOOPBACK, abc.ports["smtp"], timeout=10)
        held_open.starttls(context=first)
        held_open.ehlo()
        assert held_open.mail("x@y.example")[0] == 250
        assert held_open.rcpt("mary@abc.example")[0] == 550  # not a user yet
        users.write_text("john@abc.example:john-pw\nmary@abc.example:mary-pw\n")
        second = install(1)
        abc.process.popen.send_signal(signal.SIGHUP)
        _until(lambda: "reloaded: 2 users" in abc.log(), "the reload", abc)
        # The session opened before the reload goes on, and sees the new user.
        assert held_open.rcpt("mary@abc.example")[0] == 250
        assert held_open.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
        held_open.quit()
        with smtplib.SMTP(LOOPBACK, abc.ports["smtp"], timeout=10) as fresh:
            fresh.starttls(context=second)  # the new certificate, from the new CA
        assert len(abc.mailbox("mary@abc.example")) == 1
        # A broken users file leaves the old configuration in force.
        users.write_text("not a user line\n")
        abc.process.popen.send_signal(signal.SIGHUP)
        _until(lambda: "reload failed" in abc.log(), "the refused reload", abc)
        # An ERROR reads as one, as Postfix's lines do; the INFO lines as before.
        assert " smtpcore.mail: error: reload failed, the old configuration stays: " in abc.log()
        assert " smtpcore.mail: reloaded: 2 users" in abc.log()
        # One that is not UTF-8 too: the reload task died of it, unlogged.
        users.write_bytes(b"john@abc.example:john-pw\nmary@abc.example:p\xe4ss\n")
        abc.process.popen.send_signal(signal.SIGHUP)
        _until(lambda: "users:2: not UTF-8" in abc.log(), "the refused reload", abc)
        # One whose alias names nobody, as at start.
        users.write_text(
            "john@abc.example:john-pw\nmary@abc.example:mary-pw\n"
            "info@abc.example -> nobody@abc.example\n"
        )
        abc.process.popen.send_signal(signal.SIGHUP)
        _until(lambda: "nobody@abc.example is not a user" in abc.log(), "the refusal", abc)
        with smtplib.SMTP(LOOPBACK, abc.ports["smtp"], timeout=10) as smtp:
            smtp.starttls(context=second)
            smtp.ehlo()
            assert smtp.mail("x@y.example")[0] == 250
            assert smtp.rcpt("mary@abc.example")[0] == 250  # mary, of the old configuration
        assert abc.stop() == 0
    assert "Traceback" not in abc.log()


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """A TLS handshake in memory, or the error either side raised."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    pending = {client, server}
    for _ in range(10):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.discard(side)
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if not pending:
            return
    raise AssertionError("the handshake did not finish")


def _server_and_two_certificates(tmp_path: Path) -> tuple[Any, Any, Any, Any]:
    """A reference server configured with an old certificate pair, its configuration,
    and the old and a new pair (``make_tls_files``), for the reload tests."""
    from peers import make_tls_files
    from smtpcore.server.config import ServerConfig
    from smtpcore.server.mailserver import MailServer

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = make_tls_files(tmp_path / "old"), make_tls_files(tmp_path / "new")
    zone = tmp_path / "zone"
    zone.write_text("")
    config = ServerConfig(
        domains=("abc.example",),
        data_dir=tmp_path / "data",
        tls_cert=old.cert_file,
        tls_key=old.key_file,
        resolver=f"static:{zone}",
    )
    return MailServer(config), config, old, new


def test_a_reload_whose_key_does_not_match_the_certificate_keeps_the_old_pair(
    tmp_path: Path,
) -> None:
    """The operator copied the new certificate, not yet its key, and sent SIGHUP: OpenSSL
    had put the certificate into the live context before it found the key did not match,
    so "the old configuration stays" was logged and no handshake succeeded after."""
    import asyncio
    from dataclasses import replace

    from smtpcore.server.config import ConfigError

    server, config, old, new = _server_and_two_certificates(tmp_path)
    assert server.tls_context is not None
    _handshake(server.tls_context, old.client_context)
    with pytest.raises(ConfigError, match="the private key does not match the certificate"):
        asyncio.run(server.reload(replace(config, tls_cert=new.cert_file)))
    _handshake(server.tls_context, old.client_context)  # the old pair serves on
    asyncio.run(server.reload(replace(config, tls_cert=new.cert_file, tls_key=new.key_file)))
    _handshake(server.tls_context, new.client_context)
    with pytest.raises(ssl.SSLError):
        _handshake(server.tls_context, old.client_context)


def test_a_reload_from_other_certificate_files_names_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload from a certificate at another path loaded it, and logged the path of the
    one it replaced (the server's configuration kept the old paths)."""
    import asyncio
    import logging
    from dataclasses import replace

    caplog.set_level(logging.INFO, "smtpcore.mail")
    server, config, old, new = _server_and_two_certificates(tmp_path)
    asyncio.run(server.reload(replace(config, tls_cert=new.cert_file, tls_key=new.key_file)))
    assert f"TLS certificate {new.cert_file}" in caplog.text
    assert str(old.cert_file) not in caplog.text
    assert (server.config.tls_cert, server.config.tls_key) == (new.cert_file, new.key_file)


def _peer_name(listener: str, port: int, context: ssl.SSLContext) -> str | None:
    """The common name of the certificate ``listener`` shows a client of ``context``
    (implicit TLS, STARTTLS or STLS), None when their handshake fails. The server is
    named by its address, so no client sends SNI (RFC 6066 §3)."""
    import poplib

    try:
        if listener in ("smtps", "pop3s"):
            with (
                socket.create_connection((LOOPBACK, port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
            ):
                cert = tls.getpeercert()
        elif listener == "submission":
            with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
                smtp.starttls(context=context)
                cert = smtp.sock.getpeercert()  # type: ignore[union-attr]  # set by starttls
        else:
            pop3 = poplib.POP3(LOOPBACK, port, timeout=10)
            try:
                pop3.stls(context=context)
                cert = pop3.sock.getpeercert()  # type: ignore[attr-defined]  # an SSLSocket now
            finally:
                with contextlib.suppress(OSError):  # a failed wrap took the socket with it
                    pop3.close()
    except (ssl.SSLError, ConnectionError):
        return None
    assert cert is not None
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", cert["subject"])
    return dict(pair for name in subject for pair in name)["commonName"]


def test_a_reload_to_another_key_type_serves_only_the_new_certificate(tmp_path: Path) -> None:
    """OpenSSL keeps one certificate per key type in a context: loading an ECDSA pair into
    the live one left the RSA certificate it replaced served to clients that take no
    ECDSA (TLS 1.2 with RSA suites), and going back to RSA left the ECDSA one served
    to every client that takes it. Each listener, whatever its way to TLS, shows the
    certificate loaded last or fails the handshake; a session keeps its own TLS."""
    import asyncio

    import trustme

    from smtpcore.server.config import ServerConfig
    from smtpcore.server.mailserver import MailServer

    ca = trustme.CA()
    rsa, ecdsa = trustme.KeyType.RSA, trustme.KeyType.ECDSA
    pairs = {
        name: ca.issue_cert(LOOPBACK, common_name=name, key_type=key_type)
        for name, key_type in (("rsa-1", rsa), ("ecdsa", ecdsa), ("rsa-2", rsa))
    }
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"

    def install(name: str) -> None:
        pairs[name].private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(blob.bytes() for blob in pairs[name].cert_chain_pems))

    def client(suite: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        if suite is not None:  # TLS 1.2, where the suite names the certificate's key type
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(suite)
        return context

    clients = {
        "any": client(None),
        "rsa only": client("ECDHE-RSA-AES128-GCM-SHA256"),
        "ecdsa only": client("ECDHE-ECDSA-AES128-GCM-SHA256"),
    }
    listeners = ("submission", "smtps", "pop3", "pop3s")

    def seen(ports: dict[str, int]) -> dict[str, set[str | None]]:
        return {
            kind: {_peer_name(name, ports[name], context) for name in listeners}
            for kind, context in clients.items()
        }

    install("rsa-1")
    config = ServerConfig(
        domains=("abc.example",),
        data_dir=tmp_path / "data",
        tls_cert=cert,
        tls_key=key,
        smtp_port=0,
        submission_port=1,  # the sockets replace these four
        smtps_port=1,
        pop3_port=1,
        pop3s_port=1,
    )

    async def main() -> list[dict[str, set[str | None]]]:
        sockets = {name: socket.create_server((LOOPBACK, 0)) for name in listeners}
        async with MailServer(config, sockets=sockets) as server:
            ports = {listener.name: listener.port for listener in server.listeners}
            held = await asyncio.to_thread(
                smtplib.SMTP_SSL, LOOPBACK, ports["smtps"], context=clients["any"], timeout=10
            )
            views = [await asyncio.to_thread(seen, ports)]
            for name in ("ecdsa", "rsa-2"):
                install(name)
                await server.reload(config)
                views.append(await asyncio.to_thread(seen, ports))
            assert (await asyncio.to_thread(held.noop))[0] == 250  # its TLS goes on
            await asyncio.to_thread(held.quit)
        return views

    before, ecdsa_now, rsa_again = asyncio.run(asyncio.wait_for(main(), 60))
    assert before == {"any": {"rsa-1"}, "rsa only": {"rsa-1"}, "ecdsa only": {None}}
    assert ecdsa_now == {"any": {"ecdsa"}, "rsa only": {None}, "ecdsa only": {"ecdsa"}}
    assert rsa_again == {"any": {"rsa-2"}, "rsa only": {"rsa-2"}, "ecdsa only": {None}}


def test_a_reload_that_fails_in_any_way_is_logged_and_the_server_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SIGHUP task caught ConfigError and OSError only: anything else killed it
    unlogged ("Task exception was never retrieved")."""
    import asyncio
    import logging

    from smtpcore.server import _cli_serve, cli
    from smtpcore.server.mailserver import MailServer

    async def broken(self: MailServer, config: object) -> None:
        raise ValueError("something no one foresaw")

    async def stop_once_logged() -> None:
        for _ in range(200):
            if "reload failed" in caplog.text:
                break
            await asyncio.sleep(0.01)
        signal.raise_signal(signal.SIGTERM)

    def announce(*args: object, **kwargs: object) -> None:
        signal.raise_signal(signal.SIGHUP)
        asyncio.get_running_loop().create_task(stop_once_logged())

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(MailServer, "reload", broken)
    monkeypatch.setattr(_cli_serve, "print", announce, raising=False)
    zone = tmp_path / "zone"
    zone.write_text("")
    argv = ["serve", "--data-dir", str(tmp_path / "data"), "--resolver", f"static:{zone}"]
    argv += ["--smtp-port", str(free_port()), "--submission-port", "0", "--pop3-port", "0"]
    assert cli.main(argv) == 0
    assert "reload failed, the old configuration stays: something no one foresaw" in caplog.text


def test_queue_tool_errors_of_the_file_system_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who may not read the server's queue (its directories are 0700, the lock
    0600) got a PermissionError traceback from ``queue list`` and ``queue flush``."""
    from smtpcore.server import cli, queuetool

    Queue(tmp_path / "queue").open()
    lock = tmp_path / "smtpcore.lock"

    def refused(*args: object) -> object:
        raise PermissionError(13, "Permission denied", str(lock))

    monkeypatch.setattr(queuetool, "format_listing", refused)
    monkeypatch.setattr(queuetool, "running_server", refused)
    for action in ("list", "flush"):
        assert cli.main(["queue", "--data-dir", str(tmp_path), action]) == 2
        err = capsys.readouterr().err
        assert err == f"smtpcore queue: --data-dir: {lock}: Permission denied\n"


def test_queue_list_shows_a_remote_servers_control_characters_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pending recipient's last error is a remote server's text: raw, its 8-bit CSI
    would drive the terminal and a bidi override disguise the line."""
    from smtpcore.server import cli, queuetool

    Queue(tmp_path / "queue").open()
    line = "    <a@pqr.example>  (451 4.3.0 busy \x9b31m\u202eevil)"
    monkeypatch.setattr(queuetool, "format_listing", lambda *args: [line])
    assert cli.main(["queue", "--data-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert out == "    <a@pqr.example>  (451 4.3.0 busy \\x9b31m\\u202eevil)\n"


def test_sigterm_lets_a_message_in_flight_finish_then_stops(tmp_path: Path) -> None:
    with serve(
        tmp_path / "abc",
        "abc.example",
        ["john@abc.example:john-pw"],
        listeners=("smtp",),
        extra=("--stop-timeout", "30s"),
    ) as abc:
        sock = socket.create_connection((LOOPBACK, abc.ports["smtp"]), timeout=10)
        replies = sock.makefile("rb")
        replies.readline()
        for line in (b"EHLO me\r\n", b"MAIL FROM:<x@y.example>\r\n"):
            sock.sendall(line)
            while replies.readline()[3:4] == b"-":
                pass
        sock.sendall(b"RCPT TO:<john@abc.example>\r\nDATA\r\n")
        assert replies.readline().startswith(b"250")
        assert replies.readline().startswith(b"354")
        sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        abc.process.popen.send_signal(signal.SIGTERM)
        _until(lambda: "stopping" in abc.log(), "the stop to begin", abc)
        time.sleep(0.2)  # the listener is closed; the session still runs
        sock.sendall(b"second half\r\n.\r\n")
        assert replies.readline().startswith(b"250")
        sock.sendall(b"QUIT\r\n")
        assert replies.readline()[:3] in (b"221", b"421")
        sock.close()
        assert abc.process.popen.wait(30) == 0
    (stored,) = abc.mailbox("john@abc.example")
    assert b"first half" in stored and b"second half" in stored


def test_a_port_in_use_names_the_listener(tmp_path: Path) -> None:
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        argv = [sys.executable, "-m", "smtpcore", "serve", "--data-dir", str(tmp_path)]
        argv += ["--smtp-port", "0", "--pop3-port", "0", "--submission-port", str(port)]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    # In the system's words, as the operator guide shows it: asyncio's own sentence
    # ("error while attempting to bind on address ...: address already in use") was shown.
    assert result.stderr.endswith(
        f"smtpcore serve: cannot listen: submission listener on 127.0.0.1:{port}: "
        f"{os.strerror(errno.EADDRINUSE)}\n"
    ), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("make", ["create_server", "listening_sockets"])
def test_a_bind_that_fails_for_one_address_of_a_name_names_that_address(make: str) -> None:
    """``--host`` may be a name with several addresses (``localhost``: 127.0.0.1 and
    ::1): the message named the name alone once it gave the system's words for the
    error, not which of its addresses was taken. The address comes from the sentence
    the bind failed with, asyncio's and the adapters' own alike."""
    from smtpcore._asyncio_raw import listening_sockets
    from smtpcore.server.mailserver import _listener_place

    async def failed_bind(port: int) -> OSError:
        loop = asyncio.get_running_loop()
        try:
            if make == "create_server":
                server = await loop.create_server(asyncio.Protocol, LOOPBACK, port)
                server.close()
            else:
                for sock in await listening_sockets(loop, LOOPBACK, port, 5):
                    sock.close()
        except OSError as exc:
            return exc
        raise AssertionError("the port was bound twice")

    port = free_port()
    with socket.create_server((LOOPBACK, port)):
        exc = asyncio.run(failed_bind(port))
    assert exc.errno == errno.EADDRINUSE
    assert _listener_place("mx.abc.example", port, exc) == (
        f"mx.abc.example:{port} (address {LOOPBACK})"
    )
    assert _listener_place(LOOPBACK, port, exc) == f"{LOOPBACK}:{port}"
    assert _listener_place("[::1]", port, OSError(errno.EADDRINUSE, "x")) == f"[::1]:{port}"


def test_serve_names_the_address_of_its_host_that_could_not_be_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through :meth:`MailServer.start`, ``--host`` a name that resolves to
    the loopback address, whose port is taken."""
    from smtpcore.server import MailServer, ServerConfig

    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real(LOOPBACK if host == "mx.abc.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port = free_port()
    config = ServerConfig(
        domains=("abc.example",),
        data_dir=tmp_path / "data",
        hostname="mx.abc.example",
        host="mx.abc.example",
        smtp_port=port,
        submission_port=0,
        pop3_port=0,
        min_free_space=0,
    )

    async def start() -> None:
        async with MailServer(config):
            raise AssertionError("started on a port taken")

    with socket.create_server((LOOPBACK, port)), pytest.raises(OSError) as failed:
        asyncio.run(start())
    assert str(failed.value).endswith(
        f"smtp listener on mx.abc.example:{port} (address {LOOPBACK}): "
        f"{os.strerror(errno.EADDRINUSE)}"
    ), failed.value
