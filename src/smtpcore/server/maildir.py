"""Maildir delivery: write to ``tmp``, fsync, rename into ``new``.

The layout is the one qmail introduced and every Maildir reader knows
(https://cr.yp.to/proto/maildir.html): a message is written under a unique
name in ``tmp/``, flushed to disk, then renamed into ``new/``, where a reader
can never see it half-written. Lines end in LF, as Unix mail stores them;
POP3 puts the CRLF back on the wire (RFC 1939 §3).

Delivery is in two steps so that a message for several mailboxes is written
into all of them before it appears in any: :meth:`Maildir.stage` writes and
fsyncs the file in ``tmp/``; :meth:`StagedMessage.commit` renames it (and
fsyncs ``new/``, so the rename survives a crash), :meth:`StagedMessage.discard`
removes it. (A mailbox whose rename fails gets its copy through the queue:
see :meth:`smtpcore.server.app.MailStore.accept`.)
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from smtpcore.maildrop import WireSize, delivery_order
from smtpcore.server.safefiles import require_real_directory

__all__ = [
    "LFWriter",
    "Maildir",
    "StagedMessage",
    "Staging",
    "fsync_directory",
    "make_private_directory",
    "once_name",
]

_COPY_SIZE: Final = 65536
SUBDIRECTORIES: Final = ("tmp", "new", "cur")
_counter = itertools.count(1)


def fsync_directory(path: Path) -> None:
    """Make the renames and creations inside ``path`` durable (POSIX needs the directory
    itself synced; Windows cannot open a directory and does not need it)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_directory(path: Path) -> None:
    """Make ``path`` and each missing directory above it with mode 0700 (the umask may
    only take more away): mail and the names of its mailboxes are private, as Postfix
    and Dovecot keep them. ``Path.mkdir(parents=True)`` gives ``mode`` to the last
    directory alone and makes the others with the default mode, 0755 under the usual
    umask, which lets every local user list the directories inside."""
    try:
        path.mkdir(mode=0o700)
    except FileNotFoundError:
        if path.parent == path:  # the root itself is missing: nothing more to make
            raise
        make_private_directory(path.parent)  # as deep as the path, no deeper
        path.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        if not path.is_dir():
            raise


def _host_part() -> str:
    """The host in a Maildir name, with ``/`` and ``:`` escaped as the spec asks."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


def unique_name() -> str:
    """``seconds.M<usec>P<pid>Q<n>R<random>.host``: unique without locking, as the
    Maildir spec's "modern" names are."""
    now = time.time()
    seconds = int(now)
    micro = int((now - seconds) * 1_000_000)
    return (
        f"{seconds}.M{micro}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(4)}.{_host_part()}"
    )


def once_name(created: float, queue_id: str, key: str) -> str:
    """``seconds.Q<queue id>K<key digest>``: the unique name, without its host, of the
    copy queue entry ``queue_id`` (queued at ``created``) delivers into mailbox ``key``.
    The queue id is unique among queued entries and the time tells a later entry that
    reuses it; being the same at every attempt, the name lets a retry see that the copy
    is in place already (:meth:`Maildir.deliver_once`)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{int(created)}.Q{queue_id}K{digest}"


TMP_LIFETIME: Final = 36 * 3600.0
"""Seconds after which a file left in a Maildir's ``tmp/`` is a dead delivery."""


class LFWriter:
    """Streams CRLF content into a file as LF lines, whatever the chunk boundaries.

    A CR at the end of a chunk waits for the next one to see whether an LF
    follows; a bare CR is kept as it is. :meth:`close` ends the content with a
    line end when it has none (BDAT carries such content, RFC 3030 §2), as
    Postfix's local delivery ends every message with a newline: a reader that
    adds one on the wire (POP3, RFC 1939 §3) and one that counts the file
    (Dovecot) then agree. ``size`` counts the octets written and ``wire_size``
    the octets a POP3 server sends for them
    (:class:`~smtpcore.maildrop.WireSize`: CRLF line ends), which is Dovecot's
    ``,W=`` for a file without a bare CR: its octets and one more for each LF.
    """

    __slots__ = ("_file", "_last", "_pending_cr", "_wire", "size")

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._pending_cr = False
        self._last = b""
        self._wire = WireSize()
        self.size = 0

    @property
    def wire_size(self) -> int:
        return self._wire.total

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending_cr:
            data = b"\r" + data
        self._pending_cr = data.endswith(b"\r")
        if self._pending_cr:
            data = data[:-1]
        self._put(data.replace(b"\r\n", b"\n"))

    def close(self) -> None:
        """End the content with a line end if it has none: a CR still waiting at the end
        is taken for the start of the CRLF it was cut short of (as a bounce finishes
        it), and a last line without one gets its LF. Empty content stays empty."""
        if self._pending_cr or self._last not in (b"", b"\n"):
            self._pending_cr = False
            self._put(b"\n")

    def _put(self, out: bytes) -> None:
        if not out:
            return
        self._file.write(out)
        self.size += len(out)
        self._wire.feed(out)
        self._last = out[-1:]


@dataclass(frozen=True, slots=True)
class StagedMessage:
    """A message written and synced in ``tmp/``, not yet visible to readers."""

    maildir: Maildir
    name: str
    size: int
    """Octets on disk (LF line ends)."""

    @property
    def tmp_path(self) -> Path:
        return self.maildir.path / "tmp" / self.name

    @property
    def new_path(self) -> Path:
        return self.maildir.path / "new" / self.name

    def commit(self, *, sync: bool = True) -> Path:
        """Rename into ``new/``; with ``sync``, fsync ``new/`` so the rename is durable
        (if that fails, the message is taken out again: a failed commit delivered
        nothing, and the caller may deliver it another way)."""
        os.replace(self.tmp_path, self.new_path)
        if sync:
            try:
                fsync_directory(self.new_path.parent)
            except BaseException:
                self.new_path.unlink(missing_ok=True)
                raise
        return self.new_path

    def discard(self) -> None:
        self.tmp_path.unlink(missing_ok=True)


class Staging:
    """A message being written into its Maildir's ``tmp/`` under a unique name:
    :meth:`write` its CRLF content chunk by chunk, then :meth:`finish` (fsync, and
    the name that gives its sizes) or :meth:`discard`. Memory holds a chunk at a
    time, whatever the message's size."""

    def __init__(self, maildir: Maildir, prefix: bytes, *, name: str | None = None) -> None:
        self.maildir = maildir
        self._tmp = maildir.path / "tmp" / unique_name()
        self._base = name or self._tmp.name
        """The unique name in ``new/``: the file's own in ``tmp/`` unless one is given."""
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._writer = LFWriter(self._file)
        try:
            self._writer.write(prefix)
        except BaseException:
            self.discard()
            raise

    def write(self, chunk: bytes) -> None:
        self._writer.write(chunk)

    def finish(self) -> StagedMessage:
        """Flush and fsync the file, and name it with its sizes; the file is removed if
        that fails."""
        writer = self._writer
        try:
            writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            # Dovecot's size fields: S= octets on disk, W= octets on the wire (CRLF);
            # the writer ended the content with a line end, so neither adds one.
            name = f"{self._base},S={writer.size},W={writer.wire_size}"
            os.replace(self._tmp, self.maildir.path / "tmp" / name)
        except BaseException:
            self.discard()
            raise
        return StagedMessage(self.maildir, name, writer.size)

    def discard(self) -> None:
        """Close and remove the file: nothing of the message stays in ``tmp/``. Best
        effort about the close: it flushes what is buffered, which a full disk refuses,
        and a file being removed needs none of it (the descriptor is closed still)."""
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


class Maildir:
    """A Maildir at ``path``: ``tmp``, ``new`` and ``cur``, created on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"Maildir({str(self.path)!r})"

    def create(self) -> None:
        """Make the three directories, and the Maildir's own and those above it that
        are missing, all mode 0700 (:func:`make_private_directory`); a link found in
        place of one is refused (see :meth:`require_real`)."""
        for sub in SUBDIRECTORIES:
            make_private_directory(self.path / sub)
        self.require_real(*SUBDIRECTORIES)

    def require_real(self, *subs: str) -> None:
        """``NotADirectoryError`` unless the Maildir's own directory and ``subs`` are
        directories themselves: one swapped for a link, by whoever could write
        ``mailboxes/`` under an earlier version's modes, would take the mail into a
        directory of theirs, or have :meth:`clean_tmp` remove files elsewhere. Four
        ``lstat`` calls per delivery: cheap beside the fsyncs."""
        for path in (self.path, *(self.path / sub for sub in subs)):
            require_real_directory(path)

    def directories(self) -> list[Path]:
        """The Maildir's own directory and the three the server writes in."""
        return [self.path, *(self.path / sub for sub in SUBDIRECTORIES)]

    def clean_tmp(self, now: float | None = None) -> int:
        """Remove the files in ``tmp/`` untouched for 36 hours: a delivery a crash cut
        short, never to be committed (the Maildir spec has readers clean them so, and
        Dovecot does). How many went; a ``tmp/`` that is a link is refused."""
        limit = (time.time() if now is None else now) - TMP_LIFETIME
        removed = 0
        self.require_real("tmp")
        with os.scandir(self.path / "tmp") as listing:
            for entry in listing:
                try:
                    stat = entry.stat(follow_symlinks=False)
                    if (
                        entry.is_file(follow_symlinks=False)
                        and max(stat.st_atime, stat.st_mtime, stat.st_ctime) < limit
                    ):
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue  # gone meanwhile
        return removed

    def exists(self) -> bool:
        return all((self.path / sub).is_dir() for sub in SUBDIRECTORIES)

    def stage(
        self, prefix: bytes, content: BinaryIO | Iterable[bytes], *, name: str | None = None
    ) -> StagedMessage:
        """Write ``prefix`` (trace headers) then ``content`` (CRLF wire form) into
        ``tmp/`` with LF line ends, and fsync the file.

        ``content`` is a binary file, copied from where it stands to its end,
        or an iterable of chunks. ``name`` is the unique name to commit it under
        (a fresh one by default).
        """
        staging = self.begin(prefix, name=name)
        try:
            chunks = (
                iter(lambda: content.read(_COPY_SIZE), b"")
                if hasattr(content, "read")
                else content
            )
            for chunk in chunks:
                staging.write(chunk)
        except BaseException:
            staging.discard()
            raise
        return staging.finish()

    def begin(self, prefix: bytes, *, name: str | None = None) -> Staging:
        """A message to write into ``tmp/`` a chunk at a time, as it arrives (what
        :meth:`stage` does with content that is all there): ``prefix`` is written."""
        self.create()
        return Staging(self, prefix, name=name)

    def deliver(
        self, prefix: bytes, content: BinaryIO | Iterable[bytes], *, name: str | None = None
    ) -> Path:
        """Stage and commit at once: the path of the new message (nothing is left in
        ``tmp/`` when the commit fails)."""
        staged = self.stage(prefix, content, name=name)
        try:
            return staged.commit()
        except BaseException:
            staged.discard()
            raise

    def deliver_once(
        self,
        once: str,
        prefix: bytes,
        content: BinaryIO | Iterable[bytes],
        *,
        search: bool = True,
    ) -> tuple[Path, bool]:
        """:meth:`deliver` under the unique name ``once.host`` (:func:`once_name`),
        unless a message so named is here already, in ``new/`` or ``cur/`` (where a
        reader moved it, its flags added): a delivery that a crash stopped before it
        was recorded, which must not be made twice (RFC 5321 §6.1). The message's
        path, and whether it was written now.

        ``search=False`` when the caller knows no earlier attempt wrote this copy:
        :meth:`find` lists the whole mailbox, and is skipped."""
        found = self.find(once) if search else None
        if found is not None:
            return found, False
        return self.deliver(prefix, content, name=f"{once}.{_host_part()}"), True

    def find(self, once: str) -> Path | None:
        """The message in ``new/`` or ``cur/`` whose unique name is ``once`` and a host
        (whichever: the host's name may have changed since), or None. ``new/`` is
        read first, so that a message a reader moves to ``cur/`` meanwhile is seen."""
        start = f"{once}."
        for sub in ("new", "cur"):
            directory = self.path / sub
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith(start):
                    return directory / name
        return None

    def messages(self) -> list[Path]:
        """Messages in ``new/`` and ``cur/``, oldest name first."""
        found: list[Path] = []
        for sub in ("new", "cur"):
            directory = self.path / sub
            if directory.is_dir():
                found += [p for p in directory.iterdir() if not p.name.startswith(".")]
        return sorted(found, key=lambda p: delivery_order(p.name.split(":", 1)[0]))
