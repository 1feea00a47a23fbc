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
import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import smtpcore.server.queuectl
from peers import RawSmtpSession, raw_smtp_session, running_smtp_server
from smtpcore import LocalProtocolError
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore.asyncio import Timeouts
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.server import MailServer, ServerConfig
from smtpcore.server.app import MailStore
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from smtpcore.smtp import Mail, Rcpt, Reply

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
        self.done = threading.Event()

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
        self.done.set()

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
    assert handler.done.wait(10)  # an abandoned thread may end after the server
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
    assert handler.done.wait(10)  # an abandoned thread may end after the server
    assert handler.stored == [CONTENT]


def test_a_commit_that_outlives_the_data_termination_timeout_ends_with_no_reply(
    adapter: str,
) -> None:
    """The ``data_termination`` timeout cancels a hook that began its commit: the client
    heard ``451 4.3.0`` (the message not taken) and the write landed all the same, a
    duplicate once it sent it again. Now the session closes with no reply, as past a
    cut-off's last words."""
    handler = Committing(adapter)
    timeouts = Timeouts(data_termination=0.2)
    with (
        running_smtp_server(adapter, handler, timeouts=timeouts) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        _send_message(s)
        assert handler.committing.wait(10)
        try:
            assert s.recv_some() == b""  # closed, with nothing said
        finally:
            handler.release.set()
    assert handler.done.wait(10)
    assert handler.stored == [CONTENT]


class CommitThenOwnTimeout(Handler):
    """Begins its commit, then its own wait (a database's ``wait_for``) times out."""

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        session.begin_commit()
        raise TimeoutError("the database did not answer")


def test_a_handlers_own_timeout_error_after_begin_commit_is_its_failure(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``TimeoutError`` the handler raised itself was taken for the
    ``data_termination`` timeout (on asyncio; trio's own ``TooSlowError`` was not): the
    session closed with no reply and a false reason, no traceback. It is the hook's
    failure, as any other exception: ``451 4.3.0``, its reject line and traceback."""
    with (
        caplog.at_level(logging.WARNING, logger="smtpcore"),
        running_smtp_server(adapter, CommitThenOwnTimeout()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        _send_message(s)
        assert s.recv_reply().startswith(b"451 4.3.0 ")
    assert not [r for r in caplog.records if "data_termination" in r.getMessage()]
    failed = [r for r in caplog.records if r.getMessage() == "handle_message failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert isinstance(failed[0].exc_info[1], TimeoutError)
    assert any("reject: DATA" in r.getMessage() for r in caplog.records)


class CommitsTooEarly(Handler):
    """Calls ``begin_commit`` from ``handle_data_chunk``, where no message is taken yet."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []
        self.committing_at_mail: list[bool] = []

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        self.committing_at_mail.append(session.committing)
        return None

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return Reply(250, "OK")

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        try:
            session.begin_commit()
        except LocalProtocolError as exc:
            self.raised.append(exc)
            raise
        raise OSError("disk full")


def test_begin_commit_outside_handle_message_is_refused_and_marks_nothing(
    adapter: str,
) -> None:
    """``begin_commit`` in ``handle_data_chunk``, whose failure then refused the message:
    the mark outlived it, and the next transaction of that session was a commit for a
    shutdown's cut-off, closed with no 421. Now the call raises, and no mark is left."""
    handler = CommitsTooEarly()
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        for _ in range(2):
            if not handler.committing_at_mail:
                _send_message(s)
            else:
                s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
                assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
                s.send(CONTENT + b".\r\n")
            assert s.recv_reply().startswith(b"451 4.3.0 ")
    assert handler.committing_at_mail == [False, False]
    assert len(handler.raised) == 2


def test_begin_commit_outside_a_transaction_raises() -> None:
    session = Session("mx.test")
    with pytest.raises(LocalProtocolError):
        session.begin_commit()
    session.envelope = Envelope(None)  # its content still coming
    with pytest.raises(LocalProtocolError):
        session.begin_commit()
    assert not session.committing


# -- the reference server -----------------------------------------------------------------


def _config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        domains=("abc.example",),
        users={"a@abc.example": "pw"},
        data_dir=tmp_path / "abc.example",
        hostname="mx.abc.example",
        submission_port=0,
        pop3_port=0,
        min_free_space=0,
    )


class _SlowStore:
    """``MailStore.accept`` held until :attr:`release`, then done, or failed with
    ``failure``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failure: OSError | None = None) -> None:
        self.storing = threading.Event()
        self.release = threading.Event()
        accept = MailStore.accept

        def slowly(store: MailStore, *args: Any, **kwargs: Any) -> Any:
            self.storing.set()
            self.release.wait(20)
            if failure is not None:
                raise failure
            return accept(store, *args, **kwargs)

        monkeypatch.setattr(MailStore, "accept", slowly)


async def _serve_one(
    tmp_path: Path, store: _SlowStore, cut_off: threading.Event, *, release_at: str
) -> list[bytes]:
    """Send one message to the reference server, stop it while the message is stored,
    let the store go on at ``release_at`` (``"cut-off"``, or ``"close"``: once the
    client saw the connection end), and give what the client heard after the dot."""
    config = _config(tmp_path)
    server = MailServer(config, sockets={"smtp": _listening()})
    await server.start()
    [port] = [listener.port for listener in server.listeners if listener.name == "smtp"]
    heard: list[bytes] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        for line in ("EHLO c.example", "MAIL FROM:<x@pqr.example>", "RCPT TO:<a@abc.example>"):
            writer.write(f"{line}\r\n".encode())
            while (await reader.readline())[3:4] == b"-":
                pass
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        writer.write(CONTENT + b".\r\n")
        assert await asyncio.to_thread(store.storing.wait, 10)
        stopping = asyncio.get_running_loop().create_task(server.aclose(grace=0))
        assert await asyncio.to_thread(cut_off.wait, 10)
        if release_at == "cut-off":
            store.release.set()
        while line_read := await reader.readline():
            heard.append(line_read)
        store.release.set()
        writer.close()
        await stopping
        await server.lock_released()
    finally:
        store.release.set()
        await server.aclose(grace=0)
    return heard


def _log_lock_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``LOCK RELEASED`` line in the server's log as the data directory's lock goes."""
    release_lock = smtpcore.server.queuectl.release_lock

    def logged(fd: int) -> None:
        logging.getLogger("smtpcore.mail").info("LOCK RELEASED")
        release_lock(fd)

    monkeypatch.setattr("smtpcore.server.mailserver.release_lock", logged)


def _listening() -> Any:
    import socket

    return socket.create_server(("127.0.0.1", 0))


def _stored(tmp_path: Path) -> list[bytes]:
    config = _config(tmp_path)
    return [p.read_bytes() for p in Maildir(config.mailbox_path("a@abc.example")).messages()]


def _run(heard: Any) -> list[bytes]:
    result: list[bytes] = asyncio.run(asyncio.wait_for(heard, 30))
    return result


def test_the_reference_server_answers_a_message_stored_after_the_cut_off_250(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cut_off: threading.Event,
) -> None:
    """The audit's case (``serve --stop-timeout 0.1``, SIGTERM just after the final dot
    of a large message): the client heard ``421 4.3.2`` and the message was in the
    mailbox, with no ``from=`` line in the log and ``messages=0``. Now the client hears
    the 250 with its queue id, and the log has the message."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    store = _SlowStore(monkeypatch)
    heard = _run(_serve_one(tmp_path, store, cut_off, release_at="cut-off"))
    assert heard[0].startswith(b"250 2.0.0 Ok: queued as ")
    assert [line[:9] for line in heard[1:]] == [b"421 4.3.2"]
    queue_id = heard[0].split()[-1].decode()
    [stored] = _stored(tmp_path)
    assert stored.endswith(CONTENT.replace(b"\r\n", b"\n"))
    log = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"{queue_id}: from=<x@pqr.example>") for line in log)
    assert any("disconnect from" in line and f"messages=1 ({queue_id})" in line for line in log)


def test_the_reference_server_closes_with_no_reply_when_the_store_outlives_the_cut_off(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cut_off: threading.Event,
) -> None:
    """A store slower than the grace and the cut-off's last words: the client hears
    nothing (never a 421 for a message that lands), and the log says what landed and
    that the client was not told."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    _log_lock_release(monkeypatch)
    store = _SlowStore(monkeypatch)
    heard = _run(_serve_one(tmp_path, store, cut_off, release_at="close"))
    assert heard == []
    [stored] = _stored(tmp_path)
    assert stored.endswith(CONTENT.replace(b"\r\n", b"\n"))
    log = [r.getMessage() for r in caplog.records]
    [landed] = [line for line in log if "stored after its session was closed" in line]
    queue_id = landed.split(":")[0]
    assert "the client was not told, and may send it again" in landed
    # What the log says of it comes before the data directory's lock goes (the queue is
    # the server's until then); the disconnect line, written as the session closed, first.
    assert [line.split(" from")[0] for line in log if "from" in line or "LOCK" in line] == [
        "smtp: disconnect",
        f"{queue_id}:",
        "LOCK RELEASED",
    ]
    assert any(line.startswith(f"{queue_id}: to=<a@abc.example>") for line in log)
    assert log.index(landed) < log.index("LOCK RELEASED")


@pytest.mark.parametrize("loop_at_landing", ["closed", "stopped"])
def test_the_data_directory_lock_goes_when_a_late_store_ends_after_the_loop_stopped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cut_off: threading.Event,
    loop_at_landing: str,
) -> None:
    """An embedder's server stopped while a message is stored, its loop closed, or
    only stopped (``loop.run_until_complete(server.aclose())``, closed later or never),
    before the store ends: the lock waited for a callback on that loop, which never
    ran, and was held until the process exited (the late lines lost too). Now the
    store's thread, finding the loop not running, logs what landed and lets the lock
    go."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    released = threading.Event()
    release_lock = smtpcore.server.queuectl.release_lock

    def seen(fd: int) -> None:
        release_lock(fd)
        released.set()

    monkeypatch.setattr("smtpcore.server.mailserver.release_lock", seen)
    store = _SlowStore(monkeypatch)

    async def stop_while_storing() -> None:
        server = MailServer(_config(tmp_path), sockets={"smtp": _listening()})
        await server.start()
        [port] = [listener.port for listener in server.listeners if listener.name == "smtp"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        for line in ("EHLO c.example", "MAIL FROM:<x@pqr.example>", "RCPT TO:<a@abc.example>"):
            writer.write(f"{line}\r\n".encode())
            while (await reader.readline())[3:4] == b"-":
                pass
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        writer.write(CONTENT + b".\r\n")
        assert await asyncio.to_thread(store.storing.wait, 10)
        await server.aclose(grace=0)  # past the cut-off: the store runs on
        assert cut_off.is_set()
        writer.close()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(stop_while_storing(), 30))
        if loop_at_landing == "stopped":
            store.release.set()
            assert released.wait(10)  # the loop not closed, nor run again
    finally:
        loop.close()
        store.release.set()
    assert released.wait(10)
    [stored] = _stored(tmp_path)
    assert stored.endswith(CONTENT.replace(b"\r\n", b"\n"))
    [late] = [
        r.getMessage()
        for r in caplog.records
        if "after the event loop had stopped" in r.getMessage()
    ]
    assert ": the store landed after the event loop had stopped" in late
    assert late.endswith("the client was not told, and may send it again")


def test_the_reference_server_still_refuses_a_message_its_store_fails_after_the_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_off: threading.Event
) -> None:
    """A store that fails in that window leaves nothing stored: the client hears its 4xx,
    as it would have without the stop, and sends the message again."""
    store = _SlowStore(monkeypatch, OSError(errno.EIO, "Input/output error"))
    heard = _run(_serve_one(tmp_path, store, cut_off, release_at="cut-off"))
    assert heard[0].startswith(b"451 4.3.0 ")
    assert [line[:9] for line in heard[1:]] == [b"421 4.3.2"]
    assert _stored(tmp_path) == []


def _lmtp_cut_off(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cut_off: threading.Event,
    recipients: list[str],
) -> tuple[list[bytes], list[str], ServerConfig]:
    """One message to the reference LMTP server for ``recipients``, ``b``'s copy slower
    than a stop's cut-off: what the client heard, whom ``on_delivery`` was told of, and
    the server's configuration (users ``a``, ``b`` and ``c``)."""
    writing, release = threading.Event(), threading.Event()
    deliver_file = LocalMailboxes.deliver_file

    def slow_for_b(mailboxes: LocalMailboxes, key: str, *args: Any) -> Path:
        if key.startswith("b"):
            writing.set()
            release.wait(20)
        return deliver_file(mailboxes, key, *args)

    monkeypatch.setattr(LocalMailboxes, "deliver_file", slow_for_b)
    config = ServerConfig(
        domains=("abc.example",),
        users={f"{user}@abc.example": "pw" for user in "abc"},
        data_dir=tmp_path / "abc.example",
        hostname="mx.abc.example",
        smtp_port=0,
        submission_port=0,
        pop3_port=0,
        lmtp_port=1,  # on; the socket below replaces the port
        min_free_space=0,
    )
    announced: list[str] = []

    async def deliver() -> list[bytes]:
        server = MailServer(
            config,
            sockets={"lmtp": _listening()},
            on_delivery=lambda key, path: announced.append(key),
        )
        await server.start()
        [port] = [listener.port for listener in server.listeners if listener.name == "lmtp"]
        heard: list[bytes] = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            rcpts = [f"RCPT TO:<{address}>" for address in recipients]
            for line in ("LHLO c.example", "MAIL FROM:<x@pqr.example>", *rcpts, "DATA"):
                writer.write(f"{line}\r\n".encode())
                while (await reader.readline())[3:4] == b"-":
                    pass
            writer.write(CONTENT + b".\r\n")
            assert await asyncio.to_thread(writing.wait, 10)
            stopping = asyncio.get_running_loop().create_task(server.aclose(grace=0))
            assert await asyncio.to_thread(cut_off.wait, 10)
            while line_read := await reader.readline():
                heard.append(line_read)
            release.set()
            writer.close()
            await stopping
            await server.lock_released()
        finally:
            release.set()
            await server.aclose(grace=0)
        return heard

    return _run(deliver()), announced, config


def _copies(config: ServerConfig, user: str) -> int:
    return len(list(Maildir(config.mailbox_path(f"{user}@abc.example")).messages()))


def test_the_reference_lmtp_server_logs_and_announces_the_copies_that_land_after_the_cut_off(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cut_off: threading.Event,
) -> None:
    """LMTP, two mailboxes, the second copy slower than the cut-off's last words: both
    copies landed, the client heard nothing, but the log had no ``from=`` or
    ``status=sent`` line and ``on_delivery`` was never called, for either copy. Now the
    copy being written is seen land, and both are logged and announced."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    recipients = ["a@abc.example", "b@abc.example"]
    heard, announced, config = _lmtp_cut_off(tmp_path, monkeypatch, cut_off, recipients)
    assert heard == []
    assert [_copies(config, user) for user in "ab"] == [1, 1]
    assert sorted(announced) == recipients
    log = [r.getMessage() for r in caplog.records]
    [sender_line] = [line for line in log if ": from=<x@pqr.example>" in line]
    queue_id = sender_line.split(":")[0]
    for user in recipients:
        assert any(
            line.startswith(f"{queue_id}: to=<{user}>") and "status=sent" in line for line in log
        )
    [landed] = [line for line in log if "after its session was closed" in line]
    assert landed.startswith(f"{queue_id}: delivered to a@abc.example, b@abc.example after")


def test_the_reference_lmtp_server_names_every_recipient_after_the_copy_cut_off(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cut_off: threading.Event,
) -> None:
    """RCPT a, b, B (b's mailbox), c, and b's copy landing after the cut-off: B's
    mailbox had the copy, but B got no ``to=`` line nor ``on_delivery``, and c, which
    got no copy, was named nowhere. Now B is delivered as its reply would have said,
    and c is named, not delivered."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    recipients = ["a@abc.example", "b@abc.example", "B@abc.example", "c@abc.example"]
    heard, announced, config = _lmtp_cut_off(tmp_path, monkeypatch, cut_off, recipients)
    assert heard == []
    assert [_copies(config, user) for user in "abc"] == [1, 1, 0]
    assert announced == ["a@abc.example", "b@abc.example", "b@abc.example"]  # as for a 250
    log = [r.getMessage() for r in caplog.records]
    [sender_line] = [line for line in log if ": from=<x@pqr.example>" in line]
    queue_id = sender_line.split(":")[0]
    sent = [line.split(">")[0] for line in log if "status=sent" in line]
    assert sent == [f"{queue_id}: to=<{user}" for user in recipients[:3]]
    [landed] = [line for line in log if "after its session was closed" in line]
    assert landed.startswith(
        f"{queue_id}: delivered to a@abc.example, b@abc.example, B@abc.example after"
    )
    assert f"{queue_id}: not delivered to c@abc.example: the client may send it again" in log
