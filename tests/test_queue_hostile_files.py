"""What another user, or a stray tool, may leave in the data directory: symbolic links
to the server's own files, FIFOs, dot-files; and the queue tool on a large queue. Found
by an audit of the queue and its tool: a planted ``smtpcore.lock`` link had ``queue
flush`` truncate the file it named, a ``queue/commands`` link had the server delete
another directory's ``*.json``, a FIFO among the envelopes hung ``queue list`` and
``serve``, and ``queue list`` or ``queue hold ID`` read every envelope before doing
anything."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from smtpcore.server import cli
from smtpcore.server.config import ConfigError, ServerConfig
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from smtpcore.server.mailserver import MailServer
from smtpcore.server.queue import Queue, QueueEntry
from smtpcore.server.queuectl import (
    LOCK_NAME,
    QueueCommand,
    apply_left_offline,
    apply_offline,
    format_listing,
    read_commands,
    release_lock,
    submit,
    take_lock,
    validate_ids,
)
from smtpcore.server.queueeffects import summary_line
from smtpcore.server.safefiles import NotRegularFile
from test_serve_operations import _queue

MESSAGE = b"Subject: one\r\n\r\nx\r\n"


class _TookTooLong(Exception):
    pass


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail, not hang, when the block blocks (an open of a FIFO no one writes)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _TookTooLong(f"still blocked after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _queue_with(tmp_path: Path, count: int) -> tuple[Queue, list[QueueEntry]]:
    queue = Queue(tmp_path / "queue")
    queue.open()
    entries = [queue.add(MESSAGE, "john@abc.example", [f"r{n}@pqr.example"]) for n in range(count)]
    return queue, entries


# -- 1. links planted in the data directory are never followed


def test_a_lock_file_that_is_a_link_is_refused_and_what_it_names_untouched(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious contents\n")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / LOCK_NAME).symlink_to(victim)
    with pytest.raises(ConfigError, match=LOCK_NAME):
        take_lock(data, "queue-tool")
    assert victim.read_text() == "precious contents\n"


def test_a_commands_directory_that_is_a_link_is_neither_read_nor_written(
    tmp_path: Path,
) -> None:
    queue, (entry,) = _queue_with(tmp_path, 1)
    victim = tmp_path / "victimdir"
    victim.mkdir()
    (victim / "settings.json").write_text('{"config": 1}')
    (tmp_path / "queue" / "commands").symlink_to(victim)
    told: list[str] = []
    assert read_commands(tmp_path / "queue", told.append) == []
    assert "not a directory" in told[0]
    with pytest.raises(ConfigError, match="commands"):
        apply_left_offline(queue, 0.0, tell=told.append)
    with pytest.raises(OSError, match="not a directory"):
        submit(tmp_path / "queue", QueueCommand("hold", (entry.id,)), pid=0)
    assert [p.name for p in victim.iterdir()] == ["settings.json"]


def test_a_command_file_that_is_a_link_is_dropped_not_followed(tmp_path: Path) -> None:
    _queue_with(tmp_path, 1)
    victim = tmp_path / "victim.json"
    victim.write_text('{"action": "delete", "ids": [], "all": false}')
    commands = tmp_path / "queue" / "commands"
    commands.mkdir(mode=0o700)
    (commands / "00000000000000000001.json").symlink_to(victim)
    assert read_commands(tmp_path / "queue", lambda line: None) == []
    assert victim.exists() and not list(commands.iterdir())


def test_a_link_planted_where_a_new_envelope_goes_is_not_written_through(
    tmp_path: Path,
) -> None:
    queue, _ = _queue_with(tmp_path, 0)
    victim = tmp_path / "victim"
    victim.write_text("precious contents\n")
    spool = queue.spool()
    spool.write(MESSAGE)
    (tmp_path / "queue" / "tmp" / f"{spool.id}.envelope").symlink_to(victim)
    with pytest.raises(FileExistsError):
        queue.prepare(spool, "john@abc.example", ["a@pqr.example"])
    assert victim.read_text() == "precious contents\n"


def test_a_corrupt_directory_that_is_a_link_receives_nothing(tmp_path: Path) -> None:
    queue, (entry,) = _queue_with(tmp_path, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "queue" / "corrupt").symlink_to(elsewhere)
    queue.envelope_path(entry.id).write_text("{ damaged")
    assert Queue(tmp_path / "queue").open() == []
    assert not list(elsewhere.iterdir())
    assert queue.envelope_path(entry.id).exists()  # left where it is, and skipped


def test_a_queue_subdirectory_that_is_a_link_stops_the_queue_opening(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "queue").mkdir(mode=0o700)
    (tmp_path / "queue" / "tmp").symlink_to(elsewhere)
    (elsewhere / "precious").write_text("x")
    with pytest.raises(NotADirectoryError):
        Queue(tmp_path / "queue").open()
    assert (elsewhere / "precious").exists()


@pytest.mark.parametrize("shared", ["data", "queue"])
def test_the_queue_tool_refuses_to_change_a_directory_others_may_write(
    tmp_path: Path, shared: str
) -> None:
    """``list`` writes nothing and opens every file without following a link: it works
    for whoever may read the queue, whatever the directories' modes."""
    (entry,) = _queue_with(tmp_path, 1)[1]
    where = tmp_path if shared == "data" else tmp_path / "queue"
    where.chmod(0o777)
    result = _queue(tmp_path, "flush")
    assert result.returncode == 2, result.stdout
    assert result.stderr == (
        f"smtpcore queue: --data-dir: {where} (mode 0777) may be written by other users, "
        f"who could plant links there: chmod go-w {where}\n"
    )
    listed = _queue(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(entry.id)


def test_serve_refuses_a_data_directory_others_may_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zone").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o775)
    argv = ["serve", "--data-dir", "data", "--domain", "abc.example", "--resolver", "static:zone"]
    argv += ["--smtp-port", "0", "--submission-port", "0", "--pop3-port", "0"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "smtpcore serve: --data-dir: data (mode 0775) may be written by other users, "
        "who could plant links there: chmod go-w data\n"
    )
    assert not (tmp_path / "data" / LOCK_NAME).exists()


def test_serve_makes_a_missing_data_directory_private(tmp_path: Path) -> None:
    """Made 0755 before (``mkdir``'s default mode), 0775 under a umask of 002: a data
    directory the server made itself must pass its own check."""
    from smtpcore.server.config import ServerConfig
    from smtpcore.server.mailserver import MailServer
    from smtpcore.server.queuectl import release_lock

    old = os.umask(0o002)
    try:
        server = MailServer(ServerConfig(data_dir=tmp_path / "a" / "data"))
        server._prepare_storage()
    finally:
        os.umask(old)
    assert server._lock_fd is not None
    release_lock(server._lock_fd)
    assert (tmp_path / "a" / "data").stat().st_mode & 0o777 == 0o700


def _maildir_swapped_for_a_link(tmp_path: Path) -> tuple[LocalMailboxes, Path]:
    """John's Maildir, moved away by a group member of an earlier version's 0775
    ``mailboxes/``, and a link in its place to a Maildir of theirs."""
    config = ServerConfig(
        domains=("abc.example",), users={"john@abc.example": "pw"}, data_dir=tmp_path / "data"
    )
    mailboxes = LocalMailboxes(config)
    mailboxes.create_all()
    theirs = tmp_path / "theirs"
    Maildir(theirs).create()
    john = config.mailbox_path("john@abc.example")
    john.rename(john.with_name(".old"))
    john.symlink_to(theirs)
    return mailboxes, theirs


def test_a_mailbox_that_is_a_link_receives_no_mail(tmp_path: Path) -> None:
    """A message accepted with 250 was written into the directory the link named."""
    mailboxes, theirs = _maildir_swapped_for_a_link(tmp_path)
    with pytest.raises(NotADirectoryError, match=r"john@abc\.example"):
        mailboxes.deliver("john@abc.example", "mary@pqr.example", MESSAGE)
    with pytest.raises(NotADirectoryError):
        mailboxes.create_all()  # at start: serve stops, naming it
    assert [list((theirs / sub).iterdir()) for sub in ("tmp", "new", "cur")] == [[], [], []]


def test_a_maildir_subdirectory_that_is_a_link_is_neither_written_nor_cleared(
    tmp_path: Path,
) -> None:
    """``tmp/`` is cleared of files over 36 hours old: through a link, another
    directory's files would go."""
    maildir = Maildir(tmp_path / "m")
    maildir.create()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("x")
    for sub in ("tmp", "new"):
        (maildir.path / sub).rmdir()
        (maildir.path / sub).symlink_to(elsewhere)
    with pytest.raises(NotADirectoryError):
        maildir.deliver(b"", [MESSAGE])
    with pytest.raises(NotADirectoryError):
        maildir.clean_tmp(now=time.time() + 40 * 3600)
    assert [path.name for path in elsewhere.iterdir()] == ["precious"]


# -- 2. FIFOs, directories and dot-files among the envelopes


def test_a_fifo_among_the_envelopes_is_damage_not_a_hang(tmp_path: Path) -> None:
    queue, (good,) = _queue_with(tmp_path, 1)
    os.mkfifo(queue.envelope_path("0000000000"))
    queue.content_path("0000000000").write_bytes(MESSAGE)
    with _within(5):
        assert [e.id for e in queue.entries()] == [good.id]
        assert validate_ids(queue, ["0000000000"]) == ("0000000000",)
        assert [e.id for e in Queue(tmp_path / "queue").open()] == [good.id]
    corrupt = tmp_path / "queue" / "corrupt"
    assert sorted(p.name for p in corrupt.iterdir()) == [
        "0000000000.envelope",
        "0000000000.message",
    ]


def test_queue_list_and_hold_do_not_hang_on_a_fifo(tmp_path: Path) -> None:
    queue, (good,) = _queue_with(tmp_path, 1)
    os.mkfifo(queue.envelope_path("0000000000"))
    listed = _queue(tmp_path, "list")
    lines = listed.stdout.splitlines()
    assert listed.returncode == 2, listed.stderr
    assert any(line.startswith(f"{good.id}  ") for line in lines)
    assert any(line.startswith("0000000000  damaged (") for line in lines)
    assert _queue(tmp_path, "hold", "ALL").returncode == 2  # skipped, and said
    assert queue.load(good.id).held


def test_dot_files_among_the_envelopes_are_not_queue_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``envelopes/.hidden`` was logged at ERROR as a message lost from the queue, and
    moved to ``corrupt/``."""
    queue, (good,) = _queue_with(tmp_path, 1)
    hidden = tmp_path / "queue" / "envelopes" / ".hidden"
    hidden.write_text("an editor's file")
    assert [e.id for e in queue.entries()] == [good.id]
    assert [e.id for e in Queue(tmp_path / "queue").open()] == [good.id]
    assert hidden.exists() and "lost" not in caplog.text


# -- 3. the tool reads the queue a message at a time


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the envelopes :meth:`Queue.load` reads from now on, as it reads them."""
    loaded: list[str] = []
    real_load = Queue.load

    def counting_load(self: Queue, queue_id: str) -> QueueEntry:
        loaded.append(queue_id)
        return real_load(self, queue_id)

    monkeypatch.setattr(Queue, "load", counting_load)
    return loaded


def test_the_listing_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first message is listed before the last is read: nothing waits for, or
    holds, the whole queue."""
    queue, _ = _queue_with(tmp_path, 3)
    loaded = _count_loads(monkeypatch)
    lines = format_listing(queue, 0.0)
    first = next(lines)
    assert len(loaded) == 1 and first.startswith(loaded[0])
    rest = list(lines)
    assert len(loaded) == 3
    assert rest[-1] == f"-- 3 messages, {3 * len(MESSAGE)} octets"


def test_acting_on_one_id_reads_that_envelope_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, entries = _queue_with(tmp_path, 3)
    target = entries[1].id
    loaded = _count_loads(monkeypatch)
    assert validate_ids(queue, [target.lower()]) == (target,)
    assert loaded == []
    assert apply_offline(queue, QueueCommand("hold", (target,)), 0.0) == [target]
    assert loaded == [target]
    for bad in ("../envelopes/" + target, "0123456789", target + "0"):
        with pytest.raises(ConfigError, match="no message"):
            validate_ids(queue, [bad])


# -- 4. what an upgrade, root and the operator's typing meet


def _serve_argv(data: str) -> list[str]:
    argv = ["serve", "--data-dir", data, "--domain", "abc.example", "--resolver", "static:zone"]
    return [*argv, "--smtp-port", "0", "--submission-port", "0", "--pop3-port", "0"]


def test_serve_starts_on_a_private_data_directory_another_user_owns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root in a container on a volume the host's user owns, or root serving a directory
    given to a service user: ``serve`` never drops privileges, so "run as its owner" could
    not be done. Only the mode is checked; links are refused by how files are opened."""
    from smtpcore.server.config import ServerConfig
    from smtpcore.server.mailserver import MailServer
    from smtpcore.server.queuectl import release_lock

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    someone_else = data.stat().st_uid + 1
    monkeypatch.setattr(os, "geteuid", lambda: someone_else)
    server = MailServer(ServerConfig(data_dir=data))
    server._prepare_storage()
    assert server._lock_fd is not None
    release_lock(server._lock_fd)


def _shared_upgrade(tmp_path: Path) -> tuple[Path, Path]:
    """A data directory and queue/ an earlier version made under a umask of 002."""
    _queue_with(tmp_path, 1)
    (tmp_path / "queue").chmod(0o775)
    tmp_path.chmod(0o775)
    return tmp_path, tmp_path / "queue"


def test_serve_names_every_shared_directory_at_once_with_one_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an upgrade, ``serve`` stopped on the data directory, then, once that was
    fixed, on ``queue/``: one restart (one systemd loop) per directory."""
    data, queue_dir = _shared_upgrade(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zone").write_text("")
    assert cli.main(_serve_argv("data")) == 2
    assert capsys.readouterr().err == (
        "smtpcore serve: --data-dir: data (mode 0775) and data/queue (mode 0775) may be "
        "written by other users, who could plant links there: chmod go-w data data/queue\n"
    )
    assert not (data / LOCK_NAME).exists()
    assert queue_dir.stat().st_mode & 0o777 == 0o775


def test_the_queue_tool_names_every_shared_directory_at_once(tmp_path: Path) -> None:
    data, queue_dir = _shared_upgrade(tmp_path / "da ta")
    result = _queue(data, "hold", "ALL")
    assert result.returncode == 2, result.stdout
    assert result.stderr == (
        f"smtpcore queue: --data-dir: {data} (mode 0775) and {queue_dir} (mode 0775) may "
        f"be written by other users, who could plant links there: "
        f"chmod go-w '{data}' '{queue_dir}'\n"
    )


def _shared_mailboxes(data: Path, users: int) -> ServerConfig:
    """``mailboxes/`` and each Maildir's own directory as an earlier version made them
    under a umask of 002 (0775; ``tmp``, ``new`` and ``cur`` 0700)."""
    keys = [f"u{n}@abc.example" for n in range(users)]
    config = ServerConfig(domains=("abc.example",), users=dict.fromkeys(keys, "pw"), data_dir=data)
    LocalMailboxes(config).create_all()
    config.mailboxes_dir.chmod(0o775)
    for key in [*keys, "postmaster@abc.example"]:
        config.mailbox_path(key).chmod(0o775)
    return config


def test_serve_names_the_shared_mailbox_directories_with_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once ``chmod go-w data data/queue`` was done, serve started, and a group member
    could swap a user's Maildir for a link, or delete the mail accepted."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    _shared_mailboxes(data, 0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zone").write_text("")
    assert cli.main(_serve_argv("data")) == 2
    box = "data/mailboxes/postmaster@abc.example"
    assert capsys.readouterr().err == (
        f"smtpcore serve: --data-dir: data/mailboxes (mode 0775) and {box} (mode 0775) may "
        f"be written by other users, who could plant links there: "
        f"chmod go-w data/mailboxes {box}\n"
    )
    assert not (data / LOCK_NAME).exists()


def test_many_shared_directories_are_named_a_few_with_one_command_for_all(
    tmp_path: Path,
) -> None:
    """A line per thousand mailboxes is no line: the first few are named, and the count
    of the others, and the one command given fixes them all."""
    data, _ = _shared_upgrade(tmp_path / "data")
    config = _shared_mailboxes(data, 30)
    server = MailServer(config)
    with pytest.raises(ConfigError) as refused:
        server._prepare_storage()
    line = str(refused.value)
    assert line.startswith(
        f"--data-dir: {data} (mode 0775), {data}/queue (mode 0775), {data}/mailboxes "
        f"(mode 0775), {data}/mailboxes/postmaster@abc.example (mode 0775) and 30 more "
        f"directories in {data} may be written by other users, who could plant links "
        f"there: "
    )
    command = line.rsplit("there: ", 1)[1]
    assert command == f"find {data} -type d -perm /022 -exec chmod go-w {{}} +"
    subprocess.run(command, shell=True, check=True, timeout=20)
    server._prepare_storage()
    assert server._lock_fd is not None
    release_lock(server._lock_fd)


def test_a_command_a_stopped_server_left_skips_in_silence(tmp_path: Path) -> None:
    """``queue release B`` printed ``queue hold: A skipped: no longer in the queue``: a
    command the operator never gave here, and a message delivered since, as is normal."""
    queue, (entry,) = _queue_with(tmp_path, 1)
    gone = "0123456789"
    submit(tmp_path / "queue", QueueCommand("hold", (gone, entry.id)), pid=0)
    result = _queue(tmp_path, "release", entry.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "queue: 1 command a stopped server left carried out first",
        "queue release: 1 message (delivered when the server starts)",
    ]
    assert not queue.load(entry.id).held


def test_an_id_given_twice_is_one_message(tmp_path: Path) -> None:
    queue, (entry,) = _queue_with(tmp_path, 1)
    assert validate_ids(queue, [entry.id, entry.id.lower(), entry.id]) == (entry.id,)
    result = _queue(tmp_path, "hold", entry.id, entry.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "queue hold: 1 message\n"


def test_a_hold_of_a_held_message_is_no_message_held(tmp_path: Path) -> None:
    """With no server running, ``queue hold`` of a held message said ``queue hold: 1
    message``, and ``release`` of one not held ``1 message (delivered when the server
    starts)``: the count is of the messages the action changed, the others said apart."""
    queue, (entry,) = _queue_with(tmp_path, 1)
    released = _queue(tmp_path, "release", entry.id)
    assert released.returncode == 0, released.stderr
    assert released.stdout == (
        "queue release: 0 messages (1 not held; delivered when the server starts)\n"
    )
    assert _queue(tmp_path, "hold", entry.id).stdout == "queue hold: 1 message\n"
    again = _queue(tmp_path, "hold", entry.id)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "queue hold: 0 messages (1 already held)\n"
    assert queue.load(entry.id).held
    already: list[str] = []
    command = QueueCommand("hold", (entry.id,))
    assert apply_offline(queue, command, 0.0, already=already) == []
    assert already == [entry.id]


def test_a_release_of_held_and_not_held_messages_is_one_parenthetical(
    tmp_path: Path,
) -> None:
    """A release of one held and one not held printed two parentheticals in a row,
    ``queue release: 1 message (1 not held) (delivered when the server starts)``, and
    of one not held alone none saying it is tried when the server starts, though it
    is, as a flush would have it."""
    queue, (held, free) = _queue_with(tmp_path, 2)
    queue.update(dataclasses.replace(held, held=True))
    result = _queue(tmp_path, "release", held.id, free.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "queue release: 1 message (1 not held; delivered when the server starts)\n"
    )


def test_the_server_says_a_release_of_one_not_held_has_it_tried_now() -> None:
    """``queue release: 0 messages (1 not held)`` read as nothing done, but the release
    had the message tried at once, as a flush, which counts it, would."""
    assert (
        summary_line("release", 0, already=1)
        == "queue release: 0 messages (1 not held, tried now)"
    )
    assert summary_line("release", 2, 1, already=1) == (
        "queue release: 2 messages (1 not held, tried now), 1 waiting for its delivery round"
    )
    assert summary_line("hold", 0, already=1) == "queue hold: 0 messages (1 already held)"
    assert summary_line("hold", 0, already=1, running=False) == (
        "queue hold: 0 messages (1 already held)"
    )


def test_a_damaged_entry_named_is_reported_skipped_with_a_failing_status(
    tmp_path: Path,
) -> None:
    """Its id passes the check by name, and the action then skipped it in silence:
    ``0 messages`` and status 0, where the earlier check refused it (status 2)."""
    queue, (good,) = _queue_with(tmp_path, 1)
    queue.envelope_path("0123456789").write_text("{ damaged")
    queue.content_path("0123456789").write_bytes(MESSAGE)
    result = _queue(tmp_path, "hold", "0123456789", good.id)
    assert result.returncode == 2, result.stderr
    skipped, done = result.stdout.splitlines()
    assert skipped.startswith("0123456789: queue hold skipped: damaged (")
    assert done == "queue hold: 1 message"
    assert queue.load(good.id).held
    told: list[str] = []
    command = QueueCommand("delete", ("0123456789",))
    assert apply_offline(queue, command, 0.0, told.append) == []
    assert len(told) == 1 and told[0].startswith("0123456789: queue delete skipped: damaged")
    assert queue.envelope_path("0123456789").exists()


def test_every_skipped_line_of_the_tool_has_the_id_first_as_the_server_s(
    tmp_path: Path,
) -> None:
    """One ``flush`` with no server, a held message and a damaged envelope: the held
    one's line put the id first (``ID: queue flush skipped: on hold``), the damaged
    one's after the action (``queue flush: ID skipped: damaged``), two orders in one
    output. Both now come from one function, in the server's order."""
    queue, (held,) = _queue_with(tmp_path, 1)
    queue.update(dataclasses.replace(held, held=True))
    queue.envelope_path("0123456789").write_text("{ damaged")
    result = _queue(tmp_path, "flush")
    assert result.returncode == 2, result.stderr
    *skipped, done = result.stdout.splitlines()
    assert sorted(line.split(" skipped: ")[0] for line in skipped) == sorted(
        [f"{held.id}: queue flush", "0123456789: queue flush"]
    )
    assert f"{held.id}: queue flush skipped: on hold (queue release sends it)" in skipped
    assert done == "queue flush: 0 messages"


def test_a_damaged_entry_is_listed_and_skipped_by_all_with_a_failing_status(
    tmp_path: Path,
) -> None:
    """With the server stopped, ``list`` and ``hold ALL`` skipped it in silence (``-- 1
    message``, status 0), where the same message named by its id was reported
    skipped, with status 2: the operator never learnt of it before the next start
    set it aside. One gone meanwhile is still no message to report."""
    queue, (good,) = _queue_with(tmp_path, 1)
    queue.envelope_path("0123456789").write_text('{"broken')
    queue.content_path("0123456789").write_bytes(MESSAGE)
    listed = _queue(tmp_path, "list")
    assert listed.returncode == 2, listed.stderr
    *listing, totals = listed.stdout.splitlines()
    assert totals == f"-- 1 message, {len(MESSAGE)} octets"
    (damaged,) = [line for line in listing if line.startswith("0123456789")]
    assert any(line.startswith(good.id) for line in listing)
    assert damaged.startswith("0123456789  damaged (")
    assert damaged.endswith("): see queue/corrupt/ after the next start")
    for action in ("hold", "release", "flush", "delete"):
        result = _queue(tmp_path, action, *(() if action == "flush" else ("ALL",)))
        assert result.returncode == 2, result.stderr
        skipped, done = result.stdout.splitlines()
        assert skipped.startswith(f"0123456789: queue {action} skipped: damaged (")
        assert done.startswith(f"queue {action}: 1 message")
    assert not queue.has(good.id)  # the delete
    assert queue.envelope_path("0123456789").exists()
    gone: list[str] = []
    assert list(queue.scan(lambda queue_id, exc: gone.append(queue_id))) == []
    assert gone == ["0123456789"]


def test_queue_list_keeps_nothing_of_a_damaged_envelope_it_has_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list`` kept each damaged envelope's error until the end, to print after the
    totals: the error and its traceback hold the file's bytes and text, so 300 damaged
    envelopes of 1 MB took 651 MB. Each is printed as it is found and let go: when the
    next envelope is read, no error of an earlier one is alive."""
    queue, _ = _queue_with(tmp_path, 1)
    damaged_ids = [f"00000000{n:02d}" for n in range(5)]
    for queue_id in damaged_ids:
        queue.envelope_path(queue_id).write_text('{"id": "' + "x" * 1000)
        queue.content_path(queue_id).write_bytes(MESSAGE)
    errors: list[weakref.ref[BaseException]] = []
    alive_at_each_read: list[int] = []
    real_load = Queue.load

    def watched_load(self: Queue, queue_id: str) -> QueueEntry:
        gc.collect()
        alive_at_each_read.append(sum(ref() is not None for ref in errors))
        try:
            return real_load(self, queue_id)
        except ValueError as exc:
            errors.append(weakref.ref(exc))
            raise

    monkeypatch.setattr(Queue, "load", watched_load)
    assert cli.main(["queue", "--data-dir", str(tmp_path), "list"]) == 2
    gc.collect()
    assert len(errors) == len(damaged_ids)
    assert alive_at_each_read == [0] * (len(damaged_ids) + 1)
    out = capsys.readouterr().out.splitlines()
    told = sorted(line[:10] for line in out if "  damaged (" in line)
    assert told == damaged_ids


def test_scan_says_nothing_of_an_entry_gone_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message delivered between the directory's read and its envelope's is no
    damage: the listing and ``ALL`` pass over it."""
    queue, (gone, kept) = _queue_with(tmp_path, 2)
    real_load = Queue.load

    def delivered_first(self: Queue, queue_id: str) -> QueueEntry:
        if queue_id == gone.id:
            self.remove(queue_id)
        return real_load(self, queue_id)

    monkeypatch.setattr(Queue, "load", delivered_first)
    told: list[str] = []
    assert [e.id for e in queue.scan(lambda queue_id, exc: told.append(queue_id))] == [kept.id]
    assert told == []
    skips: list[str] = []
    assert apply_offline(queue, QueueCommand("hold"), 0.0, told.append, skips=skips) == [kept.id]
    assert told == [] and skips == []


def test_the_whole_content_is_read_without_following_a_link(tmp_path: Path) -> None:
    queue, (entry,) = _queue_with(tmp_path, 1)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the queue's\r\n")
    queue.content_path(entry.id).unlink()
    queue.content_path(entry.id).symlink_to(victim)
    with pytest.raises(NotRegularFile):
        queue.read_content(entry.id)


def test_a_command_file_naming_a_path_not_an_id_is_damaged(tmp_path: Path) -> None:
    """A command file's ids went to ``Queue.load`` and ``Queue.remove`` unchecked:
    ``../messages/ID`` reached a file outside ``envelopes/``."""
    queue, (entry,) = _queue_with(tmp_path, 1)
    commands = tmp_path / "queue" / "commands"
    commands.mkdir(mode=0o700)
    bad = {"action": "delete", "ids": [f"../messages/{entry.id}"], "all": False}
    (commands / "00000000000000000001.json").write_text(json.dumps(bad))
    assert read_commands(tmp_path / "queue", lambda line: None) == []
    with pytest.raises(ValueError, match="queue id"):
        QueueCommand("delete", (f"../envelopes/{entry.id}",))
    for method in (queue.load, queue.remove):
        with pytest.raises(ValueError, match="queue id"):
            method(f"../envelopes/{entry.id}")
    assert queue.read_content(entry.id) == MESSAGE


def test_a_flush_with_no_server_counts_no_held_message_and_says_it_is_skipped(
    tmp_path: Path,
) -> None:
    """With no server running, ``flush`` counted a held message it leaves held (``queue
    flush: 1 messages``); the server's count and lines, one mechanism, are the tool's."""
    queue, (held, _due) = _queue_with(tmp_path, 2)
    queue.update(dataclasses.replace(held, held=True))
    result = _queue(tmp_path, "flush")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{held.id}: queue flush skipped: on hold (queue release sends it)",
        "queue flush: 1 message (delivered when the server starts)",
    ]
    assert queue.load(held.id).held
