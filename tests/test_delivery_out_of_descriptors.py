"""A queue round whose queue file cannot be read, the process out of descriptors. Each
such round logged four errors with their tracebacks (``delivery failed``, ``cannot make
the success report owed``, though nothing had succeeded, ``cannot finish the failed
round``, ``cannot record the failed round``): each step read the file again, and failed
again. A full disk gets one line a round; so does this now, and the message is still
delivered once descriptors are back."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import pytest

from smtpcore.server.maildir import Maildir
from test_server_delivery import MESSAGE, ZONE, _queue_empty, _run_until, _setup


def test_a_round_out_of_descriptors_logs_one_warning_and_the_mail_is_delivered_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    setup = _setup(tmp_path, ZONE, 1, retry_after=0.05)
    entry = setup.queue.add(MESSAGE, "someone@pqr.example", ["john@abc.example"])
    real_load = setup.queue.load
    short_of_descriptors = [True]

    def load(queue_id: str) -> object:
        if short_of_descriptors[0]:
            path = setup.queue.envelope_path(queue_id)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
        return real_load(queue_id)

    monkeypatch.setattr(setup.queue, "load", load)
    caplog.set_level(logging.INFO, "smtpcore")

    async def main() -> None:
        for _ in range(3):
            await setup.worker._process(entry.id)
            assert entry.id in setup.worker._due  # tried again later, not forgotten
        short_of_descriptors[0] = False
        await _run_until(setup, lambda: _queue_empty(setup))

    asyncio.run(main())
    box = Maildir(setup.mailboxes.config.mailbox_path("john@abc.example"))
    assert len(box.messages()) == 1
    troubles = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelno, r.exc_info) for r in troubles] == [(logging.WARNING, None)] * 3
    assert all("Too many open files" in r.getMessage() for r in troubles)


def test_a_round_that_breaks_after_its_queue_file_was_read_counts_and_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a queue file unread is retried as it is: a round that read it, then broke (the
    content file's stat failing, EIO), counts its attempt and bounces at
    ``max_queue_age`` (RFC 5321 §6.1), not tried at the first wait for ever."""
    now = [1000.0]
    setup = _setup(tmp_path, ZONE, 1, retry_after=60, max_queue_age=3600, clock=lambda: now[0])
    entry = setup.queue.add(MESSAGE, "someone@pqr.example", ["john@abc.example"])
    content = setup.queue.content_path(entry.id)
    real_exists = Path.exists

    def exists(path: Path) -> bool:
        if path == content:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_exists(path)

    monkeypatch.setattr(Path, "exists", exists)

    async def main() -> None:
        for attempts in (1, 2, 3):
            await setup.worker._process(entry.id)
            assert setup.queue.load(entry.id).attempts == attempts
            now[0] += 1200.0
        await setup.worker._process(entry.id)  # past max_queue_age: bounced

    asyncio.run(main())
    assert entry.id not in setup.queue.ids()


def test_a_queue_file_unread_for_want_of_kernel_buffers_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``ENOBUFS`` is the host short of memory, as a listener's rest takes it: waited
    out with one warning, not logged as a fault with its traceback."""
    setup = _setup(tmp_path, ZONE, 1)
    entry = setup.queue.add(MESSAGE, "someone@pqr.example", ["john@abc.example"])

    def load(queue_id: str) -> object:
        raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))

    monkeypatch.setattr(setup.queue, "load", load)
    caplog.set_level(logging.INFO, "smtpcore")
    asyncio.run(setup.worker._process(entry.id))
    troubles = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelno, r.exc_info) for r in troubles] == [(logging.WARNING, None)]
    assert entry.id in setup.worker._due
