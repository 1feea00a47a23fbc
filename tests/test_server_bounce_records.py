"""A bounce's copies are each made once: the record of a copy that landed
(:mod:`smtpcore.server.bouncerecords`) outlives a stop, a crash, a broken round and an
operator's action, until its recipients are recorded failed or the message goes."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import smtpcore.server.bouncerecords as bouncerecords
import smtpcore.server.queue as queue_module
from smtpcore.server.bouncerecords import BounceCopy, BounceRecords
from smtpcore.server.exchanger import Outcome
from smtpcore.server.maildir import Maildir
from smtpcore.server.queue import Queue, QueuedRecipient, QueueEntry, RecipientStatus
from smtpcore.server.queuectl import QueueCommand
from test_server_delivery import (
    MESSAGE,
    ZONE,
    Setup,
    _enqueue_dsn,
    _queue_empty,
    _run_until,
    _setup,
    _stop_runs,
)

POLICY_FAILURE = "no address@pqr.example"
"""A queued recipient that no longer parses: it fails by this server's policy, so its
bounce has two copies, the sender's (as NOTIFY asked) and the postmaster's (whole)."""

SENDER_BOX = "john@abc.example"
POSTMASTER_BOX = "postmaster@abc.example"


def _copies(setup: Setup, *keys: str) -> list[int]:
    """How many messages each mailbox holds."""
    config = setup.mailboxes.config
    return [len(Maildir(config.mailbox_path(key)).messages()) for key in keys]


def _records(setup: Setup) -> list[str]:
    directory = setup.queue.directory / "bounced"
    return sorted(os.listdir(directory)) if directory.exists() else []


def _restart(tmp_path: Path, *, release: str | None = None) -> Setup:
    """Start again on the same data directory and run until the queue is empty."""
    restarted = _setup(tmp_path, ZONE, 9, retry_after=60)

    async def main() -> None:
        if release is not None:
            await restarted.worker.apply(QueueCommand("release", (release,)))
        for entry in restarted.queue.entries():
            restarted.worker.schedule(entry)
        await _run_until(restarted, lambda: _queue_empty(restarted))

    asyncio.run(main())
    return restarted


# -- the records themselves -----------------------------------------------------


def test_a_copy_leaves_out_each_recipient_recorded_reported_in_its_role(
    tmp_path: Path,
) -> None:
    """Records are per role and recipient: a copy leaves out the recipients recorded in
    its role, whatever set reported them; a combined copy (the sender cannot take one:
    to the postmaster) stands for the sender's and the postmaster's, and they for it; a
    recipient recorded failed loses its records in every role; a message's records are
    its own."""
    records = BounceRecords(tmp_path / "bounced")
    sender = BounceCopy.of("AAAAAAAAAA", sender=["a@x", "b@x"])
    postmaster = BounceCopy.of("AAAAAAAAAA", postmaster=["b@x"])
    combined = BounceCopy.of("AAAAAAAAAA", sender=["b@x", "a@x"], postmaster=["b@x"])
    assert records.unmade(sender) == sender
    records.record(BounceCopy.of("AAAAAAAAAA", sender=["a@x"]))
    records.record(BounceCopy.of("AAAAAAAAAA", sender=["a@x"]))  # the same record
    assert records.unmade(sender) == BounceCopy.of("AAAAAAAAAA", sender=["b@x"])
    assert records.unmade(combined) == BounceCopy.of(
        "AAAAAAAAAA", sender=["b@x"], postmaster=["b@x"]
    )
    assert records.unmade(postmaster) == postmaster
    records.record(sender)
    assert records.made(sender)
    assert records.unmade(combined) == postmaster
    assert not records.made(BounceCopy.of("BBBBBBBBBB", sender=["a@x"]))
    records.record(postmaster)
    assert records.made(combined)
    records.forget("AAAAAAAAAA", ["b@x"])
    assert records.unmade(combined) == combined.without(
        [n for n, (_, r) in combined.record_names().items() if r == "a@x"]
    )
    records.forget("AAAAAAAAAA", ["a@x"])
    assert os.listdir(tmp_path / "bounced") == []
    records.record(combined)
    assert records.made(sender) and records.made(postmaster)
    only_b = BounceCopy.of("BBBBBBBBBB", sender=["a@x"])
    records.record(only_b)
    records.keep_only({"BBBBBBBBBB"})
    assert not records.made(sender)
    assert os.listdir(tmp_path / "bounced") == list(only_b.record_names())
    records.forget_message("BBBBBBBBBB")
    assert os.listdir(tmp_path / "bounced") == []


def test_a_record_name_holds_any_address(tmp_path: Path) -> None:
    """An address that no longer parses may hold a slash, dots, a surrogate: the name
    is a digest of it."""
    records = BounceRecords(tmp_path / "bounced")
    copy = BounceCopy.of("AAAAAAAAAA", sender=["../x/y@z", "\udcff@x"])
    records.record(copy)
    assert records.made(copy)
    assert len(os.listdir(tmp_path / "bounced")) == 2


def test_a_copy_s_records_cost_one_sync_of_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each empty record was synced on its own, in the copy's turn at the disk
    threads: a bounce to 1,000 recipients took seconds where it had taken a tenth.
    A record has no data to sync: its name is made durable by the directory's sync,
    once for the whole copy, one recorded already included."""
    records = BounceRecords(tmp_path / "bounced")
    records.record(BounceCopy.of("AAAAAAAAAA", sender=["r0@x"]))
    synced: list[bool] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    copy = BounceCopy.of("AAAAAAAAAA", sender=[f"r{n}@x" for n in range(50)])
    records.record(copy)
    assert records.made(copy)
    assert synced == ([True] if os.name == "posix" else [])  # the directory's, once


def _record_names(bounced: Path) -> list[str]:
    """The regular files of ``bounced``: its records."""
    return sorted(path.name for path in bounced.iterdir() if path.is_file())


def test_a_stray_directory_among_the_records_stops_no_removal(tmp_path: Path) -> None:
    """A directory among the records (``bounced/0000000000.zzz``) made the first unlink
    fail, and the removal stopped there: every record after it stayed, at every start,
    and a message's removal left its others. Only regular files are records now: the
    directory is left alone, and every record goes."""
    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(b"Subject: x\r\n\r\nbody\r\n", "john@abc.example", ["a@pqr.example"])
    bounced = tmp_path / "queue" / "bounced"
    for n in range(3):  # records of messages gone
        queue.bounced.record(BounceCopy.of(f"{n:010X}", sender=[f"r{n}@x"]))
    strays = sorted(["0000000000.zzz", f"{entry.id}.zzz"])
    for stray in strays:
        (bounced / stray).mkdir()
    queue.bounced.record(BounceCopy.of(entry.id, sender=["a@pqr.example"]))
    Queue(tmp_path / "queue").open()
    assert [name.partition(".")[0] for name in _record_names(bounced)] == [entry.id]
    queue.remove(entry.id)
    assert sorted(os.listdir(bounced)) == strays


def test_a_removal_the_disk_refuses_stops_no_other_and_is_told_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk refuses one record's removal (here: a read-only file system): the
    others go all the same, and the name refused is told once, at the end (a warning
    at the queue's start)."""
    queue = Queue(tmp_path / "queue")
    queue.open()
    bounced = tmp_path / "queue" / "bounced"
    for n in range(3):  # records of messages gone
        queue.bounced.record(BounceCopy.of(f"{n:010X}", sender=[f"r{n}@x"]))
    (kept,) = [name for name in _record_names(bounced) if name.startswith("0000000000.")]
    unlink = os.unlink

    def refused(path: Any) -> None:
        if Path(path).name == kept:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        unlink(path)

    monkeypatch.setattr(bouncerecords, "os", SimpleNamespace(scandir=os.scandir, unlink=refused))
    caplog.set_level(logging.WARNING)
    Queue(tmp_path / "queue").open()
    assert _record_names(bounced) == [kept]
    (warning,) = [r.getMessage() for r in caplog.records if "bounce records" in r.getMessage()]
    assert f"1 records not removed: {kept}: {os.strerror(errno.EROFS)}" in warning


def test_a_new_message_is_never_given_the_id_of_leftover_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records outlive their message until the next start (a copy that finished after
    ``queue delete``, a removal the disk refused). A new message given that id had its
    own recipients' reports left out where their addresses matched: an id with records
    is taken now, as one with a queue file is."""
    queue = Queue(tmp_path / "queue")
    queue.open()
    queue.bounced.record(BounceCopy.of("AAAAAAAAAA", sender=["a@pqr.example"]))
    ids = iter(["AAAAAAAAAA", "BBBBBBBBBB"])
    monkeypatch.setattr(queue_module, "new_queue_id", lambda: next(ids))
    entry = queue.add(b"Subject: x\r\n\r\nbody\r\n", "john@abc.example", ["a@pqr.example"])
    assert entry.id == "BBBBBBBBBB"
    copy = BounceCopy.of(entry.id, sender=["a@pqr.example"])
    assert queue.bounced.unmade(copy) == copy


def test_records_the_disk_will_not_list_take_no_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records that cannot be listed stop no message from being queued: a bounce cannot
    read them either, and makes its copies whole."""
    queue = Queue(tmp_path / "queue")
    queue.open()

    def refused(queue_id: str) -> bool:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(queue.bounced, "exist_for", refused)
    entry = queue.add(b"Subject: x\r\n\r\nbody\r\n", "john@abc.example", ["a@pqr.example"])
    assert queue.load(entry.id).recipients[0].pending


def test_records_are_never_made_or_removed_through_a_link(tmp_path: Path) -> None:
    """A link planted in place of ``queue/bounced``: no record is made where it points,
    and a message's removal removes nothing there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "AAAAAAAAAA.keep").write_bytes(b"")
    (tmp_path / "bounced").symlink_to(elsewhere)
    records = BounceRecords(tmp_path / "bounced")
    with pytest.raises(NotADirectoryError):
        records.record(BounceCopy.of("AAAAAAAAAA", sender=["a@x"]))
    with pytest.raises(NotADirectoryError):
        records.forget_message("AAAAAAAAAA")
    assert os.listdir(elsewhere) == ["AAAAAAAAAA.keep"]


# -- a stop, a broken round, an operator's action -------------------------------


@pytest.mark.parametrize("stopped_in", ["the first copy's write", "the second copy"])
def test_a_stop_between_the_two_copies_of_a_bounce_makes_only_the_second_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stopped_in: str,
) -> None:
    """The stop came once the sender's copy was in its mailbox, before the postmaster's
    was made, or while the sender's was still being written (its thread goes on to the
    end). The recipient stayed pending, and the next start made both copies again: the
    sender had two bounces for one failure. It now makes only the postmaster's, and
    nothing is lost: each mailbox holds one. The stop's line said "before its bounce
    was made" though the sender's copy was: it now says which was."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    stuck = asyncio.Event()
    go_on = threading.Event()
    calls: list[str] = []
    send_report, deliver = setup.worker.send_report, setup.mailboxes.deliver

    async def second_held(queue_id: str, to: str, report: Any, kind: str, **options: Any) -> None:
        calls.append(to)
        if len(calls) == 2:
            stuck.set()
            await asyncio.Event().wait()  # until the stop cancels the round
        await send_report(queue_id, to, report, kind, **options)

    def first_held(*args: Any, **kwargs: Any) -> Path:
        stuck.set()
        go_on.wait(30)  # the stop comes meanwhile; the thread writes on after it
        return deliver(*args, **kwargs)

    if stopped_in == "the second copy":
        monkeypatch.setattr(setup.worker, "send_report", second_held)
    else:
        monkeypatch.setattr(setup.mailboxes, "deliver", first_held)

    async def until_the_stop() -> None:
        _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(stuck.wait(), 5)
        finally:
            await _stop_runs(setup.worker, [task])
            go_on.set()

    asyncio.run(until_the_stop())
    monkeypatch.undo()
    assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [1, 0]
    (line,) = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    if stopped_in == "the second copy":
        assert "shutdown after the sender copy of its bounce was made (failed: 553 " in line
    else:  # the copy was still being written: the round cannot know it landed
        assert "shutdown before its bounce was made (failed: 553 " in line
    caplog.clear()
    restarted = _restart(tmp_path)
    assert _copies(restarted, SENDER_BOX, POSTMASTER_BOX) == [1, 1]
    assert any(
        "the sender copy of its bounce was made in an earlier attempt: not made again"
        in record.getMessage()
        for record in caplog.records
    )
    assert _records(restarted) == []


def test_a_stop_after_a_copy_whose_record_the_disk_refused_does_not_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk refused the sender copy's record, and a stop came in the postmaster's
    copy: the line said "after the sender copy of its bounce was made", which the docs
    read as "not made again", and the next start made it again. A copy is named only
    once its record has landed: this line says the bounce was not made, and the ERROR
    before it says the copy is made again."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)

    def refused(copy: BounceCopy) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(setup.queue.bounced, "record", refused)
    stuck = asyncio.Event()
    calls: list[str] = []
    send_report = setup.worker.send_report

    async def second_held(queue_id: str, to: str, report: Any, kind: str, **options: Any) -> None:
        calls.append(to)
        if len(calls) == 2:
            stuck.set()
            await asyncio.Event().wait()  # until the stop cancels the round
        await send_report(queue_id, to, report, kind, **options)

    monkeypatch.setattr(setup.worker, "send_report", second_held)

    async def until_the_stop() -> None:
        _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(stuck.wait(), 5)
        finally:
            await _stop_runs(setup.worker, [task])

    asyncio.run(until_the_stop())
    monkeypatch.undo()
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot record the sender copy of its bounce made" in m for m in messages)
    (line,) = [m for m in messages if "cut short" in m]
    assert "shutdown before its bounce was made (failed: 553 " in line
    restarted = _restart(tmp_path)
    assert _copies(restarted, SENDER_BOX, POSTMASTER_BOX) == [2, 1]  # as the ERROR said


def test_a_sender_who_is_the_postmaster_gets_both_copies_of_a_bounce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The postmaster sends, RET=HDRS, to a queued address that no longer parses: its
    bounce has the sender's copy (headers only) and the postmaster's (whole), both into
    the postmaster's mailbox, and a stop came between them. The next start made both
    again; a record named by its address would have skipped the whole one. Each copy is
    recorded as which copy it is: the postmaster has one of each."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    postmaster = setup.mailboxes.config.postmaster_key("abc.example")
    stuck = asyncio.Event()
    calls: list[str] = []
    send_report = setup.worker.send_report

    async def second_held(queue_id: str, to: str, report: Any, kind: str, **options: Any) -> None:
        calls.append(to)
        if len(calls) == 2:
            stuck.set()
            await asyncio.Event().wait()
        await send_report(queue_id, to, report, kind, **options)

    monkeypatch.setattr(setup.worker, "send_report", second_held)

    async def until_the_stop() -> None:
        spool = setup.queue.spool()
        spool.write(MESSAGE)
        recipients = [QueuedRecipient(POLICY_FAILURE)]
        params = (("RET", "HDRS"),)
        entry = setup.queue.prepare(spool, postmaster, recipients, params=params).commit()
        setup.worker.schedule(entry)
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(stuck.wait(), 5)
        finally:
            await _stop_runs(setup.worker, [task])

    asyncio.run(until_the_stop())
    _restart(tmp_path)
    box = Maildir(setup.mailboxes.config.mailbox_path(postmaster))
    copies = [path.read_bytes() for path in box.messages()]
    assert sorted(b"\nbody\n" in copy for copy in copies) == [False, True]  # Maildir: LF


@pytest.mark.parametrize("refused", ["once", "every time"])
def test_a_second_bounce_copy_the_disk_refuses_leaves_the_first_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """The sender's copy of a two-copy bounce landed, and the postmaster's mailbox
    refused its copy (a full disk): the round broke, and each retry made the sender's
    copy again, as often as the postmaster's failed. The sender now has one copy, the
    postmaster one once its disk takes it."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=0.05)
    setup.worker.max_retry_after = 0.05
    deliver = setup.mailboxes.deliver
    tries: list[str] = []

    def postmaster_refused(key: Any, *args: Any, **kwargs: Any) -> Path:
        if key == POSTMASTER_BOX:
            tries.append(key)
            if refused == "every time" or len(tries) == 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return deliver(key, *args, **kwargs)

    monkeypatch.setattr(setup.mailboxes, "deliver", postmaster_refused)

    async def main() -> QueueEntry:
        entry = _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])
        if refused == "once":
            await _run_until(setup, lambda: _queue_empty(setup))
        else:
            await _run_until(setup, lambda: len(tries) >= 4)
        return entry

    entry = asyncio.run(main())
    assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [1, 1 if refused == "once" else 0]
    if refused == "every time":
        (left,) = setup.queue.entries()
        assert left.recipients[0].pending
        assert setup.queue.bounced.made(BounceCopy.of(entry.id, sender=[POLICY_FAILURE]))
    else:
        assert _records(setup) == []


FAILED = Outcome(RecipientStatus.FAILED, "5.1.1", "550 5.1.1 no such user", "local")
DEFERRED = Outcome(RecipientStatus.PENDING, "4.2.0", "450 4.2.0 try later", "local")


def test_a_recipient_reported_in_an_earlier_round_is_not_reported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1: c waits, the policy failure's sender copy lands, the postmaster's is
    refused. Round 2: both fail; the postmaster's copy is refused again. Round 3: c
    waits, the policy failure's bounce is made and recorded. Round 4: c fails. The
    records were per set of recipients: the sender had {no address}, {no address, c}
    and {c}, each failure told twice with no stop nor crash. Each recipient is now told
    once: {no address}, then {c} in round 2, not again in round 4."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    deliver = setup.mailboxes.deliver
    refusals = [2]

    def postmaster_refused(key: Any, *args: Any, **kwargs: Any) -> Path:
        if key == POSTMASTER_BOX and refusals[0]:
            refusals[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return deliver(key, *args, **kwargs)

    monkeypatch.setattr(setup.mailboxes, "deliver", postmaster_refused)
    script = [DEFERRED, FAILED, DEFERRED, FAILED]

    async def scripted(*args: object) -> Outcome:
        return script.pop(0)

    monkeypatch.setattr(setup.worker, "_deliver_local", scripted)

    async def main() -> None:
        recipients = [QueuedRecipient(POLICY_FAILURE), QueuedRecipient("c@abc.example")]
        entry = _enqueue_dsn(setup, recipients)
        for _ in range(4):
            await setup.worker._process(entry.id)
        await setup.worker.aclose(1.0)

    asyncio.run(main())
    assert _queue_empty(setup)
    bounces = setup.raw_bounces()
    assert len(bounces) == 2
    assert sum(b"no address@pqr.example" in bounce for bounce in bounces) == 1
    assert sum(b"c@abc.example" in bounce for bounce in bounces) == 1
    assert _copies(setup, POSTMASTER_BOX) == [1]
    assert _records(setup) == []


def _rounds_with_restarts(
    tmp_path: Path, rounds: list[tuple[dict[str, Outcome], bool]]
) -> list[list[bytes]]:
    """One round of a message to c1, c2 and c3 (which waits, keeping the message
    queued) per item of ``rounds``, each in a new process on the same data: the
    outcomes of c1 and c2, and whether the process dies before the round records its
    bounce (its envelope write refused, then forgotten). The sender's bounces after
    each round."""
    queue_id = ""
    seen = []
    for outcomes, dies in rounds:
        setup = _setup(tmp_path, ZONE, 9, retry_after=60)
        plan = {"c3@abc.example": DEFERRED, **outcomes}

        async def scripted(
            entry: object, decision: Any, content: object, plan: dict[str, Outcome] = plan
        ) -> Outcome:
            return plan[str(decision.mailbox)]

        setup.worker._deliver_local = scripted  # type: ignore[method-assign]  # a stand-in
        if dies:

            async def refused(entry: QueueEntry) -> None:
                raise OSError(errno.EIO, os.strerror(errno.EIO))

            setup.worker._write = refused  # type: ignore[method-assign]  # a stand-in

        async def main(setup: Setup = setup) -> None:
            nonlocal queue_id
            if not queue_id:
                recipients = [QueuedRecipient(f"c{n}@abc.example") for n in (1, 2, 3)]
                queue_id = _enqueue_dsn(setup, recipients).id
            await setup.worker._process(queue_id)
            await setup.worker.aclose(1.0)

        asyncio.run(main())
        seen.append(setup.raw_bounces())
    return seen


def _told(bounces: list[bytes], address: str) -> int:
    return sum(address.encode() in bounce for bounce in bounces)


def test_a_later_bounce_leaves_out_a_recipient_an_unrecorded_bounce_reported(
    tmp_path: Path,
) -> None:
    """c1's bounce landed, and the process died before the round recorded it; at the
    next start c1 fails again, with c2: the bounce reported {c1, c2}, another set, so
    it was made, and the sender was told of c1 twice. It now tells c2 only."""
    seen = _rounds_with_restarts(
        tmp_path,
        [
            ({"c1@abc.example": FAILED, "c2@abc.example": DEFERRED}, True),
            ({"c1@abc.example": FAILED, "c2@abc.example": FAILED}, False),
        ],
    )
    assert [len(bounces) for bounces in seen] == [1, 2]
    assert [_told(seen[-1], f"c{n}@abc.example") for n in (1, 2)] == [1, 1]


def test_a_bounce_of_fewer_recipients_than_an_unrecorded_one_is_not_made(
    tmp_path: Path,
) -> None:
    """{c1, c2}'s bounce landed, and the process died before the round recorded it; at
    the next start c1 fails and c2 waits, then c2 fails: the sender had a bounce for
    {c1}, then one for {c2}, three for two failures. The one bounce is all it gets."""
    seen = _rounds_with_restarts(
        tmp_path,
        [
            ({"c1@abc.example": FAILED, "c2@abc.example": FAILED}, True),
            ({"c1@abc.example": FAILED, "c2@abc.example": DEFERRED}, False),
            ({"c2@abc.example": FAILED}, False),
        ],
    )
    assert [len(bounces) for bounces in seen] == [1, 1, 1]
    assert [_told(seen[-1], f"c{n}@abc.example") for n in (1, 2)] == [1, 1]


def test_a_recipient_reported_once_is_not_reported_again_for_another_failure(
    tmp_path: Path,
) -> None:
    """c1's bounce (550) landed, the process died before the round recorded it; c1
    waited a round, then failed 552: the sender was told of c1 once, and is still."""
    failed_full = Outcome(RecipientStatus.FAILED, "5.2.2", "552 5.2.2 mailbox full", "local")
    seen = _rounds_with_restarts(
        tmp_path,
        [
            ({"c1@abc.example": FAILED, "c2@abc.example": DEFERRED}, True),
            ({"c1@abc.example": DEFERRED, "c2@abc.example": DEFERRED}, False),
            ({"c1@abc.example": failed_full, "c2@abc.example": DEFERRED}, False),
        ],
    )
    assert [len(bounces) for bounces in seen] == [1, 1, 1]
    assert _records(_setup(tmp_path, ZONE, 9)) == []


def test_a_copy_made_while_the_entry_is_kept_in_memory_is_not_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refused the record of a recipient sent (the entry kept in memory), then
    the sender's copy of another's bounce landed and the postmaster's copy was refused:
    the round's error wrote the entry kept in memory, and the next round made the
    sender's copy again. The record is no part of the entry: no write undoes it."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    deliver, update = setup.mailboxes.deliver, setup.queue.update
    postmaster_refusals, update_refusals = [1], [1]

    def postmaster_refused(key: Any, *args: Any, **kwargs: Any) -> Path:
        if key == POSTMASTER_BOX and postmaster_refusals[0]:
            postmaster_refusals[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return deliver(key, *args, **kwargs)

    def refused_once(entry: QueueEntry) -> None:
        if update_refusals[0]:
            update_refusals[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        update(entry)

    monkeypatch.setattr(setup.mailboxes, "deliver", postmaster_refused)
    monkeypatch.setattr(setup.queue, "update", refused_once)

    async def sent(*args: object) -> Outcome:
        return Outcome(RecipientStatus.SENT, "2.0.0", "delivered", "local")

    monkeypatch.setattr(setup.worker, "_deliver_local", sent)

    async def main() -> None:
        recipients = [QueuedRecipient("s@abc.example"), QueuedRecipient(POLICY_FAILURE)]
        entry = _enqueue_dsn(setup, recipients)
        for _ in range(2):
            await setup.worker._process(entry.id)
        await setup.worker.aclose(1.0)

    asyncio.run(main())
    assert _queue_empty(setup)
    assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [1, 1]
    assert _records(setup) == []


@pytest.mark.parametrize("action", ["hold", "delete"])
def test_an_action_as_a_stop_cuts_off_a_bounce_copy_does_not_make_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """A ``queue hold`` or ``delete`` given while a round makes the sender's copy, then
    a stop: the copy's thread goes on, and its record lands after the action read the
    queue file, and after it wrote it. A hold kept, released at the next start, made
    the sender's copy again. Now only the postmaster's is made; a deleted message's
    record, left by the copy's thread, goes at the next start."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    stuck = asyncio.Event()
    go_on = threading.Event()
    deliver = setup.mailboxes.deliver
    loops: list[asyncio.AbstractEventLoop] = []

    def held(*args: Any, **kwargs: Any) -> Path:
        loops[0].call_soon_threadsafe(stuck.set)
        go_on.wait(30)
        return deliver(*args, **kwargs)

    monkeypatch.setattr(setup.mailboxes, "deliver", held)

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        entry = _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(stuck.wait(), 5)
            applied = await setup.worker.apply(QueueCommand(action, (entry.id,)))
            setup.worker._running[entry.id].cancel()  # the stop, as the copy is written
            assert await asyncio.wait_for(applied.written, 5)
            landed = asyncio.Event()
            go_on.set()  # the copy's thread, left running by the stop, lands now
            setup.worker.threads.then(lambda: loops[0].call_soon_threadsafe(landed.set))
            await asyncio.wait_for(landed.wait(), 10)
        finally:
            go_on.set()
            await _stop_runs(setup.worker, [task])
        return entry.id

    queue_id = asyncio.run(main())
    monkeypatch.undo()
    assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [1, 0]
    if action == "hold":
        assert setup.queue.load(queue_id).held
        restarted = _restart(tmp_path, release=queue_id)
        assert _copies(restarted, SENDER_BOX, POSTMASTER_BOX) == [1, 1]
    else:
        assert not setup.queue.envelope_path(queue_id).exists()
        restarted = _restart(tmp_path)
        assert _copies(restarted, SENDER_BOX, POSTMASTER_BOX) == [1, 0]
    assert _records(restarted) == []


def test_a_stop_after_a_combined_copy_does_not_make_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local sender with no mailbox: one copy, the sender's and the postmaster's in
    one, goes to the postmaster. A stop after it landed, before the round recorded the
    recipient failed, made it again at the next start."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    stuck = asyncio.Event()
    send_report = setup.worker.send_report

    async def stopped_after(
        queue_id: str, to: str, report: Any, kind: str, **options: Any
    ) -> None:
        await send_report(queue_id, to, report, kind, **options)
        stuck.set()
        await asyncio.Event().wait()  # until the stop cancels the round

    monkeypatch.setattr(setup.worker, "send_report", stopped_after)

    async def until_the_stop() -> None:
        spool = setup.queue.spool()
        spool.write(MESSAGE)
        recipients = [QueuedRecipient(POLICY_FAILURE)]
        entry = setup.queue.prepare(spool, "nobody@abc.example", recipients).commit()
        setup.worker.schedule(entry)
        task = asyncio.get_running_loop().create_task(setup.worker.run())
        try:
            await asyncio.wait_for(stuck.wait(), 5)
        finally:
            await _stop_runs(setup.worker, [task])

    asyncio.run(until_the_stop())
    assert _copies(setup, POSTMASTER_BOX) == [1]
    restarted = _restart(tmp_path)
    assert _copies(restarted, SENDER_BOX, POSTMASTER_BOX) == [0, 1]
    assert _records(restarted) == []


@pytest.mark.parametrize("refused", ["record", "read"])
def test_records_the_disk_refuses_lose_no_bounce_and_repeat_none(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    refused: str,
) -> None:
    """The disk refuses a record (``queue/bounced`` full or unwritable), or its read:
    each copy is made all the same, once, and the round records the bounce; the error
    is logged. A record that broke the round would make the copy again each retry."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=0.05)
    name = "record" if refused == "record" else "unmade"

    def refusing(*args: object) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(setup.queue.bounced, name, refusing)

    async def main() -> None:
        _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [1, 1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("Permission denied" in error for error in errors)
    told = (
        "that copy may be made again at the next attempt"
        if refused == "record"
        else "copy is made whole, for every recipient it reports"
    )
    assert all(told in error for error in errors)


def test_a_refused_record_and_the_other_copy_failing_make_that_copy_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No stop, no crash: the disk refuses the sender copy's record, and the
    postmaster's Maildir its copy, so the round records nothing; the next attempt makes
    the sender's copy again. The docs said only a stop or a crash did that: the ERROR
    line, the docs and this test say it as it is. (The postmaster's Maildir refuses
    the copy twice: whole, then returning the header only.)"""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    postmaster = setup.mailboxes.config.postmaster_key("abc.example")
    deliver, record = setup.mailboxes.deliver, setup.queue.bounced.record
    refusals = {"record": 1, "postmaster": 2}

    def refused_once(what: str) -> None:
        if refusals[what]:
            refusals[what] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def delivered(key: str, *args: Any, **kwargs: Any) -> Path:
        if key == postmaster:
            refused_once("postmaster")
        return deliver(key, *args, **kwargs)

    def recorded(copy: BounceCopy) -> None:
        refused_once("record")
        record(copy)

    monkeypatch.setattr(setup.mailboxes, "deliver", delivered)
    monkeypatch.setattr(setup.queue.bounced, "record", recorded)

    async def main() -> None:
        entry = _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])
        await setup.worker._process(entry.id)
        assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [1, 0]
        await setup.worker._process(entry.id)
        await setup.worker.aclose(1.0)

    asyncio.run(main())
    assert _copies(setup, SENDER_BOX, POSTMASTER_BOX) == [2, 1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("that copy may be made again at the next attempt" in e for e in errors)


# -- a crash at each step -------------------------------------------------------


class _Crash(BaseException):
    """The process dies here: nothing after it runs, no handler of the worker's sees it."""


def _crashing_at(step: int, steps: list[str]) -> Callable[[str, Callable[..., Any]], Any]:
    """A wrapper of the records' disk calls that counts them in ``steps`` and raises
    :class:`_Crash` instead of making call number ``step``."""

    def wrap(name: str, func: Callable[..., Any]) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            steps.append(name)
            if len(steps) == step:
                raise _Crash(name)
            return func(*args, **kwargs)

        return counted

    return wrap


class _CountedOs:
    """The records' ``os`` module, its calls counted (:func:`_crashing_at`)."""

    def __init__(self, wrap: Callable[[str, Callable[..., Any]], Any]) -> None:
        self.scandir = wrap("scandir", os.scandir)
        self.unlink = wrap("unlink", os.unlink)


def _run_crashing(
    tmp_path: Path, step: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], Setup, str]:
    """One round of a two-copy bounce that crashes at the records' disk call ``step``
    (if it comes to it): the calls counted, the setup, the message's id."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    entry = _enqueue_dsn(setup, [QueuedRecipient(POLICY_FAILURE)])  # its id's check uncounted
    steps: list[str] = []
    wrap = _crashing_at(step, steps)
    monkeypatch.setattr(bouncerecords, "os", _CountedOs(wrap))
    disk_calls = ("create_empty", "fsync_directory", "make_private_directory")
    for name in (*disk_calls, "require_real_directory"):
        monkeypatch.setattr(bouncerecords, name, wrap(name, getattr(bouncerecords, name)))

    async def main() -> None:
        try:
            await setup.worker._process(entry.id)
        except _Crash:
            return
        await setup.worker.aclose(1.0)

    asyncio.run(main())
    monkeypatch.undo()
    return steps, setup, entry.id


def _pending(setup: Setup, queue_id: str) -> bool:
    """Whether the message is still queued with its recipient pending."""
    try:
        return setup.queue.load(queue_id).recipients[0].pending
    except FileNotFoundError:
        return False


def test_a_crash_at_any_step_of_the_records_loses_no_bounce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash at each disk call of the records, then a start: each copy is made, and
    made twice only when the crash came as its record was being created (after the copy
    landed, before the record did), the one instant the docs name."""
    all_steps, _, _ = _run_crashing(tmp_path / "whole", 0, monkeypatch)
    assert all_steps.count("create_empty") == 2  # one record per copy
    creating = {"require_real_directory", "make_private_directory", "create_empty"}
    crashes_made_twice = 0
    for step in range(1, len(all_steps) + 1):
        data = tmp_path / str(step)
        steps, crashed, queue_id = _run_crashing(data, step, monkeypatch)
        assert len(steps) == step
        landed = _copies(crashed, SENDER_BOX, POSTMASTER_BOX)
        copies = [
            BounceCopy.of(queue_id, sender=[POLICY_FAILURE]),
            BounceCopy.of(queue_id, postmaster=[POLICY_FAILURE]),
        ]
        pending = _pending(crashed, queue_id)
        recorded = _records(crashed)
        twice = [
            pending and n == 1 and not set(copy.record_names()) <= set(recorded)
            for n, copy in zip(landed, copies, strict=True)
        ]
        if any(twice):  # the crash came in the record's creation, after its copy landed
            assert steps[-1] in creating, steps
            crashes_made_twice += 1
        restarted = _restart(data)
        expected = [1 + again for again in twice]
        assert _copies(restarted, SENDER_BOX, POSTMASTER_BOX) == expected, steps
        assert _records(restarted) == [], steps
    assert crashes_made_twice == 4  # each copy's record: its directory's check, its file


# -- a crash between a queued copy's commit and its records ---------------------


def _queued_bounces(queue: Queue, queue_id: str) -> list[QueueEntry]:
    return [entry for entry in queue.entries() if entry.report_on == queue_id]


def test_a_crash_between_a_queued_copy_and_its_records_does_not_bounce_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bounce to a remote sender is queued (committed, synced), and only then are its
    records made: a crash between the two left the recipient pending with no record,
    and the next start bounced it again (11 of 125 messages under random kills). The
    queued copy now carries its records' names, and the start makes those missing."""
    setup = _setup(tmp_path, ZONE, 9, retry_after=60)
    entry = setup.queue.add(MESSAGE, "sender@pqr.example", ["nobody@nowhere.example"])

    def crashed(copy: BounceCopy) -> None:
        raise _Crash

    with monkeypatch.context() as patch:
        patch.setattr(setup.queue.bounced, "record", crashed)
        with pytest.raises(_Crash):
            asyncio.run(setup.worker._process(entry.id))
    (first,) = _queued_bounces(setup.queue, entry.id)
    assert first.recipients[0].address == "sender@pqr.example"
    assert setup.queue.load(entry.id).recipients[0].pending
    assert _records(setup) == []

    caplog.set_level(logging.INFO, "smtpcore.mail")
    restarted = _setup(tmp_path, ZONE, 9, retry_after=60)
    assert _records(restarted) == sorted(first.bounce_records)
    assert f"{entry.id}: bounce queued before a stop, as {first.id}" in caplog.text
    asyncio.run(restarted.worker._process(entry.id))
    assert _queued_bounces(restarted.queue, entry.id) == [first]
    assert "made in an earlier attempt: not made again" in caplog.text
    assert not restarted.queue.has(entry.id)
    assert _records(restarted) == []


def test_only_the_records_of_recipients_still_pending_are_made_again(tmp_path: Path) -> None:
    """A recipient the round recorded failed after the copy was queued has no record to
    make: the round removed them, and nothing reports it again. Names the copy does not
    give for a recipient of its message (a file edited by hand) make nothing either."""
    queue = Queue(tmp_path / "queue")
    queue.open()
    entry = queue.add(MESSAGE, "sender@pqr.example", ["a@pqr.example", "b@pqr.example"])
    copy = BounceCopy.of(entry.id, sender=["a@pqr.example", "b@pqr.example", "c@pqr.example"])
    queue.add(
        b"Subject: bounce\r\n\r\nx\r\n",
        "",
        ["sender@pqr.example"],
        report_on=entry.id,
        bounce_records=sorted(copy.record_names()),
    )
    failed = QueuedRecipient("b@pqr.example", RecipientStatus.FAILED, "550 no", "5.1.1")
    queue.update(entry.with_recipients({"b@pqr.example": failed}))
    Queue(tmp_path / "queue").open()
    assert queue.bounced.unmade(copy) == BounceCopy.of(
        entry.id, sender=["b@pqr.example", "c@pqr.example"]
    )
