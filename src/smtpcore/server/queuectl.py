"""``python -m smtpcore queue``: look at and act on the queue, as ``postqueue`` and
``postsuper`` do, safely while a server runs on the same data directory.

Only one process changes the queue at a time. A running server holds the data
directory's lock (``smtpcore.lock``, with its process id inside), and its
delivery worker is the only writer: the tool then leaves a command file in
``queue/commands/`` and sends the server ``SIGUSR1``, and the worker carries
the command out between deliveries (a message being delivered is acted on
when its round ends, so a round never writes back over a ``hold``). ``ALL``
in that file is the messages queued when the command was given, by id: the
server, or its next start, must not reach mail accepted after it. With no
server running, the tool takes the lock itself and changes the files.
Listing only reads: the envelope files are replaced by renames, so a reader
sees a whole one or none. Commands a server left unfinished (it stopped or
crashed first) are carried out, in order, by the next start, or by the tool
before its own command.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from smtpcore.server.config import ConfigError
from smtpcore.server.diskrefusal import is_disk_refusal
from smtpcore.server.log import logger
from smtpcore.server.queue import Queue, QueueEntry, checked_queue_id, is_queue_id
from smtpcore.server.queueeffects import (
    CARRIED_OUT,
    Effect,
    effect_on,
    messages,
    not_done_line,
    skipped_line,
)
from smtpcore.server.safefiles import (
    NotRegularFile,
    open_regular,
    read_regular_bytes,
    replace_synced,
    require_real_directory,
)

__all__ = [
    "ACTIONS",
    "QueueCommand",
    "ServerRunning",
    "apply_left_offline",
    "apply_offline",
    "damaged_line",
    "dropped_report",
    "format_listing",
    "lock_marked",
    "mark_lock",
    "offline_lock",
    "read_commands",
    "release_lock",
    "running_server",
    "submit",
    "take_lock",
    "validate_ids",
]

ACTIONS: Final = ("flush", "delete", "hold", "release")
LOCK_NAME: Final = "smtpcore.lock"


@dataclass(frozen=True, slots=True)
class QueueCommand:
    """One request to the delivery worker: ``action`` on ``ids`` (empty: every message,
    as found when it is carried out). ``pinned``: ``ids`` is ``ALL`` as it was when
    the command was given (:func:`submit`), and only those, none if it is empty."""

    action: str
    ids: tuple[str, ...] = ()
    pinned: bool = False
    _members: frozenset[str] = field(init=False, repr=False, compare=False)
    """``ids`` as a set: a pinned ``ALL`` names every message, and each is looked up."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown queue action {self.action!r}")
        for queue_id in self.ids:  # read from a file: a path there would reach elsewhere
            checked_queue_id(queue_id)
        object.__setattr__(self, "_members", frozenset(self.ids))

    def applies_to(self, queue_id: str) -> bool:
        return queue_id in self._members if self.ids or self.pinned else True


def _commands_dir(queue_dir: Path) -> Path:
    return queue_dir / "commands"


TOOL_MARK: Final = "queue-tool"
"""What the lock file says while the ``queue`` tool holds it: no process to signal."""
MARK_SIZE: Final = 64
"""The lock file's mark, padded with spaces to this size, a newline last, and what
:func:`running_server` reads of it. One size, written over in place: the file keeps its
block, so a full disk can mark it again (a file truncated to nothing needs a new block,
which a full disk refuses, and the server could not start to free space). A mark of an
earlier version (its text and a newline, or nothing) reads the same."""
_TOOL_WAIT: Final = 10.0
"""How long one ``queue`` tool waits for another to finish with the files."""
MARK_RETRY: Final = 5.0
"""How often a server holding the lock unmarked (no room for its mark) tries to mark it
again: within :data:`_TOOL_WAIT`, so a ``queue`` tool run once the disk has room finds
the server to signal before it gives up, whether it looks at once or is already waiting
(:class:`ServerRunning`)."""
_UNMARKED_HOLDER: Final = "the queue tool or a server that could not mark the lock"
"""Who holds a lock with no mark: :func:`running_server` cannot tell them apart."""


class ServerRunning(ConfigError):
    """:func:`take_lock` found the lock held by a running server, ``pid``: a server that
    starts cannot run beside it, and a ``queue`` tool hands it the command instead, as
    when :func:`running_server` finds it at once. A tool meets this when it began to
    wait while the lock was unmarked (a server on a full disk) and the server marked it
    meanwhile."""

    def __init__(self, data_dir: Path, pid: int) -> None:
        super().__init__(f"{data_dir} is in use by another smtpcore server")
        self.pid = pid


def running_server(data_dir: Path) -> int | None:
    """The process id of the server that holds ``data_dir``'s lock; -1 when the lock is
    held by something that is not a server to signal (the ``queue`` tool); None when
    nothing holds it."""
    try:
        fd = _open_lock(data_dir, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, MARK_SIZE, 0).decode("ascii", errors="replace").strip()
            return int(text) if text.isascii() and text.isdecimal() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open_lock(data_dir: Path, flags: int) -> int:
    """The lock file, opened with ``flags``: a link or a FIFO put in its place is a
    :class:`ConfigError` naming it, never followed (truncating the lock would truncate
    the file a link names) nor waited on."""
    path = data_dir / LOCK_NAME
    try:
        return open_regular(path, flags)
    except NotRegularFile as exc:
        raise ConfigError(f"{exc}: remove it (and see who put it there)") from None


def take_lock(data_dir: Path, mark: str) -> int:
    """``data_dir``'s lock, held by the descriptor returned and marked with ``mark`` (a
    server's process id, for ``queue`` to signal; :data:`TOOL_MARK` for the tool). A
    ``queue`` tool that holds it is waited for a while; a server holding it, found at
    once or during that wait, is a :class:`ServerRunning` carrying its process id;
    anything else still holding it after the wait is a :class:`ConfigError` naming who.

    What the file says is cleared under a shared lock before the lock is taken: then no
    one holds it, so the text is a mark a server that died (``kill -9``) left there, and
    a ``queue`` tool that read that id once the lock is taken, before this mark is
    written, would signal whatever process has the id now (SIGUSR1 kills by default).
    A lock held meanwhile by another taker reads as one not yet marked: no one to
    signal, waited for.

    A lock found taken, then free when probed, was held for a moment only: another
    ``queue`` tool's :func:`running_server` probe (a shared lock), or a holder that
    has just let go. That is tried again, not taken for a server.

    A disk with no room for the mark (full, over quota) leaves the lock held unmarked,
    with a warning: a ``queue`` tool finds no one to signal and waits, as for another
    tool, until the server marks it (:func:`mark_lock`, tried again every
    :data:`MARK_RETRY` seconds): marked within the wait, it is :class:`ServerRunning`,
    and the tool hands the server its command. Refusing to start would leave a full disk with no
    server to empty it (POP3 logins, deliveries), and the tool could not delete mail
    either."""
    fd = _open_lock(data_dir, os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + _TOOL_WAIT
    while True:
        if _flock_now(fd, fcntl.LOCK_SH):
            _clear_mark(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            if _flock_now(fd, fcntl.LOCK_EX):
                break
        holder = running_server(data_dir)
        if holder in (-1, None) and time.monotonic() < deadline:
            time.sleep(0.05)  # the queue tool, at work on the files: it is quick
            continue
        os.close(fd)
        if holder is not None and holder > 0:
            raise ServerRunning(data_dir, holder)
        who = {-1: _UNMARKED_HOLDER, None: "another process"}.get(
            holder, "another smtpcore server"
        )
        raise ConfigError(f"{data_dir} is in use by {who}")
    try:
        refused = mark_lock(fd, mark)
    except OSError:
        os.close(fd)
        raise
    if refused is not None and mark != TOOL_MARK:  # the tool is not signalled anyway
        logger.warning(
            "%s: %s; cannot mark it with %s: running unmarked (a queue tool waits, then "
            "says the data directory is in use, until it is marked: tried again every "
            "%.0f s)",
            data_dir / LOCK_NAME,
            refused.strerror or refused,
            mark,
            MARK_RETRY,
        )
    return fd


def mark_lock(fd: int, mark: str) -> OSError | None:
    """Write ``mark`` into the lock file ``fd`` holds; the disk's refusal (full, over
    quota) if it had no room, the lock then left held unmarked, for a later call to
    mark. Any other error is raised."""
    try:
        _write_mark(fd, mark)
    except OSError as exc:
        if not is_disk_refusal(exc):
            raise
        _clear_mark(fd)
        return exc
    return None


def lock_marked(fd: int, mark: str) -> bool:
    """Whether the lock file ``fd`` holds says ``mark``."""
    text = os.pread(fd, MARK_SIZE, 0).decode("ascii", errors="replace").strip()
    return text == mark


def _write_mark(fd: int, mark: str) -> None:
    """``mark`` into the lock file, in place (:data:`MARK_SIZE`). Written whole or it is
    an :class:`OSError`: the start of a process id would name another process."""
    data = f"{mark:<{MARK_SIZE - 1}}\n".encode("ascii")
    written = os.pwrite(fd, data, 0)
    if written != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if os.fstat(fd).st_size > MARK_SIZE:  # an earlier mark, longer
        os.ftruncate(fd, MARK_SIZE)


def _clear_mark(fd: int) -> None:
    """Clear the lock file's mark, in place: spaces over it, so that its block stays. A
    disk that refuses even that (a copy-on-write one, full) has the file truncated, which
    never needs room: a process id left there would be signalled. An empty file is left
    empty (nothing names anyone)."""
    try:
        if os.fstat(fd).st_size:
            _write_mark(fd, "")
    except OSError:
        os.ftruncate(fd, 0)


def _flock_now(fd: int, operation: int) -> bool:
    """Whether ``fd`` got the lock ``operation`` asks for, without waiting."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def release_lock(fd: int) -> None:
    """Let go of the lock :func:`take_lock` gave, its mark cleared first: a process id
    left in the file names no server once this one has stopped, and a ``queue`` tool
    that read it while the next server had taken the lock and not yet marked it
    would signal whatever process has that id now (SIGUSR1 kills by default). Only
    a server that died leaves its mark, and the next :func:`take_lock` clears it
    before it takes the lock."""
    with contextlib.suppress(OSError):
        _clear_mark(fd)
    os.close(fd)


@contextlib.contextmanager
def offline_lock(data_dir: Path) -> Iterator[None]:
    """The data directory's lock for the tool itself, marked as the tool's (so that no
    one signals the process id a server left there): see :func:`take_lock`."""
    fd = take_lock(data_dir, TOOL_MARK)
    try:
        yield
    finally:
        release_lock(fd)


def submit(queue_dir: Path, command: QueueCommand, pid: int) -> QueueCommand:
    """Leave ``command`` for the running server ``pid`` and wake it with SIGUSR1; the
    command as left. One for every message is pinned first to the messages queued now:
    the server may carry it out later, and again at its next start if it stops before
    the actions are on disk, and neither must reach mail accepted after it was given
    (a ``delete`` would drop it unseen, neither delivered nor bounced)."""
    command = _pinned(queue_dir, command)
    if command.pinned and not command.ids:
        # Nothing queued: nothing to do, and no file, which a server of an earlier
        # version (no "all") would read as every message, mail accepted later too.
        return command
    directory = _commands_dir(queue_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    require_real_directory(directory)  # a link there: the command would be written elsewhere
    _write_new_command(directory, command)
    if pid > 0:
        os.kill(pid, signal.SIGUSR1)
    return command


def _pinned(queue_dir: Path, command: QueueCommand) -> QueueCommand:
    """``command``, one for every message made one for the messages queued now."""
    if command.ids or command.pinned:
        return command
    ids = tuple(sorted(filter(is_queue_id, Queue(queue_dir).ids())))
    return replace(command, ids=ids, pinned=True)


def _write_command(path: Path, command: QueueCommand) -> None:
    """``command`` into ``path``, whole or not at all (a rename: readers see one or the
    other, and a dot-name without ``.json`` is no command to them). The temporary file
    is made new, under a name of its own: nothing there already is written through; it
    is removed if the write or the rename fails (:func:`replace_synced`)."""
    tmp = path.with_name(f".{secrets.token_hex(8)}.tmp")
    fields = {"action": command.action, "ids": list(command.ids), "all": command.pinned}
    replace_synced(path, tmp, json.dumps(fields).encode("utf-8"))


_NUMBERED: Final = re.compile(r"([0-9]{20,})[-.]")
"""A command file's name as :func:`_write_new_command` gives it: 20 digits at least, more
after 99999999999999999999 (a clock once set to the year 5138); an earlier version put
``-`` and a random part after the number."""

_NAME_TRIES: Final = 1000
"""Names :func:`_write_new_command` tries, each taken meanwhile by another tool, before
it gives up: a name that can never be taken must not spin for ever."""


def _number(path: Path) -> int | None:
    """A command file's number (see :data:`_NUMBERED`); None for a name without one."""
    match = _NUMBERED.match(path.name)
    return int(match[1]) if match else None


def _in_order(paths: Iterable[Path]) -> list[Path]:
    """Command files in the order given: by number, not by name (which puts
    100000000000000000000 before 99999999999999999999); a name without a number (none is
    written so) first, by name."""

    def order(path: Path) -> tuple[int, str]:
        number = _number(path)
        return (-1 if number is None else number, path.name)

    return sorted(paths, key=order)


def _write_new_command(directory: Path, command: QueueCommand) -> Path:
    """``command`` in a file of its own, numbered after every command waiting: they are
    carried out in number order (:func:`_in_order`), which must be the order given. The
    clock gives the number, but one stepped back (NTP, ``date -s``) must not put a
    ``release`` before the ``hold`` given first. The file is linked in whole; a name
    another tool took meanwhile is a retry with the next number, :data:`_NAME_TRIES`
    times at most."""
    staged = directory / f".{secrets.token_hex(8)}.new"
    _write_command(staged, command)
    try:
        for _ in range(_NAME_TRIES):
            waiting = [n for p in directory.iterdir() if (n := _number(p)) is not None]
            number = max([time.time_ns(), *(n + 1 for n in waiting)])
            with contextlib.suppress(FileExistsError):
                path = directory / f"{number:020d}.json"
                os.link(staged, path)
                return path
    finally:
        staged.unlink(missing_ok=True)
    raise ConfigError(f"{directory}: no name free for a queue command after {_NAME_TRIES} tries")


def read_commands(
    queue_dir: Path, tell: Callable[[str], object] = logger.error
) -> list[tuple[Path, QueueCommand]]:
    """The waiting commands, oldest first, each with its file (the server's side of
    :func:`submit`). The caller removes a command's file once what it does is on disk,
    not before: the tool has told the operator that the server has it, and a crash in
    between must not lose it (carried out twice, each action ends the same).

    One for every message left by a version that did not pin it (no ``"all"``) is
    pinned here, at its first reading (a server reads them before it accepts mail), and
    written so: carried out again after a stop, it must not reach mail accepted after
    that (see :func:`submit`). One whose pin the disk refuses is not carried out: its
    next reading would pin it anew, to mail accepted meanwhile too. It is set aside as
    ``NAME.unpinned``, which no reader takes, and ``tell`` says so, for the operator.

    A directory or file this process may not read (another user's: ``sudo queue`` by an
    earlier version) is told of too, never taken for no command or a damaged one: that
    command, and those given after it, wait until it can be read. Those after it are
    pinned all the same: pinning is not carrying out, and a pin put off until the file
    before them can be read would reach mail accepted meanwhile."""
    commands, unreadable = _read_waiting(queue_dir, tell)
    for path, why in unreadable:
        if path == _commands_dir(queue_dir):
            tell(f"{path}: cannot read the queue commands: {why}")
        else:
            tell(f"{path}: cannot read this queue command: {why}; it waits, with those after it")
    return commands


def _read_waiting(
    queue_dir: Path, tell: Callable[[str], object]
) -> tuple[list[tuple[Path, QueueCommand]], list[tuple[Path, str]]]:
    """:func:`read_commands`, but what could not be read (the directory, or command files)
    returned with the reason, not told: the commands returned stop before the first."""
    directory = _commands_dir(queue_dir)
    try:
        require_real_directory(directory)  # a link: another directory's files, not ours
        paths = _in_order(path for path in directory.iterdir() if path.suffix == ".json")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [(directory, str(exc.strerror or exc))]
    commands = []
    unreadable: list[tuple[Path, str]] = []
    for path in paths:
        try:
            raw = read_regular_bytes(path)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not damaged: kept, and it comes before those after it
            unreadable.append((path, str(exc.strerror or exc)))
            continue
        except NotRegularFile:  # a link or a FIFO: it goes, not what a link names
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # a directory: kept, as a file that cannot be read is
                unreadable.append((path, str(exc.strerror or exc)))
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
            action, ids = str(data["action"]), tuple(map(str, data["ids"]))
            command = QueueCommand(action, ids, data.get("all") is True)
        except (ValueError, KeyError, TypeError, RecursionError):
            path.unlink(missing_ok=True)  # a damaged command is dropped, not retried forever
            continue
        pinned = _pinned(queue_dir, command)
        if pinned != command:
            try:
                _write_command(path, pinned)
            except OSError as exc:
                _set_aside(path, command, exc, tell)
                continue
        if not unreadable:
            commands.append((path, pinned))
    return commands, unreadable


def _set_aside(
    path: Path, command: QueueCommand, exc: OSError, tell: Callable[[str], object]
) -> None:
    """``path``, whose command for every message could not be pinned (``exc``), renamed
    out of the readers' way; left in place (and read again) only if that fails too."""
    unpinned = path.with_suffix(".unpinned")
    try:
        os.replace(path, unpinned)
    except OSError as rename_exc:
        where = f"left as {path}, read again at the next SIGUSR1 or start ({rename_exc})"
    else:
        where = f"set aside as {unpinned}: give the command again if it is still wanted"
    tell(
        f"queue {command.action} ALL, left by an earlier version, cannot be pinned to the "
        f"messages queued ({exc.strerror or exc}); not carried out, as it would reach mail "
        f"accepted after it: {where}"
    )


def _owed(entry: QueueEntry) -> str:
    return ", ".join(f"<{address}>" for address in entry.reports_owed)


def dropped_report(entry: QueueEntry) -> str | None:
    """What deleting ``entry`` drops that the operator may not see: the success reports
    it still owes (RFC 3461 §6.2), which go with it. None when it owes none."""
    if not entry.reports_owed:
        return None
    return f"{entry.id}: the success report owed for {_owed(entry)} is dropped with it"


def apply_offline(
    queue: Queue,
    command: QueueCommand,
    now: float,
    tell: Callable[[str], object] = print,
    *,
    own: bool = True,
    skips: list[str] | None = None,
    already: list[str] | None = None,
) -> list[str]:
    """Carry ``command`` out on the files, no server running; the ids it acted on, as
    the server counts them (:mod:`smtpcore.server.queueeffects`), each id it left as it
    was told to ``tell`` with why, when the command is the operator's ``own``. What a
    delete drops beyond the message (see :func:`dropped_report`) goes to ``tell``; so
    does each id it skips (see :func:`_targets`) when the command is the operator's
    ``own``, and the id goes into ``skips``, for the tool's status. One a stopped
    server left (``own=False``) skips in silence: a line ``ID: queue hold skipped``
    under ``queue release`` reads as a command never given, and a message gone since
    it was left was delivered, as is normal. An id the action found as it leaves it
    (:attr:`Effect.ALREADY <smtpcore.server.queueeffects.Effect.ALREADY>`) is acted
    on as the server does, and goes into ``already``, not the ids returned. Only the
    envelopes of the messages it names are read, one at a time."""

    def skipped(queue_id: str, why: str) -> None:
        if own:
            tell(skipped_line(queue_id, command.action, why))
            if skips is not None:
                skips.append(queue_id)

    done = []
    for entry in _targets(queue, command, skipped):
        if (effect := effect_on(entry, command.action)) not in CARRIED_OUT:
            if own:
                tell(not_done_line(entry.id, command.action, effect, after_round=False))
            continue
        if command.action == "delete":
            queue.remove(entry.id)
            if (dropped := dropped_report(entry)) is not None:
                tell(dropped)
        elif command.action == "hold":
            queue.update(replace(entry, held=True))
        elif command.action == "release":
            queue.update(replace(entry, held=False, next_attempt=now))
        else:  # flush: due at once when a server starts
            queue.update(replace(entry, next_attempt=now))
        if effect is Effect.DONE:
            done.append(entry.id)
        elif already is not None:
            already.append(entry.id)
    return done


def apply_left_offline(queue: Queue, now: float, tell: Callable[[str], object] = print) -> int:
    """Carry out, oldest first, the commands a server left in ``queue``'s directory (it
    stopped or crashed before they were on disk), each file removed once done; how many.
    The tool does this before its own command, which was given after them: left for the
    next start, they would be carried out over it (a ``hold`` left would undo the
    ``release`` given now).

    A command left that cannot be read is a :class:`ConfigError` naming its file, once
    those before it are carried out: the tool's own command must wait for it, as a
    server's would, and a tool that cannot carry it out cannot wait."""
    left, unreadable = _read_waiting(queue.directory, tell)
    for path, command in left:
        apply_offline(queue, command, now, tell, own=False)
        path.unlink(missing_ok=True)
    if unreadable:
        path, why = unreadable[0]
        what = "the queue commands" if path == _commands_dir(queue.directory) else "this command"
        raise ConfigError(
            f"{path}: cannot read {what}, given before yours ({why}); nothing more done: "
            "make it readable for this user, or remove it, and try again"
        )
    return len(left)


def _targets(
    queue: Queue, command: QueueCommand, skipped: Callable[[str, str], object]
) -> Iterator[QueueEntry]:
    """The entries ``command`` acts on, loaded one at a time. An id it names that is gone
    or damaged is skipped and told to ``skipped`` with why: the operator asked for it.
    ``ALL`` asked for every message, a damaged one included (``list`` shows those too),
    and is told the same of each; a message gone meanwhile was delivered, and goes
    unsaid. Every message's ids are taken first (names only, none read): the files are
    rewritten by renames while this goes on, which a directory read under way may or
    may not show again."""
    named = bool(command.ids) and not command.pinned
    ids = command.ids if command.ids or command.pinned else tuple(sorted(queue.ids()))
    for queue_id in ids:
        try:
            yield queue.load(queue_id)
        except FileNotFoundError:
            if named:
                skipped(queue_id, "no longer in the queue")
        except (OSError, ValueError) as exc:
            skipped(queue_id, _unusable_why(exc))


def _unusable_why(exc: OSError | ValueError) -> str:
    """Why an envelope that is there cannot be acted on, as the tool says it."""
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or exc})"
    return f"damaged ({exc}): see queue/corrupt/ after the next start"  # a link, a FIFO, bad JSON


def damaged_line(queue_id: str, exc: OSError | ValueError) -> str:
    """The line ``list`` prints for an envelope :meth:`Queue.scan` skipped (Postfix's
    ``showq`` warns of each corrupt queue file)."""
    return f"{queue_id}  {_unusable_why(exc)}"


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def format_listing(
    queue: Queue,
    now: float,
    active: Collection[str] = frozenset(),
    damaged: Callable[[str, OSError | ValueError], object] | None = None,
) -> Iterator[str]:
    """``mailq``'s view, a line at a time as the envelopes are read (in directory order,
    as ``mailq``'s: a queue of any size is listed with one entry in memory, its first
    line at once): per message its id (followed by ``*`` if it is in ``active``, the
    messages in delivery now, as ``mailq`` marks its active queue), age, size, sender
    and state, then each pending recipient with its last error, then the success
    reports it still owes (an entry with no recipient pending is kept for them:
    deleting it drops them); the totals last. An envelope that cannot be read is told
    to ``damaged`` (see :meth:`Queue.scan` and :func:`damaged_line`)."""
    count = total = 0
    for entry in queue.scan(damaged):
        yield from _entry_lines(entry, now, entry.id in active)
        count += 1
        total += entry.size
    yield "queue is empty" if not count else f"-- {messages(count)}, {total} octets"


def _entry_lines(entry: QueueEntry, now: float, active: bool) -> Iterator[str]:
    state = " (held)" if entry.held else ""
    mark = "*" if active else ""
    sender = entry.sender or "MAILER-DAEMON"
    yield (
        f"{entry.id}{mark}{state}  age {_age(now - entry.created)}  {entry.size} octets  "
        f"from <{sender}>  attempts {entry.attempts}"
    )
    for recipient in entry.pending:
        error = f"  ({recipient.reply})" if recipient.reply else ""
        yield f"    <{recipient.address}>{error}"
    if entry.reports_owed:
        yield f"    (owes a success report for {_owed(entry)})"


def validate_ids(queue: Queue, ids: Sequence[str]) -> tuple[str, ...]:
    """``ALL`` (every message) as no ids; otherwise the ids, each of a queue id's form
    and with its envelope in the queue (none is read: see :meth:`Queue.has`), in the
    order given and each once."""
    if [i.upper() for i in ids] == ["ALL"]:
        return ()
    for queue_id in ids:
        if not queue.has(queue_id.upper()):
            raise ConfigError(f"no message {queue_id} in the queue")
    return tuple(dict.fromkeys(i.upper() for i in ids))  # one message, named twice, is one
