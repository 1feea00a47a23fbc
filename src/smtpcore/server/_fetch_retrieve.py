"""One message retrieved by ``fetch``: streamed a chunk at a time into its copy in the
target Maildir's ``tmp/``, its header for the summary line and its digest for the
record, the copy then kept (synced into ``new/``) or dropped by the run.

Apart because it is the one place where the run touches the Maildir's files: what a
copy leaves behind when the process is stopped, or the disk is full, is settled here
(:class:`_Copy`, :func:`_clean_tmp`), and the threads that sync are waited for to
their end (:func:`_to_its_end_in_thread`, which the record's write uses too)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from smtpcore.asyncio import POP3Client
from smtpcore.server._fetch_output import _warn
from smtpcore.server._fetch_summary import _Head
from smtpcore.server.fetchrecord import ContentDigest, why_it_failed
from smtpcore.server.maildir import Maildir, Staging


class _Copy:
    """A retrieved message's copy, written into the target Maildir's ``tmp/`` as it
    streams, then kept (synced into ``new/``) or dropped by the caller, who alone knows,
    once the whole content is read, whether the message is new. None of it is written
    without a target.

    ``checking``: the message is read to be told by its content from one stored before
    (see :meth:`~smtpcore.server._fetch_run._FetchRun._take_stored_before`). A failure to
    write it there (a full disk) drops the file and the reading goes on for the digest
    alone: a message found stored needs no copy, and the failure is raised by
    :meth:`keep`, only for one found new. Otherwise it is raised at once, and the run
    stops."""

    def __init__(self, target: Maildir | None, *, checking: bool) -> None:
        self._checking = checking
        self._failure: OSError | None = None
        self._staging: Staging | None = None
        if target is not None:
            try:
                self._staging = target.begin(b"")
            except OSError as exc:
                self._failed(exc)

    def write(self, chunk: bytes) -> None:
        if self._staging is None:
            return
        try:
            self._staging.write(chunk)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        """Drop the copy, best effort: what to report is ``exc``, and a file that cannot
        be removed now goes with ``tmp/``'s cleaning (:func:`_clean_tmp`)."""
        with contextlib.suppress(OSError):
            self.drop()
        if not self._checking:
            raise exc
        self._failure = exc

    async def keep(self) -> None:
        """Sync the copy and move it into ``new/`` in one thread (:func:`_into_new`:
        nothing stays in ``tmp/`` when that fails); the failure that dropped it, if one
        did. Cancelled (Ctrl-C), it waits for that thread to end, for the thread goes
        on: not waited for, it left the synced file in ``tmp/``. What it leaves then is
        the message in ``new/`` (unrecorded: a duplicate next time) or nothing."""
        if self._failure is not None:
            raise self._failure
        staging = self._staging
        if staging is None:
            return
        try:
            await _to_its_end_in_thread(lambda: _into_new(staging))
        except asyncio.CancelledError:
            self.drop()  # the file, when the thread never began
            raise
        finally:
            self._staging = None

    def drop(self) -> None:
        """Remove the copy from ``tmp/``, unsynced; nothing once it is kept."""
        staging, self._staging = self._staging, None
        if staging is not None:
            staging.discard()


async def _to_its_end_in_thread(work: Callable[[], None]) -> None:
    """Run ``work`` in a thread; cancelled (Ctrl-C, a stop signal), wait for that thread
    to end before the cancellation goes on, for the thread goes on regardless: not
    waited for, a process that ended at once left its work half done (a synced file in
    ``tmp/``, a record's temporary file in the Maildir)."""
    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait({running})
        if not running.cancelled():
            running.exception()  # retrieved: the cancellation is what goes on
        raise


def _into_new(staging: Staging) -> None:
    """Flush and fsync ``staging``, rename it into ``new/`` and sync that; a failure
    removes the file. One call, for one thread to run whole (see :meth:`_Copy.keep`)."""
    staged = staging.finish()  # removes the file if it fails
    try:
        staged.commit()
    except BaseException:
        staged.discard()
        raise


@dataclass(frozen=True)
class _Retrieved:
    """What :func:`_retrieve` keeps of a message: its size in octets, its header for the
    summary line, the :class:`ContentDigest` of the whole of it, for the record, and its
    :class:`_Copy`, for the caller to keep or drop."""

    size: int
    head: _Head
    digest: str
    copy: _Copy


async def _clean_tmp(target: Maildir) -> None:
    """Remove the files a run killed on the way left in ``target``'s ``tmp/`` (a message
    being retrieved, or read again to be told by its content): none is ever committed.
    Only those untouched for 36 hours go (:meth:`Maildir.clean_tmp`), so that the file
    of a run still under way, or of another program's delivery, stays. Housekeeping
    only: a failure (a file system gone read-only, a file made immutable) is named in
    one warning and the run goes on."""
    tmp = target.path / "tmp"
    if not tmp.exists():
        return
    try:
        await asyncio.to_thread(target.clean_tmp)
    except OSError as exc:
        where = f"{why_it_failed(exc)}: {exc.filename}" if exc.filename else why_it_failed(exc)
        _warn(f"{tmp} cannot be cleaned of what runs killed on the way left there ({where})")


async def _retrieve(
    client: POP3Client, number: int, target: Maildir | None, *, checking: bool = False
) -> _Retrieved:
    """Retrieve message ``number``: its size, its header, the digest of the whole of it,
    and its :class:`_Copy` in ``target``'s ``tmp/``, unsynced, which the caller keeps or
    drops (``checking``: see :class:`_Copy`). Streamed, a chunk at a time: memory does
    not grow with the message. Nothing of it stays in the Maildir when the retrieval
    fails, or runs past the size LIST gave and 10% and 64 KiB more, which the client
    refuses (``retrieve_chunks``' bound): a hostile server cannot fill the disk with a
    message it said was small."""
    copy = _Copy(target, checking=checking)
    head = _Head()
    digest = ContentDigest()
    size = 0
    try:
        async for chunk in client.retrieve_chunks(number):
            size += len(chunk)
            head.feed(chunk)
            digest.feed(chunk)
            copy.write(chunk)
    except BaseException:
        copy.drop()
        raise
    return _Retrieved(size, head, digest.hexdigest(), copy)
