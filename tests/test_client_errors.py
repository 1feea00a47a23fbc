"""What the SMTP and POP3 clients raise, and that no path leaves a connection open.

Every refusal is an ``SMTPError`` carrying a code, an enhanced status and
text; the refusals the client makes on the server's behalf (SIZE, SMTPUTF8,
8BITMIME) are raised before MAIL with the reply RFC 3463 names. The file
descriptor counts run against scripted servers whose sockets are all closed
before counting, with the client objects still referenced, so that no
garbage collection can hide a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import os
import socket
import ssl
import struct
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import trio

import smtpcore.asyncio
from broken_servers import RateLimitedServer, SmallServer, serve
from peers import (
    ADAPTERS,
    TLSFiles,
    free_port,
    ipv6_loopback_port,
    missing_peer,
    module,
    open_fd_count,
    run,
    running_smtp_server,
)
from smtpcore import LocalProtocolError, _asyncio_beneath_tls
from smtpcore._asyncio_close import ready_to_close
from smtpcore._driver import _transport as shared_transport
from smtpcore.handler import Session, TLSInfo
from smtpcore.smtp import EnhancedStatus, Mail, Reply
from smtpcore.testing import (
    Call,
    CollectingHandler,
    ScriptedConnection,
    ScriptedServer,
    Send,
    Step,
    script,
)

MESSAGE = b"Subject: errors\r\n\r\nbody\r\n"

#: The scripted servers' greeting and EHLO reply (no SIZE, 8BITMIME or SMTPUTF8).
GREET = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-PIPELINING
S: 250 ENHANCEDSTATUSCODES
"""
#: A transaction's commands, all three at once, and their replies (RFC 2920).
PIPELINED = """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 250 2.1.5 ok
S: 354 go
"""
#: ``MESSAGE`` as it crosses the wire after DATA.
MESSAGE_LINES = """
C: Subject: errors
C:
C: body
C: .
"""
#: Whatever the client sends next (a line, or its close); the script then ends.
ONE_LINE = Call(ScriptedConnection.line)


class Recorder(CollectingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.mails: list[Mail] = []

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        self.mails.append(command)
        return None


def test_the_hierarchy_matches_what_smtplib_users_catch() -> None:
    from smtpcore import asyncio as client

    refusals = (
        client.HelloRefused,
        client.SenderRefused,
        client.RecipientsRefused,
        client.MessageRefused,
        client.MessageTooLarge,
        client.ExtensionNotOffered,
        client.AuthenticationError,
        client.AuthenticationNotAvailable,
        client.TLSNotAvailable,
    )
    for cls in refusals:
        assert issubclass(cls, client.SMTPReplyError) and issubclass(cls, client.SMTPError)
    assert issubclass(client.MessageTooLarge, client.MessageRefused)
    assert issubclass(client.ExtensionNotOffered, client.MessageRefused)
    assert issubclass(client.SMTPConnectionError, ConnectionError)
    assert issubclass(client.SMTPTimeout, TimeoutError)
    assert not issubclass(client.SMTPError, LocalProtocolError)


def test_a_message_over_the_servers_size_is_refused_before_mail(adapter: str) -> None:
    handler = Recorder()
    big = b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n"

    async def attempt(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(module(adapter).MessageTooLarge) as refused:
                await client.send_message(big, "a@abc.example", "bob@pqr.example")
            # Nothing was sent: the session goes on.
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            return refused.value

    with running_smtp_server(adapter, handler, max_message_size=100) as server:
        error = run(adapter, lambda: attempt(server.port))
    assert isinstance(error, module(adapter).SMTPError)
    assert (error.code, error.status, error.local) == (552, EnhancedStatus(5, 3, 4), True)
    assert (error.size, error.limit) == (len(big), 100)
    assert error.result is None and "100" in error.text
    assert len(handler.mails) == 1 and handler.messages[0].content == MESSAGE


def test_the_size_declared_and_checked_is_the_size_sent(adapter: str) -> None:
    """RFC 1870 §4 counts the octets sent, CRLF pairs and all: a bare LF or CR goes as
    CRLF, so it counts two. 90 octets with 11 bare LFs are 101 on the wire: over a
    limit of 100 before MAIL, and declared as 101 under a larger one."""
    handler = Recorder()
    lf = b"Subject: lf\n\n" + b"line\n" * 9 + b"x" * 30 + b"\r\n"
    assert (len(lf), len(lf.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))) == (90, 101)

    async def attempt(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(module(adapter).MessageTooLarge) as refused:
                await client.send_message(lf, "a@abc.example", "bob@pqr.example")
            return refused.value

    with running_smtp_server(adapter, handler, max_message_size=100) as server:
        error = run(adapter, lambda: attempt(server.port))
    assert (error.size, error.limit, error.local) == (101, 100, True)
    with running_smtp_server(adapter, handler, max_message_size=200) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                lf, "a@abc.example", "bob@pqr.example", host=server.host, port=server.port
            ),
        )
    [mail] = handler.mails
    assert mail.params["SIZE"] == "101" and len(handler.messages[0].content) == 101


NO_EXTENSIONS = script(
    GREET + PIPELINED + MESSAGE_LINES + "S: 250 2.0.0 queued\nC: QUIT\nS: 221 2.0.0 bye"
)


@pytest.mark.parametrize(
    ("sender", "recipient", "content", "extension", "code", "status"),
    [
        ("a@abc.example", "jösé@pqr.example", MESSAGE, "SMTPUTF8", 553, "5.6.7"),
        ("jösé@abc.example", "bob@pqr.example", MESSAGE, "SMTPUTF8", 553, "5.6.7"),
        (
            "a@abc.example",
            "bob@pqr.example",
            "Subject: hi\r\n\r\né\r\n".encode(),
            "8BITMIME",
            554,
            "5.6.3",
        ),
        # 8-bit header fields need SMTPUTF8 (RFC 6532 §3), refused first as for an address.
        (
            "a@abc.example",
            "bob@pqr.example",
            "Subject: é\r\n\r\n".encode(),
            "SMTPUTF8",
            553,
            "5.6.7",
        ),
    ],
    ids=["utf8-recipient", "utf8-sender", "8bit-content", "utf8-header"],
)
def test_what_the_server_did_not_offer_is_refused_before_mail(
    adapter: str,
    sender: str,
    recipient: str,
    content: bytes,
    extension: str,
    code: int,
    status: str,
) -> None:
    async def attempt(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(module(adapter).ExtensionNotOffered) as refused:
                await client.send_message(content, sender, recipient)
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            return refused.value

    with ScriptedServer(NO_EXTENSIONS) as server:
        error = run(adapter, lambda: attempt(server.port))
    assert isinstance(error, module(adapter).MessageRefused)
    assert (error.extension, error.keyword, error.code) == (extension, None, code)
    assert str(error.status) == status and error.local
    assert all(line.isascii() for line in server.transcript)


#: A server that takes 8-bit octets only as ``BODY=BINARYMIME`` by BDAT (no 8BITMIME).
GREET_BINARY_ONLY = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-PIPELINING
S: 250-CHUNKING
S: 250-BINARYMIME
S: 250 ENHANCEDSTATUSCODES
"""
EIGHT_BIT = "Subject: cafe\r\n\r\ncafé\r\n".encode()
"""8-bit in the body: in a header field it would need SMTPUTF8 first (RFC 6532 §3)."""


@pytest.mark.parametrize("chunking", [None, False], ids=["BDAT", "DATA"])
def test_8bit_content_to_a_server_with_binarymime_but_no_8bitmime_is_refused_before_mail(
    adapter: str, chunking: bool | None
) -> None:
    """RFC 6152 §3, RFC 3030 §3: with no ``BODY=BINARYMIME`` a MAIL says 7BIT, so 8-bit
    content needs 8BITMIME: refused as for a server that offers neither (it went with
    no ``BODY``, by BDAT, or by DATA with ``chunking=False``). The client does not
    declare BINARYMIME itself: binary content goes with its line ends as they are."""
    mod = module(adapter)

    async def attempt(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port, chunking=chunking) as client:
            with pytest.raises(mod.ExtensionNotOffered) as refused:
                await client.send_message(EIGHT_BIT, "a@abc.example", "bob@pqr.example")
            return refused.value

    with ScriptedServer(script(GREET_BINARY_ONLY + QUIT)) as server:
        error = run(adapter, lambda: attempt(server.port))
    assert (error.extension, error.keyword, error.code) == ("8BITMIME", None, 554)
    assert str(error.status) == "5.6.3" and error.local


@pytest.mark.parametrize(
    ("u_label", "a_label"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        # IDNA 2008 keeps ß (RFC 5892): IDNA 2003 would send it to strasse.example.
        ("straße.example", "xn--strae-oqa.example"),
    ],
)
def test_a_utf8_domain_goes_in_a_labels_to_a_server_without_smtputf8(
    adapter: str, u_label: str, a_label: str
) -> None:
    """RFC 5890 §2.3.2.1: ``bücher.example`` and ``xn--bcher-kva.example`` are one domain,
    so an address whose local part is ASCII needs no SMTPUTF8 (Postfix sends it so)."""
    steps = script(
        GREET
        + f"C: MAIL FROM:<a@{a_label}>\nC: RCPT TO:<bob@{a_label}>\n"
        + "C: DATA\nS: 250 2.1.0 ok\nS: 250 2.1.5 ok\nS: 354 go\n"
        + MESSAGE_LINES
        + "S: 250 2.0.0 queued\nC: QUIT\nS: 221 2.0.0 bye"
    )
    mod = module(adapter)

    async def send(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            sender = f"a@{u_label[0].upper()}{u_label[1:]}"  # "ß".upper() is "SS"
            return await client.send_message(MESSAGE, sender, f"bob@{u_label}")

    with ScriptedServer(steps) as server:
        result = run(adapter, lambda: send(server.port))
    assert [str(r.recipient) for r in result.delivered] == [f"bob@{a_label}"]


def test_refusals_carry_code_status_and_text(adapter: str) -> None:
    refusing = f"""{GREET}
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 550 5.7.1 not from you
S: 554 5.5.1 no valid recipients
S: 554 5.5.1 no valid recipients
C: RSET
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 250 2.0.0 ok
S: 250 2.1.0 ok
S: 550-5.1.1 no such
S: 550 5.1.1 user
S: 554 5.5.1 none
C: QUIT
S: 221 bye
"""

    async def attempt(port: int) -> list[Any]:
        errors = []
        mod = module(adapter)
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(mod.SenderRefused) as sender:
                await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            errors.append(sender.value)
            with pytest.raises(mod.RecipientsRefused) as recipients:
                await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            errors.append(recipients.value)
        return errors

    with ScriptedServer(script(refusing)) as server:
        sender, recipients = run(adapter, lambda: attempt(server.port))
    assert (sender.command, sender.code, str(sender.status)) == ("MAIL", 550, "5.7.1")
    assert sender.text == "not from you" and not sender.local
    assert (recipients.code, str(recipients.status)) == (550, "5.1.1")
    assert recipients.text == "no such\nuser"
    assert [r.reply.code for r in recipients.result.recipients] == [550]


#: A pipelined group the server refuses, yet answers DATA with 354 (RFC 2920 §3.1 allows
#: it): by every RCPT refused, or by MAIL refused.
REFUSED_GROUPS = {
    "every-rcpt": (
        "nobody@pqr.example",
        "S: 250 2.1.0 ok\nS: 550 5.1.1 no such user\nS: 354 go ahead\n"
        "C: .\nS: 554 5.5.1 no valid recipients",
        "RecipientsRefused",
    ),
    "mail": (
        "bob@pqr.example",
        "S: 550 5.7.1 not from you\nS: 503 5.5.1 sender first\nS: 354 go ahead\n"
        "C: .\nS: 503 5.5.1 no transaction",
        "SenderRefused",
    ),
}


@pytest.mark.parametrize("refused", list(REFUSED_GROUPS))
def test_a_refused_group_whose_data_got_354_ends_the_empty_message(
    adapter: str, refused: str
) -> None:
    """The client checks every reply of the group (RFC 2920 §3.1): the lone dot ends
    the empty message, the refusal is raised, and the session goes on."""
    recipient, replies, error = REFUSED_GROUPS[refused]
    lenient = f"""{GREET}
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<{recipient}>
C: DATA
{replies}
C: RSET
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 250 ok
S: 250 ok
S: 250 ok
S: 354 go
{MESSAGE_LINES}
S: 250 2.0.0 queued
C: QUIT
S: 221 bye
"""

    async def attempt(port: int) -> int:
        mod = module(adapter)
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(getattr(mod, error)):
                await client.send_message(MESSAGE, "a@abc.example", recipient)
            result = await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            return len(result.delivered)

    with ScriptedServer(script(lenient)) as server:
        assert run(adapter, lambda: attempt(server.port)) == 1


def test_8bit_content_found_as_it_is_read_ends_the_session_without_the_dot(
    adapter: str,
) -> None:
    """Content read from an iterable is known to be 8-bit only once read, past the
    354, for a server without 8BITMIME: the client raises and closes the connection
    without the final dot, so that the server delivers nothing of it."""
    steps = [
        *script(GREET + PIPELINED + "C: Subject: errors\nC:"),
        Call(ScriptedConnection.read_to_close),
    ]
    content = [b"Subject: errors\r\n\r\n", "Grüße\r\n".encode(), b"more\r\n"]
    mod = module(adapter)
    kept: list[Any] = []
    before = open_fd_count()
    with ScriptedServer(steps) as server:

        async def go() -> None:
            client = mod.SMTPClient("127.0.0.1", server.port)
            kept.append(client)  # a reference, so that no finalizer closes the socket
            await client.connect()
            await client.send_message(iter(content), "a@abc.example", "bob@pqr.example")

        with pytest.raises(LocalProtocolError, match="8BITMIME"):
            run(adapter, go)
    assert kept and open_fd_count() == before
    assert "C: '.'" not in server.transcript  # the content's lines as read, no dot among them


def test_text_content_is_refused_before_mail_and_the_session_goes_on(
    adapter: str, tmp_path: Path
) -> None:
    """Content is octets: a ``str``, or a file opened in text mode (whose reads give
    ``str``), is a ``TypeError`` before ``MAIL``, rather than once the server has
    said 354 and waits for the message."""
    text_file = tmp_path / "message.eml"
    text_file.write_text("Subject: text\n\nbody\n")
    mod = module(adapter)
    steps = script(GREET + "C: NOOP\nS: 250 2.0.0 ok\nC: QUIT\nS: 221 bye")

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with text_file.open() as opened, pytest.raises(TypeError, match="binary mode"):
                await client.send_message(opened, "a@abc.example", "bob@pqr.example")
            with pytest.raises(TypeError, match="not text"):
                await client.send_message("Subject: text", "a@abc.example", "bob@pqr.example")
            await client.noop()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: go(server.port))


def test_an_iterable_of_text_is_refused_before_mail_and_the_session_goes_on(
    adapter: str,
) -> None:
    """An iterable (sync or async) whose first piece is a ``str`` is a ``TypeError``
    before ``MAIL``, as a ``str`` is: its first piece is read ahead. Before, MAIL,
    RCPT and DATA went out, and the error came once the server had said 354, which
    ended the session."""
    mod = module(adapter)
    steps = script(GREET + "C: NOOP\nS: 250 2.0.0 ok\nC: QUIT\nS: 221 bye")

    async def pieces() -> AsyncIterator[str]:
        yield "Subject: text\r\n"

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            for content in (iter(["Subject: text\r\n", b"\r\nbody\r\n"]), pieces()):
                with pytest.raises(TypeError, match="give bytes, not str"):
                    await client.send_message(content, "a@abc.example", "bob@pqr.example")
            await client.noop()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: go(server.port))


class SeekableText:
    """Content with ``seekable()``, ``tell`` and ``seek`` but no ``read``: replayable,
    yet its pieces are ``str`` (or, with ``pieces`` None, it is not iterable)."""

    def __init__(self, pieces: list[str] | None) -> None:
        self._pieces = pieces
        self.seeks: list[int] = []

    def __iter__(self) -> Iterator[str]:
        if self._pieces is None:
            raise TypeError("'SeekableText' object is not iterable")
        return iter(self._pieces)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return 0

    def seek(self, offset: int, whence: int = 0, /) -> int:
        self.seeks.append(offset)
        return offset


def test_seekable_content_of_text_is_refused_before_mail_and_the_session_goes_on(
    adapter: str,
) -> None:
    """Content that can seek back (``seekable()`` and ``tell``, no ``read``) is still
    checked before ``MAIL``: its first piece read, then the content sought back to
    where it stood. A ``str`` piece, or content that is not iterable, is a
    ``TypeError`` with the session intact, not once the server has said 354."""
    mod = module(adapter)
    steps = script(GREET + "C: NOOP\nS: 250 2.0.0 ok\nC: QUIT\nS: 221 bye")

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            for content in (SeekableText(["Subject: text\r\n"]), SeekableText(None)):
                with pytest.raises(TypeError, match=r"give bytes|not iterable"):
                    await client.send_message(content, "a@abc.example", "bob@pqr.example")
            await client.noop()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: go(server.port))


def test_an_iterable_is_sent_whole_with_its_first_piece_read_ahead(adapter: str) -> None:
    """The piece read ahead goes first, and the rest behind it, for a sync and an
    async iterable alike."""
    mod = module(adapter)
    plain = GREET.replace("S: 250-PIPELINING\n", "")
    one = (
        "C: MAIL FROM:<a@abc.example>\nS: 250 ok\nC: RCPT TO:<bob@pqr.example>\nS: 250 ok\n"
        + "C: DATA\nS: 354 go\n"
        + MESSAGE_LINES
        + "S: 250 queued\n"
    )
    steps = script(plain + one + one + "C: QUIT\nS: 221 bye")
    parts = [MESSAGE[:9], MESSAGE[9:20], MESSAGE[20:]]

    async def pieces() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            await client.send_message(iter(parts), "a@abc.example", "bob@pqr.example")
            await client.send_message(pieces(), "a@abc.example", "bob@pqr.example")

    with ScriptedServer(steps) as server:
        run(adapter, lambda: go(server.port))


def test_a_new_session_keeps_nothing_of_the_last(adapter: str) -> None:
    """``connect()`` again after a session whose transaction failed starts clean: no
    RSET owed to the old session's failure goes out before the new one's MAIL."""
    mod = module(adapter)
    plain = GREET.replace("S: 250-PIPELINING\n", "")
    refused = script(plain + "C: MAIL FROM:<a@abc.example>\nS: 451 4.3.0 not now\n-- close")
    fresh = script(
        plain
        + "C: MAIL FROM:<a@abc.example>\nS: 250 ok\nC: RCPT TO:<bob@pqr.example>\nS: 250 ok\n"
        + "C: DATA\nS: 354 go\n"
        + MESSAGE_LINES
        + "S: 250 queued\nC: QUIT\nS: 221 bye"
    )

    async def go(first: int, second: int) -> None:
        client = mod.SMTPClient("127.0.0.1", first)
        await client.connect()
        with pytest.raises(mod.SenderRefused):
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
        await client.close()
        client.port = second
        async with client:
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

    with ScriptedServer(refused) as one, ScriptedServer(fresh) as two:
        run(adapter, lambda: go(one.port, two.port))


def test_a_greeting_other_than_220_is_hello_refused(adapter: str) -> None:
    busy = script("S: 554 5.3.2 no service for you\nC: QUIT\nS: 221 bye")
    mod = module(adapter)
    with ScriptedServer(busy) as server, pytest.raises(mod.HelloRefused) as refused:
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port).connect())
    assert (refused.value.command, refused.value.code) == ("greeting", 554)


@pytest.mark.parametrize("helo", ["550 5.7.1 not you", "451 4.3.0 try later"])
def test_a_refused_helo_after_a_refused_ehlo_names_helo_and_quits(adapter: str, helo: str) -> None:
    """The error names the command whose reply it carries: HELO's, not EHLO's. The
    session still takes QUIT, which goes before the close (RFC 5321 §4.1.1.10), its
    reply not waited for; the connection was closed without it."""
    steps = script(
        "S: 220 scripted.test\nC~ EHLO .+\nS: 502 5.5.1 no EHLO\n"
        f"C~ HELO .+\nS: {helo}\nC: QUIT\n-- expect close"
    )
    mod = module(adapter)
    with ScriptedServer(steps) as server, pytest.raises(mod.HelloRefused) as refused:
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port).connect())
    server.check()
    assert (refused.value.command, refused.value.code) == ("HELO", int(helo[:3]))


EHLO_REFUSALS = [
    "500 5.5.1 unrecognized",
    "502 5.5.1 not implemented",
    "503 5.5.1 bad sequence",
    "550 5.5.1 EHLO not supported here",
    "554 5.7.1 ESMTP not available",
    "451 4.3.0 try HELO",
]


@pytest.mark.parametrize("ehlo", EHLO_REFUSALS)
def test_any_refusal_of_ehlo_but_421_falls_back_to_helo(adapter: str, ehlo: str) -> None:
    """RFC 5321 §4.1.4 lists 550 among EHLO's refusals, and servers also say 503, 554
    or a 4xx: each is followed by HELO, as Postfix's ``smtp_helo()`` does (a 550 or
    554 raised ``HelloRefused`` at once, a 451 too). The session then has no extension:
    no PIPELINING, no SIZE, no ENHANCEDSTATUSCODES."""
    steps = script(
        f"S: 220 scripted.test\nC~ EHLO .+\nS: {ehlo}\nC~ HELO .+\nS: 250 scripted.test\n"
        "C: MAIL FROM:<a@abc.example>\nS: 250 2.1.0 ok\n"
        "C: RCPT TO:<bob@pqr.example>\nS: 250 2.1.5 ok\nC: DATA\nS: 354 go\n"
        + MESSAGE_LINES
        + "S: 250 queued\nC: QUIT\nS: 221 bye\n-- expect close"
    )
    mod = module(adapter)

    async def go() -> None:
        async with mod.SMTPClient("127.0.0.1", server.port) as client:
            assert not client.connection.extended
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

    with ScriptedServer(steps) as server:
        run(adapter, go)
    server.check()


def test_a_421_to_ehlo_ends_the_session_without_helo(adapter: str) -> None:
    steps = script("S: 220 scripted.test\nC~ EHLO .+\nS: 421 4.3.2 going down\n-- expect close")
    mod = module(adapter)
    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPConnectionError):
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port).connect())
    server.check()


def test_a_refused_lhlo_has_no_helo_to_fall_back_to(adapter: str) -> None:
    """RFC 2033 §4.1: HELO is not present in LMTP."""
    steps = script(
        "S: 220 scripted.test LMTP\nC~ LHLO .+\nS: 550 5.7.1 not you\nC: QUIT\n-- expect close"
    )
    mod = module(adapter)
    with ScriptedServer(steps) as server, pytest.raises(mod.HelloRefused) as refused:
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port, lmtp=True).connect())
    server.check()
    assert (refused.value.command, refused.value.code) == ("LHLO", 550)


#: An EHLO refused, then the connection closed: the server's last word is that refusal.
REFUSED_EHLO_THEN_CLOSE = "S: 220 scripted.test\nC~ EHLO .+\nS: {}\n-- close"


@pytest.mark.parametrize(
    "ehlo", ["554 5.7.1 your IP is on a blocklist", "550 5.7.1 go away", "451 4.3.0 not now"]
)
def test_an_ehlo_refusal_then_a_close_is_hello_refused_for_ehlo(adapter: str, ehlo: str) -> None:
    """A server that refuses EHLO and closes, as many do after a ``554`` to a
    blocklisted client, said its last word there: the HELO fallback, sent into the
    closed connection, raised a lost connection that hid it. ``HelloRefused`` names
    EHLO and carries its reply, as before the fallback."""
    mod = module(adapter)
    steps = script(REFUSED_EHLO_THEN_CLOSE.format(ehlo))
    with ScriptedServer(steps) as server, pytest.raises(mod.HelloRefused) as refused:
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port).connect())
    assert (refused.value.command, str(refused.value.reply)) == ("EHLO", ehlo)


#: Refusals after which connect() says QUIT; the server reads it and never answers.
QUIT_UNANSWERED = {
    "greeting": "S: 554 5.3.2 no service for you\nC: QUIT\n-- expect close",
    "hello": (
        "S: 220 scripted.test\nC~ EHLO .+\nS: 550 5.7.1 no EHLO\n"
        "C~ HELO .+\nS: 550 5.7.1 no HELO\nC: QUIT\n-- expect close"
    ),
}


@pytest.mark.parametrize("refused", list(QUIT_UNANSWERED))
def test_a_refused_session_does_not_wait_for_the_reply_to_quit(adapter: str, refused: str) -> None:
    """After a refused greeting or hello, connect() says QUIT (RFC 5321 §4.1.1.10) and
    closes without waiting for its ``221``: a server that never answers held it for
    the whole QUIT timeout (300 s by default). Order of events: the client closes
    before the server, which gives up waiting for that close after 5 s, though the
    client's QUIT timeout is longer."""
    mod = module(adapter)
    timeouts = mod.Timeouts(quit=120.0)
    steps = script(QUIT_UNANSWERED[refused])
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(mod.HelloRefused):
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port, timeouts=timeouts).connect())


def test_a_helo_session_never_passes_for_one_that_offered_starttls(adapter: str) -> None:
    """``starttls=True`` with EHLO refused: HELO's session offers no STARTTLS, so
    :class:`TLSNotAvailable` is raised before any mail command, as for a server that
    lists no STARTTLS; the fallback cannot lower a TLS requirement."""
    steps = script(
        "S: 220 scripted.test\nC~ EHLO .+\nS: 550 5.5.1 no EHLO\n"
        "C~ HELO .+\nS: 250 scripted.test\nC: QUIT\n-- expect close"
    )
    mod = module(adapter)
    with ScriptedServer(steps) as server, pytest.raises(mod.TLSNotAvailable):
        run(adapter, lambda: mod.SMTPClient("127.0.0.1", server.port, starttls=True).connect())
    server.check()


#: A session that offers no STARTTLS; connect() says QUIT and the server never answers.
NO_STARTTLS_QUIT_UNANSWERED = GREET + "C: QUIT\n-- expect close"


def test_tls_not_available_at_connect_says_quit_and_does_not_wait_for_its_reply(
    adapter: str,
) -> None:
    """``starttls=True`` and a server that offers no STARTTLS: connect() closed the
    connection without QUIT, which RFC 5321 §4.1.1.10 says a client sends before it
    closes (Postfix does, after ``TLS is required, but was not offered``). QUIT now goes
    out, and its ``221`` is not waited for, as after a refused hello: the server, which
    never answers it, sees the close before it gives up waiting (5 s), though the
    client's QUIT timeout is longer."""
    mod = module(adapter)
    timeouts = mod.Timeouts(quit=120.0)
    steps = script(NO_STARTTLS_QUIT_UNANSWERED)
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(mod.TLSNotAvailable):
        run(
            adapter,
            lambda: mod.SMTPClient(
                "127.0.0.1", server.port, starttls=True, timeouts=timeouts
            ).connect(),
        )


#: The scripted servers' EHLO reply, with STARTTLS and AUTH PLAIN.
GREET_STARTTLS = GREET.replace(
    "S: 250 ENHANCEDSTATUSCODES\n",
    "S: 250-STARTTLS\nS: 250-AUTH PLAIN\nS: 250 ENHANCEDSTATUSCODES\n",
)
#: A session without STARTTLS that offers AUTH PLAIN.
GREET_AUTH_ONLY = GREET.replace(
    "S: 250 ENHANCEDSTATUSCODES\n", "S: 250-AUTH PLAIN\nS: 250 ENHANCEDSTATUSCODES\n"
)
STARTTLS_REFUSED = "C: STARTTLS\nS: 454 4.7.0 TLS not available now\n"

#: The ways connect() gives up for want of the TLS it requires: each script, what the
#: client was given, and what it raises. QUIT must follow each, its reply unawaited.
TLS_REFUSED_AT_CONNECT: dict[str, tuple[str, dict[str, Any], str]] = {
    "starttls=True, STARTTLS refused": (
        GREET_STARTTLS + STARTTLS_REFUSED,
        {"starttls": True},
        "SMTPReplyError",
    ),
    "credentials, STARTTLS refused": (
        GREET_STARTTLS + STARTTLS_REFUSED,
        {"username": "u", "password": "p"},
        "SMTPReplyError",
    ),
    "credentials, no STARTTLS offered": (
        GREET_AUTH_ONLY,
        {"username": "u", "password": "p"},
        "AuthenticationNotAvailable",
    ),
}


@pytest.mark.parametrize("case", list(TLS_REFUSED_AT_CONNECT))
def test_a_tls_refusal_at_connect_says_quit_and_does_not_wait_for_its_reply(
    adapter: str, case: str
) -> None:
    """Every path on which connect() gives up for want of TLS says QUIT before the
    close (RFC 5321 §4.1.1.10), not only a STARTTLS not offered: a ``454`` to the
    STARTTLS that ``starttls=True`` or credentials require closed the connection
    without it. Its ``221`` is not waited for: the server, which never answers, sees the
    close before it gives up waiting (5 s), though the client's QUIT timeout is longer."""
    text, options, error = TLS_REFUSED_AT_CONNECT[case]
    mod = module(adapter)
    timeouts = mod.Timeouts(quit=120.0)
    steps = script(text + "C: QUIT\n-- expect close")
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(getattr(mod, error)):
        run(
            adapter,
            lambda: mod.SMTPClient(
                "127.0.0.1", server.port, timeouts=timeouts, **options
            ).connect(),
        )


#: A login refused at connect(), with QUIT after it.
LOGIN_REFUSED_THEN_QUIT = (
    GREET_AUTH_ONLY + "C~ AUTH PLAIN .+\nS: 535 5.7.8 bad credentials\nC: QUIT\n-- expect close"
)


def test_a_refused_login_at_connect_says_quit_and_does_not_wait_for_its_reply(
    adapter: str,
) -> None:
    """A ``535`` to the login connect() makes closed the connection without QUIT (RFC
    5321 §4.1.1.10); QUIT now goes, its ``221`` not waited for: the server, which never
    answers, sees the close within its own wait (5 s), the client's QUIT timeout longer."""
    mod = module(adapter)
    timeouts = mod.Timeouts(quit=120.0)
    with (
        ScriptedServer(script(LOGIN_REFUSED_THEN_QUIT), timeout=5.0) as server,
        pytest.raises(mod.AuthenticationError, match="535"),
    ):
        run(
            adapter,
            lambda: mod.SMTPClient(
                "127.0.0.1",
                server.port,
                username="u",
                password="p",
                allow_plaintext_auth=True,
                timeouts=timeouts,
            ).connect(),
        )


#: Refusals at connect() followed by a partial line (maybe the start of a 421): each
#: script, what the client was given, and what it raises.
REFUSED_THEN_PARTIAL: dict[str, tuple[str, dict[str, Any], str]] = {
    "greeting 554": ("S: 554 go away\nS+ 4\n", {}, "HelloRefused"),
    "STARTTLS 454": (
        GREET_STARTTLS + "C: STARTTLS\nS: 454 4.7.0 not now\nS+ 4\n",
        {"starttls": True},
        "SMTPReplyError",
    ),
    "AUTH 535": (
        GREET_AUTH_ONLY + "C~ AUTH PLAIN .+\nS: 535 5.7.8 bad credentials\nS+ 4\n",
        {"username": "u", "password": "p", "allow_plaintext_auth": True},
        "AuthenticationError",
    ),
}


def refused_then_partial_steps(text: str) -> list[Step]:
    """``text``'s script, each run of the server's lines sent in one write: the partial
    line must arrive with the refusal before it, as it would behind a 421, or the
    client, having read the refusal alone, rightly says QUIT."""
    steps: list[Step] = []
    for step in script(text + "-- expect close"):
        if steps and isinstance(step, Send) and isinstance(steps[-1], Send):
            steps[-1] = Send(steps[-1].data + step.data)
        else:
            steps.append(step)
    return steps


@pytest.mark.parametrize("case", list(REFUSED_THEN_PARTIAL))
def test_a_refusal_followed_by_a_partial_line_closes_without_quit_or_a_read(
    adapter: str, case: str
) -> None:
    """A partial line held behind a refusal at connect() would have to be read before
    QUIT could go (it may start a 421), and that read waited for the rest under the
    command timeout: the refusal came only after it. QUIT is now left out and the
    connection closed at once: the server sees the close, nothing before it, well
    within its own wait (5 s), though the client's timeouts are far longer."""
    text, options, error = REFUSED_THEN_PARTIAL[case]
    mod = module(adapter)
    timeouts = mod.Timeouts(command=120.0, quit=120.0)
    steps = refused_then_partial_steps(text)
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(getattr(mod, error)):
        run(
            adapter,
            lambda: mod.SMTPClient(
                "127.0.0.1", server.port, timeouts=timeouts, **options
            ).connect(),
        )


#: The ways the POP3 client's connect() gives up for want of STLS, and what it raises.
POP3_STLS_REFUSED: dict[str, tuple[str, bool | None, str]] = {
    "stls=True, not offered": (
        "S: +OK ready\nC: CAPA\nS: +OK\nS: USER\nS: .\n",
        True,
        "POP3TLSNotAvailable",
    ),
    "stls=True, refused": (
        "S: +OK ready\nC: CAPA\nS: +OK\nS: STLS\nS: .\nC: STLS\nS: -ERR not now\n",
        True,
        "POP3ResponseError",
    ),
    "stls offered, refused": (
        "S: +OK ready\nC: CAPA\nS: +OK\nS: STLS\nS: .\nC: STLS\nS: -ERR not now\n",
        None,
        "POP3ResponseError",
    ),
}


@pytest.mark.parametrize("case", list(POP3_STLS_REFUSED))
def test_pop3_stls_refused_at_connect_says_quit_and_does_not_wait_for_its_answer(
    adapter: str, case: str
) -> None:
    """The POP3 client gave up on a session without the STLS it required by closing the
    connection without QUIT, which in AUTHORIZATION ends the session and commits
    nothing (RFC 1939 §5). QUIT now goes out, its answer not waited for."""
    text, stls, error = POP3_STLS_REFUSED[case]
    mod = module(adapter)
    steps = script(text + "C: QUIT\n-- expect close")
    with ScriptedServer(steps, timeout=5.0) as server, pytest.raises(getattr(mod, error)):
        run(adapter, lambda: mod.POP3Client("127.0.0.1", server.port, stls=stls).connect())


class SilentTLSServer:
    """One connection on 127.0.0.1: the TLS handshake (RFC 8314 §3.3), then the
    ``answers`` (the first one at once, each other one to a line it reads), then
    nothing: a line after them is left unanswered, and so is the client's
    close_notify. ``seen`` says what came next, each within ``give_up`` seconds:
    ``"close_notify"`` (TLS closed as it should be), then ``"closed"`` (the
    client's TCP close), or ``"gave up"``."""

    def __init__(self, tls: TLSFiles, answers: list[bytes], give_up: float) -> None:
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._tls = tls
        self._answers = answers
        self._give_up = give_up
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        conn.settimeout(self._give_up)
        with self._tls.server_context.wrap_socket(conn, server_side=True) as session:
            reader = session.makefile("rb")
            for number, answer in enumerate(self._answers):
                if number:
                    reader.readline()
                session.sendall(answer)
            if self._answers:
                reader.readline()  # the line left unanswered
            try:
                self.seen.append("close_notify" if session.recv(1) == b"" else "data")
                with socket.socket(fileno=os.dup(session.fileno())) as raw:
                    raw.settimeout(self._give_up)
                    self.seen.append("closed" if raw.recv(1) == b"" else "data")
            except TimeoutError:
                self.seen.append("gave up")

    def __enter__(self) -> SilentTLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(10)
        self._listener.close()


@pytest.mark.parametrize(
    ("answers", "call"),
    [([], "connect"), ([b"220 silent.test ESMTP\r\n", b"250 silent.test\r\n"], "quit")],
    ids=["no greeting", "QUIT unanswered"],
)
def test_a_tls_server_gone_silent_costs_the_timeout_alone(
    adapter: str, tls: TLSFiles, answers: list[bytes], call: str
) -> None:
    """Implicit TLS to a server that goes silent (after the handshake, or at QUIT):
    the asyncio client raised its timeout, or gave up on QUIT's reply, then spent 5 s
    more in the close, waiting for the server to answer its close_notify, which a
    silent server never does. RFC 8446 §6.1 does not have the side that closes wait
    for it, and trio's close does not: the close_notify goes out, then the TCP
    close, at once. Order of events: the server sees both before it gives up (4 s),
    though the client's timeout was 0.2 s."""
    mod = module(adapter)
    timeouts = mod.Timeouts(greeting=0.2, quit=0.2)
    with SilentTLSServer(tls, answers, give_up=4.0) as server:

        async def session() -> None:
            client = mod.SMTPClient(
                "127.0.0.1",
                server.port,
                tls_on_connect=True,
                ssl_context=tls.client_context,
                timeouts=timeouts,
            )
            if call == "connect":
                with pytest.raises(mod.SMTPTimeout):
                    await client.connect()
            else:
                await client.connect()
                await client.quit()

        run(adapter, session)
    assert server.seen == ["close_notify", "closed"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_asyncio_client_over_a_tls_stream_costs_the_timeout_alone(
    tls: TLSFiles, loop: str
) -> None:
    """The same over an asyncio stream pair opened with ``ssl=``
    (``SMTPClient.over_stream``): its close waited up to 5 s for the server's
    close_notify, on asyncio's loop and on uvloop's, whose TLS transport shows
    nothing of the TCP transport beneath it. Order of events: the server sees the
    close_notify and the TCP close before it gives up (4 s), though the client's
    timeout was 0.2 s."""
    if loop == "uvloop":
        try:
            new_loop = importlib.import_module("uvloop").new_event_loop
        except ImportError:
            missing_peer("uvloop is not installed (the test extra installs it)")
    else:
        new_loop = asyncio.new_event_loop
    timeouts = smtpcore.asyncio.Timeouts(greeting=0.2)
    with SilentTLSServer(tls, [], give_up=4.0) as server:

        async def session() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=tls.client_context
            )
            client = smtpcore.asyncio.SMTPClient.over_stream(
                reader, writer, "127.0.0.1", timeouts=timeouts
            )
            with pytest.raises(smtpcore.asyncio.SMTPTimeout):
                await client.connect()

        event_loop = new_loop()
        try:
            event_loop.run_until_complete(session())
        finally:
            event_loop.close()
    assert server.seen == ["close_notify", "closed"]


class ReadingTLSServer:
    """One TLS connection on 127.0.0.1 (TLS 1.3 sends its session tickets, which the
    client never reads) whose bytes are read to the end, slowly (a small receive
    buffer): ``got`` counts them, ``end`` says how the stream ended."""

    def __init__(self, tls: TLSFiles) -> None:
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._tls = tls
        self.got = 0
        self.end = "nothing"
        self.shaken = threading.Event()
        """The handshake is over, and the tickets sent."""
        self.read = threading.Event()
        """Set for the server to read; set at once unless a test clears it."""
        self.read.set()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        conn.settimeout(10)
        with self._tls.server_context.wrap_socket(
            conn, server_side=True, suppress_ragged_eofs=False
        ) as session:
            self.shaken.set()
            if not self.read.wait(10):
                self.end = "never let read"
                return
            try:
                while data := session.recv(65536):
                    self.got += len(data)
                self.end = "close_notify"
            except ssl.SSLEOFError:
                self.end = "EOF without close_notify"
            except OSError as exc:
                self.end = repr(exc)

    def __enter__(self) -> ReadingTLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(15)
        self._listener.close()


def test_an_asyncio_client_tls_close_sends_what_was_written_first(tls: TLSFiles) -> None:
    """A client's TLS close on asyncio's loop (over a stream opened with ``ssl=``, as
    after STARTTLS) closed the socket while the server's session tickets lay
    unread in it: the kernel answered the close with a reset, which dropped what
    it had yet to send, and the server got 16 KiB of 64 and no close_notify.
    Order of events: the server reads every byte written, then the close_notify."""
    with ReadingTLSServer(tls) as server:

        async def session() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=tls.client_context
            )
            await asyncio.to_thread(server.shaken.wait, 10)  # the tickets are on their way
            writer.write(b"m" * 65536)  # queued, not drained
            await smtpcore.asyncio.StreamTransport(reader, writer).aclose()

        asyncio.run(session())
    assert (server.got, server.end) == (65536, "close_notify")


def test_an_asyncio_client_tls_close_does_not_wait_for_a_server_that_has_not_read(
    tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the session tickets dropped and nothing else unread, a close is a FIN and
    the kernel still sends what it holds; the close waited instead for the server
    to acknowledge every byte, up to its 5 s timeout. Order of events (the timeout
    put out of reach): the close ends before the server reads anything, and the
    server then reads every byte written, then the close_notify."""
    monkeypatch.setattr(shared_transport, "CLOSE_TIMEOUT", 60.0)
    with ReadingTLSServer(tls) as server:
        server.read.clear()

        async def session() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=tls.client_context
            )
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # holds it all
            await asyncio.to_thread(server.shaken.wait, 10)
            await asyncio.sleep(0.05)  # the tickets have come
            writer.write(b"m" * 131072)
            await smtpcore.asyncio.StreamTransport(reader, writer).aclose()
            server.read.set()

        asyncio.run(session())
    assert (server.got, server.end) == (131072, "close_notify")


def test_the_drop_before_a_tls_close_reads_no_more_than_was_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drop of unread bytes before a TLS close read while any were unread: a
    server that kept sending held the client's event loop, which no timeout can
    interrupt. Order of events: the server sends more at every read, and the
    drop reads only what was unread when it began."""
    near, far = socket.socketpair()
    near.setblocking(False)
    far.sendall(b"t" * 1000)
    read = os.read
    taken: list[int] = []

    def read_while_more_comes(fd: int, size: int) -> bytes:
        data = read(fd, size)
        taken.append(len(data))
        if len(taken) < 50:
            far.sendall(b"t" * 1000)
        return data

    monkeypatch.setattr(os, "read", read_while_more_comes)
    with near, far:
        ready_to_close(near)
    assert sum(taken) == 1000


class _LostUvloopTLS:
    """What uvloop's TLS transport would show were its connection lost in the middle
    of a close with its count of queued bytes left as it was (uvloop 0.23 brings the
    count to 0 with the socket; the guard is defensive), and no socket (its TLS
    protocol has let go of the TCP transport)."""

    def get_write_buffer_size(self) -> int:
        return 1024

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def test_a_uvloop_tls_close_ends_when_the_connection_is_lost() -> None:
    """A client's TLS close on uvloop waited for its queued bytes to reach the TCP
    transport; had the count stayed after a lost connection, the close would have
    polled until its 5 s timeout. Order of events: the close's wait ends, without telling the
    TLS protocol of an end it no longer has."""
    told: list[str] = []
    protocol = types.SimpleNamespace(eof_received=lambda: told.append("eof"))

    async def close() -> None:
        tls = cast(asyncio.BaseTransport, _LostUvloopTLS())
        await _asyncio_beneath_tls._end_uvloop_tls(tls, protocol)

    asyncio.run(asyncio.wait_for(close(), 10))  # a guard: it polled for ever
    assert told == []


EHLO_FOR_NOW = "451 4.3.0 ESMTP not now"


class RefusesEhloOnce(SmallServer):
    """A session that refuses its first EHLO for now (``451``) and takes HELO and any
    later EHLO, as a server whose ESMTP part is briefly unavailable."""

    def __init__(self, *, starttls: bool = False) -> None:
        super().__init__(starttls=starttls)
        self.refused_ehlo = False

    def command(self, line: bytes) -> bytes:
        if not self.refused_ehlo and line[:5].upper() == b"EHLO ":
            self.refused_ehlo = True
            self.commands.append(line)
            return f"{EHLO_FOR_NOW}\r\n".encode()
        return super().command(line)


def refusing_ehlo_in(sessions: int) -> Callable[..., SmallServer]:
    """A factory for :func:`serve`: its first ``sessions`` sessions refuse EHLO once;
    the later ones refuse service at the greeting (``554``), before any EHLO."""
    count = itertools.count()

    def factory(*, starttls: bool = False) -> SmallServer:
        if next(count) < sessions:
            return RefusesEhloOnce(starttls=starttls)
        return RateLimitedServer(starttls=starttls, refused=True, code=554)

    return factory


def test_ehlo_refused_is_kept_for_the_session_that_went_on_after_helo(adapter: str) -> None:
    """``ehlo_refused`` holds the reply that refused EHLO while the session goes on after
    HELO, and after its QUIT (the relay reads it then); an ``ehlo()`` that is taken
    clears it, and so does a new ``connect()``, though it fails before EHLO."""
    mod = module(adapter)

    async def sessions(port: int) -> list[str | None]:
        client = mod.SMTPClient("127.0.0.1", port)
        seen: list[Reply | None] = []
        await client.connect()
        seen.append(client.ehlo_refused)
        await client.ehlo()
        seen.append(client.ehlo_refused)
        await client.quit()
        await client.connect()
        seen.append(client.ehlo_refused)
        await client.quit()
        seen.append(client.ehlo_refused)
        with pytest.raises(mod.HelloRefused):
            await client.connect()
        seen.append(client.ehlo_refused)
        return [None if reply is None else str(reply) for reply in seen]

    with serve(refusing_ehlo_in(2)) as server:
        seen = run(adapter, lambda: sessions(server.port))
    assert seen == [EHLO_FOR_NOW, None, EHLO_FOR_NOW, EHLO_FOR_NOW, None]


# -- every connection closed on every path ------------------------------------------


AFTER_MAIL = GREET + "C: MAIL FROM:<a@abc.example>\n"
MID_DATA_CLOSE = [
    *script(AFTER_MAIL + "C: RCPT TO:<bob@pqr.example>\nC: DATA\nS: 250 ok\nS: 250 ok\nS: 354 go"),
    ONE_LINE,
]
SILENT = [*script(AFTER_MAIL), Call(ScriptedConnection.read_to_close)]
REFUSING_MAIL = [
    *script(AFTER_MAIL + "S: 550 5.7.1 no\nS: 503 5.5.1 no\nS: 503 5.5.1 no"),
    ONE_LINE,
]
NO_STARTTLS = [*script(GREET), ONE_LINE]


CASES: dict[str, tuple[list[Step], str, dict[str, Any]]] = {
    "closed-mid-data": (MID_DATA_CLOSE, "SMTPConnectionError", {}),
    "garbage-reply": ([*script(AFTER_MAIL + "S: hello there"), ONE_LINE], "SMTPProtocolError", {}),
    "421": (
        [*script(AFTER_MAIL + "S: 421 4.3.2 going down"), ONE_LINE],
        "SMTPConnectionError",
        {},
    ),
    "timeout": (SILENT, "SMTPTimeout", {"command": 0.2}),
    "greeting-554": ([*script("S: 554 no"), ONE_LINE], "HelloRefused", {}),
    "starttls-required": (NO_STARTTLS, "TLSNotAvailable", {"starttls": True}),
    "auth-not-offered": (NO_STARTTLS, "AuthenticationNotAvailable", {"auth": True}),
    # RFC 4954 §4: "*" is answered with 501; a server that challenges on has lost step.
    "334-after-cancel": (
        [
            *script(
                "S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250-scripted.test\n"
                "S: 250 AUTH LOGIN\nC: AUTH LOGIN\nS: 334 not base64!\nC: *\nS: 334 VXNlcm5hbWU6"
            ),
            ONE_LINE,
        ],
        "SMTPProtocolError",
        {"auth": True},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_connection_is_left_open_after_a_failure(adapter: str, case: str) -> None:
    steps, error_name, options = CASES[case]
    mod = module(adapter)
    kwargs: dict[str, Any] = {}
    if "command" in options:
        kwargs["timeouts"] = mod.Timeouts(command=options["command"])
    if "starttls" in options:
        kwargs["starttls"] = True
    if "auth" in options:
        kwargs.update(username="u", password="p", allow_plaintext_auth=True)
    kept: list[Any] = []
    before = open_fd_count()
    with ScriptedServer(steps) as server:

        async def go() -> None:
            client = mod.SMTPClient("127.0.0.1", server.port, **kwargs)
            kept.append(client)  # a reference, so that no finalizer closes the socket
            await client.connect()
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

        with pytest.raises(getattr(mod, error_name)) as raised:
            run(adapter, go)
    assert isinstance(raised.value, mod.SMTPError)
    assert kept and open_fd_count() == before


def test_a_refusal_inside_async_with_closes_on_the_way_out(adapter: str) -> None:
    mod = module(adapter)
    kept: list[Any] = []
    before = open_fd_count()
    with ScriptedServer(REFUSING_MAIL) as server:

        async def go() -> None:
            async with mod.SMTPClient("127.0.0.1", server.port) as client:
                kept.append(client)
                await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

        with pytest.raises(mod.SenderRefused):
            run(adapter, go)
    assert kept and open_fd_count() == before


def test_cancellation_in_the_middle_of_a_message_closes_the_connection(adapter: str) -> None:
    mod = module(adapter)
    kept: list[Any] = []
    before = open_fd_count()
    with ScriptedServer(SILENT) as server:

        async def send(client: Any) -> None:
            await client.connect()
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

        async def go_asyncio() -> None:
            client = mod.SMTPClient("127.0.0.1", server.port)
            kept.append(client)
            with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from 3.11 on
                await asyncio.wait_for(send(client), 0.3)

        async def go_trio() -> None:
            client = mod.SMTPClient("127.0.0.1", server.port)
            kept.append(client)
            with trio.move_on_after(0.3) as scope:
                await send(client)
            assert scope.cancelled_caught

        run(adapter, go_asyncio if adapter == "asyncio" else go_trio)
    assert kept and open_fd_count() == before


def test_connection_refused_leaves_nothing_open(adapter: str) -> None:

    mod = module(adapter)
    port = free_port("127.0.0.1")  # nothing listens there
    before = open_fd_count()
    kept: list[Any] = []

    async def go() -> None:
        client = mod.SMTPClient("127.0.0.1", port)
        kept.append(client)
        await client.connect()

    with pytest.raises(mod.SMTPConnectionError):
        run(adapter, go)
    assert open_fd_count() == before


def test_an_ipv6_server_is_named_in_brackets_in_connection_errors(adapter: str) -> None:
    """``cannot connect to ::1:2525`` left the port to be told from the address's last
    group: the address goes in brackets, ``[::1]:2525``, as in a URI (RFC 3986 §3.2.2)."""

    mod = module(adapter)
    port = ipv6_loopback_port()  # nothing listens there

    async def go(client: Any) -> None:
        await client.connect()

    for client, error in (
        (mod.SMTPClient("::1", port), mod.SMTPConnectionError),
        (mod.POP3Client("::1", port), mod.POP3ConnectionError),
    ):
        with pytest.raises(error, match=rf"^cannot connect to \[::1\]:{port}: "):
            run(adapter, lambda: go(client))  # noqa: B023 - run at once


#: A POP3 login with USER and PASS, the capabilities asked before and after it.
POP3_LOGGED_IN = """
S: +OK ready
C: CAPA
S: +OK
S: USER
S: .
C: USER u
S: +OK
C: PASS p
S: +OK in
C: CAPA
S: +OK
S: USER
S: .
"""


def test_pop3_client_closes_when_the_server_breaks_off(adapter: str) -> None:
    pop3 = POP3_LOGGED_IN + "C: RETR 1\nS: +OK\nS+ half a mess\n"

    mod = module(adapter)
    kept: list[Any] = []
    before = open_fd_count()
    with ScriptedServer(script(pop3)) as server:  # and the connection drops

        async def go() -> None:
            client = mod.POP3Client("127.0.0.1", server.port, allow_plaintext_auth=True)
            kept.append(client)
            await client.connect()
            await client.login("u", "p")
            await client.retrieve(1)

        with pytest.raises(mod.POP3ConnectionError):
            run(adapter, go)
    assert kept and open_fd_count() == before


def test_quit_after_a_broken_session_closes_without_raising(adapter: str) -> None:
    mod = module(adapter)
    with ScriptedServer(MID_DATA_CLOSE) as server:

        async def go() -> None:
            client = mod.SMTPClient("127.0.0.1", server.port)
            await client.connect()
            with pytest.raises(mod.SMTPConnectionError):
                await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            await client.quit()

        run(adapter, go)


def test_an_smtputf8_message_to_a_server_without_it_is_refused_before_mail(adapter: str) -> None:
    """The caller asks for SMTPUTF8 (UTF-8 in the header, say): the message needs the
    extension even with ASCII addresses (RFC 6531 §3.2)."""

    async def attempt(port: int) -> Any:
        mod = module(adapter)
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(mod.ExtensionNotOffered) as refused:
                await client.send_message(
                    MESSAGE, "a@abc.example", "bob@pqr.example", mail_params={"SMTPUTF8": None}
                )
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            return refused.value

    with ScriptedServer(NO_EXTENSIONS) as server:
        error = run(adapter, lambda: attempt(server.port))
    assert (error.keyword, error.extension, error.code, str(error.status)) == (
        "SMTPUTF8",
        "SMTPUTF8",
        553,
        "5.6.7",
    )


def test_a_utf8_parameter_value_to_a_server_without_smtputf8_is_refused_before_mail(
    adapter: str,
) -> None:
    """A raw UTF-8 ORCPT (RFC 6533 §3), as any UTF-8 value (RFC 6531 §3.3), needs
    SMTPUTF8: 553 5.6.7 naming the parameter, and nothing sent."""

    async def attempt(port: int) -> Any:
        mod = module(adapter)
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(mod.ExtensionNotOffered) as refused:
                await client.send_message(
                    MESSAGE,
                    "a@abc.example",
                    "bob@pqr.example",
                    rcpt_params={"ORCPT": "utf-8;jörg@pqr.example"},
                )
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            return refused.value

    with ScriptedServer(NO_EXTENSIONS) as server:
        error = run(adapter, lambda: attempt(server.port))
    assert (error.keyword, error.extension, error.code, str(error.status)) == (
        "ORCPT",
        "SMTPUTF8",
        553,
        "5.6.7",
    )
    assert all(line.isascii() for line in server.transcript)


def _open_session(
    adapter: str, protocol: str, steps: list[Step], then: Callable[[Any, Any], Awaitable[None]]
) -> None:
    """Connect an SMTP or POP3 client to a scripted server (POP3: logged in as u, p),
    run ``then(module, client)``, and check that no descriptor is left open, with
    the client still referenced so that no garbage collection can hide a leak."""
    mod = module(adapter)
    kept: list[Any] = []
    before = open_fd_count()
    with ScriptedServer(steps) as server:

        async def go() -> None:
            if protocol == "smtp":
                client = mod.SMTPClient("127.0.0.1", server.port)
            else:
                client = mod.POP3Client("127.0.0.1", server.port, allow_plaintext_auth=True)
            kept.append(client)
            await client.connect()
            if protocol == "pop3":
                await client.login("u", "p")
            await then(mod, client)

        run(adapter, go)
    assert kept and open_fd_count() == before


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_close_ends_the_session_without_quit_and_leaves_nothing_open(
    adapter: str, protocol: str
) -> None:
    """``close()`` on either client writes nothing: no QUIT, so a POP3 server enters no
    UPDATE state and removes nothing marked deleted (RFC 1939 §6)."""
    if protocol == "smtp":
        steps = script(GREET + "-- expect close")
    else:
        steps = script(POP3_LOGGED_IN + "C: DELE 1\nS: +OK marked\n-- expect close")

    async def close(mod: Any, client: Any) -> None:
        if protocol == "pop3":
            await client.delete(1)
        await client.close()

    _open_session(adapter, protocol, steps, close)


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_connect_on_an_open_session_is_refused_and_the_session_goes_on(
    adapter: str, protocol: str
) -> None:
    """A second ``connect()`` would drop the first socket without QUIT, left open
    until garbage collection: it is refused, and the open session still works."""
    if protocol == "smtp":
        steps = script(GREET + "C: NOOP\nS: 250 2.0.0 ok\nC: QUIT\nS: 221 bye\n")
    else:
        steps = script(POP3_LOGGED_IN + "C: NOOP\nS: +OK\nC: QUIT\nS: +OK bye\n")

    async def connect_again(mod: Any, client: Any) -> None:
        error = mod.SMTPConnectionError if protocol == "smtp" else mod.POP3ConnectionError
        with pytest.raises(error, match="already connected"):
            await client.connect()
        await client.noop()
        await client.quit()

    _open_session(adapter, protocol, steps, connect_again)


#: An LMTP client's pipelined transaction to u1 and u2, up to its content; the
#: replies after the content (RFC 2033 §4.2) are each test's own.
LMTP_TO_U1_AND_U2 = (
    """
S: 220 lmtp.test LMTP
C~ LHLO .+
S: 250-lmtp.test
S: 250-PIPELINING
S: 250 ENHANCEDSTATUSCODES
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<u1@pqr.example>
C: RCPT TO:<u2@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 250 2.1.5 ok
S: 250 2.1.5 ok
S: 354 go
"""
    + MESSAGE_LINES
)


def _raised_sending_to_u1_and_u2(
    adapter: str, steps: list[Any], error: str, *, lmtp: bool = False
) -> Any:
    """The ``error`` (a class name of the adapter's) that sending MESSAGE from a@ to u1
    and u2 raises, against a scripted server playing ``steps``."""
    mod = module(adapter)

    async def go() -> Any:
        async with mod.SMTPClient("127.0.0.1", server.port, lmtp=lmtp) as client:
            with pytest.raises(getattr(mod, error)) as raised:
                await client.send_message(
                    MESSAGE, "a@abc.example", ["u1@pqr.example", "u2@pqr.example"]
                )
            return raised.value

    with ScriptedServer(steps) as server:
        return run(adapter, go)


def test_an_lmtp_session_lost_among_the_replies_says_who_was_delivered(adapter: str) -> None:
    """RFC 2033 §4.2: one reply after the content for each accepted recipient. A
    session lost after the first of them raises, with ``result`` saying the first
    recipient was delivered: a caller that retried everyone would deliver twice."""
    steps = script(LMTP_TO_U1_AND_U2 + "S: 250 2.0.0 u1 delivered\n-- close")
    result = _raised_sending_to_u1_and_u2(adapter, steps, "SMTPConnectionError", lmtp=True).result
    assert [str(r.recipient) for r in result.delivered] == ["u1@pqr.example"]


def test_an_lmtp_refusal_with_one_temporary_reply_among_them_is_temporary(adapter: str) -> None:
    """RFC 2033 §4.2: each recipient has its own reply. Every one refused, 452 for u1
    and 550 for u2 after it: the error's reply is u1's 452, not the last (550), so a
    caller that bounces or retries by ``code`` retries (RFC 5321 §4.2.1; Postfix
    defers such a message), and ``result`` still says which failure was which."""
    steps = script(
        LMTP_TO_U1_AND_U2 + "S: 452 4.2.2 u1 full\nS: 550 5.2.1 u2 disabled\nC: QUIT\nS: 221 bye\n"
    )
    error = _raised_sending_to_u1_and_u2(adapter, steps, "MessageRefused", lmtp=True)
    assert (error.code, str(error.status)) == (452, "4.2.2")
    assert [r.delivery.code for r in error.result.recipients] == [452, 550]


def test_recipients_refused_with_one_temporary_refusal_among_them_is_temporary(
    adapter: str,
) -> None:
    """Every RCPT refused, 452 then 550: the error's reply is the 452, so a caller
    that decides by ``code`` retries the recipient a retry may reach (RFC 5321
    §4.2.1); ``result`` keeps each reply."""
    steps = script(
        GREET
        + """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<u1@pqr.example>
C: RCPT TO:<u2@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 452 4.2.2 u1 full
S: 550 5.1.1 u2 unknown
S: 554 5.5.1 no valid recipients
C: QUIT
S: 221 bye
"""
    )
    error = _raised_sending_to_u1_and_u2(adapter, steps, "RecipientsRefused")
    assert (error.code, str(error.status)) == (452, "4.2.2")
    assert [r.reply.code for r in error.result.recipients] == [452, 550]


#: An SMTP transaction: one recipient refused for now at RCPT, one accepted, then the
#: message refused for good at the end of its content. ``{}`` takes the greeting.
SMTP_RCPT_452_END_554 = (
    """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<u1@pqr.example>
C: RCPT TO:<u2@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 452 4.2.2 u1 full
S: 250 2.1.5 ok
S: 354 go
"""
    + MESSAGE_LINES
    + "S: 554 5.7.1 content refused\nC: QUIT\nS: 221 bye\n"
)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
def test_an_smtp_end_of_data_refusal_is_its_own_reply_whatever_rcpt_said(
    adapter: str, pipelining: bool
) -> None:
    """In SMTP the one reply after the content judges the message (RFC 5321
    §4.1.1.4): a 554 there is the error's reply, never u1's 452 from ``RCPT``, which
    answered another command and would make a permanent refusal read as temporary
    (§4.2.1). ``result`` keeps u1's 452 at ``RCPT`` and u2's 554."""
    greet = GREET if pipelining else GREET.replace("S: 250-PIPELINING\n", "")
    session = SMTP_RCPT_452_END_554
    if not pipelining:  # each reply before the next command
        session = session.replace(
            "C: RCPT TO:<u1@pqr.example>\nC: RCPT TO:<u2@pqr.example>\nC: DATA\n"
            "S: 250 2.1.0 ok\nS: 452 4.2.2 u1 full\nS: 250 2.1.5 ok\n",
            "S: 250 2.1.0 ok\nC: RCPT TO:<u1@pqr.example>\nS: 452 4.2.2 u1 full\n"
            "C: RCPT TO:<u2@pqr.example>\nS: 250 2.1.5 ok\nC: DATA\n",
        )
    steps = script(greet + session)
    error = _raised_sending_to_u1_and_u2(adapter, steps, "MessageRefused")
    assert (error.command, error.code, str(error.status)) == ("end of data", 554, "5.7.1")
    recipients = error.result.recipients
    assert [(r.reply.code, r.delivery and r.delivery.code) for r in recipients] == [
        (452, None),
        (250, 554),
    ]


#: Sessions whose reply to the end of the content never comes: the script up to the
#: end, the error, and the command it names.
GREET_ONE_AT_A_TIME = GREET.replace("S: 250-PIPELINING\n", "")
GREET_CHUNKING = GREET.replace("S: 250-PIPELINING\n", "S: 250-PIPELINING\nS: 250-CHUNKING\n")
ONE_AT_A_TIME = """
C: MAIL FROM:<a@abc.example>
S: 250 2.1.0 ok
C: RCPT TO:<bob@pqr.example>
S: 250 2.1.5 ok
C: RCPT TO:<eve@pqr.example>
S: 550 5.1.1 no
C: DATA
S: 354 go
"""
PIPELINED_TWO = """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: RCPT TO:<eve@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 250 2.1.5 ok
S: 550 5.1.1 no
S: 354 go
"""
CHUNKED = """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: RCPT TO:<eve@pqr.example>
S: 250 2.1.0 ok
S: 250 2.1.5 ok
S: 550 5.1.1 no
C: BDAT 25 LAST
C: Subject: errors
C:
C: body
"""
END_UNANSWERED: dict[str, tuple[str, str]] = {
    "dot, one at a time": (GREET_ONE_AT_A_TIME + ONE_AT_A_TIME + MESSAGE_LINES, "DATA"),
    "dot, pipelined": (GREET + PIPELINED_TWO + MESSAGE_LINES, "DATA"),
    "BDAT LAST": (GREET_CHUNKING + CHUNKED, "BDAT"),
}


#: How the reply to the end of the content is lost: the script's end, and the error.
LOST_REPLIES: dict[str, tuple[str, str]] = {
    "timeout": ("", "SMTPTimeout"),
    "close": ("-- close", "SMTPConnectionError"),
    "garbled": ("S: 2x0 garbled\n-- close", "SMTPProtocolError"),
}


@pytest.mark.parametrize("lost", list(LOST_REPLIES))
@pytest.mark.parametrize("case", list(END_UNANSWERED))
def test_no_reply_to_the_end_of_the_content_says_the_message_may_be_delivered(
    adapter: str, case: str, lost: str
) -> None:
    """RFC 5321 §6.1 (RFC 1047): once the end of the content has gone, the server may
    have taken the message though its reply never comes, or comes garbled (no reply
    can be read from it: the same unknown fate). A timeout, a lost connection or a
    reply that breaks the protocol then names the command (``DATA``, ``BDAT``) and
    carries the transaction: the accepted recipients, whose fate is unknown (no
    ``delivery``), and the refused ones; a caller can tell it from a failure before
    the end."""
    lines, command = END_UNANSWERED[case]
    mod = module(adapter)
    end, error_name = LOST_REPLIES[lost]
    ending = [Call(ScriptedConnection.read_to_close)] if lost == "timeout" else []
    steps = [*script(lines + end), *ending]
    error = getattr(mod, error_name)

    async def go(port: int) -> None:
        timeouts = mod.Timeouts(data_termination=0.3)
        async with mod.SMTPClient("127.0.0.1", port, timeouts=timeouts) as client:
            await client.send_message(
                MESSAGE, "a@abc.example", ["bob@pqr.example", "eve@pqr.example"]
            )

    with ScriptedServer(steps) as server, pytest.raises(error) as raised:
        run(adapter, lambda: go(server.port))
    exc = raised.value
    assert (exc.command, exc.reply, exc.may_have_been_delivered) == (command, None, True)
    bob, eve = exc.result.recipients
    assert bob.accepted and bob.delivery is None and not (bob.delivered or bob.refused)
    assert eve.refused and eve.reply.code == 550


def test_no_reply_before_the_end_of_the_content_names_no_command(adapter: str) -> None:
    """A timeout before the end has gone (at MAIL) leaves nothing delivered."""
    mod = module(adapter)
    steps = [*script(AFTER_MAIL), Call(ScriptedConnection.read_to_close)]

    async def go(port: int) -> None:
        timeouts = mod.Timeouts(command=0.2)
        async with mod.SMTPClient("127.0.0.1", port, timeouts=timeouts) as client:
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPTimeout) as raised:
        run(adapter, lambda: go(server.port))
    exc = raised.value
    assert (exc.command, exc.result, exc.may_have_been_delivered) == (None, None, False)


def test_no_reply_to_the_end_when_no_recipient_was_accepted_names_no_command(
    adapter: str,
) -> None:
    """Pipelined, DATA may get its 354 though every RCPT was refused (RFC 2920 §3.1):
    the client ends an empty message, and a lost reply to that end delivered nothing
    to anyone. Only a transaction with an accepted recipient whose delivery is unknown
    may have been delivered (RFC 5321 §6.1)."""
    mod = module(adapter)
    lines = (
        GREET
        + """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 550 5.1.1 no
S: 354 go
C: .
"""
    )
    steps = [*script(lines), Call(ScriptedConnection.read_to_close)]

    async def go(port: int) -> None:
        timeouts = mod.Timeouts(data_termination=0.3)
        async with mod.SMTPClient("127.0.0.1", port, timeouts=timeouts) as client:
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPTimeout) as raised:
        run(adapter, lambda: go(server.port))
    exc = raised.value
    assert (exc.command, exc.may_have_been_delivered) == (None, False)


def test_the_blocking_client_says_the_message_may_be_delivered() -> None:
    """The blocking client shares the driver, and the same answer."""
    from smtpcore import sync

    lines, _ = END_UNANSWERED["dot, one at a time"]
    steps = [*script(lines), Call(ScriptedConnection.read_to_close)]
    with (
        ScriptedServer(steps) as server,
        sync.SMTPClient("127.0.0.1", server.port, timeout=0.3, starttls=False) as client,
        pytest.raises(sync.SMTPTimeout) as raised,
    ):
        client.send_message(MESSAGE, "a@abc.example", ["bob@pqr.example", "eve@pqr.example"])
    assert raised.value.command == "DATA" and raised.value.may_have_been_delivered


# -- async content closed when the message stops --------------------------------


ASKED_FOR_CONTENT = AFTER_MAIL + "C: RCPT TO:<bob@pqr.example>\nC: DATA\nS: 250 ok\n"
STOPS: dict[str, list[Step]] = {
    # Only the piece read ahead before MAIL was taken from the iterator.
    "refused": [*script(ASKED_FOR_CONTENT + "S: 550 5.1.1 no\nS: 554 5.5.1 no"), ONE_LINE],
    # The iterator suspended between two pieces, the server no longer reading.
    "cancelled": [
        *script(ASKED_FOR_CONTENT + "S: 250 ok\nS: 354 go"),
        Call(lambda connection: time.sleep(1.5)),
    ],
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_async_content_is_closed_when_the_message_stops(adapter: str, stop: str) -> None:
    """An async generator of content the message stopped reading (a refusal, a
    cancellation) is closed by the time ``send_message`` gives up: its ``finally``
    runs then, in the caller's context, not at garbage collection (PEP 525), which
    trio warns of."""
    mod = module(adapter)
    closed: list[bool] = []

    async def pieces() -> AsyncIterator[bytes]:
        try:
            for _ in range(10_000):  # 640 MB at most: the server stops reading long before
                yield b"x" * 65_536 + b"\r\n"
        finally:
            closed.append(True)

    content = pieces()  # held here: only an explicit close can run its finally now
    seen: list[bool] = []

    async def send(client: Any) -> None:
        try:
            await client.send_message(content, "a@abc.example", "bob@pqr.example")
        finally:
            seen.append(bool(closed))

    async def go_asyncio(port: int) -> None:
        client = mod.SMTPClient("127.0.0.1", port)
        await client.connect()
        with pytest.raises((mod.RecipientsRefused, asyncio.TimeoutError)):
            await asyncio.wait_for(send(client), 0.5)
        await client.close()

    async def go_trio(port: int) -> None:
        client = mod.SMTPClient("127.0.0.1", port)
        await client.connect()
        refused = pytest.raises(mod.RecipientsRefused)
        with trio.move_on_after(0.5), refused if stop == "refused" else contextlib.nullcontext():
            await send(client)
        await client.close()

    with ScriptedServer(STOPS[stop]) as server:
        run(adapter, lambda: (go_asyncio if adapter == "asyncio" else go_trio)(server.port))
    assert seen == [True]


def test_async_content_a_limits_split_refuses_is_closed(adapter: str) -> None:
    """A server's LIMITS RCPTMAX splits the message into two transactions, which an
    async iterator cannot be sent twice for: ``ValueError`` before MAIL, the session
    going on, and the iterator (one piece read ahead) closed by then."""
    mod = module(adapter)
    limits = GREET.replace(
        "S: 250 ENHANCEDSTATUSCODES", "S: 250-ENHANCEDSTATUSCODES\nS: 250 LIMITS RCPTMAX=1"
    )
    steps = script(limits + "C: QUIT\nS: 221 bye")
    closed: list[bool] = []

    async def pieces() -> AsyncIterator[bytes]:
        try:
            yield MESSAGE
        finally:
            closed.append(True)

    content = pieces()

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(ValueError, match="LIMITS"):
                await client.send_message(
                    content, "a@abc.example", ["b@pqr.example", "c@pqr.example"]
                )
            assert closed == [True]

    with ScriptedServer(steps) as server:
        run(adapter, lambda: go(server.port))


# -- leaving the block: QUIT while the session can take it ----------------------------

#: The client's QUIT and the server's answer, the last lines of a polite session.
QUIT = "C: QUIT\nS: 221 2.0.0 bye\n"
#: A transaction whose only recipient is refused (the pipelined DATA with it).
RCPT_REFUSED = (
    GREET
    + """
C: MAIL FROM:<a@abc.example>
C: RCPT TO:<bob@pqr.example>
C: DATA
S: 250 2.1.0 ok
S: 550 5.1.1 no such user
S: 554 5.5.1 no valid recipients
"""
)
#: A transaction whose content is refused after the final dot.
CONTENT_REFUSED = GREET + PIPELINED + MESSAGE_LINES + "S: 554 5.7.1 refused\n"
#: A transaction delivered.
DELIVERED = GREET + PIPELINED + MESSAGE_LINES + "S: 250 2.0.0 queued\n"

#: A session the block leaves by an exception while it can take QUIT: the script's
#: lines up to the exception, and the exception.
STILL_USABLE: dict[str, tuple[str, str]] = {
    "rcpt-550": (RCPT_REFUSED, "RecipientsRefused"),
    "content-554": (CONTENT_REFUSED, "MessageRefused"),
    "caller-error-between-messages": (DELIVERED, "ValueError"),
}


def _raised(mod: Any, name: str) -> type[BaseException]:
    """The exception named in a table: the caller's own ``ValueError``, or the adapter's."""
    return ValueError if name == "ValueError" else getattr(mod, name)


@pytest.mark.parametrize("case", list(STILL_USABLE))
def test_leaving_the_block_by_an_exception_says_quit_while_the_session_can(
    adapter: str, case: str
) -> None:
    """RFC 5321 §4.1.1.10: the client "MUST NOT intentionally close the transmission
    channel until it sends a QUIT command ... (even if there was an error response to
    a previous command)". A refusal, or the caller's own error between commands,
    leaves the session between transactions: QUIT goes out and its 221 is read."""
    lines, error = STILL_USABLE[case]
    mod = module(adapter)

    async def go(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            raise ValueError("the caller's own")

    with ScriptedServer(script(lines + QUIT)) as server, pytest.raises(_raised(mod, error)):
        run(adapter, lambda: go(server.port))


def test_send_message_says_quit_after_a_refusal(adapter: str) -> None:
    """The module-level ``send_message`` runs in the client's block: a refusal raised
    out of it still ends the session with QUIT (RFC 5321 §4.1.1.10)."""
    mod = module(adapter)

    async def go(port: int) -> None:
        await mod.send_message(
            MESSAGE, "a@abc.example", "bob@pqr.example", host="127.0.0.1", port=port
        )

    with (
        ScriptedServer(script(RCPT_REFUSED + QUIT)) as server,
        pytest.raises(mod.RecipientsRefused),
    ):
        run(adapter, lambda: go(server.port))


def content_broken_off() -> Any:
    """Content whose iterator fails part way, as a caller's generator may."""
    yield b"Subject: errors\r\n\r\n"
    yield b"body\r\n"
    raise ValueError("the caller's content failed")


#: Sessions the block leaves by an exception where QUIT cannot go: the script up to
#: the failure, the exception, the client's timeouts.
NOT_USABLE: dict[str, tuple[str, str, dict[str, float]]] = {
    "content-fails-mid-data": (GREET + PIPELINED, "ValueError", {}),
    "timeout": (AFTER_MAIL, "SMTPTimeout", {"command": 0.2}),
    "421": (AFTER_MAIL + "S: 421 4.3.2 going down", "SMTPConnectionError", {}),
    "garbage-reply": (AFTER_MAIL + "S: hello there", "SMTPProtocolError", {}),
}


@pytest.mark.parametrize("case", list(NOT_USABLE))
def test_leaving_the_block_where_the_session_cannot_take_quit_only_closes(
    adapter: str, case: str
) -> None:
    """Mid-content QUIT would be message text, and a final dot would deliver the part
    sent; after a timeout, a 421 or a broken reply nobody knows where the session
    stands. The connection is closed without either."""
    lines, error, timeouts = NOT_USABLE[case]
    mod = module(adapter)
    content = content_broken_off() if case == "content-fails-mid-data" else MESSAGE
    steps = [*script(lines), Call(ScriptedConnection.read_to_close)]

    async def go(port: int) -> None:
        client = mod.SMTPClient("127.0.0.1", port, timeouts=mod.Timeouts(**timeouts))
        async with client:
            await client.send_message(content, "a@abc.example", "bob@pqr.example")

    with ScriptedServer(steps) as server, pytest.raises(_raised(mod, error)):
        run(adapter, lambda: go(server.port))
    assert not [line for line in server.transcript if "QUIT" in line]
    assert "C: '.'" not in server.transcript


def test_cancellation_in_the_block_closes_at_once_without_quit(adapter: str) -> None:
    """A cancelled task must not wait on the network (trio would cancel the wait,
    asyncio's caller awaits the cancellation): the connection is closed at once."""
    mod = module(adapter)
    steps = [*script(GREET), Call(ScriptedConnection.read_to_close)]

    async def block(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port):
            await (asyncio.sleep(30) if adapter == "asyncio" else trio.sleep(30))

    async def go_asyncio(port: int) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(block(port), 0.3)

    async def go_trio(port: int) -> None:
        with trio.move_on_after(0.3) as scope:
            await block(port)
        assert scope.cancelled_caught

    with ScriptedServer(steps) as server:
        run(adapter, lambda: (go_asyncio if adapter == "asyncio" else go_trio)(server.port))
    assert not [line for line in server.transcript if "QUIT" in line]


def test_a_pop3_block_left_by_an_exception_closes_without_quit(adapter: str) -> None:
    """POP3's QUIT commits the messages marked deleted (RFC 1939 §6, the UPDATE
    state): after a failure nothing may be removed, so the block only closes."""
    mod = module(adapter)
    steps = script(POP3_LOGGED_IN + "C: DELE 1\nS: +OK marked\n-- expect close")

    async def go(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            await client.delete(1)
            raise ValueError("the caller's own")

    with ScriptedServer(steps) as server, pytest.raises(ValueError):
        run(adapter, lambda: go(server.port))


#: A session up to the content (the DATA command, or the first BDAT, comes next).
UP_TO_THE_CONTENT = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-CHUNKING
S: 250 ENHANCEDSTATUSCODES
C: MAIL FROM:<a@abc.example>
S: 250 2.1.0 ok
C: RCPT TO:<bob@pqr.example>
S: 250 2.1.5 ok
"""
BIG = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 200_000


def _says_once_writing(reply: bytes) -> Callable[[ScriptedConnection], None]:
    """Wait for the client's first line of content (or its BDAT command), send ``reply``
    and make the close a reset (SO_LINGER 0), so that the client's write fails."""

    def say(conn: ScriptedConnection) -> None:
        conn.line()
        conn.send(reply)
        linger_zero = struct.pack("ii", 1, 0)
        conn._conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)

    return say


def _cut_while_writing(adapter: str, chunking: bool, reply: bytes) -> Any:
    """Send :data:`BIG` to a server that sends ``reply`` once the content has begun and
    resets the connection; the error raised, and the transaction's delivered list and
    end replies as the machine recorded them."""
    steps: list[Step] = [*script(UP_TO_THE_CONTENT)]
    if not chunking:
        steps += [*script("C: DATA\nS: 354 go")]
    steps += [Call(_says_once_writing(reply)), *script("-- close")]
    errors: Any = importlib.import_module(f"smtpcore.{adapter}")
    # One chunk holds all of BIG: a chunk of 4 MiB fits the client's send buffer and
    # the server's receive buffer on loopback (tcp_wmem's 4 MiB), so under load its
    # write could end before the reset came, and the reply was read as the chunk's.
    options = {"starttls": False, "chunking": chunking, "chunk_size": 64 << 20}
    recorded: list[Any] = []

    def note(client: Any) -> None:
        transaction = client.connection.transaction
        recorded.append(transaction and (transaction.delivered, transaction.end_replies))

    async def send(port: int) -> None:
        async with errors.SMTPClient("127.0.0.1", port, **options) as client:
            try:
                await client.send_message(BIG, "a@abc.example", "bob@pqr.example")
            finally:
                note(client)

    with ScriptedServer(steps) as server, pytest.raises(errors.SMTPConnectionError) as raised:
        if adapter == "sync":
            with errors.SMTPClient("127.0.0.1", server.port, timeout=10, **options) as client:
                try:
                    client.send_message(BIG, "a@abc.example", "bob@pqr.example")
                finally:
                    note(client)
        else:
            run(adapter, lambda: send(server.port))
    assert isinstance(raised.value.__cause__, OSError), "the write did not fail"
    (transaction,) = recorded
    return raised.value, transaction


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
@pytest.mark.parametrize("chunking", [False, True])
def test_a_421_sent_while_the_body_is_written_is_what_the_caller_sees(
    adapter: str, chunking: bool
) -> None:
    """A server that sends ``421`` and closes while the content is written (RFC 5321
    §3.8) makes a later write fail; the reply it sent first is read (only what came
    before the close, within a short wait) and raised as a 421 is anywhere else, so
    that the caller logs "421 4.3.2 ..." rather than "connection lost", as Exim's
    "SMTP error from remote mail server after ..." does."""
    shutting_down = b"421 4.3.2 shutting down, try again later\r\n"
    error, _ = _cut_while_writing(adapter, chunking, shutting_down)
    assert error.reply is not None, error
    assert error.code == 421 and str(error.status) == "4.3.2"
    assert "shutting down" in str(error)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
@pytest.mark.parametrize("chunking", [False, True])
@pytest.mark.parametrize("reply", [b"250 2.0.0 queued early", b"554 5.7.1 no thanks"])
def test_a_reply_left_behind_by_a_failed_write_is_not_the_answer(
    adapter: str, chunking: bool, reply: bytes
) -> None:
    """A reply other than 421 that came before a write failed answers content that never
    all went out: it is not the answer to the end of data or to the chunk, and nothing
    is recorded as delivered or refused. The error is the connection lost (a temporary
    failure), the reply only in its text."""
    error, transaction = _cut_while_writing(adapter, chunking, reply + b"\r\n")
    assert error.reply is None, error
    assert "connection lost" in str(error) and reply.decode() in str(error)
    if transaction is not None:
        delivered, end_replies = transaction
        assert not delivered and not end_replies


# -- the read after a failed write, bounded ----------------------------------------------

#: What a server that has stopped reading does next, after the client's write failed.
AFTER_THE_FAILED_WRITE = ("garbage", "trickle", "silence")
#: The replies up to the content, one a read (no PIPELINING: one command at a time).
UP_TO_THE_354 = (
    b"220 scripted.test ESMTP\r\n",
    b"250 scripted.test\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"354 go\r\n",
)


class _GoneWhileWriting:
    """A stand-in transport: it answers each read with the next of :data:`UP_TO_THE_354`,
    then fails the write of the content (``BrokenPipeError``), and from then on reads
    as ``behaviour`` says: a line that is no reply, then nothing (``garbage``); one
    byte of an endless multi-line reply each read (``trickle``); or nothing, the
    connection left open (``silence``). ``reads_after`` counts those reads."""

    def __init__(self, adapter: str, behaviour: str) -> None:
        self.adapter = adapter
        self.behaviour = behaviour
        self.replies = list(UP_TO_THE_354)
        self.failed = False
        self.reads_after = 0
        self.garbage = [b"\x00\xffnot a reply at all\r\n"]

    async def _checkpoint(self) -> None:
        if self.adapter == "asyncio":
            await asyncio.sleep(0)
        else:
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int) -> bytes:
        await self._checkpoint()
        if not self.failed:
            return self.replies.pop(0) if self.replies else b""
        self.reads_after += 1
        if self.reads_after > 10_000:  # a bound on the test itself
            return b""
        if self.behaviour == "garbage" and self.garbage:  # then silence
            return self.garbage.pop()
        if self.behaviour == "trickle":  # "250-x\r\n" over and over, a byte at a time
            return b"250-x\r\n"[(self.reads_after - 1) % 7 :][:1]
        if self.adapter == "asyncio":
            await asyncio.sleep(3600)
        else:
            await trio.sleep(3600)
        return b""

    async def send_all(self, data: bytes) -> None:
        await self._checkpoint()
        if not self.replies:  # the 354 was read: this is the content
            self.failed = True
            raise BrokenPipeError("the server stopped reading")

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        raise ConnectionResetError("no TLS here")

    async def aclose(self) -> None:
        pass

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return ("192.0.2.1", 25)

    @property
    def local_address(self) -> tuple[str, int] | None:
        return ("192.0.2.25", 40000)

    @property
    def tls(self) -> TLSInfo | None:
        return None


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("behaviour", AFTER_THE_FAILED_WRITE)
def test_the_read_after_a_failed_write_is_bounded(adapter: str, behaviour: str) -> None:
    """What a failed write left behind is read from what was buffered plus at most 64
    reads within about a second (RFC 5321 §3.8: a 421 may be there); a server that then
    sends what is no reply, drips a byte a read, or sends nothing and stays connected
    gets the caller the connection lost, never a crash nor a hang."""
    transport = _GoneWhileWriting(adapter, behaviour)
    client = module(adapter).SMTPClient.over_transport(transport, "scripted.test", starttls=False)

    async def send() -> None:
        async with client:
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

    started = time.monotonic()
    with pytest.raises(module(adapter).SMTPConnectionError) as raised:
        run(adapter, send)
    assert time.monotonic() - started < 10  # about 1 s; generous for a loaded machine
    assert isinstance(raised.value.__cause__, BrokenPipeError), raised.value
    assert raised.value.reply is None and "connection lost" in str(raised.value)
    assert transport.failed and 1 <= transport.reads_after <= 64
    if behaviour == "garbage":  # no reply can follow what is none: no read waits for one
        assert transport.reads_after == 1


#: The most reads the clients make for what a failed write left behind (the driver's bound).
READS_LEFT_BEHIND = 64


def _unread_by_the_peer(conn: socket.socket) -> int:
    """Bytes written on ``conn`` that its peer has not read yet (``SIOCOUTQ``, Linux)."""
    import fcntl
    import termios

    unread = fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", unread)[0])


class _StopsReadingAtTheContent:
    """A server on a Unix socket that answers up to the 354 and shuts its reading side
    (the client's write of the content then fails: EPIPE). Only once the client has
    read the 354 (so that nothing can reach it in the same read, which would be a
    reply no command asked for), it goes on as ``behaviour`` says: nothing, the
    connection left open (``silence``), or the bytes of a reply line that never ends,
    each sent once the client has read the one before (``trickle``): each read the
    client makes takes one byte, and ``taken`` counts them. A line with no end is
    never cut short by the machine's limit on lines, nor by its line length (4096
    octets) before ``TRICKLE_CAP`` bytes: only the driver's own bound on its reads
    ends it sooner. The server stops there, or when the client has gone."""

    TRICKLE_CAP = 1000

    def __init__(self, listener: socket.socket, behaviour: str) -> None:
        self.listener = listener
        self.behaviour = behaviour
        self.done = threading.Event()
        self.taken = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            conn.sendall(b"220 scripted.test ESMTP\r\n")
            lines = conn.makefile("rb")
            for answer in (b"250 scripted.test\r\n", b"250 ok\r\n", b"250 ok\r\n"):
                lines.readline()
                conn.sendall(answer)
            lines.readline()  # DATA
            conn.shutdown(socket.SHUT_RD)
            conn.sendall(b"354 go\r\n")
            deadline = time.monotonic() + 10
            if not self._read_by_the_client(conn, deadline) or self.behaviour != "trickle":
                self.done.wait(10)
                return
            endless = b"250-" + b"x" * (self.TRICKLE_CAP - 4)  # to the client, no end
            for start in range(len(endless)):
                conn.sendall(endless[start : start + 1])  # EPIPE once the client has gone
                if not self._read_by_the_client(conn, deadline):
                    return
                self.taken += 1

    def _read_by_the_client(self, conn: socket.socket, deadline: float) -> bool:
        """Wait until the client has read all that was sent (or has closed: its unread
        bytes go with it); False at ``done`` or ``deadline``."""
        while _unread_by_the_peer(conn):
            if self.done.wait(0.0005) or time.monotonic() > deadline:
                return False
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="SIOCOUTQ on a Unix socket is Linux's")
@pytest.mark.parametrize("adapter", ["asyncio", "trio", "sync"])
@pytest.mark.parametrize("behaviour", ["trickle", "silence"])
def test_the_read_after_a_failed_write_is_bounded_on_a_socket(
    adapter: str, behaviour: str, tmp_path: Path
) -> None:
    """As :func:`test_the_read_after_a_failed_write_is_bounded`, over a real socket whose
    write fails while the server still sends: the caller gets the connection lost, as
    a failed write (never taken for the server's close), after at most 64 reads, each
    of one byte of a line that never ends, or within about a second of silence.
    (Garbage cannot be timed after the failed write here: the server cannot see it.)
    asyncio's transport closes the socket on the failed write, so its client reads
    only what had arrived before; it used to miss the failure itself, write the rest
    of the message into the void and wait 10 minutes for the reply."""
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(path))
    listener.listen(1)
    server = _StopsReadingAtTheContent(listener, behaviour)
    server.thread.start()
    errors: Any = importlib.import_module(f"smtpcore.{adapter}")
    options = {"starttls": False}
    started = time.monotonic()
    try:
        with pytest.raises(errors.SMTPConnectionError) as raised:
            if adapter == "sync":
                with errors.SMTPClient.over_unix_socket(path, timeout=30, **options) as client:
                    client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            else:

                async def send() -> None:
                    async with errors.SMTPClient.over_unix_socket(path, **options) as client:
                        await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")

                run(adapter, send)
        assert time.monotonic() - started < 10  # about 1 s; generous for a loaded machine
        assert raised.value.reply is None and "connection lost" in str(raised.value)
        assert isinstance(raised.value.__cause__, OSError), raised.value
    finally:
        server.done.set()
        server.thread.join(15)
        listener.close()
    # One byte more than the reads may have been sent, unread when the client closed.
    assert server.taken <= READS_LEFT_BEHIND + 1
