"""A stop that cuts a session off while its message is being committed.

A 4xx to the end of the data says the message was not taken (RFC 5321 §4.2.5,
§6.1), and the client sends it again: a ``421`` for a message that is stored all the
same is a duplicate every time. A handler says where its commit begins
(``Session.begin_commit``); from there the cut-off waits for the hook's own reply
through its last words, and past them closes with no reply at all. Order of events
only: the cut-off is seen happen (``SessionRegistry.cut_off``), never timed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from peers import RawSmtpSession, raw_smtp_session, running_smtp_server
from smtpcore._driver._listener import SessionRegistry
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply

CONTENT = b"Subject: in flight\r\n\r\nbody\r\n"


@pytest.fixture
def cut_off(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once a shutdown's grace is over and its cut-off has reached the sessions."""
    done = threading.Event()
    original = SessionRegistry.cut_off

    def seen(self: SessionRegistry[Any]) -> None:
        original(self)
        done.set()

    monkeypatch.setattr(SessionRegistry, "cut_off", seen)
    return done


class Committing(Handler):
    """Takes every recipient; commits each message in a thread that waits for
    :attr:`release`, after ``begin_commit``."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.committing = threading.Event()
        self.release = threading.Event()
        self.stored: list[bytes] = []

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        session.begin_commit()
        self.committing.set()
        await self._in_thread(self._store, envelope.content)
        return Reply(250, "OK: stored", "2.0.0")

    def _store(self, content: bytes) -> None:
        self.release.wait(20)
        self.stored.append(content)

    async def _in_thread(self, work: Callable[[bytes], None], content: bytes) -> None:
        # Cancelled, both leave the thread running, as a disk write goes on.
        if self.adapter == "asyncio":
            await asyncio.to_thread(work, content)
        else:
            import trio

            await trio.to_thread.run_sync(work, content, abandon_on_cancel=True)


def _send_message(s: RawSmtpSession) -> None:
    assert s.recv_reply().startswith(b"220")
    s.command(b"EHLO client.test")
    s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
    assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    s.send(CONTENT + b".\r\n")


def _stop(server: Any) -> threading.Thread:
    async def close() -> None:
        await server.server.aclose(grace=0)

    stopping = threading.Thread(target=server.call, args=(close,))
    stopping.start()
    return stopping


def test_a_commit_that_ends_after_the_cut_off_gets_its_own_reply(
    adapter: str, cut_off: threading.Event
) -> None:
    """The cut-off came as the handler committed: the client heard ``421 4.3.2`` (the
    message not taken) and the message was stored all the same. Now it hears the
    handler's 250, then the 421 that ends the session."""
    handler = Committing(adapter)
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        _send_message(s)
        assert handler.committing.wait(10)
        stopping = _stop(server)
        assert cut_off.wait(10)
        handler.release.set()
        assert s.recv_reply().startswith(b"250 2.0.0 OK: stored")
        assert s.recv_reply().startswith(b"421 4.3.2 ")
        assert s.recv_some() == b""
        stopping.join(10)
        assert not stopping.is_alive()
    assert handler.stored == [CONTENT]


def test_a_commit_that_outlives_the_cut_off_ends_the_session_with_no_reply(
    adapter: str, cut_off: threading.Event
) -> None:
    """Past the cut-off's last words the session is cancelled: its reply is unknown, so
    it closes with none (a lost reply may cause a duplicate, RFC 1047), never with the
    421 that makes one certain."""
    handler = Committing(adapter)
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        _send_message(s)
        assert handler.committing.wait(10)
        stopping = _stop(server)
        assert cut_off.wait(10)
        try:
            assert s.recv_some() == b""  # closed, with nothing said
        finally:
            handler.release.set()
        stopping.join(10)
        assert not stopping.is_alive()
    assert handler.stored == [CONTENT]
