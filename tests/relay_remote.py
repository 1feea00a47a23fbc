"""A scripted remote exchanger for the relay's tests: what it offers and refuses is set
per test (SIZE, STARTTLS refused or a real handshake, SMTPUTF8, 8BITMIME,
CHUNKING, REQUIRETLS, per-recipient replies, a refused EHLO or HELO (under TLS only, if
asked) and a close after it, reply lines ended by a bare LF, a connection dropped in the
middle of DATA or after the final dot, a QUIT never answered), and it keeps the verb of
every command line it read. It takes LHLO as EHLO: with one recipient, its one reply to
the content is LMTP's (RFC 2033 §4.2).

It runs in threads on loopback, records each transaction and counts the
connections the client has not closed yet, so a test can check that the relay
closes every connection on every path.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

LOOPBACK = "127.0.0.1"


@dataclass
class RemoteTransaction:
    mail_line: bytes
    rcpt_lines: list[bytes]
    recipients: list[str]
    content: bytes
    """The content as received (empty when the remote keeps only its digest)."""
    tls: bool
    digest: str = ""
    """SHA-256 of the content, hexadecimal."""
    size: int = 0


@dataclass
class ScriptedRemote:
    """One scripted exchanger; ``start()`` it, ``close()`` it (or use :func:`remote`)."""

    size: int | None = None
    """Announce ``SIZE n``."""
    starttls: str = "none"
    """``none`` (not offered), ``refuse`` (offered, answered :attr:`starttls_refusal`)
    or ``tls`` (a handshake with ``tls_context``)."""
    starttls_refusal: bytes = b"454 4.7.0 TLS not available due to temporary reason"
    """What ``refuse`` answers STARTTLS with."""
    tls_context: ssl.SSLContext | None = None
    smtputf8: bool = False
    eight_bit: bool = True
    dsn: bool = False
    chunking: bool = False
    """Announce CHUNKING and take BDAT (RFC 3030)."""
    requiretls: bool = False
    """Announce REQUIRETLS once under TLS (RFC 8689 §4.1)."""
    extra_ehlo: tuple[bytes, ...] = ()
    """More EHLO lines, as given (``b"LIMITS RCPTMAX=1"``)."""
    host: str = LOOPBACK
    port: int = 0
    """Where to listen: another loopback address, a port already used on another."""
    keep_content: bool = True
    """False: keep only the content's digest and size, so that a test measuring the
    relay's memory is not measuring this remote's."""
    greeting: bytes = b"220 scripted ESMTP"
    """A 421 here closes each session after it, as a busy server does."""
    hello_replies: dict[bytes, bytes] = field(default_factory=dict)
    """A refusal of ``EHLO`` or ``HELO`` (the key, in capitals) instead of the EHLO
    reply (``{b"HELO": b"550 5.7.1 not welcome"}``)."""
    tls_hello_replies: dict[bytes, bytes] = field(default_factory=dict)
    """Refusals as :attr:`hello_replies`, given only under TLS: an exchanger that takes
    EHLO in plaintext, offers STARTTLS, and refuses EHLO after the handshake."""
    close_after_hello_refusal: bool = False
    """True: close the connection once a refusal of ``hello_replies`` is sent, as many
    servers do after a ``554`` to a blocklisted client."""
    rcpt_replies: dict[str, bytes] = field(default_factory=dict)
    data_reply: bytes = b"250 2.0.0 queued"
    data_replies: list[bytes | None] = field(default_factory=list)
    """Replies to the end of the content, one a transaction, before ``data_reply``;
    None closes the connection instead (the transaction is still recorded), and ``b""``
    waits for ``release`` (at most ``hold`` seconds) before closing it."""
    release: threading.Event = field(default_factory=threading.Event)
    hold: float = 5.0
    """The longest a ``b""`` reply to the end of the content waits for ``release``."""
    data_command_replies: list[bytes | None] = field(default_factory=list)
    """Replies to the ``DATA`` command, one a transaction; None (or none left) goes
    on with ``354``, another reply refuses the content."""
    drop_in_data: bool = False
    """Close the connection after the first line of content."""
    close_when_idle: bytes | None = None
    """After each reply to the end of the content: ``b""`` closes the connection, a reply
    (``b"421 4.4.2 idle too long"``) is sent first: a server whose idle timer ran out
    as the transaction ended, while the client keeps the connection for the next."""
    later_mail_reply: bytes | None = None
    """The reply to each ``MAIL`` of a session but its first, then the connection closes
    (a ``421``); ``b""`` never answers, and waits for ``release`` (at most ``hold``
    seconds) before closing."""
    later_mail_after: int = 1
    """The ``MAIL`` commands of a session answered as usual before ``later_mail_reply``."""
    mail_refusals: dict[int, bytes] = field(default_factory=dict)
    """Refusals of ``MAIL`` commands by their number in a session (from 1), for the
    sessions :attr:`later_mail_sessions` names; the session goes on after each."""
    later_mail_sessions: int | None = None
    """The sessions, the first ones, whose ``MAIL`` commands get ``later_mail_reply``;
    None: every session. A session after them answers every ``MAIL`` as usual."""
    unasked_reply: bytes | None = None
    """A reply to nothing written after the first transaction's reply to its content,
    as a write of its own (``TCP_NODELAY``: not held back until the client's next
    segment): a hop that answers the content twice. :attr:`unasked_written` is set once
    it is sent."""
    unasked_when: str = "at-once"
    """When :attr:`unasked_reply` is written: ``at-once`` after the reply to the
    content; ``released``, once :attr:`unasked_release` is set (at most :attr:`hold`
    seconds), the client having read that reply and sent nothing since; ``later``,
    once the next command line is read, before that command's reply: a reply too many
    that comes after the client spoke."""
    unasked_release: threading.Event = field(default_factory=threading.Event)
    unasked_written: threading.Event = field(default_factory=threading.Event)
    answer_quit: bool = True
    """False: QUIT is never answered (the remote waits for the client to close)."""
    reply_end: bytes = b"\r\n"
    """What ends each reply line: ``b"\\n"`` for a server that ends its lines in a bare LF."""
    transactions: list[RemoteTransaction] = field(default_factory=list)
    verbs: list[bytes] = field(default_factory=list)
    """The verb of each command line read (``b"EHLO"``, ``b"HELO"``, ``b"QUIT"``), in
    capitals, sessions one after another."""
    mail_lines: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    most_open_connections: int = 0
    """The most connections that were open at once."""
    _unasked_due: bool = False
    _sessions: int = 0

    def start(self) -> ScriptedRemote:
        self.listener = socket.create_server((self.host, self.port))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.open_connections += 1
                self.most_open_connections = max(self.most_open_connections, self.open_connections)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _ehlo(self, tls: bool) -> bytes:
        lines = [b"scripted.example"]
        if self.size is not None:
            lines.append(b"SIZE %d" % self.size)
        if self.eight_bit:
            lines.append(b"8BITMIME")
        if self.smtputf8:
            lines.append(b"SMTPUTF8")
        if self.dsn:
            lines.append(b"DSN")
        if self.chunking:
            lines.append(b"CHUNKING")
        if self.requiretls and tls:
            lines.append(b"REQUIRETLS")
        lines.extend(self.extra_ehlo)
        if self.starttls != "none" and not tls:
            lines.append(b"STARTTLS")
        lines.append(b"ENHANCEDSTATUSCODES")
        out = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1])
        return out + b"250 " + lines[-1] + b"\r\n"

    def _serve(self, conn: socket.socket) -> None:
        sockets = [conn]
        try:
            self._session(sockets)
        except (OSError, ValueError):
            pass
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._closed()

    def _session(self, sockets: list[socket.socket]) -> None:
        sock = sockets[0]
        if self.unasked_reply is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = False
        lines: BinaryIO = sock.makefile("rb")
        self._write(sock, self.greeting + b"\r\n")
        if not self.greeting.startswith(b"220"):
            return
        recipients: list[str] = []
        mail_line, rcpt_lines = b"", list[bytes]()
        received_chunks: _Received | None = None
        mails = 0
        with self._lock:
            self._sessions += 1
            scripted = (
                self.later_mail_sessions is None or self._sessions <= self.later_mail_sessions
            )
        later_mail_reply = self.later_mail_reply if scripted else None
        while True:
            line = lines.readline()
            if not line:
                return
            if self._unasked_due:
                self._write_unasked(sock)
            verb = line[:4].upper()
            with self._lock:
                self.verbs.append(verb)
            refusals = self.hello_replies | (self.tls_hello_replies if tls else {})
            if verb in refusals:
                self._write(sock, refusals[verb] + b"\r\n")
                if self.close_after_hello_refusal:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
            elif verb in (b"EHLO", b"HELO", b"LHLO"):
                self._write(sock, self._ehlo(tls))
            elif verb == b"STAR":
                if self.starttls == "refuse":
                    self._write(sock, self.starttls_refusal + b"\r\n")
                    continue
                assert self.tls_context is not None
                self._write(sock, b"220 2.0.0 ready\r\n")
                sock = self.tls_context.wrap_socket(sock, server_side=True)
                sockets.append(sock)
                lines = sock.makefile("rb")
                tls = True
            elif verb == b"MAIL":
                mails += 1
                if scripted and mails in self.mail_refusals:
                    recipients, rcpt_lines = [], []
                    self._write(sock, self.mail_refusals[mails] + b"\r\n")
                    continue
                if mails > self.later_mail_after and later_mail_reply is not None:
                    if later_mail_reply:
                        self._write(sock, later_mail_reply + b"\r\n")
                    else:
                        self.release.wait(self.hold)
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                recipients, mail_line, rcpt_lines = [], line, []
                received_chunks = None
                with self._lock:
                    self.mail_lines.append(line)
                self._write(sock, b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                rcpt_lines.append(line)
                address = line.decode().split(":", 1)[1].strip().split()[0].strip("<>")
                reply = self.rcpt_replies.get(address, b"250 2.1.5 ok")
                if reply.startswith(b"2"):
                    recipients.append(address)
                self._write(sock, reply + b"\r\n")
            elif verb == b"DATA":
                if not recipients:
                    self._write(sock, b"554 5.5.1 no valid recipients\r\n")
                    continue
                with self._lock:
                    waiting = self.data_command_replies
                    refusal = waiting.pop(0) if waiting else None
                if refusal is not None:
                    self._write(sock, refusal + b"\r\n")
                    continue
                self._write(sock, b"354 go on\r\n")
                received = _Received(self.keep_content)
                for data_line in lines:
                    if self.drop_in_data:
                        sock.shutdown(socket.SHUT_RDWR)
                        return
                    if data_line == b".\r\n":
                        break
                    received.add(data_line[1:] if data_line.startswith(b".") else data_line)
                self._record(received, mail_line, rcpt_lines, recipients, tls)
                if not self._end_of_content(sock):
                    return
            elif verb == b"BDAT" and self.chunking:
                words = line.split()
                size, last = int(words[1]), len(words) > 2
                if received_chunks is None:
                    received_chunks = _Received(self.keep_content)
                while size:
                    piece = lines.read(min(size, 65536))
                    if not piece:
                        return
                    received_chunks.add(piece)
                    size -= len(piece)
                if not last:
                    self._write(sock, b"250 2.0.0 chunk taken\r\n")
                    continue
                self._record(received_chunks, mail_line, rcpt_lines, recipients, tls)
                received_chunks = None
                if not self._end_of_content(sock):
                    return
            elif verb == b"QUIT":
                if self.answer_quit:
                    self._write(sock, b"221 2.0.0 bye\r\n")
                # Wait for the client to close its side: it must, on every path.
                while lines.readline():
                    pass
                return
            elif verb == b"RSET" or verb == b"NOOP":
                self._write(sock, b"250 2.0.0 ok\r\n")
            else:
                self._write(sock, b"502 5.5.2 not here\r\n")

    def _record(
        self,
        received: _Received,
        mail_line: bytes,
        rcpt_lines: list[bytes],
        recipients: list[str],
        tls: bool,
    ) -> None:
        content = b"".join(received.parts)
        transaction = RemoteTransaction(
            mail_line,
            rcpt_lines,
            recipients,
            content,
            tls,
            received.digest.hexdigest(),
            received.size,
        )
        with self._lock:
            self.transactions.append(transaction)

    def _end_of_content(self, sock: socket.socket) -> bool:
        """Answer the end of a message; False when the script closes the connection."""
        with self._lock:
            reply = self.data_replies.pop(0) if self.data_replies else self.data_reply
        if not reply:
            if reply is not None:
                self.release.wait(self.hold)
            sock.shutdown(socket.SHUT_RDWR)
            return False
        self._write(sock, reply + b"\r\n")
        if self.unasked_reply is not None and len(self.transactions) == 1:
            self._unasked_due = True
            if self.unasked_when == "released":
                self.unasked_release.wait(self.hold)
            if self.unasked_when != "later":
                self._write_unasked(sock)
        if self.close_when_idle is None:
            return True
        if self.close_when_idle:
            self._write(sock, self.close_when_idle + b"\r\n")
        sock.shutdown(socket.SHUT_RDWR)
        return False

    def _write_unasked(self, sock: socket.socket) -> None:
        assert self.unasked_reply is not None
        self._unasked_due = False
        self._write(sock, self.unasked_reply + b"\r\n")
        self.unasked_written.set()

    def _write(self, sock: socket.socket, data: bytes) -> None:
        """Write reply lines, each ended as :attr:`reply_end` says."""
        if self.reply_end != b"\r\n":
            data = data.replace(b"\r\n", self.reply_end)
        sock.sendall(data)

    def _closed(self) -> None:
        with self._lock:
            self.open_connections -= 1

    def close(self) -> None:
        self.release.set()
        self.unasked_release.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


class _Received:
    """The content of one transaction as it arrives: its digest and size, and the
    pieces themselves when they are kept."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.parts: list[bytes] = []
        self.digest = hashlib.sha256()
        self.size = 0

    def add(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.keep:
            self.parts.append(data)


@contextlib.contextmanager
def remote(**options: object) -> Iterator[ScriptedRemote]:
    """A started :class:`ScriptedRemote` for the block."""
    server = ScriptedRemote(**options).start()  # type: ignore[arg-type]  # the fields
    try:
        yield server
    finally:
        server.close()
