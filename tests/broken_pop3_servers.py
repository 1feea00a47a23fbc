"""Small POP3 servers, each correct but for one planted defect, for the POP3 checks to find.

:class:`SmallPOP3` is a plain POP3 session written by hand on the socket (not
with smtpcore's machines, which would not have the defects): USER/PASS, CAPA,
STAT, LIST, RETR, TOP, DELE, UIDL, NOOP, RSET, QUIT and, with a TLS context,
STLS; command lines of 255 octets (RFC 2449 §4), numbers in ASCII digits,
dot-stuffing, pipelining. Deletions reach the shared :class:`Mailbox` only at
QUIT (RFC 1939 §6), so a test sees any mail a check lost. Each subclass
plants one defect a real server has had; :func:`serve_pop3` runs one on a
loopback port with :func:`broken_servers.raw_server`.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from broken_servers import raw_server

USER, PASSWORD = "alice", "wonderland"


@dataclass
class Mailbox:
    """The messages every session of one server sees; deleted only by a QUIT."""

    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SmallPOP3:
    """One POP3 session, correct; ``answer(line)`` returns the bytes to send."""

    max_line = 255

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        self.mailbox = mailbox
        self.stls = stls
        self.user: str | None = None
        self.logged_in = False
        self.deleted: set[int] = set()
        self.closed = False
        self.start_tls = False
        self.discarding = False

    # -- the socket side ------------------------------------------------

    def lines(self, buffer: bytearray) -> Iterator[bytes]:
        """Whole lines from ``buffer``; an over-long one becomes ``b"\\0long"``, once,
        and is read to its CRLF and dropped."""
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > self.max_line:
                    if not self.discarding:
                        yield b"\0long"
                    self.discarding = True
                    del buffer[: len(buffer) - 1]  # a CR may be the last octet
                return
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self.discarding:
                self.discarding = False
            else:
                yield b"\0long" if end + 2 > self.max_line else line

    def run(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        sock.sendall(b"+OK small POP3 ready\r\n")
        buffer = bytearray()
        while not self.closed:
            data = sock.recv(65536)
            if not data:
                return
            buffer += data
            out = bytearray()
            for line in self.lines(buffer):
                out += self.answer(line)
                if self.closed or self.start_tls:
                    break
            sock.sendall(out)
            self.sent(sock, buffer)
            if self.start_tls and tls is not None:
                self.start_tls = False
                buffer = self.after_stls(buffer)
                sock = tls.wrap_socket(sock, server_side=True)

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        """Called after each write with what is left unread: a subclass may write more."""

    def after_stls(self, buffer: bytearray) -> bytearray:
        """What was read behind STLS is dropped (RFC 2595 §4)."""
        return bytearray()

    # -- the protocol ---------------------------------------------------

    def number(self, word: str) -> int | None:
        if not (word.isascii() and word.isdigit()) or len(word) > 9:
            return None
        return int(word)

    def message(self, word: str) -> int | None:
        number = self.number(word)
        if number is None or not 1 <= number <= len(self.mailbox.messages):
            return None
        return None if number in self.deleted else number

    def listed(self) -> list[int]:
        return [n for n in range(1, len(self.mailbox.messages) + 1) if n not in self.deleted]

    def uid(self, number: int) -> str:
        return f"uid-{number}"

    def answer(self, line: bytes) -> bytes:
        if line == b"\0long":
            return b"-ERR line too long\r\n"
        verb, _, rest = line.decode("utf-8", "replace").partition(" ")
        words = rest.split(" ") if rest else []
        handler = getattr(self, "do_" + verb.upper(), None) if verb.isalpha() else None
        if handler is None:
            return b"-ERR unknown command\r\n"
        if verb.upper() in self.transaction_only and not self.logged_in:
            return b"-ERR not logged in\r\n"
        return bytes(handler(words))

    transaction_only = frozenset(["STAT", "LIST", "RETR", "TOP", "DELE", "UIDL", "NOOP", "RSET"])

    def do_CAPA(self, words: list[str]) -> bytes:
        lines = ["USER", "TOP", "UIDL", "PIPELINING"] + (["STLS"] if self.stls else [])
        return multi(b"capabilities", [f"{c}\r\n".encode() for c in lines])

    def do_STLS(self, words: list[str]) -> bytes:
        if not self.stls or self.logged_in:
            return b"-ERR no\r\n"
        self.start_tls = True
        return b"+OK begin TLS\r\n"

    def do_USER(self, words: list[str]) -> bytes:
        if self.logged_in or len(words) != 1:
            return b"-ERR no\r\n"
        self.user = words[0]
        return b"+OK\r\n"

    def do_PASS(self, words: list[str]) -> bytes:
        if self.logged_in or self.user is None:
            return b"-ERR USER first\r\n"
        if self.user != USER or " ".join(words) != PASSWORD:
            self.user = None
            return b"-ERR [AUTH] wrong\r\n"
        self.logged_in = True
        return b"+OK logged in\r\n"

    def do_APOP(self, words: list[str]) -> bytes:
        return b"-ERR no APOP\r\n"

    def do_STAT(self, words: list[str]) -> bytes:
        numbers = self.listed()
        size = sum(len(self.mailbox.messages[n - 1]) for n in numbers)
        return f"+OK {len(numbers)} {size}\r\n".encode()

    def do_LIST(self, words: list[str]) -> bytes:
        if words:
            number = self.message(words[0]) if len(words) == 1 else None
            if number is None:
                return b"-ERR no such message\r\n"
            return f"+OK {number} {len(self.mailbox.messages[number - 1])}\r\n".encode()
        return multi(
            b"listing",
            [f"{n} {len(self.mailbox.messages[n - 1])}\r\n".encode() for n in self.listed()],
        )

    def do_UIDL(self, words: list[str]) -> bytes:
        if words:
            number = self.message(words[0]) if len(words) == 1 else None
            if number is None:
                return b"-ERR no such message\r\n"
            return f"+OK {number} {self.uid(number)}\r\n".encode()
        return multi(b"ids", [f"{n} {self.uid(n)}\r\n".encode() for n in self.listed()])

    def do_RETR(self, words: list[str]) -> bytes:
        number = self.message(words[0]) if len(words) == 1 else None
        if number is None:
            return b"-ERR no such message\r\n"
        return multi(b"message follows", self.stuffed(self.mailbox.messages[number - 1]))

    def do_TOP(self, words: list[str]) -> bytes:
        number = self.message(words[0]) if len(words) == 2 else None
        count = self.number(words[1]) if len(words) == 2 else None
        if number is None or count is None:
            return b"-ERR no such message\r\n"
        content = self.mailbox.messages[number - 1]
        head, _, body = content.partition(b"\r\n\r\n")
        lines = body.splitlines(keepends=True)[:count]
        return multi(b"top follows", self.stuffed(head + b"\r\n\r\n" + b"".join(lines)))

    def stuffed(self, content: bytes) -> list[bytes]:
        return [b"." + line if line.startswith(b".") else line for line in lines_of(content)]

    def do_DELE(self, words: list[str]) -> bytes:
        number = self.message(words[0]) if len(words) == 1 else None
        if number is None:
            return b"-ERR no such message\r\n"
        self.deleted.add(number)
        return b"+OK marked\r\n"

    def do_NOOP(self, words: list[str]) -> bytes:
        return b"+OK\r\n" if not words else b"-ERR no arguments\r\n"

    def do_RSET(self, words: list[str]) -> bytes:
        self.deleted.clear()
        return b"+OK\r\n"

    def do_QUIT(self, words: list[str]) -> bytes:
        self.closed = True
        if self.logged_in:
            with self.mailbox.lock:
                keep = [m for n, m in enumerate(self.mailbox.messages, 1) if n not in self.deleted]
                self.mailbox.messages[:] = keep
        return b"+OK bye\r\n"


def lines_of(content: bytes) -> list[bytes]:
    return content.splitlines(keepends=True)


def multi(status: bytes, lines: list[bytes]) -> bytes:
    return b"+OK " + status + b"\r\n" + b"".join(lines) + b".\r\n"


# -- the planted defects ----------------------------------------------------------


class IntNumbers(SmallPOP3):
    """Reads message numbers with ``int()``: ``+1`` and Arabic-Indic or fullwidth one are 1."""

    def number(self, word: str) -> int | None:
        try:
            return int(word)
        except ValueError:
            return None


class DiesAtWrappedNumber(SmallPOP3):
    """Closes the session, with no response, at ``RETR 4294967297`` (2**32+1, which a
    32-bit reader wraps to 1): a crash on hostile input, where a response was due."""

    def answer(self, line: bytes) -> bytes:
        if line == b"RETR 4294967297":
            self.closed = True
            return b""
        return super().answer(line)


class KeepsPlaintextAfterStls(SmallPOP3):
    """Runs what came behind STLS after the handshake (the POP3 CVE-2011-0411)."""

    def after_stls(self, buffer: bytearray) -> bytearray:
        return buffer


class CutsLongLines(SmallPOP3):
    """Takes each 255 octets of a long line as a line of its own (an fgets buffer)."""

    def lines(self, buffer: bytearray) -> Iterator[bytes]:
        while True:
            end = buffer.find(b"\r\n")
            if 0 <= end < self.max_line - 1:
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                yield line
            elif len(buffer) >= self.max_line:
                line = bytes(buffer[: self.max_line])
                del buffer[: self.max_line]
                yield line
            else:
                return


class NoStuffing(SmallPOP3):
    """Sends message lines as stored, a leading dot not doubled."""

    def stuffed(self, content: bytes) -> list[bytes]:
        return lines_of(content)


class ServesDeleted(SmallPOP3):
    """RETR and TOP still serve a message marked deleted."""

    def do_RETR(self, words: list[str]) -> bytes:
        saved, self.deleted = self.deleted, set()
        try:
            return super().do_RETR(words)
        finally:
            self.deleted = saved


class UidlServesDeleted(SmallPOP3):
    """``UIDL n`` still answers for a message marked deleted (RFC 1939 §7 wants -ERR),
    as a server that looks the id up before it looks at the marks does."""

    def do_UIDL(self, words: list[str]) -> bytes:
        if not words:  # the listing leaves marked messages out
            return super().do_UIDL(words)
        saved, self.deleted = self.deleted, set()
        try:
            return super().do_UIDL(words)
        finally:
            self.deleted = saved


class CommitsOnClose(SmallPOP3):
    """Deletes what a session marked when its connection drops, QUIT or not (RFC 1939
    §6: only QUIT enters the UPDATE state), as a server that commits in its cleanup does."""

    def run(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        try:
            super().run(sock, tls)
        finally:
            if self.logged_in and not self.closed:
                self.do_QUIT([])


class SessionUidl(SmallPOP3):
    """Numbers its unique-ids by connection: a second session gives other ids."""

    sessions = 0

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        SessionUidl.sessions += 1
        self.session_number = SessionUidl.sessions

    def uid(self, number: int) -> str:
        return f"s{self.session_number}-{number}"


class FirstCommandOfRead(SmallPOP3):
    """Answers the first command of each read and drops the rest of it."""

    def lines(self, buffer: bytearray) -> Iterator[bytes]:
        end = buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(buffer[:end])
            buffer.clear()
            yield line


class MailBeforeLogin(SmallPOP3):
    """Serves STAT, LIST and the rest before the password (no state check)."""

    transaction_only = frozenset()


class RsetForgetsNothing(SmallPOP3):
    """RSET unmarks what STAT and LIST see, but QUIT still deletes every message ever
    marked in the session: a listing after RSET proves nothing about QUIT."""

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.doomed: set[int] = set()

    def do_DELE(self, words: list[str]) -> bytes:
        answer = super().do_DELE(words)
        self.doomed |= self.deleted
        return answer

    def do_QUIT(self, words: list[str]) -> bytes:
        self.deleted |= self.doomed
        return super().do_QUIT(words)


class ListIgnoresMarks(SmallPOP3):
    """LIST and STAT list marked messages too, and RSET does nothing: QUIT deletes."""

    def listed(self) -> list[int]:
        return list(range(1, len(self.mailbox.messages) + 1))

    def do_RSET(self, words: list[str]) -> bytes:
        return b"+OK\r\n"


class DeletesRetrieved(SmallPOP3):
    """Deletes at QUIT every message RETR or TOP sent (a delete-after-download policy)."""

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.fetched: set[int] = set()

    def do_RETR(self, words: list[str]) -> bytes:
        answer = super().do_RETR(words)
        if answer.startswith(b"+OK"):
            self.fetched.add(int(words[0]))
        return answer

    def do_TOP(self, words: list[str]) -> bytes:
        answer = super().do_TOP(words)
        if answer.startswith(b"+OK"):
            self.fetched.add(int(words[0]))
        return answer

    def do_QUIT(self, words: list[str]) -> bytes:
        self.deleted |= self.fetched
        return super().do_QUIT(words)


class AddsFinalLineEnd(SmallPOP3):
    """Correct: a message stored without a line end after its last line gets CRLF before
    the terminator (RFC 1939 §3), while LIST gives the stored size (as Dovecot does)."""

    def stuffed(self, content: bytes) -> list[bytes]:
        return super().stuffed(content if content.endswith(b"\n") else content + b"\r\n")


class UnknownUsersRefused(SmallPOP3):
    """Refuses USER of anyone but :data:`USER`, and command lines over 128 octets."""

    max_line = 128

    def do_USER(self, words: list[str]) -> bytes:
        if words != [USER]:
            return b"-ERR no such user\r\n"
        return super().do_USER(words)


class AnswersBehindStlsInPlaintext(SmallPOP3):
    """Answers what came behind STLS in plaintext 50 ms after its +OK, then starts
    TLS: the client's handshake meets the answer to the injected command."""

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        if self.start_tls:
            time.sleep(0.05)
            sock.sendall(b"".join(self.answer(line) for line in self.lines(buffer)))


class _EndsInjectedSession(Exception):
    """Raised where a server found plaintext behind STLS and ends the session its way."""


class _EndsOnInjectedPlaintext(SmallPOP3):
    """Finding plaintext behind STLS, it runs none of it and ends the session its
    own way (:meth:`end_injected`; here, by closing)."""

    def after_stls(self, buffer: bytearray) -> bytearray:
        if buffer:
            raise _EndsInjectedSession
        return buffer

    def run(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        try:
            super().run(sock, tls)
        except _EndsInjectedSession:
            self.end_injected(sock)

    def end_injected(self, sock: socket.socket) -> None:
        sock.close()


class AlertsOnInjectedPlaintext(_EndsOnInjectedPlaintext):
    """Correct: it ends the injected session with a fatal TLS alert,
    unexpected_message (RFC 8446 §6), where others close."""

    def end_injected(self, sock: socket.socket) -> None:
        sock.sendall(b"\x15\x03\x03\x00\x02\x02\x0a")  # alert: fatal, unexpected_message
        time.sleep(0.05)


class StallsOnInjectedPlaintext(_EndsOnInjectedPlaintext):
    """It never starts TLS and never closes: the client's handshake waits for a
    ServerHello that does not come."""

    def end_injected(self, sock: socket.socket) -> None:
        for _ in range(1000):  # read, answer nothing, until the client goes
            if not sock.recv(65536):
                return


class TricklesRetr(SmallPOP3):
    """Answers RETR with one line every 0.2 s (for 20 s at most), never the terminating dot."""

    trickling = False

    def do_RETR(self, words: list[str]) -> bytes:
        self.trickling = True
        return b"+OK here it comes\r\n"

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        for _ in range(100 if self.trickling else 0):
            try:
                sock.sendall(b"x\r\n")
            except OSError:
                break
            time.sleep(0.2)
        self.closed = self.closed or self.trickling


class FloodsRetr(SmallPOP3):
    """Answers RETR with over 8 MiB of empty lines and no terminating dot, written
    64 KiB at a time: each write has the socket's timeout, however slowly it is read."""

    flood_writes = 135  # 135 * 64 KiB: over the 8 MiB a connection reads at most

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.flooding = False

    def do_RETR(self, words: list[str]) -> bytes:
        self.flooding = True
        return b"+OK\r\n"

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        if self.flooding:
            self.flooding = False
            for _ in range(self.flood_writes):
                sock.sendall(b"\r\n" * (32 << 10))


class NoStuffingInTopBody(SmallPOP3):
    """TOP stuffs the header and the first body line only; RETR is right."""

    def do_TOP(self, words: list[str]) -> bytes:
        number = self.message(words[0]) if len(words) == 2 else None
        count = self.number(words[1]) if len(words) == 2 else None
        if number is None or count is None:
            return b"-ERR no such message\r\n"
        head, _, body = self.mailbox.messages[number - 1].partition(b"\r\n\r\n")
        lines = body.splitlines(keepends=True)[:count]
        return multi(b"top", self.stuffed(head + b"\r\n\r\n" + b"".join(lines[:1])) + lines[1:])


class StallsMidRetr(SmallPOP3):
    """Sends RETR's first lines, the last of them a sentence ending in a period, then
    nothing for three seconds: a stall, not a last line sent without CRLF."""

    stalling = False

    def do_RETR(self, words: list[str]) -> bytes:
        self.stalling = True
        return b"+OK here it comes\r\nSubject: hi\r\n\r\nHello world.\r\n"

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        if self.stalling:
            time.sleep(3)
            self.closed = True


class UidIsNumber(SmallPOP3):
    """Unique-id = message number: stable only until a message is deleted."""

    def uid(self, number: int) -> str:
        return str(number)


class NoUidl(SmallPOP3):
    """Offers no UIDL (RFC 1939 §7 makes it optional): a client has only message numbers."""

    def do_CAPA(self, words: list[str]) -> bytes:
        return multi(b"capabilities", [b"USER\r\n", b"TOP\r\n", b"PIPELINING\r\n"])

    def do_UIDL(self, words: list[str]) -> bytes:
        return b"-ERR no UIDL here\r\n"


class RepeatsUid(SmallPOP3):
    """Once ``repeating`` is set, gives the last message the first one's unique-id."""

    repeating = False

    def uid(self, number: int) -> str:
        if self.repeating and number == len(self.mailbox.messages):
            return super().uid(1)
        return super().uid(number)


class HugeUidlNumber(SmallPOP3):
    """Lists a message number of 5000 digits in UIDL, past Python's ``int()`` limit."""

    def do_UIDL(self, words: list[str]) -> bytes:
        if words:
            return super().do_UIDL(words)
        return multi(b"ids", [b"9" * 5000 + b" uid-1\r\n"])


class OneLoginThenInUse(IntNumbers):
    """Reads numbers with ``int()``, and refuses every login after the first with
    ``[IN-USE]`` (a lock never released)."""

    logins = 0

    def do_PASS(self, words: list[str]) -> bytes:
        if OneLoginThenInUse.logins:
            return b"-ERR [IN-USE] mailbox locked\r\n"
        OneLoginThenInUse.logins += 1
        return super().do_PASS(words)


@contextlib.contextmanager
def serve_pop3(
    kind: type[SmallPOP3], mailbox: Mailbox, *, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[str, int]]:
    """Serve ``kind`` over ``mailbox`` on a loopback port, a thread per connection."""

    def session(sock: socket.socket, stop: threading.Event) -> None:
        kind(mailbox, stls=tls is not None).run(sock, tls)

    with raw_server(session, socket_timeout=10) as address:
        yield address


BUSY_GREETING = b"-ERR [SYS/TEMP] too many connections from 127.0.0.1, try later\r\n"
"""How a POP3 server that limits connections refuses one (RFC 2449 §8.1.2)."""


@contextlib.contextmanager
def serve_pop3_busy_from(
    first_refused: int, mailbox: Mailbox, kind: type[SmallPOP3] = SmallPOP3
) -> Iterator[tuple[str, int]]:
    """Serve ``kind`` over ``mailbox``, but greet the ``first_refused``-th connection
    (from 1) and every later one with :data:`BUSY_GREETING` and close: a server at its
    limit of connections (or restarting, after a crash)."""
    count = itertools.count(1)
    lock = threading.Lock()

    def session(sock: socket.socket, stop: threading.Event) -> None:
        with lock:
            number = next(count)
        if number >= first_refused:
            sock.sendall(BUSY_GREETING)
            return
        kind(mailbox).run(sock, None)

    with raw_server(session, socket_timeout=10) as address:
        yield address


class ClosesAfterBadCommands(SmallPOP3):
    """Answers its ``limit``-th refused command with ``-ERR Too many bad commands,
    closing`` and closes, as smtpcore's own POP3 server does after 10: it says why
    first, so the line the client wrote behind it went unread."""

    limit = 10

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.refusals = 0

    def answer(self, line: bytes) -> bytes:
        out = super().answer(line)
        if out.startswith(b"-ERR"):
            self.refusals += 1
            if self.refusals >= self.limit:
                self.closed = True
                return b"-ERR Too many bad commands, closing\r\n"
        return out


@contextlib.contextmanager
def serve_pop3_one_session_at_a_time(
    kind: type[SmallPOP3], mailbox: Mailbox, *, linger: float = 0.15
) -> Iterator[tuple[str, int]]:
    """Serve ``kind`` over ``mailbox`` to one session at a time per address, as a
    server with a per-address limit of 1 does: a connection that comes while a
    session is open, or within ``linger`` seconds after it closed (the server frees
    the slot once it has cleaned the session up), is greeted :data:`BUSY_GREETING`."""
    lock = threading.Lock()
    state = {"open": 0, "free_at": 0.0}

    def session(sock: socket.socket, stop: threading.Event) -> None:
        with lock:
            busy = state["open"] > 0 or time.monotonic() < state["free_at"]
            if not busy:
                state["open"] += 1
        if busy:
            sock.sendall(BUSY_GREETING)
            return
        try:
            kind(mailbox).run(sock, None)
        finally:
            with lock:
                state["open"] -= 1
                state["free_at"] = time.monotonic() + linger

    with raw_server(session, socket_timeout=10) as address:
        yield address
