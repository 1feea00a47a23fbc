"""The SMTP server of both adapters, one suite run on asyncio and on trio.

Each test serves a handler from a thread (``peers.running_smtp_server``) and
talks to it with blocking clients: smtplib, or raw sockets where the bytes
on the wire are the point (pipelining, STARTTLS injection, a peer that
vanishes mid-command).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import errno
import functools
import gc
import logging
import math
import os
import smtplib
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peers import (
    LOOPBACK,
    RawSmtpSession,
    TLSFiles,
    dual_stack_loopback,
    module,
    open_fd_count,
    raise_fd_limit,
    raw_smtp_session,
    run,
    running_smtp_server,
    until,
)
from smtpcore._asyncio_raw import RawSocketTransport
from smtpcore._driver import POP3Timeouts, Timeouts
from smtpcore._driver._failures import BY_ERRNO, LOCAL_ERROR, failure_reply, no_room
from smtpcore.address import Mailbox
from smtpcore.handler import Envelope, Handler, MessageReply, Recipient, Session
from smtpcore.smtp import Ehlo, Helo, Lhlo, Mail, Rcpt, Reply
from smtpcore.smtp._commands import parse_everyday_line

MESSAGE = b"Subject: test\r\n\r\n.a line that starts with a dot\r\nlast line\r\n"


class Recorder(Handler):
    """Accepts recipients at pqr.example, records what it sees, thread-safely enough."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.events: list[str] = []
        self.sessions: list[Session] = []
        self.closed = threading.Event()
        self.closed_count = 0

    async def handle_connect(self, session: Session) -> Reply | None:
        self.sessions.append(session)
        return None

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        self.events.append(f"hello {command.domain}")
        return None

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        self.events.append(f"mail {command.sender}")
        return None

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        if command.recipient.domain == "pqr.example":
            return Reply(250, "OK")
        return await super().handle_rcpt(session, envelope, command)

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope)
        return None

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        self.events.append("reset")

    async def handle_close(self, session: Session) -> None:
        self.closed_count += 1
        self.closed.set()


def wait_until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- a plain session ---------------------------------------------------------------


def test_smtplib_delivers_and_refused_recipients_are_reported(adapter: str) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        refused = client.sendmail(
            "alice@abc.example", ["bob@pqr.example", "eve@xyz.example"], MESSAGE
        )
        assert set(refused) == {"eve@xyz.example"}
        assert refused["eve@xyz.example"][0] == 550
    [envelope] = handler.messages
    assert str(envelope.sender) == "alice@abc.example"
    assert [str(r.mailbox) for r in envelope.recipients] == ["bob@pqr.example"]
    assert envelope.content == MESSAGE
    assert envelope.size == len(MESSAGE)
    session = handler.sessions[0]
    assert session.helo_name == "client.test" and session.extended
    assert session.peer is not None and session.peer[0] == "127.0.0.1"
    assert session.tls is None and session.authenticated is None


def test_default_handler_refuses_every_recipient(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Handler()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        assert s.recv_reply().startswith(b"220 mx.test")
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@abc.example>").startswith(b"250 2.1.0")
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"550 5.1.1")
        assert s.command(b"DATA").startswith(b"554")
        assert s.command(b"QUIT").startswith(b"221")


def test_pipelined_commands_are_answered_in_order_in_one_write(adapter: str) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        ehlo = s.command(b"EHLO client.test")
        assert b"250-PIPELINING" in ehlo and b"STARTTLS" not in ehlo
        s.send(
            b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n"
            b"RCPT TO:<c@xyz.example>\r\nRCPT TO:<d@pqr.example>\r\nDATA\r\n"
        )
        codes = [s.recv_reply()[:3] for _ in range(5)]
        assert codes == [b"250", b"250", b"550", b"250", b"354"]
        s.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\nRSET\r\nNOOP\r\n")
        assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"250"]
        assert s.command(b"QUIT").startswith(b"221")
    [envelope] = handler.messages
    assert [r.mailbox.local_part for r in envelope.recipients] == ["b", "d"]
    assert envelope.content == MESSAGE


def test_the_envelope_and_recipients_are_those_their_constructors_build(adapter: str) -> None:
    """The session builds each envelope and recipient without their constructors: every
    field is what ``Envelope(...)`` and ``Recipient(...)`` would give."""
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.send(b"MAIL FROM:<a@abc.example> BODY=8BITMIME\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
        assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        s.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert s.recv_reply().startswith(b"250")
    [envelope] = handler.messages
    mail = parse_everyday_line(b"MAIL FROM:<a@abc.example> BODY=8BITMIME\r\n")
    rcpt = parse_everyday_line(b"RCPT TO:<b@pqr.example>\r\n")
    assert isinstance(mail, Mail) and isinstance(rcpt, Rcpt)
    expected = Envelope(mail.sender, mail.params, recipients=[Recipient(rcpt.recipient)])
    expected.content, expected.size = MESSAGE, len(MESSAGE)
    for each in dataclasses.fields(Envelope):
        assert getattr(envelope, each.name) == getattr(expected, each.name), each.name
    assert envelope.recipients[0] == expected.recipients[0]
    assert type(envelope.recipients) is list and type(envelope.chunks) is list


def test_bdat_chunks_are_delivered(adapter: str) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert b"CHUNKING" in s.command(b"EHLO client.test")
        first, second = MESSAGE[:20], MESSAGE[20:]
        s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n")
        s.send(b"BDAT %d\r\n" % len(first) + first + b"BDAT %d LAST\r\n" % len(second))
        s.send(second)
        codes = [s.recv_reply()[:3] for _ in range(4)]
        assert codes == [b"250", b"250", b"250", b"250"]
        assert s.command(b"QUIT").startswith(b"221")
    [envelope] = handler.messages
    assert envelope.content == MESSAGE


def test_bad_commands_get_the_machines_reply_and_the_session_goes_on(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Recorder()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert s.command(b"FROB").startswith(b"500 5.5.2")
        assert s.command(b"MAIL FROM:<a@abc.example>").startswith(b"503")
        assert s.command(b"EHLO client.test").startswith(b"250-mx.test")
        assert s.command(b"MAIL FROM:<not an address>").startswith(b"501")
        assert s.command(b"VRFY bob").startswith(b"252")
        assert s.command(b"EXPN staff").startswith(b"502")
        assert s.command(b"HELP").startswith(b"214")
        assert s.command(b"STARTTLS").startswith(b"500")  # not offered without a context
        assert s.command(b"NOOP").startswith(b"250")


def test_a_dual_stack_socket_names_both_ends_of_an_ipv4_client_in_ipv4(adapter: str) -> None:
    """RFC 4291 §2.5.5.2: on a dual-stack socket an IPv4 client, and the address it
    reached, come IPv4-mapped (``::ffff:127.0.0.1``); the session knows both as IPv4
    addresses, ``local`` as well as ``peer``, so that the two are in one family."""
    handler = Recorder()
    with running_smtp_server(adapter, handler, sock=dual_stack_loopback()) as server:
        port = server.port
        with raw_smtp_session("127.0.0.1", port) as s:
            s.recv_reply()
            assert s.command(b"QUIT").startswith(b"221")
        server.wait_for_sessions(0)
    [session] = handler.sessions
    assert session.peer is not None and session.peer[0] == "127.0.0.1"
    assert session.local == ("127.0.0.1", port)


class Expander(Recorder):
    async def handle_expn(self, session: Session, argument: str) -> Reply | None:
        if argument == "staff":
            return Reply(250, ["Alice <alice@pqr.example>", "Bob <bob@pqr.example>"])
        return None


def test_help_lists_this_sessions_commands_and_expn_has_a_hook(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Expander()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert s.command(b"HELO client.test").startswith(b"250")
        helo_help = s.command(b"HELP")
        assert helo_help.startswith(b"214") and b"MAIL" in helo_help
        assert b"BDAT" not in helo_help  # a HELO session has no extension
        # Known to a session opened with EHLO: out of sequence (an empty chunk to skip).
        assert s.command(b"BDAT 0 LAST").startswith(b"503 5.5.1")
        assert s.command(b"EHLO client.test").startswith(b"250-mx.test")
        assert b"BDAT" in s.command(b"HELP")
        assert s.command(b"EXPN staff") == (
            b"250-2.0.0 Alice <alice@pqr.example>\r\n250 2.0.0 Bob <bob@pqr.example>\r\n"
        )
        assert s.command(b"EXPN nobody").startswith(b"502 5.5.1")


def test_oversized_message_is_read_to_its_end_then_refused(adapter: str) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler, max_message_size=1000) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@abc.example> SIZE=5000").startswith(b"552")
        s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
        assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        s.send((b"y" * 78 + b"\r\n") * 60 + b".\r\n")
        assert s.recv_reply().startswith(b"552 5.3.4")
        with smtplib.SMTP(server.host, server.port) as client:
            assert client.sendmail("a@abc.example", ["b@pqr.example"], MESSAGE) == {}
    assert [e.content for e in handler.messages] == [MESSAGE]
    assert "reset" in handler.events


class Failing(Recorder):
    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        if command.sender is not None and command.sender.local_part == "boom":
            raise RuntimeError("a bug in the handler")
        return None

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return Reply(354, "not a legal answer to the end of a message")


def test_a_failing_hook_becomes_451_and_the_session_goes_on(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        running_smtp_server(adapter, Failing()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<boom@abc.example>").startswith(b"451 4.3.0")
        assert s.command(b"MAIL FROM:<ok@abc.example>").startswith(b"250")
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
        assert s.command(b"DATA").startswith(b"354")
        assert s.command(b"hello\r\n.").startswith(b"451 4.3.0")
        assert s.command(b"QUIT").startswith(b"221")
    assert "a bug in the handler" in caplog.text


class DiskFull(Recorder):
    """A handler that writes each chunk to disk, on a disk that fills up: the chunk
    says ``fill`` (ENOSPC), or the end of a message says ``quota`` (EDQUOT) or ``io``
    (EIO, a fault of another kind)."""

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        if b"fill" in data:
            raise OSError(errno.ENOSPC, "No space left on device")
        await super().handle_data_chunk(session, envelope, data)

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        for word, code in ((b"quota", errno.EDQUOT), (b"io", errno.EIO)):
            if word in envelope.content:
                raise OSError(code, os.strerror(code))
        return None


def test_a_full_disk_under_a_content_hook_is_452_and_the_session_goes_on(adapter: str) -> None:
    """RFC 5321 §4.2.2 452, RFC 3463 X.3.1: temporary, as 451 is, but the client
    learns the disk is full; any other fault stays 451 4.3.0."""
    with (
        running_smtp_server(adapter, DiskFull()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        for content, reply in [
            (b"fill\r\n.", b"452 4.3.1 Insufficient system storage"),
            (b"quota\r\n.", b"452 4.3.1 Insufficient system storage"),
            (b"io\r\n.", b"451 4.3.0 Local error in processing"),
            (b"fine\r\n.", b"250 "),
        ]:
            s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
            assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
            assert s.command(content).startswith(reply)
        assert s.command(b"QUIT").startswith(b"221")


NO_ROOM_ERRORS = {
    "nospc": errno.ENOSPC,
    "dquot": errno.EDQUOT,
    "fbig": errno.EFBIG,
    "io": errno.EIO,
}


if sys.version_info >= (3, 11):

    def exception_group(failures: Sequence[Exception]) -> Exception:
        """What a hook raises when tasks of its own (a task group, a nursery) failed."""
        return builtins.ExceptionGroup("the hook's tasks failed", failures)

else:

    def exception_group(failures: Sequence[Exception]) -> Exception:
        pytest.skip("exception groups are new in Python 3.11")


@st.composite
def failures_and_leaves(
    draw: st.DrawFn,
) -> tuple[BaseException, list[BaseException]]:
    """A hook's failure, alone or exception groups nested at random, with its leaves:
    each drawn from a few kinds chosen first (a write that found no room, by errno,
    some other write failure, no write failure at all), so that groups of one kind,
    or of two errnos that earn the same reply, are common."""
    kinds = draw(
        st.lists(
            st.sampled_from([*sorted(NO_ROOM_ERRORS.values()), None]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )

    def alone(code: int | None) -> tuple[Exception, list[BaseException]]:
        failure = ValueError("not a write") if code is None else OSError(code, os.strerror(code))
        return failure, [failure]

    def grouped(
        parts: list[tuple[Exception, list[BaseException]]],
    ) -> tuple[Exception, list[BaseException]]:
        return exception_group([p[0] for p in parts]), [x for p in parts for x in p[1]]

    tree: tuple[Exception, list[BaseException]] = draw(
        st.recursive(
            st.sampled_from(kinds).map(alone),
            lambda parts: st.lists(parts, min_size=1, max_size=3).map(grouped),
            max_leaves=8,
        )
    )
    return tree


@given(failures_and_leaves())
def test_a_group_of_failures_earns_what_each_of_its_leaves_earns_or_451(
    tree: tuple[BaseException, list[BaseException]],
) -> None:
    """A hook whose own tasks failed raises them as an exception group (PEP 654): when
    every failure in it is a write that found no room and earns the same reply alone
    (ENOSPC and EDQUOT both 452 4.3.1; EFBIG 552 5.3.4), the group is answered so and
    logged with the first failure's reason; any other mix is a fault, 451 4.3.0 with
    its traceback. A group's nesting changes nothing."""
    failure, leaves = tree
    first = leaves[0]
    earned = [
        BY_ERRNO.get(leaf.errno or 0) if isinstance(leaf, OSError) else None for leaf in leaves
    ]
    alike = earned[0] is not None and all(reply == earned[0] for reply in earned)
    assert failure_reply(failure) == (earned[0] if alike else LOCAL_ERROR)
    assert no_room(failure) == (no_room(first) if alike else None)
    if alike:
        assert isinstance(first, OSError)
        assert no_room(failure) == os.strerror(first.errno or 0)


class FullBeforeContent(Recorder):
    """A handler that opens its files before the content, on a disk that fills up:
    the sender's local part names the hook that finds no room and how (``mail-*``,
    ``data-*``); a recipient's, ``rcpt-*``. With ``waits`` each hook first waits,
    so that its exception comes out of the awaited rest, not the hook's start."""

    def __init__(self, adapter: str, waits: bool) -> None:
        super().__init__()
        self.adapter = adapter
        self.waits = waits

    async def _fail_if(self, hook: str, mailbox: Mailbox | None) -> None:
        """``mail-nospc`` raises ENOSPC; ``mail-nospc-nospc`` raises an exception group
        of two failures, ENOSPC and ENOSPC, as a hook's task group or nursery does."""
        if mailbox is None or not mailbox.local_part.startswith(hook + "-"):
            return
        if self.waits:
            import trio

            await (asyncio.sleep(0.001) if self.adapter == "asyncio" else trio.sleep(0.001))
        names = mailbox.local_part.removeprefix(hook + "-").split("-")
        codes = [NO_ROOM_ERRORS[name] for name in names]
        failures = [OSError(code, os.strerror(code)) for code in codes]
        raise failures[0] if len(failures) == 1 else exception_group(failures)

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        if command.domain == "full.test":  # a hook outside the mail transaction
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return None

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        await self._fail_if("mail", command.sender)
        return None

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        await self._fail_if("rcpt", command.recipient)
        return await super().handle_rcpt(session, envelope, command)

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        await self._fail_if("data", envelope.sender)
        return None


@pytest.mark.parametrize("waits", [False, True], ids=["at-once", "after-waiting"])
def test_every_hook_that_finds_no_room_earns_the_same_reply(adapter: str, waits: bool) -> None:
    """Not only the content's hooks: a MAIL, RCPT or DATA hook whose write finds the
    disk full is ``452 4.3.1`` (RFC 5321 §4.2.2 lists 452 for all three), one over a
    file size limit ``552 5.3.4`` (RFC 3463 X.3.4), any other fault ``451 4.3.0``;
    a hook outside the transaction (EHLO here) ``451 4.3.0`` whatever it raised."""
    full, too_big, other = b"452 4.3.1 Insufficient", b"552 5.3.4 Message too big", b"451 4.3.0"
    with (
        running_smtp_server(adapter, FullBeforeContent(adapter, waits)) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert s.command(b"EHLO full.test").startswith(b"451 ")  # not "storage full" to EHLO
        s.command(b"EHLO client.test")
        for sender, reply in [(b"mail-nospc", full), (b"mail-fbig", too_big), (b"mail-io", other)]:
            assert s.command(b"MAIL FROM:<%s@abc.example>" % sender).startswith(reply)
        assert s.command(b"MAIL FROM:<a@abc.example>").startswith(b"250")
        assert s.command(b"RCPT TO:<rcpt-dquot@pqr.example>").startswith(full)
        assert s.command(b"RSET").startswith(b"250")
        for sender, reply in [(b"data-nospc", full), (b"data-fbig", too_big)]:
            assert s.command(b"MAIL FROM:<%s@abc.example>" % sender).startswith(b"250")
            assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
            assert s.command(b"DATA").startswith(reply)
            assert s.command(b"RSET").startswith(b"250")
        assert s.command(b"QUIT").startswith(b"221")


@pytest.mark.parametrize("waits", [False, True], ids=["at-once", "after-waiting"])
def test_a_hook_that_finds_no_room_is_one_warning_naming_the_refused_address(
    adapter: str, waits: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk is heard at ``--log-level warning`` (as the server's own floor check
    warns at MAIL), in one ``reject:`` line without a traceback that names what was
    refused as every other refusal does: the MAIL's sender, the RCPT's recipient."""
    caplog.set_level(logging.WARNING, "smtpcore")
    with (
        running_smtp_server(adapter, FullBeforeContent(adapter, waits)) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.command(b"MAIL FROM:<mail-nospc@abc.example>")
        s.command(b"MAIL FROM:<a@abc.example>")
        s.command(b"RCPT TO:<rcpt-dquot@pqr.example>")
        s.command(b"RSET")
        s.command(b"MAIL FROM:<data-fbig@abc.example>")
        s.command(b"RCPT TO:<b@pqr.example>")
        s.command(b"DATA")
        s.command(b"QUIT")
    assert [r for r in caplog.records if r.exc_info] == []
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [line.split(": ", 2)[2].split(" from [", 1)[0] for line in lines] == [
        "MAIL",
        "RCPT",
        "DATA",
    ], lines
    ends = [line.split("; ", 1)[1] for line in lines]
    assert ends == [
        "from=<mail-nospc@abc.example> helo=<client.test> (No space left on device)",
        "from=<a@abc.example> to=<rcpt-dquot@pqr.example> helo=<client.test> "
        "(Disk quota exceeded)",
        "from=<data-fbig@abc.example> to=<b@pqr.example> helo=<client.test> (File too large)",
    ]


@pytest.mark.parametrize("waits", [False, True], ids=["at-once", "after-waiting"])
def test_a_hook_whose_tasks_all_found_no_room_is_answered_as_one_that_did(
    adapter: str, waits: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception group from a hook's task group or nursery whose failures are all
    writes that found no room and earn the same reply (ENOSPC and EDQUOT alike) is
    ``452 4.3.1`` (``552 5.3.4``) and one ``reject:`` warning without a traceback,
    giving the first failure's reason, as the failure alone is (RFC 5321 §4.2.2, RFC
    3463 X.3.1); it was 451 4.3.0 and a traceback. A group with any other failure in
    it, or failures that earn different replies (EFBIG and ENOSPC), stays 451 4.3.0,
    logged with its traceback after its ``reject:`` line."""
    caplog.set_level(logging.WARNING, "smtpcore")
    full, too_big, other = b"452 4.3.1 Insufficient", b"552 5.3.4 Message too big", b"451 4.3.0"
    with (
        running_smtp_server(adapter, FullBeforeContent(adapter, waits)) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<mail-nospc-nospc@abc.example>").startswith(full)
        assert s.command(b"MAIL FROM:<mail-nospc-dquot@abc.example>").startswith(full)
        assert s.command(b"MAIL FROM:<mail-fbig-nospc@abc.example>").startswith(other)
        assert s.command(b"MAIL FROM:<mail-nospc-io@abc.example>").startswith(other)
        assert s.command(b"MAIL FROM:<a@abc.example>").startswith(b"250")
        assert s.command(b"RCPT TO:<rcpt-dquot-dquot@pqr.example>").startswith(full)
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
        assert s.command(b"RSET").startswith(b"250")
        assert s.command(b"MAIL FROM:<data-fbig-fbig@abc.example>").startswith(b"250")
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
        assert s.command(b"DATA").startswith(too_big)
        assert s.command(b"QUIT").startswith(b"221")
    traced = [r.getMessage() for r in caplog.records if r.exc_info]
    assert traced == ["handle_mail failed"] * 2, traced
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [line.rsplit(" (", 1)[1] for line in warned] == [
        "No space left on device)",
        "No space left on device)",
        "handle_mail failed: ExceptionGroup)",
        "handle_mail failed: ExceptionGroup)",
        "Disk quota exceeded)",
        "File too large)",
    ], warned


class ListingItsOwn(Recorder):
    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        if command.domain == "lines.test":
            return Reply(250, ["mx.test hi", "PIPELINING", "X-FAKE"])
        return None


def test_a_hello_reply_of_several_lines_is_an_illegal_reply(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its lines after the first would be read as extensions offered (PIPELINING twice):
    451 4.3.0 and logged, as any reply not legal where it is given."""
    with (
        running_smtp_server(adapter, ListingItsOwn()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert s.command(b"EHLO lines.test").startswith(b"451 ")
        assert s.command(b"EHLO client.test").count(b"PIPELINING") == 1
        assert s.command(b"QUIT").startswith(b"221")
    assert "one line" in caplog.text


class Slow(Handler):
    """Answers RCPT after ``seconds`` (waiting with the adapter's own sleep)."""

    def __init__(self, adapter: str, seconds: float) -> None:
        self.adapter = adapter
        self.seconds = seconds

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        if self.adapter == "asyncio":
            import asyncio

            await asyncio.sleep(self.seconds)
        else:
            import trio

            await trio.sleep(self.seconds)
        return Reply(250, "OK")


def test_a_hook_past_the_command_timeout_becomes_451_and_the_session_goes_on(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    timeouts = Timeouts(command=0.3)
    with (
        running_smtp_server(adapter, Slow(adapter, 10), timeouts=timeouts) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.command(b"MAIL FROM:<a@abc.example>")
        started = time.monotonic()
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"451 4.3.0")
        assert 0.2 < time.monotonic() - started < 3
        assert s.command(b"NOOP").startswith(b"250")
        assert s.command(b"QUIT").startswith(b"221")
    assert "handle_rcpt failed" in caplog.text


class Hanging(Recorder):
    """A ``handle_reset`` or ``handle_close`` (``hook``) that never returns (a spool
    file's delete on a hung network mount, say). :attr:`waiting` is set when it starts,
    :attr:`cut_off` when its wait ends (only the command timeout ends it): a test can
    tell that a reply came while the hook was still waiting, by order rather than by a
    stopwatch. :attr:`waited` is how long it waited, from start to cut-off."""

    def __init__(self, adapter: str, hook: str) -> None:
        super().__init__()
        self.adapter = adapter
        self.hook = hook
        self.waiting = threading.Event()
        self.cut_off = threading.Event()
        self.waited = 0.0

    async def _forever(self, hook: str) -> None:
        if hook != self.hook:
            return
        began = time.monotonic()
        self.waiting.set()
        try:
            if self.adapter == "asyncio":
                await asyncio.sleep(3600)
            else:
                import trio

                await trio.sleep(3600)
        finally:
            self.waited = time.monotonic() - began
            self.cut_off.set()

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        await self._forever("handle_reset")

    async def handle_close(self, session: Session) -> None:
        await self._forever("handle_close")


def test_a_handle_reset_that_never_returns_is_answered_and_timed(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RSET's 250 goes out before the hook waits; the hook has the command timeout,
    as every hook, and the session goes on after it (it kept its slot for ever).

    "Before" is an order: the 250 has come while the hook has not yet been cut off.
    "The command timeout" has a generous upper bound that still tells it from another
    wait (5 s, say): NOOP is answered within ``command + 3`` s of RSET, and the hook
    waited less than ``command + 2`` s."""
    hanging = Hanging(adapter, "handle_reset")
    command = 1.5
    with (
        running_smtp_server(adapter, hanging, timeouts=Timeouts(command=command)) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.sock.settimeout(10)
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.command(b"MAIL FROM:<a@abc.example>")
        started = time.monotonic()
        assert s.command(b"RSET").startswith(b"250")
        assert not hanging.cut_off.is_set()
        assert hanging.waiting.wait(5)
        assert s.command(b"NOOP").startswith(b"250")  # once the hook's time is up
        assert hanging.cut_off.is_set()
        assert command <= time.monotonic() - started < command + 3
        assert hanging.waited < command + 2, hanging.waited
        s.send(b"QUIT\r\n")
    assert "handle_reset failed" in caplog.text


def test_a_handle_close_that_never_returns_holds_no_connection(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection closes after QUIT's 221 whatever ``handle_close`` does, and the hook
    has the command timeout: the server shuts down at once after it.

    "Whatever it does" is an order: the end of the stream has come while the hook has
    not yet been cut off. "The command timeout" has a generous upper bound that still
    tells it from another wait (5 s, say): the hook waited less than ``command + 2`` s."""
    hanging = Hanging(adapter, "handle_close")
    command = 1.5
    with running_smtp_server(adapter, hanging, timeouts=Timeouts(command=command)) as server:
        with raw_smtp_session(server.host, server.port) as s:
            s.sock.settimeout(10)
            s.recv_reply()
            assert s.command(b"QUIT").startswith(b"221 ")
            assert s.recv_some() == b""
            assert not hanging.cut_off.is_set()
        assert hanging.waiting.wait(5)
        assert hanging.cut_off.wait(command + 5)  # by its timeout, not the shutdown's
        assert hanging.waited < command + 2, hanging.waited
        server.wait_for_sessions(0, timeout=3)
    assert "handle_close failed" in caplog.text


class CancelledElsewhere(Handler):
    """``handle_rcpt`` of ``lost@`` meets a cancellation that is not its session's: on
    asyncio it awaits a shared future other code cancels; on trio it unwraps the
    outcome of a call another task's scope cancelled."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        if command.recipient.local_part == "lost":
            if self.adapter == "asyncio":
                import asyncio

                shared = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_later(0.01, shared.cancel)
                await shared
            else:
                import outcome
                import trio

                captured: list[outcome.Outcome[None]] = []

                async def lookup() -> None:
                    captured.append(await outcome.acapture(trio.sleep_forever))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lookup)
                    await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
                captured[0].unwrap()  # the Cancelled, out of the scope that raised it
        return Reply(250, "OK")


def test_a_cancellation_not_the_sessions_is_a_failing_hook(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that lets out a cancellation while its session is not being cancelled
    has failed, as one that raises: 451 4.3.0, and the session and the server go
    on (the session's own cancellations, timeouts and shutdowns, still end it)."""
    if adapter == "asyncio" and not hasattr(asyncio.Task, "cancelling"):
        pytest.skip("before Python 3.11 a task cannot tell whose cancellation it is")
    with running_smtp_server(adapter, CancelledElsewhere(adapter)) as server:
        for _ in range(2):
            with raw_smtp_session(server.host, server.port) as s:
                s.recv_reply()
                s.command(b"EHLO client.test")
                s.command(b"MAIL FROM:<a@abc.example>")
                assert s.command(b"RCPT TO:<lost@pqr.example>").startswith(b"451 4.3.0")
                assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
                assert s.command(b"QUIT").startswith(b"221")
    assert "handle_rcpt failed" in caplog.text
    assert "session with" not in caplog.text


class Escape(BaseException):
    """Not an Exception: the driver lets it end the session."""


class Escaping(Handler):
    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        if command.recipient.local_part == "escape":
            raise Escape
        return Reply(250, "OK")


def test_what_escapes_a_session_ends_that_session_alone(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever ends a session, the server goes on serving: on trio a session task's
    exception cancelled the whole nursery, the accept loop with it."""
    with running_smtp_server(adapter, Escaping()) as server:
        with raw_smtp_session(server.host, server.port) as s:
            s.recv_reply()
            s.command(b"EHLO client.test")
            s.command(b"MAIL FROM:<a@abc.example>")
            s.send(b"RCPT TO:<escape@pqr.example>\r\n")
            assert s.recv_some() == b""  # closed
        with raw_smtp_session(server.host, server.port) as s:
            assert s.recv_reply().startswith(b"220")
            assert s.command(b"QUIT").startswith(b"221")
    assert "failed" in caplog.text


def test_a_hook_that_waits_within_its_timeout_is_answered(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Slow(adapter, 0.05), timeouts=Timeouts(command=5)) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.command(b"MAIL FROM:<a@abc.example>")
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
        assert s.command(b"QUIT").startswith(b"221")


class Moody(Handler):
    """Answers RCPT at once, but waits (with no cancel scope of its own) for ``slow@``."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        if command.recipient.local_part == "slow":
            if self.adapter == "asyncio":
                import asyncio

                await asyncio.Event().wait()
            else:
                import trio

                await trio.Event().wait()
        return Reply(250, "OK")


def test_a_hook_that_answered_at_once_many_times_is_still_timed_when_it_waits(
    adapter: str,
) -> None:
    """On trio the deadline of a practised hook starts only at its first wait: it
    must still end it with 451, and the session go on."""
    with (
        running_smtp_server(adapter, Moody(adapter), timeouts=Timeouts(command=0.3)) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.command(b"MAIL FROM:<a@abc.example>")
        for number in range(20):
            assert s.command(b"RCPT TO:<b%d@pqr.example>" % number).startswith(b"250")
        started = time.monotonic()
        assert s.command(b"RCPT TO:<slow@pqr.example>").startswith(b"451 4.3.0")
        assert 0.2 < time.monotonic() - started < 3
        assert s.command(b"RCPT TO:<b@pqr.example>").startswith(b"250")
        assert s.command(b"QUIT").startswith(b"221")


class NoService(Handler):
    async def handle_connect(self, session: Session) -> Reply | None:
        return Reply(554, "No SMTP service here")


def test_a_non_ascii_hostname_is_named_by_its_a_label_in_every_reply(adapter: str) -> None:
    """The greeting, EHLO reply and 221 come before SMTPUTF8 is agreed, and a Domain
    there is ASCII (RFC 5321 §4.1.2, RFC 6531): the options take the A-label form the
    machine takes (RFC 5890 §2.3.2.1). They kept ``mäil.example``: the greeting and 221
    went as UTF-8, and the EHLO reply named the host twice."""
    with (
        running_smtp_server(adapter, Handler(), hostname="m\u00e4il.example") as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        greeting = s.recv_reply()
        hello = s.command(b"EHLO client.test")
        bye = s.command(b"QUIT")
    assert greeting.startswith(b"220 xn--mil-qla.example ")
    assert hello.split(b"\r\n")[0] == b"250-xn--mil-qla.example"
    assert bye.startswith(b"221 2.0.0 xn--mil-qla.example ")
    for reply in (greeting, hello, bye):
        assert reply.isascii() and reply.count(b"mil") == 1


def test_a_554_greeting_serves_only_quit(adapter: str) -> None:
    with (
        running_smtp_server(adapter, NoService()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        assert s.recv_reply().startswith(b"554")
        assert s.command(b"EHLO client.test").startswith(b"503")
        assert s.command(b"QUIT").startswith(b"221")


class Streaming(Recorder):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.chunk_sizes: list[int] = []

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        self.chunk_sizes.append(len(data))
        with (self.directory / "message").open("ab") as out:
            out.write(data)


def test_streaming_handler_gets_chunks_and_nothing_is_collected(
    adapter: str, tmp_path: Path
) -> None:
    handler = Streaming(tmp_path)
    body = b"Subject: large\r\n\r\n" + b"".join(
        b"%07d " % n + b"z" * 70 + b"\r\n" for n in range(40_000)
    )
    with (
        running_smtp_server(adapter, handler, max_message_size=None) as server,
        smtplib.SMTP(server.host, server.port) as client,
    ):
        assert client.sendmail("a@abc.example", ["b@pqr.example"], body) == {}
    [envelope] = handler.messages
    assert envelope.content == b"" and envelope.size == len(body)
    assert (tmp_path / "message").read_bytes() == body
    assert len(handler.chunk_sizes) > 1 and max(handler.chunk_sizes) <= 65536


class Lmtp(Recorder):
    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return [
            Reply(250, "delivered") if r.mailbox.local_part != "full" else Reply(452, "full")
            for r in envelope.recipients
        ]


def test_lmtp_answers_once_per_recipient(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Lmtp(), lmtp=True) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert s.command(b"LHLO client.test").startswith(b"250-mx.test")
        s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n")
        s.send(b"RCPT TO:<full@pqr.example>\r\nDATA\r\n")
        assert [s.recv_reply()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        s.send(b"hi\r\n.\r\n")
        assert [s.recv_reply()[:3] for _ in range(2)] == [b"250", b"452"]


def test_an_lmtp_server_refuses_to_listen_on_port_25(adapter: str, tmp_path: Path) -> None:
    """RFC 2033 §1: LMTP MUST NOT be used on TCP port 25. A host and port to bind
    name the port, so the server refuses it when built; a socket or a Unix socket
    given to it is the caller's choice, its port not the server's to judge."""
    server_class = module(adapter).SMTPServer
    with pytest.raises(ValueError, match=r"port 25 \(RFC 2033 §1\)"):
        server_class(Lmtp(), "127.0.0.1", 25, lmtp=True)
    assert server_class(Lmtp(), "127.0.0.1", 25).requested_port == 25
    assert server_class(Lmtp(), "127.0.0.1", 24, lmtp=True).requested_port == 24
    unix = server_class(Lmtp(), None, 25, unix_path=tmp_path / "lmtp.sock", lmtp=True)
    assert unix.unix_path is not None


class LmtpClosing(Recorder):
    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return [Reply(421, "shutting down", "4.3.2"), Reply(250, "delivered")]


def test_a_421_among_lmtp_replies_is_sent_and_closes_the_session(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 2033 §4.2: the 421 goes out, the replies after it do not, and the session
    closes as after any 421, rather than failing on the reply after it."""
    with (
        running_smtp_server(adapter, LmtpClosing(), lmtp=True) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"LHLO client.test")
        s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n")
        s.send(b"RCPT TO:<c@pqr.example>\r\nDATA\r\n")
        assert [s.recv_reply()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        s.send(b"hi\r\n.\r\n")
        assert s.recv_reply().startswith(b"421 4.3.2 shutting down")
        assert s.recv_some() == b""  # closed
    assert "session with" not in caplog.text  # it did not fail


class OddMessageReplies(Recorder):
    def __init__(self, result: object) -> None:
        super().__init__()
        self.result = result

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return self.result  # type: ignore[return-value]  # the test's point


@pytest.mark.parametrize(
    "result",
    [5, object(), "250 OK", (Reply(250, "OK"), "250 OK")],
    ids=["int", "object", "str", "a str among replies"],
)
@pytest.mark.parametrize("lmtp", [False, True])
def test_handle_message_returning_no_reply_is_a_failing_hook(
    adapter: str, result: object, lmtp: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Only None, a Reply or a sequence of them answers (``MessageReply``): anything
    else is answered 451 for each reply due, and the session goes on."""
    with (
        running_smtp_server(adapter, OddMessageReplies(result), lmtp=lmtp) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"LHLO client.test" if lmtp else b"EHLO client.test")
        s.command(b"MAIL FROM:<a@abc.example>")
        s.command(b"RCPT TO:<b@pqr.example>")
        s.command(b"RCPT TO:<c@pqr.example>")
        assert s.command(b"DATA").startswith(b"354")
        s.send(b"hi\r\n.\r\n")
        for _ in range(2 if lmtp else 1):
            assert s.recv_reply().startswith(b"451 4.3.0")
        assert s.command(b"NOOP").startswith(b"250")
    assert "handle_message returned" in caplog.text


# -- TLS ---------------------------------------------------------------------------


def test_starttls_with_smtplib_restarts_the_session(adapter: str, tls: TLSFiles) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="client.test") as client,
    ):
        code, text = client.ehlo()
        assert code == 250 and b"STARTTLS" in text
        assert client.starttls(context=tls.client_context)[0] == 220
        code, text = client.ehlo()
        assert code == 250 and b"STARTTLS" not in text
        assert client.sendmail("a@abc.example", ["b@pqr.example"], MESSAGE) == {}
    [session] = handler.sessions
    assert session.tls is not None and session.tls.version in ("TLSv1.2", "TLSv1.3")
    assert handler.events.count("hello client.test") == 2
    assert handler.messages[0].content == MESSAGE


def test_require_tls_refuses_mail_in_plaintext(adapter: str, tls: TLSFiles) -> None:
    with (
        running_smtp_server(
            adapter, Recorder(), ssl_context=tls.server_context, require_tls=True
        ) as server,
        smtplib.SMTP(server.host, server.port) as client,
    ):
        client.ehlo()
        assert client.mail("a@abc.example")[0] == 530
        client.rset()
        client.starttls(context=tls.client_context)
        client.ehlo()
        assert client.mail("a@abc.example")[0] == 250


def test_plaintext_pipelined_behind_starttls_is_never_executed(
    adapter: str, tls: TLSFiles
) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        # CVE-2011-0411: the injected MAIL arrives with STARTTLS, in plaintext.
        s.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        assert s.recv_reply().startswith(b"220")
        secure = tls.client_context.wrap_socket(s.sock, server_hostname="127.0.0.1")
        with RawSmtpSession(secure) as t:
            assert t.command(b"RCPT TO:<b@pqr.example>").startswith(b"503")
            assert t.command(b"MAIL FROM:<a@abc.example>").startswith(b"503")  # no EHLO
            assert t.command(b"EHLO client.test").startswith(b"250")
            assert t.command(b"STARTTLS").startswith(b"503")
    assert not any("injected" in event for event in handler.events)


def test_tls_on_connect(adapter: str, tls: TLSFiles) -> None:
    handler = Recorder()
    with (
        running_smtp_server(
            adapter, handler, ssl_context=tls.server_context, tls_on_connect=True
        ) as server,
        smtplib.SMTP_SSL(server.host, server.port, context=tls.client_context) as client,
    ):
        code, text = client.ehlo()
        assert code == 250 and b"STARTTLS" not in text
        assert client.sendmail("a@abc.example", ["b@pqr.example"], MESSAGE) == {}
    assert handler.sessions[0].tls is not None


def test_failed_handshake_ends_the_session(adapter: str, tls: TLSFiles) -> None:
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        assert s.command(b"STARTTLS").startswith(b"220")
        s.send(b"this is not a TLS ClientHello\r\n" * 4)
        # The server may send a TLS alert; then it closes.
        for _ in range(10):
            if s.recv_some() == b"":
                break
        else:
            raise AssertionError("the server kept the connection open")
        assert handler.closed.wait(5)
        server.wait_for_sessions(0)


def test_a_handshake_the_client_gives_up_is_logged_with_a_reason(
    adapter: str, tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes instead of its ClientHello (as ours does when it will not trust
    the certificate) made asyncio raise ``ConnectionResetError()``, whose text is empty:
    the line said "failed:" and no reason, which operator.rst promises."""
    caplog.set_level(logging.INFO, "smtpcore.server")
    with running_smtp_server(adapter, Recorder(), ssl_context=tls.server_context) as server:
        with raw_smtp_session(server.host, server.port) as s:
            s.recv_reply()
            s.command(b"EHLO client.test")
            assert s.command(b"STARTTLS").startswith(b"220")
        server.wait_for_sessions(0)
    (line,) = [r.getMessage() for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert line.partition(" failed: ")[2].strip(), line


# -- timeouts, limits, shutdown and vanishing peers ------------------------------------


NO_WAITS: tuple[Any, ...] = (-1, -math.inf, math.nan, "5", True, 10**400)
"""Values no field of ``Timeouts`` or ``POP3Timeouts`` may take: each would fail every
session later (``OverflowError`` in a deadline, ``TypeError`` in a comparison)."""


@pytest.mark.parametrize("kind", [Timeouts, POP3Timeouts])
def test_a_timeout_that_is_no_wait_is_refused_when_built(
    kind: type[Timeouts] | type[POP3Timeouts],
) -> None:
    """Every field goes through the duration check the other options use: a
    ``ValueError`` naming the field, at once; None (no limit) and numbers are kept,
    as floats."""
    for field in dataclasses.fields(kind):
        for seconds in NO_WAITS:
            with pytest.raises(ValueError, match=rf"{kind.__name__}\.{field.name} "):
                kind(**{field.name: seconds})
        built = getattr(kind(**{field.name: 7}), field.name)
        assert built == 7.0 and type(built) is float
        assert getattr(kind(**{field.name: None}), field.name) is None
    assert kind.uniform(0) == kind.uniform(0.0)
    with pytest.raises(ValueError, match="past the range"):
        kind.uniform(10**400)


def test_a_rate_that_is_none_is_refused_in_its_own_unit() -> None:
    with pytest.raises(ValueError, match="min_data_rate must be 0 or more octets a second"):
        Timeouts(min_data_rate=-1)
    with pytest.raises(ValueError, match="min_data_rate must be a finite number of octets"):
        Timeouts(min_data_rate=math.nan)
    with pytest.raises(ValueError, match="min_data_rate must be a number of octets a second"):
        Timeouts(min_data_rate="5")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [Timeouts, POP3Timeouts])
def test_an_infinite_timeout_is_no_limit(kind: type[Timeouts] | type[POP3Timeouts]) -> None:
    """Infinity, which a session took as no limit before the fields were checked, is
    kept as None, no limit; but for ``min_data_rate``, a rate, where infinity earns no
    credit and so ``data_block`` bounds the whole content, as it did."""
    assert kind.uniform(math.inf) == kind.uniform(None)
    for field in dataclasses.fields(kind):
        built = getattr(kind(**{field.name: math.inf}), field.name)
        assert built == (math.inf if field.name == "min_data_rate" else None)


def test_a_session_under_infinite_timeouts_delivers(adapter: str) -> None:
    handler = Recorder()
    with running_smtp_server(adapter, handler, timeouts=Timeouts.uniform(math.inf)) as server:
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            assert (
                client.sendmail("a@abc.example", ["bob@pqr.example"], b"Subject: x\r\n\r\nhi\r\n")
                == {}
            )
        server.wait_for_sessions(0)
    assert len(handler.messages) == 1


def test_command_timeout_sends_421_and_closes(adapter: str) -> None:
    handler = Recorder()
    timeouts = Timeouts(command=0.3)
    with (
        running_smtp_server(adapter, handler, timeouts=timeouts) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        started = time.monotonic()
        assert s.recv_reply().startswith(b"421 4.4.2")
        assert 0.2 < time.monotonic() - started < 3
        assert s.recv_some() == b""
        server.wait_for_sessions(0)


def test_data_block_timeout_abandons_the_transaction(adapter: str) -> None:
    handler = Recorder()
    timeouts = Timeouts(data_block=0.3)
    with (
        running_smtp_server(adapter, handler, timeouts=timeouts) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        s.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
        assert [s.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        s.send(b"Subject: half a message\r\n")
        assert s.recv_reply().startswith(b"421 4.4.2")
        server.wait_for_sessions(0)
    assert handler.events[-1] == "reset" and handler.messages == []


def test_sessions_past_the_limit_get_421(adapter: str) -> None:
    with running_smtp_server(adapter, Recorder(), max_sessions=2) as server:
        with (
            raw_smtp_session(server.host, server.port) as a,
            raw_smtp_session(server.host, server.port) as b,
        ):
            assert a.recv_reply().startswith(b"220") and b.recv_reply().startswith(b"220")
            with raw_smtp_session(server.host, server.port) as c:
                assert c.recv_reply().startswith(b"421 4.7.0")
                assert c.recv_some() == b""
        server.wait_for_sessions(0)
        with raw_smtp_session(server.host, server.port) as d:
            assert d.recv_reply().startswith(b"220")


IDLE_CLIENTS = 1000


def test_a_thousand_idle_sessions_and_a_new_client_is_still_served_at_once(
    adapter: str,
) -> None:
    # Both ends of every connection live in this process: two descriptors each.
    limit = raise_fd_limit(4 * IDLE_CLIENTS + 256)
    clients = min(IDLE_CLIENTS, (limit - 256) // 2)
    handler = Recorder()
    idle: list[socket.socket] = []
    # Every client comes from 127.0.0.1: no limit per address here.
    with running_smtp_server(adapter, handler, max_sessions_per_address=None) as server:
        try:
            for _ in range(clients):
                sock = socket.create_connection((server.host, server.port), timeout=10)
                idle.append(sock)
            server.wait_for_sessions(clients, timeout=20)
            started = time.monotonic()
            with smtplib.SMTP(server.host, server.port, timeout=10) as client:
                assert client.sendmail("a@abc.example", ["b@pqr.example"], MESSAGE) == {}
            assert time.monotonic() - started < 1.0
            # Every idle client was greeted too.
            for sock in idle[:: max(1, clients // 20)]:
                assert sock.recv(100).startswith(b"220 ")
        finally:
            for sock in idle:
                sock.close()
        server.wait_for_sessions(0, timeout=20)


def _vanish(sock: socket.socket) -> None:
    """Close with RST, as a crashed or unplugged peer does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize(
    "script",
    [
        pytest.param([b"EHLO client.test\r\n", b"MAIL FROM:<a@ab"], id="mid-command"),
        pytest.param(
            [
                b"EHLO client.test\r\n",
                b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n",
                b"Subject: x\r\n\r\n" + b"y" * 100_000,
            ],
            id="mid-data",
        ),
    ],
)
@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_a_vanishing_peer_leaks_no_session_task_or_socket(
    adapter: str, script: list[bytes], rst: bool
) -> None:
    handler = Recorder()
    with running_smtp_server(adapter, handler) as server:
        baseline = open_fd_count()
        for _ in range(5):
            sock = socket.create_connection((server.host, server.port), timeout=10)
            sock.recv(100)
            for data in script:
                sock.sendall(data)
                time.sleep(0.01)
            _vanish(sock) if rst else sock.close()
        server.wait_for_sessions(0)
        wait_until(lambda: handler.closed_count == 5)
        wait_until(lambda: open_fd_count() <= baseline)
    if len(script) == 3:
        assert handler.events.count("reset") == 5
    assert handler.messages == []


def test_graceful_shutdown_finishes_messages_in_flight(adapter: str) -> None:
    handler = Recorder()
    with running_smtp_server(adapter, handler) as server:
        port = server.port
        idle = RawSmtpSession.connect(server.host, server.port)
        busy = RawSmtpSession.connect(server.host, server.port)
        with idle, busy:
            idle.recv_reply()
            idle.command(b"EHLO idle.test")
            busy.recv_reply()
            busy.command(b"EHLO busy.test")
            busy.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n")
            assert [busy.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
            busy.send(b"Subject: in flight\r\n")
            stopping = threading.Thread(target=server.call, args=(server.server.aclose,))
            stopping.start()
            assert idle.recv_reply().startswith(b"421 4.3.2")
            assert idle.recv_some() == b""
            time.sleep(0.1)
            busy.send(b"\r\nbody\r\n.\r\n")
            assert busy.recv_reply().startswith(b"250")
            assert busy.recv_reply().startswith(b"421 4.3.2")
            stopping.join(10)
            assert not stopping.is_alive()
            with pytest.raises(OSError):
                socket.create_connection((server.host, port), timeout=2).close()
    [envelope] = handler.messages
    assert envelope.content == b"Subject: in flight\r\n\r\nbody\r\n"


MAIL_TO_DATA = b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n"
UNFINISHED = pytest.mark.parametrize(
    "script",
    [
        pytest.param([b"MAIL FROM:<a@abc.example>\r\n"], id="mid-transaction"),
        pytest.param(
            [MAIL_TO_DATA, b"Subject: x\r\n"],
            id="mid-data",
        ),
    ],
)
"""A session left mid-transaction: the commands whose replies it reads, then what it
sends without a reply."""


def start_unfinished(s: RawSmtpSession, script: list[bytes]) -> None:
    s.recv_reply()
    s.command(b"EHLO client.test")
    s.send(script[0])
    for _ in script[0].splitlines():
        s.recv_reply()
    s.send(b"".join(script[1:]))


@UNFINISHED
def test_shutdown_cuts_off_sessions_after_the_grace_period(
    adapter: str, script: list[bytes]
) -> None:
    """Cut off, a session still gets the 421 that says the service shuts down: RFC
    5321 §3.8 lets a server close only after QUIT, a timeout, or that 421 (a client
    in DATA saw the connection end, and could not tell a shutdown from a crash)."""
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        start_unfinished(s, script)
        started = time.monotonic()

        async def close() -> None:
            await server.server.aclose(grace=0.3)

        server.call(close)
        assert time.monotonic() - started < 5
        assert s.recv_reply().startswith(b"421 4.3.2 ")
        assert s.recv_some() == b""
        assert server.active_sessions == 0
    assert handler.events[-1] == "reset"
    assert handler.messages == []


@UNFINISHED
def test_a_cancelled_shutdown_ends_the_grace_period_not_the_shutdown(
    adapter: str, script: list[bytes]
) -> None:
    """A caller's deadline on ``aclose`` cancels the wait for the grace period, and the
    shutdown goes on at once from its end: the session still there hears its 421
    4.3.2 (RFC 5321 §3.8), every session ends, ``serve_forever`` returns, and then
    the cancellation reaches the caller. asyncio's shutdown stopped where it was
    cancelled, and left the session running, never told; trio's waited out the
    whole grace and swallowed the deadline."""
    handler = Recorder()
    with (
        running_smtp_server(adapter, handler) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        start_unfinished(s, script)
        assert server.close_under_a_deadline(0.2, grace=20)
        assert server.active_sessions == 0
        assert s.recv_reply().startswith(b"421 4.3.2 ")
        assert s.recv_some() == b""
    assert handler.events[-1] == "reset"
    assert handler.messages == []


def test_a_block_left_by_a_cancellation_still_gives_the_grace_period(adapter: str) -> None:
    """Leaving ``async with server`` because the block was cancelled (how ``serve``
    ends) asks for the shutdown, and is not its deadline: a message in flight is
    finished within the grace, then the session hears 421 4.3.2, on both adapters
    (trio's exit runs in the cancelled state, so it shields its ``aclose``)."""
    import trio

    import smtpcore.asyncio
    import smtpcore.trio

    handler = Recorder()

    def client(port: int, cancel_serve: Callable[[], object]) -> list[bytes]:
        with (
            raw_smtp_session(LOOPBACK, port) as idle,
            raw_smtp_session(LOOPBACK, port) as busy,
        ):
            idle.recv_reply()
            start_unfinished(busy, [MAIL_TO_DATA, b"Subject: in flight\r\n"])
            cancel_serve()
            assert idle.recv_reply().startswith(b"421 4.3.2")  # the shutdown has begun
            busy.send(b"\r\nbody\r\n.\r\n")
            return [busy.recv_reply(), busy.recv_reply()]

    async def on_asyncio() -> list[bytes]:
        loop = asyncio.get_running_loop()
        listening: asyncio.Future[Any] = loop.create_future()
        serving = loop.create_task(
            smtpcore.asyncio.serve(handler, started=listening.set_result, hostname="mx.test")
        )
        server = await listening
        cancel = functools.partial(loop.call_soon_threadsafe, serving.cancel)
        replies = await asyncio.to_thread(client, server.port, cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 10)
        return replies

    async def on_trio() -> list[bytes]:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(smtpcore.trio.serve, handler, hostname="mx.test")
            )
            token = trio.lowlevel.current_trio_token()
            cancel = functools.partial(
                trio.from_thread.run_sync, nursery.cancel_scope.cancel, trio_token=token
            )
            replies: list[bytes] = await trio.to_thread.run_sync(client, server.port, cancel)
        return replies

    delivered, goodbye = run(adapter, on_asyncio if adapter == "asyncio" else on_trio)
    assert delivered.startswith(b"250 ") and goodbye.startswith(b"421 4.3.2 ")
    [envelope] = handler.messages
    assert envelope.content == b"Subject: in flight\r\n\r\nbody\r\n"


@pytest.mark.parametrize("when", ["in-the-grace", "and-again-in-the-cut-off"])
def test_a_cut_off_that_fails_is_logged_and_the_cancellation_still_reaches_the_caller(
    adapter: str, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The cut-off runs as the caller's cancellation propagates (shielded: on asyncio,
    a task of its own). Should it fail, its failure is logged, and the caller still
    gets its cancellation: on asyncio the failure took the cancellation's place (an
    ``aclose`` under a deadline raised the cut-off's error), and a failure that came
    as the caller was cancelled again could go unretrieved."""
    import trio

    caplog.set_level(logging.ERROR)
    begun = threading.Event()
    with (
        running_smtp_server(adapter, Recorder()) as server,
        raw_smtp_session(server.host, server.port) as idle,
        raw_smtp_session(server.host, server.port) as busy,
    ):
        idle.recv_reply()
        start_unfinished(busy, [b"MAIL FROM:<a@abc.example>\r\n"])

        async def wait(event: Any) -> None:
            await event.wait()

        async def close_and_cancel() -> bool:
            """Cancel ``aclose`` once the shutdown has begun, and again (on asyncio) once
            its cut-off runs, which then fails; whether the cancellation came back."""
            entered, failing = (
                (asyncio.Event(), asyncio.Event())
                if adapter == "asyncio"
                else (trio.Event(), trio.Event())
            )

            async def cut_off() -> None:
                entered.set()
                await wait(failing)
                raise RuntimeError("the cut-off broke")

            server.server._cut_off = cut_off
            if adapter == "asyncio":
                closing = asyncio.ensure_future(server.server.aclose(20))
                await until(adapter, begun)
                closing.cancel()
                if when != "in-the-grace":
                    await entered.wait()
                    closing.cancel()
                failing.set()
                try:
                    await closing
                except asyncio.CancelledError:
                    return True
                return False
            scope = trio.CancelScope()

            async def close() -> None:
                with scope:
                    await server.server.aclose(20)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close)
                await until(adapter, begun)
                scope.cancel()
                await entered.wait()
                failing.set()
            return scope.cancelled_caught

        def watch_idle() -> None:
            if idle.recv_reply().startswith(b"421 4.3.2"):  # the shutdown has begun
                begun.set()

        watcher = threading.Thread(target=watch_idle)
        watcher.start()
        assert server.call(close_and_cancel)
        watcher.join(10)
        assert busy.command(b"QUIT").startswith(b"221")  # never cut off: it failed
    gc.collect()
    errors = [(r.getMessage(), r.exc_info) for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(message, info and info[0]) for message, info in errors] == [
        ("shutdown: cutting off the sessions left failed", RuntimeError)
    ], errors


def test_a_cut_off_that_fails_when_the_grace_runs_out_is_raised(adapter: str) -> None:
    """No cancellation on its way out: a cut-off that fails after the grace period
    ran out raises from ``aclose``, and ``aclose`` ends there, bounded by the grace.
    Logged and dropped (as where it would replace a cancellation), it left ``aclose``
    waiting without end for the sessions it never cut off."""
    with (
        running_smtp_server(adapter, Recorder()) as server,
        raw_smtp_session(server.host, server.port) as busy,
    ):
        start_unfinished(busy, [b"MAIL FROM:<a@abc.example>\r\n"])

        async def cut_off() -> None:
            raise RuntimeError("the cut-off broke")

        async def close() -> str:
            server.server._cut_off = cut_off
            try:
                await server.server.aclose(0.2)
            except RuntimeError as exc:
                return str(exc)
            return "returned"

        assert server.call(close) == "the cut-off broke"


@pytest.mark.parametrize("shielded", [True, False], ids=["shielded", "unshielded"])
def test_on_trio_a_finally_of_a_cancelled_block_must_shield_aclose_for_the_grace(
    shielded: bool,
) -> None:
    """``try: await server.serve_forever() finally: await server.aclose(grace=...)`` in
    a cancelled scope calls ``aclose`` in the cancelled state (trio's cancellation is
    a state): unshielded, that is a cancelled ``aclose``, which ends the grace period
    at once, so a message in flight is cut off with 421 4.3.2, before its end is
    sent; under ``trio.CancelScope(shield=True)`` (what leaving ``async with server``
    does) the message is finished within the grace, its 250 before the 421."""
    import trio

    import smtpcore.trio

    handler = Recorder()
    ready = threading.Event()

    def client(port: int) -> list[bytes]:
        with (
            raw_smtp_session(LOOPBACK, port) as idle,
            raw_smtp_session(LOOPBACK, port) as busy,
        ):
            idle.recv_reply()
            start_unfinished(busy, [MAIL_TO_DATA, b"Subject: in flight\r\n"])
            ready.set()
            assert idle.recv_reply().startswith(b"421 4.3.2")  # the shutdown has begun
            if not shielded:
                return [busy.recv_reply()]  # well within the grace period
            busy.send(b"\r\nbody\r\n.\r\n")
            return [busy.recv_reply(), busy.recv_reply()]

    async def main() -> list[bytes]:
        replies: list[bytes] = []

        async def talk(port: int) -> None:
            replies.extend(await trio.to_thread.run_sync(client, port))

        async with (
            smtpcore.trio.SMTPServer(handler, LOOPBACK, 0, hostname="mx.test") as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(talk, server.port)
            await until("trio", ready)
            with trio.CancelScope() as block:
                block.cancel()
                try:
                    await server.serve_forever()
                finally:
                    if shielded:
                        with trio.CancelScope(shield=True):
                            await server.aclose(grace=30)
                    else:
                        await server.aclose(grace=30)
        return replies

    replies = trio.run(main)
    if shielded:
        assert [reply[:4] for reply in replies] == [b"250 ", b"421 "]
        [envelope] = handler.messages
        assert envelope.content == b"Subject: in flight\r\n\r\nbody\r\n"
    else:
        assert [reply[:10] for reply in replies] == [b"421 4.3.2 "]
        assert handler.messages == []


# -- closing on the server's own word ----------------------------------------------------


@pytest.mark.parametrize(
    "pipelined",
    [
        pytest.param(
            b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nBDAT 1x LAST\r\n",
            id="unreadable-bdat",
        ),
        pytest.param(b"XYZZY\r\n" * 60, id="unknown-commands"),
    ],
)
def test_a_421_with_the_clients_bytes_unread_is_read_before_the_end(
    adapter: str, pipelined: bytes
) -> None:
    """The server's 421 ends the session while the client still sends (a chunk's
    octets, pipelined commands): the server lingers, half-closed, reading what comes,
    so the client reads the 421 and then the end, not a reset (RFC 5321 §3.8)."""
    with running_smtp_server(adapter, Recorder()) as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        with sock:
            assert sock.recv(100).startswith(b"220 ")
            sock.sendall(b"EHLO client.test\r\n" + pipelined + b"x" * 200_000)
            time.sleep(0.3)  # the client reads late: the server closed meanwhile
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            assert received.splitlines()[-1].startswith(b"421 4.")
        server.wait_for_sessions(0)


def test_a_lingering_session_ends_within_its_bound_when_the_client_stays(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Recorder()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.send(b"EHLO client.test\r\n" + b"XYZZY\r\n" * 60)
        while not s.recv_reply().startswith(b"421 "):
            pass
        started = time.monotonic()
        assert s.recv_some() == b""  # half-closed at once
        server.wait_for_sessions(0, timeout=3)  # LINGER, though the client never closes
        assert time.monotonic() - started < 2


def test_a_session_ended_by_quit_closes_at_once(adapter: str) -> None:
    """No lingering after QUIT's 221: the client has nothing left to send."""
    with (
        running_smtp_server(adapter, Recorder()) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"EHLO client.test")
        assert s.command(b"QUIT").startswith(b"221 ")
        assert s.recv_some() == b""
        server.wait_for_sessions(0, timeout=0.3)  # the client's socket is still open


# -- the transports themselves ----------------------------------------------------------


def test_server_sockets_have_tcp_nodelay(adapter: str) -> None:
    seen: list[int] = []

    class Probe(Handler):
        async def handle_connect(self, session: Session) -> Reply | None:
            return None

    with running_smtp_server(adapter, Probe()) as server:

        async def probe() -> None:
            for session in server.server.state.sessions:
                transport = session.transport.transport
                raw = getattr(transport, "_transport", None)  # asyncio's transports
                if isinstance(transport, RawSocketTransport):  # asyncio, the raw socket
                    sock = transport.socket
                else:
                    sock = raw.get_extra_info("socket") if raw else transport._base.socket
                seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        with raw_smtp_session(server.host, server.port) as s:
            s.recv_reply()
            server.call(probe)
    assert seen and all(seen)


def test_tls_context_without_tls_on_connect_is_starttls_only(adapter: str, tls: TLSFiles) -> None:
    with (
        running_smtp_server(adapter, Recorder(), ssl_context=tls.server_context) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        assert b"STARTTLS" in s.command(b"EHLO client.test")
        s.command(b"QUIT")


def test_tls_on_connect_needs_a_context() -> None:
    with pytest.raises(ValueError, match="ssl_context"):
        from smtpcore.asyncio import SMTPServer

        SMTPServer(Handler(), tls_on_connect=True)


class LmtpIllegal(Recorder):
    """Answers every recipient with a reply no end of data may have."""

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return [Reply(354, "go ahead") for _ in envelope.recipients]


@pytest.mark.parametrize("recipients", [30, 2])
def test_an_illegal_lmtp_reply_is_logged_once_per_message(
    adapter: str, recipients: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's illegal reply to each of a message's recipients logged one traceback
    per recipient (a hundred for a hundred recipients): now one ERROR with the
    traceback, and one line counting the others ('1 more recipient', not '1 more
    recipients'). Each recipient still gets the 451."""
    caplog.set_level(logging.ERROR, logger="smtpcore.server")
    with (
        running_smtp_server(adapter, LmtpIllegal(), lmtp=True) as server,
        raw_smtp_session(server.host, server.port) as s,
    ):
        s.recv_reply()
        s.command(b"LHLO client.test")
        s.send(b"MAIL FROM:<a@abc.example>\r\n")
        s.send(b"".join(b"RCPT TO:<r%d@pqr.example>\r\n" % i for i in range(recipients)))
        s.send(b"DATA\r\n")
        assert {s.recv_reply()[:3] for _ in range(recipients + 1)} == {b"250"}
        assert s.recv_reply()[:3] == b"354"
        s.send(b"hi\r\n.\r\n")
        replies = [s.recv_reply() for _ in range(recipients)]
        assert s.command(b"NOOP").startswith(b"250")
    assert {reply[:9] for reply in replies} == {b"451 4.3.0"}
    illegal = [r for r in caplog.records if "is not legal here" in r.getMessage()]
    assert [r.exc_info is not None for r in illegal] == [True]
    counted = [r for r in caplog.records if "not legal here either" in r.getMessage()]
    more = "1 more recipient" if recipients == 2 else f"{recipients - 1} more recipients"
    assert [r.getMessage() for r in counted] == [
        f"the handler's replies were not legal here either for {more} of the message: "
        f"answered {LOCAL_ERROR}"
    ]
