"""``python -m smtpcore queue ACTION``: the command line over :mod:`smtpcore.server.queuectl`."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Collection
from pathlib import Path

from smtpcore._plural import counted
from smtpcore.server.activemarks import read_active
from smtpcore.server.config import ConfigError
from smtpcore.server.log import loggable
from smtpcore.server.queue import Queue
from smtpcore.server.queuectl import (
    QueueCommand,
    ServerRunning,
    apply_left_offline,
    apply_offline,
    damaged_line,
    format_listing,
    offline_lock,
    running_server,
    submit,
    validate_ids,
)
from smtpcore.server.queueeffects import summary_line
from smtpcore.server.safefiles import (
    check_private_directories,
    owner_name,
    require_real_directory,
)

__all__ = ["run_queue"]


def run_queue(args: argparse.Namespace) -> int:
    """List, or hand the command to the running server, or carry it out when none runs;
    a queue this user may not read or change is one line naming the path. A standard
    output that cannot be written is none of that: it raises ``OutputLost``
    (:mod:`smtpcore.server.output`), which no ``OSError`` handler here takes."""
    try:
        return _run(args)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else args.data_dir
        raise ConfigError(f"--data-dir: {where}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir
    queue_dir = data_dir / "queue"
    if not (queue_dir / "envelopes").is_dir():
        raise ConfigError(f"--data-dir: no queue in {data_dir}")
    require_real_directory(queue_dir / "envelopes")
    queue = Queue(queue_dir)
    if args.action == "list":  # writes nothing, and follows no link: for any reader
        return _list(queue, read_active(queue_dir, _server_or_none(data_dir)))
    _check_owner(queue_dir)
    check_private_directories(data_dir, queue_dir)

    def tell(line: str) -> None:
        print(loggable(line))  # senders' addresses

    ids = validate_ids(queue, getattr(args, "ids", ()))
    command = QueueCommand(args.action, ids)
    pid = running_server(data_dir)
    if pid is not None and pid > 0:  # -1: a queue tool, or a server not yet marked: waited for
        return _hand_over(queue_dir, command, pid)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(offline_lock(data_dir))
        except ServerRunning as server:  # marked its lock while this waited (a full disk)
            return _hand_over(queue_dir, command, server.pid)
        left = apply_left_offline(queue, time.time(), tell)
        if left:
            print(f"queue: {counted(left, 'command')} a stopped server left carried out first")
        skips: list[str] = []
        already: list[str] = []
        done = apply_offline(queue, command, time.time(), tell, skips=skips, already=already)
    print(summary_line(args.action, len(done), already=len(already), running=False))
    return 2 if skips else 0  # each id skipped was told, with its reason


def _hand_over(queue_dir: Path, command: QueueCommand, pid: int) -> int:
    """Leave ``command`` for the running server ``pid`` (:func:`submit`) and say so:
    the server carries it out, found at the start or while the tool waited."""
    sent = submit(queue_dir, command, pid)
    if sent.pinned and not sent.ids:
        print(f"queue {command.action}: 0 messages (none queued)")
        return 0
    what = "every message" if not command.ids else ", ".join(command.ids)
    if sent.pinned:
        what = f"every message queued now ({len(sent.ids)})"
    print(f"queue {command.action}: {what}: handed to the running server (pid {pid})")
    return 0


def _list(queue: Queue, active: Collection[str]) -> int:
    """``list``: status 2 when an envelope could not be read. Each such one gets its
    line where the listing meets it, as ``showq`` warns as it goes, and nothing of it
    is kept: its error, and the traceback's frames, hold the file's whole text."""
    damaged = 0

    def tell_damaged(queue_id: str, exc: OSError | ValueError) -> None:
        nonlocal damaged
        damaged += 1
        print(loggable(damaged_line(queue_id, exc)))

    for line in format_listing(queue, time.time(), active, tell_damaged):
        print(loggable(line))  # remote servers' replies, senders' addresses
    return 2 if damaged else 0


def _server_or_none(data_dir: Path) -> int | None:
    """The running server's process id, for the listing's ``*`` marks; None when none
    runs or the lock cannot be read by this user (the listing is for any reader: it
    then goes on without the marks)."""
    try:
        return running_server(data_dir)
    except (OSError, ConfigError):
        return None


def _check_owner(queue_dir: Path) -> None:
    """Refuse to change a queue as any user but its owner, the server's (most often: as
    root, with ``sudo``). The files the tool writes (an envelope rewritten, a command for
    the server, the lock) would be this user's, mode 0600, and the server could read
    none of them: it set the message aside as damaged, or never saw the command.
    Refused rather than each file given to the owner: every file the tool creates, now
    or later, would need its ``chown``, and one forgotten is that loss again. Root is
    refused as any other user is. ``list`` only reads, and is not refused."""
    owner = queue_dir.stat().st_uid
    if os.geteuid() == owner:
        return
    raise ConfigError(
        f"--data-dir: {queue_dir} belongs to {owner_name(owner)}: "
        "run the queue tool as that user; "
        "the server could not read the files it would write as another"
    )
