"""A TLS record with no application data behind a reply: the next command goes out at once.

A TLS 1.3 server may send a session ticket or a KeyUpdate at any time after the
handshake (RFC 8446 §4.6.1, §4.6.3). Sent right behind a reply, in the same TCP
segment, it is read with the reply's record, and trio's ``SSLStream`` keeps it
undecrypted. The clients' look before a command for a reply no command asked
for (``_driver._arrived``) read it there, found nothing in it, and then waited
on the socket for its whole bound before every later command. Here a raw server
writes such a record behind each reply, and the look's bound is 30 seconds: a
session that waited it out would not finish under the 10 seconds it is given.

The standard library cannot send either record on demand: OpenSSL's own calls
do, through ``ctypes``, on CPython, where the ``SSL *`` sits right after the
socket's object header and its socket.
"""

from __future__ import annotations

import ctypes
import platform
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from arrived import GIVEN, run_within
from peers import LOOPBACK, TLSFiles, free_port, missing_peer, module
from smtpcore._driver import _arrived

MESSAGE = b"Subject: x\r\n\r\nx\r\n"

RECORDS: dict[str, Callable[[Any, ctypes.c_void_p], int]] = {
    "ticket": lambda libssl, ssl_ptr: libssl.SSL_new_session_ticket(ssl_ptr),
    # SSL_KEY_UPDATE_NOT_REQUESTED (0), SSL_KEY_UPDATE_REQUESTED (1): the second has
    # the client owe a KeyUpdate of its own (RFC 8446 §4.6.3).
    "keyupdate": lambda libssl, ssl_ptr: libssl.SSL_key_update(ssl_ptr, 0),
    "keyupdate asking one back": lambda libssl, ssl_ptr: libssl.SSL_key_update(ssl_ptr, 1),
}
"""How OpenSSL is told to send each kind of record."""


def _libssl() -> Any:
    """The OpenSSL the ``ssl`` module uses, with the two calls the server makes."""
    if platform.python_implementation() != "CPython" or not hasattr(socket, "TCP_CORK"):
        pytest.skip("needs CPython's ssl objects and TCP_CORK (Linux)")
    import _ssl

    try:
        libssl = ctypes.CDLL(getattr(_ssl, "__file__", None))
        libssl.SSL_new_session_ticket.argtypes = [ctypes.c_void_p]
        libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
        libssl.SSL_get_fd.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError) as exc:
        missing_peer(f"OpenSSL's SSL_new_session_ticket and SSL_key_update not found: {exc}")
    return libssl


def _ssl_pointer(libssl: Any, conn: ssl.SSLSocket) -> int:
    """The ``SSL *`` of a server's ``SSLSocket``: in CPython's object after the header
    and the socket's reference, checked against the socket it was made for."""
    sslobj = conn._sslobj  # type: ignore[attr-defined]  # CPython's _ssl._SSLSocket
    at = id(sslobj) + object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)
    pointer = ctypes.c_void_p.from_address(at).value
    if not pointer or libssl.SSL_get_fd(pointer) != conn.fileno():
        missing_peer("this CPython keeps its SSL pointer elsewhere")
    return pointer


class LateRecordServer:
    """A server on loopback over TLS from the first byte (RFC 8314 §3.3) that writes a
    ``record`` behind each reply once the session has begun (the reply to
    :attr:`begun` written), in the same TCP segment; none behind QUIT's. ``seen``:
    the verbs of the commands read."""

    greeting: bytes
    begun: bytes
    """The verb after whose reply the records come."""

    def __init__(self, tls: TLSFiles, record: str) -> None:
        self.libssl = _libssl()
        self.context = tls.server_context
        self.record = RECORDS[record]
        self.seen: list[bytes] = []
        self.failed: list[BaseException] = []
        self.port = free_port()
        self.listener = socket.create_server((LOOPBACK, self.port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def answer(self, verb: bytes, reader: Any, conn: ssl.SSLSocket) -> bytes:
        """The reply to the command ``verb``."""
        raise NotImplementedError

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(GIVEN)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pointer = ctypes.c_void_p(_ssl_pointer(self.libssl, conn))
                reader = conn.makefile("rb")
                conn.sendall(self.greeting)
                late = False
                while line := reader.readline():
                    verb = line[:4].upper()
                    self.seen.append(verb)
                    reply = self.answer(verb, reader, conn)
                    if verb == b"QUIT":
                        conn.sendall(reply)
                        return
                    if not late:
                        conn.sendall(reply)
                        late = verb == self.begun
                        continue
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    conn.sendall(reply)
                    assert self.record(self.libssl, pointer) == 1
                    conn.do_handshake()  # writes the record
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        except BaseException as exc:  # for the test to see, not lost in this thread
            self.failed.append(exc)

    def close(self) -> None:
        self.thread.join(15)
        self.listener.close()

    def missing(self) -> None:
        """Skip the test (fail it under CI) if the server found no ``SSL *`` to send
        its records through (:func:`_ssl_pointer`)."""
        for exc in self.failed:
            if isinstance(exc, (pytest.skip.Exception, pytest.fail.Exception)):
                raise exc


class SMTPServer(LateRecordServer):
    greeting = b"220 mx.pqr.example ESMTP\r\n"
    begun = b"EHLO"

    def answer(self, verb: bytes, reader: Any, conn: ssl.SSLSocket) -> bytes:
        if verb == b"EHLO":
            return b"250-mx.pqr.example\r\n250 8BITMIME\r\n"
        if verb == b"DATA":
            conn.sendall(b"354 go ahead\r\n")
            while reader.readline() not in (b".\r\n", b""):
                pass
            return b"250 2.0.0 queued\r\n"
        if verb == b"QUIT":
            return b"221 2.0.0 bye\r\n"
        return b"250 2.0.0 ok\r\n"


class POP3Server(LateRecordServer):
    greeting = b"+OK ready\r\n"
    begun = b"PASS"

    def answer(self, verb: bytes, reader: Any, conn: ssl.SSLSocket) -> bytes:
        if verb == b"CAPA":
            return b"+OK\r\nUSER\r\n.\r\n"
        if verb == b"STAT":
            return b"+OK 0 0\r\n"
        return b"+OK\r\n"


@pytest.fixture
def look_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The look's bound past the session's: a wait for it cannot pass unseen."""
    monkeypatch.setattr(_arrived, "ARRIVED_LOOK", 3 * GIVEN)


Steps = Callable[[Any, list[str]], Awaitable[None]]


def _played(
    adapter: str, server: LateRecordServer, client_class: str, tls: TLSFiles, steps: Steps
) -> list[str]:
    """``steps``, given the adapter's ``client_class`` (under TLS from the first byte)
    and a list to note what they got done in, played against ``server``; that list,
    once the server is closed and found to have sent its records and seen no error."""
    done: list[str] = []
    try:
        client = getattr(module(adapter), client_class)(
            LOOPBACK, server.port, tls_on_connect=True, ssl_context=tls.client_context
        )
        run_within(adapter, lambda: steps(client, done))
    finally:
        server.close()
    server.missing()
    assert not server.failed
    return done


@pytest.mark.timeout(60)
@pytest.mark.parametrize("record", list(RECORDS))
def test_a_record_with_no_reply_in_it_behind_an_smtp_reply_costs_no_wait(
    adapter: str, record: str, tls: TLSFiles, look_bound: None
) -> None:
    async def session(client: Any, done: list[str]) -> None:
        await client.connect()
        for _ in range(2):
            await client.send_message(MESSAGE, "a@abc.example", "b@pqr.example")
            done.append("sent")
        await client.noop()
        await client.quit()
        done.append("quit")

    server = SMTPServer(tls, record)
    assert _played(adapter, server, "SMTPClient", tls, session) == ["sent", "sent", "quit"]
    assert server.seen == [b"EHLO", *[b"MAIL", b"RCPT", b"DATA"] * 2, b"NOOP", b"QUIT"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("record", list(RECORDS))
def test_a_record_with_no_response_in_it_behind_a_pop3_response_costs_no_wait(
    adapter: str, record: str, tls: TLSFiles, look_bound: None
) -> None:
    async def session(client: Any, done: list[str]) -> None:
        await client.connect()
        await client.login("alice", "wonderland")
        await client.noop()
        done.append("noop")
        assert (await client.stat())[0] == 0
        await client.quit()
        done.append("quit")

    server = POP3Server(tls, record)
    assert _played(adapter, server, "POP3Client", tls, session) == ["noop", "quit"]
    assert server.seen[-3:] == [b"NOOP", b"STAT", b"QUIT"]  # CAPA again after PASS
