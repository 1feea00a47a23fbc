"""The marks ``queue list`` reads to put ``*`` after a message in delivery
(:mod:`smtpcore.server.activemarks`): one per message while any of its deliveries
runs, the last state asked for whatever order the threads write in, and only the
running server's believed."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from smtpcore.routing import Router, StaticResolver
from smtpcore.server.activemarks import DeliveryMarks, read_active
from smtpcore.server.config import ServerConfig
from smtpcore.server.delivery import DeliveryWorker
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.queue import Queue
from smtpcore.server.waits import Threads, ThreadShare


def _settled(threads: Threads) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    threads.then(lambda: loop.call_soon_threadsafe(done.set_result, None))
    return done


def test_a_message_is_marked_while_any_of_its_deliveries_runs(tmp_path: Path) -> None:
    marks = DeliveryMarks(tmp_path, owner=4242)
    marks.clear()
    marks.begin("AAAAAAAAAA")
    marks.begin("AAAAAAAAAA")  # a session and a local copy
    marks.begin("BBBBBBBBBB")
    marks.end("BBBBBBBBBB")  # before any sync: B is never written
    marks.end("AAAAAAAAAA")
    assert marks.unsynced
    marks.sync()
    assert not marks.unsynced
    assert read_active(tmp_path, 4242) == {"AAAAAAAAAA"}
    assert read_active(tmp_path, 4243) == frozenset()  # another server's: stale
    assert read_active(tmp_path, None) == frozenset()  # no server runs
    marks.end("AAAAAAAAAA")
    marks.sync()
    assert not list((tmp_path / "active").iterdir())


def test_a_mark_the_disk_would_not_remove_is_removed_at_the_next_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark whose removal failed (EIO, once) was forgotten as removed: it went on
    saying "in delivery" until the message's next delivery or a restart. It is now
    removed by the next change of any mark."""
    marks = DeliveryMarks(tmp_path, owner=4242)
    marks.clear()
    unlink = Path.unlink
    refused: list[Path] = []

    def fails_once(self: Path, missing_ok: bool = False) -> None:
        if self.name == "AAAAAAAAAA" and not refused:
            refused.append(self)
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        unlink(self, missing_ok=missing_ok)

    marks.begin("AAAAAAAAAA")
    marks.sync()
    monkeypatch.setattr(Path, "unlink", fails_once)
    marks.end("AAAAAAAAAA")
    marks.sync()
    assert refused
    assert read_active(tmp_path, 4242) == {"AAAAAAAAAA"}  # the disk refused
    marks.begin("BBBBBBBBBB")  # another message's delivery: the next change
    marks.sync()
    assert read_active(tmp_path, 4242) == {"BBBBBBBBBB"}
    marks.end("BBBBBBBBBB")
    marks.sync()
    assert not list((tmp_path / "active").iterdir())


def test_a_start_clears_the_marks_a_crash_left(tmp_path: Path) -> None:
    (tmp_path / "active").mkdir()
    (tmp_path / "active" / "AAAAAAAAAA").write_text("4242\n")
    assert read_active(tmp_path, 4242) == {"AAAAAAAAAA"}
    DeliveryMarks(tmp_path, owner=4242).clear()
    assert read_active(tmp_path, 4242) == frozenset()


def _local_worker(
    tmp_path: Path, **options: Any
) -> tuple[ServerConfig, Queue, LocalMailboxes, Threads, DeliveryMarks, DeliveryWorker]:
    """A delivery worker for abc.example's one user, its marks cleared."""
    config = ServerConfig(
        domains=("abc.example",),
        users={"john@abc.example": "pw"},
        data_dir=tmp_path,
        hostname="mx.abc.example",
    )
    queue = Queue(config.queue_dir)
    queue.open()
    mailboxes = LocalMailboxes(config)
    mailboxes.create_all()
    threads = Threads()
    marks = DeliveryMarks(config.queue_dir)
    marks.clear()
    worker = DeliveryWorker(
        queue,
        router=Router(["abc.example"], hostnames=["mx.abc.example"]),
        resolver=StaticResolver.from_zone_text(""),
        mailboxes=mailboxes,
        hostname="mx.abc.example",
        retry_after=3600.0,
        threads=threads,
        marks=marks,
        **options,
    )
    return config, queue, mailboxes, threads, marks, worker


def test_a_local_copy_waiting_for_a_thread_slot_is_not_marked(tmp_path: Path) -> None:
    """A local copy was marked from before its wait for a slot of the worker's threads
    (its ``ThreadShare``): with the slots taken, every message queued behind them was
    listed ``*``, in delivery, though none of its work had begun. Only the copy being
    written is marked now; one relay session's mark waits for its token likewise."""
    config, queue, mailboxes, threads, marks, worker = _local_worker(
        tmp_path,
        concurrency=1,  # one slot of the worker's threads
    )
    writing: list[str] = []  # the queue id of each copy begun, in order
    go_on = threading.Event()
    deliver_queued = mailboxes.deliver_queued

    def held(*args: Any, **kwargs: Any) -> tuple[Path, bool]:
        writing.append(args[3])
        go_on.wait(30)
        return deliver_queued(*args, **kwargs)

    mailboxes.deliver_queued = held  # type: ignore[method-assign]

    async def main() -> None:
        ids = []
        for _ in range(3):
            spool = queue.spool()
            spool.write(b"Subject: x\r\n\r\nbody\r\n")
            entry = queue.prepare(spool, "john@abc.example", ["john@abc.example"]).commit()
            ids.append(entry.id)
            worker.schedule(entry)
        task = asyncio.get_running_loop().create_task(worker.run())
        try:
            while not (writing and worker.disk.waiting == 2):
                await asyncio.sleep(0.01)
            assert marks._wanted == {writing[0]}  # the two waiting: not in delivery
            while read_active(config.queue_dir, os.getpid()) != {writing[0]}:
                await asyncio.sleep(0.01)
            go_on.set()
            while worker.queued:
                await asyncio.sleep(0.01)
        finally:
            go_on.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.aclose(1.0)
        assert sorted(writing) == sorted(ids)
        await _settled(threads)
        assert read_active(config.queue_dir, os.getpid()) == frozenset()

    asyncio.run(main())


def test_a_begin_that_raises_gives_the_thread_slot_back(tmp_path: Path) -> None:
    """``began`` (a delivery's mark) was called after the slot was taken and before the
    ``try`` that gives it back: one that raised kept the slot for ever, and the share
    had one call fewer at once, down to none."""
    share = ThreadShare(Threads(), 1)

    def broken() -> None:
        raise OSError(errno.EIO, "mark refused")

    async def main() -> None:
        with pytest.raises(OSError):
            await share.run_announced(broken, os.getpid)
        assert share._slots.free == 1
        assert await share.run(os.getpid) == os.getpid()

    asyncio.run(main())


def test_the_marks_are_written_in_the_worker_s_share_of_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark's write and its removal went to the server's threads beside the worker's
    share of them (:class:`ThreadShare`): with many deliveries at once, as many calls
    queued there ahead of an inbound session's commit, whatever the share's bound.
    Each is now written in a call that holds one of the share's slots: a local copy's
    mark in the copy's own call (so it is on disk while the copy is written), its
    removal in a call of its own."""
    config, queue, _, threads, _, worker = _local_worker(tmp_path)
    slot = threading.local()
    run_announced = worker.disk.run_announced

    async def in_a_slot(began: Any, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        def holding(*args: Any, **kwargs: Any) -> Any:
            slot.held = True
            try:
                return func(*args, **kwargs)
            finally:
                slot.held = False

        return await run_announced(began, holding, *args, **kwargs)

    monkeypatch.setattr(worker.disk, "run_announced", in_a_slot)
    written: list[tuple[bool, bool]] = []  # (marked, in a slot) for each write
    sync_one = DeliveryMarks._sync_one

    def recorded(self: DeliveryMarks, queue_id: str) -> None:
        before = read_active(config.queue_dir, os.getpid())
        sync_one(self, queue_id)
        if read_active(config.queue_dir, os.getpid()) != before:
            written.append((queue_id in self._on_disk, getattr(slot, "held", False)))

    monkeypatch.setattr(DeliveryMarks, "_sync_one", recorded)

    async def main() -> None:
        spool = queue.spool()
        spool.write(b"Subject: x\r\n\r\nbody\r\n")
        worker.schedule(queue.prepare(spool, "john@abc.example", ["john@abc.example"]).commit())
        task = asyncio.get_running_loop().create_task(worker.run())
        try:
            while worker.queued:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.aclose(1.0)
        await _settled(threads)

    asyncio.run(main())
    assert written == [(True, True), (False, True)]
    assert read_active(config.queue_dir, os.getpid()) == frozenset()
