"""The four machines as fuzz targets: one input in, every event answered, bounds checked.

An input is the peer's bytes with a one-octet header: its value is the size
of the pieces they are fed in (0: all at once), so the fuzzer explores the
network's chunkings along with the bytes. The machine's own side of the
conversation is played by a permissive application (every command accepted,
every reply followed by the next command of a fixed script), so that any
path the peer's bytes open is walked. After every piece, the machine's
``buffered`` octets must stay within the machine's own ``max_buffered`` plus
the piece: a buffer that grows with its input is a crash like an exception.

An input is bounded in work too: at most :data:`EVENTS_PER_OCTET` calls to
``next_event`` per octet (the machines need fewer than two), and, where a
``timeout`` is given, that many seconds. Past either, the input raised a
:class:`Hang`, a crash like any other.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

from smtpcore import NEED_DATA, PAUSED, LocalProtocolError, ProtocolError, pop3, smtp
from smtpcore.address import parse_mailbox
from smtpcore.testing._drive import permissive_pop3_answer, permissive_smtp_answer

__all__ = [
    "TARGETS",
    "EVENTS_PER_OCTET",
    "BufferOverrun",
    "Hang",
    "Target",
    "pieces",
    "time_limit",
]

#: The ``next_event`` calls one input may take per octet of it (beyond
#: :data:`EVENTS_BASE`): each piece fed costs one ``NEED_DATA``, each event
#: at least an octet, and the machines stay under two per octet.
EVENTS_PER_OCTET: Final = 8
EVENTS_BASE: Final = 64


class BufferOverrun(Exception):
    """A machine held more received bytes than its limits allow."""


class Hang(Exception):
    """A machine went on past the work its input can need: more events than
    :data:`EVENTS_PER_OCTET` allows (it goes round without reading), or past the
    time limit (a call that never returns)."""


class _Budget:
    """``next_event`` for one input, counted: a machine that keeps answering
    without reading must not keep a driver's loop going for ever."""

    __slots__ = ("left", "octets")

    def __init__(self, data: bytes) -> None:
        self.octets = len(data)
        self.left = EVENTS_PER_OCTET * len(data) + EVENTS_BASE

    def next_event(self, conn: Any) -> Any:
        if not self.left:
            allowed = EVENTS_PER_OCTET * self.octets + EVENTS_BASE
            raise Hang(f"over {allowed} events from {self.octets} octets: the machine goes round")
        self.left -= 1
        return conn.next_event()


def _drop_innermost_frame(exc: BaseException) -> None:
    entry = exc.__traceback__
    if entry is None or entry.tb_next is None:
        return
    while entry.tb_next.tb_next is not None:
        entry = entry.tb_next
    entry.tb_next = None


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`Hang` in the block once ``seconds`` have passed.

    The alarm (``SIGALRM``) works in the main thread of a POSIX process and
    interrupts Python code, however it loops; elsewhere, or for None, there
    is no limit. An alarm already set from Python (pytest-timeout's, say)
    that would ring first is left alone; one that would ring later is put
    back afterwards with the time it had left.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    outer = signal.getsignal(signal.SIGALRM) if seconds is not None and usable else None
    if seconds is None or outer is None:
        yield
        return
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if 0 < outer_delay <= seconds:
        yield
        return
    started = time.monotonic()
    rung: list[Hang] = []

    def ring(signum: int, frame: FrameType | None) -> None:
        rung.append(Hang(f"still running after {seconds:g} s"))
        raise rung[0]

    signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Hang as exc:
        if rung and exc is rung[0]:
            _drop_innermost_frame(exc)  # ring's own: the hang is where the machine was
        raise
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, outer)
            if outer_delay:
                left = max(outer_delay - (time.monotonic() - started), 1e-6)
                signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def pieces(data: bytes) -> tuple[int, Iterator[bytes]]:
    """The piece size an input asks for, and its body cut into pieces of that size."""
    if not data:
        return 0, iter(())
    size, body = data[0], data[1:]
    if size == 0:
        return len(body), iter([body] if body else [])
    return size, (body[i : i + size] for i in range(0, len(body), size))


Machine = (
    smtp.ServerConnection | smtp.ClientConnection | pop3.ServerConnection | (pop3.ClientConnection)
)


def _check_bound(conn: Machine, piece: int) -> None:
    """After ``NEED_DATA``: the machine holds no more than its limits allow (its
    :attr:`max_buffered`, the limit on the line under way in the state it is in)
    beyond the last piece."""
    held, bound = conn.buffered, conn.max_buffered
    if held > bound + piece:
        raise BufferOverrun(
            f"{type(conn).__name__} holds {held} received octets; its bound is {bound} "
            f"and the last piece was {piece}"
        )


# -- SMTP server ----------------------------------------------------------------------------


def smtp_server_machine() -> smtp.ServerConnection:
    """An SMTP server with most options on, so the fuzzer reaches them."""
    return smtp.ServerConnection(
        "fuzz.test",
        starttls=True,
        dsn=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_require_tls=False,
        max_message_size=100_000,
    )


def _drive_smtp_server(conn: smtp.ServerConnection, data: bytes) -> None:
    conn.send(smtp.Reply(220, "fuzz.test ESMTP"))
    budget = _Budget(data)
    size, chunks = pieces(data)
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            event = budget.next_event(conn)
            if event is NEED_DATA:
                break
            if event is PAUSED:
                if isinstance(conn.pending, smtp.Bdat):
                    conn.send(smtp.Reply(250, "Chunk accepted"))
                    continue
                if conn.state is smtp.State.TLS_PENDING:
                    conn.tls_started()  # as if the handshake went through
                    continue
                return
            if isinstance(event, smtp.ConnectionClosed):
                return
            answer = permissive_smtp_answer(conn, event)
            for reply in answer if isinstance(answer, list) else [answer]:
                if reply is not None:
                    conn.send(reply)
        _check_bound(conn, size)


# -- SMTP client ----------------------------------------------------------------------------


def smtp_client_machine() -> smtp.ClientConnection:
    return smtp.ClientConnection("fuzz.test")


def _smtp_script() -> list[smtp.Event]:
    sender = parse_mailbox("sender@fuzz.test")
    recipient = parse_mailbox("rcpt@fuzz.test")
    return [
        smtp.Ehlo("fuzz.test"),
        smtp.StartTls(),
        smtp.Ehlo("fuzz.test"),
        smtp.Mail(sender),
        smtp.Rcpt(recipient),
        smtp.Rcpt(recipient),
        smtp.Data(),
        smtp.MessageData(b"Subject: fuzz\r\n\r\n.a dot\r\n"),
        smtp.EndOfMessage(),
        smtp.Mail(sender),
        smtp.Rcpt(recipient),
        smtp.Bdat(5),
        smtp.MessageData(b"hello"),
        smtp.Bdat(0, last=True),
        smtp.EndOfMessage(),
        smtp.Rset(),
        smtp.Noop(),
        smtp.Quit(),
    ]


def _send_next(conn: Any, script: list[Any]) -> None:
    """Send the next scripted events the machine takes now; skip those it refuses."""
    while script:
        try:
            conn.send(script[0])
        except LocalProtocolError:
            if conn.pending if isinstance(conn, smtp.ClientConnection) else conn.outstanding:
                return  # wait for the replies due first
            script.pop(0)
            continue
        script.pop(0)


def _drive_client(conn: Any, data: bytes, script: list[Any]) -> None:
    """Feed a client machine the server's bytes, sending the script as replies allow."""
    budget = _Budget(data)
    size, chunks = pieces(data)
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            event = budget.next_event(conn)
            if event is NEED_DATA:
                break
            if isinstance(event, smtp.ConnectionClosed | pop3.ConnectionClosed):
                return
            if conn.state in (smtp.State.TLS_PENDING, pop3.State.TLS_PENDING):
                conn.tls_started()  # as if the handshake went through
            before = len(script)
            _send_next(conn, script)
            if event is PAUSED and len(script) == before:
                return
        _check_bound(conn, size)


def _drive_smtp_client(conn: smtp.ClientConnection, data: bytes) -> None:
    _drive_client(conn, data, _smtp_script())


# -- POP3 server ----------------------------------------------------------------------------


def pop3_server_machine() -> pop3.ServerConnection:
    return pop3.ServerConnection(
        "fuzz.test", stls=True, utf8=True, sasl_mechanisms=("PLAIN", "LOGIN")
    )


def _drive_pop3_server(conn: pop3.ServerConnection, data: bytes) -> None:
    conn.send(conn.greeting(1, 1))
    budget = _Budget(data)
    size, chunks = pieces(data)
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            event = budget.next_event(conn)
            if event is NEED_DATA:
                break
            if event is PAUSED:
                if conn.state is pop3.State.TLS_PENDING:
                    conn.tls_started()
                    continue
                return
            if isinstance(event, pop3.ConnectionClosed):
                return
            for answer in permissive_pop3_answer(conn, event) or ():
                conn.send(answer)
        _check_bound(conn, size)


# -- POP3 client ----------------------------------------------------------------------------


def pop3_client_machine() -> pop3.ClientConnection:
    return pop3.ClientConnection("fuzz.test")


def _pop3_script() -> list[pop3.Event]:
    return [
        pop3.Capa(),
        pop3.AuthMechanisms(),
        pop3.Stls(),
        pop3.Capa(),
        pop3.Auth("PLAIN"),
        pop3.AuthResponse(b"\x00user\x00secret"),
        pop3.User("user"),
        pop3.Pass("secret"),
        pop3.Stat(),
        pop3.List(),
        pop3.List(1),
        pop3.Uidl(),
        pop3.Retr(1),
        pop3.Top(1, 0),
        pop3.Dele(1),
        pop3.Noop(),
        pop3.Rset(),
        pop3.Quit(),
    ]


def _drive_pop3_client(conn: pop3.ClientConnection, data: bytes) -> None:
    _drive_client(conn, data, _pop3_script())


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One machine to fuzz: how to build it and how to drive it with one input."""

    name: str
    machine: Callable[[], Any]
    drive: Callable[[Any, bytes], None]
    dictionary: tuple[bytes, ...]
    """Tokens the mutator splices in: the protocol's words and its tricky bytes."""

    def run(
        self,
        data: bytes,
        machine: Callable[[], Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> BaseException | None:
        """Run one input, for at most ``timeout`` seconds (see :func:`time_limit`);
        the exception it raised outside ProtocolError, or None.

        ``SystemExit`` counts like any exception (a machine has no business
        ending the process); ``KeyboardInterrupt`` is let through, so that
        Ctrl-C stops the fuzzer as it stops any program.
        """
        conn = (machine or self.machine)()
        try:
            with time_limit(timeout):
                self.drive(conn, data)
        except ProtocolError:
            return None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # anything else is what we look for
            return exc
        return None


_TRICKY: Final = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b".",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\xc2\xb2",  # a superscript two: str.isdigit() says yes, int() says no
    b"\xd9\xa1\xd9\xa0",  # ten in Arabic-Indic digits: int() reads them
    b"\xff",
    b"\xe2\x80\xa8",
    b" ",
    b"-",
    b"99999999999999999999999",
    b"A" * 600,
)


def _dictionary(*words: str) -> tuple[bytes, ...]:
    return (*_TRICKY, *(word.encode() for word in words))


TARGETS: Final[dict[str, Target]] = {
    "smtp-server": Target(
        "smtp-server",
        smtp_server_machine,
        _drive_smtp_server,
        _dictionary(
            "EHLO x ",
            "HELO x ",
            "LHLO x ",
            "MAIL FROM:<a@b.test> ",
            "RCPT TO:<c@d.test> ",
            "DATA ",
            "BDAT 5 ",
            "BDAT 0 LAST ",
            "RSET ",
            "NOOP ",
            "VRFY x ",
            "EXPN x ",
            "HELP ",
            "QUIT ",
            "STARTTLS ",
            "AUTH PLAIN ",
            "AUTH LOGIN ",
            "SIZE=",
            "BODY=8BITMIME ",
            "SMTPUTF8 ",
            "NOTIFY=SUCCESS ",
            "ORCPT=rfc822;x@y ",
            "RET=HDRS ",
            "ENVID=x ",
        ),
    ),
    "smtp-client": Target(
        "smtp-client",
        smtp_client_machine,
        _drive_smtp_client,
        _dictionary(
            "220 ",
            "250-",
            "250 ",
            "354 ",
            "421 ",
            "452 ",
            "550 ",
            "221 ",
            "334 ",
            "2.1.0 ",
            "PIPELINING",
            "CHUNKING",
            "STARTTLS",
            "SIZE 1000",
            "AUTH PLAIN",
            "SMTPUTF8",
        ),
    ),
    "pop3-server": Target(
        "pop3-server",
        pop3_server_machine,
        _drive_pop3_server,
        _dictionary(
            "USER u ",
            "PASS p ",
            "APOP u 0123456789abcdef0123456789abcdef ",
            "AUTH PLAIN ",
            "AUTH LOGIN ",
            "CAPA ",
            "STLS ",
            "UTF8 ",
            "STAT ",
            "LIST ",
            "RETR 1 ",
            "DELE 1 ",
            "TOP 1 0 ",
            "UIDL ",
            "NOOP ",
            "RSET ",
            "QUIT ",
            "* ",
        ),
    ),
    "pop3-client": Target(
        "pop3-client",
        pop3_client_machine,
        _drive_pop3_client,
        _dictionary(
            "+OK ",
            "-ERR ",
            "+ ",
            "[AUTH] ",
            "[IN-USE] ",
            "<1.2@fuzz.test>",
            "1 120",
            "PIPELINING",
            "SASL PLAIN",
            "STLS",
        ),
    ),
}
"""The fuzz targets by name, as ``python -m smtpcore.testing fuzz NAME`` takes them."""
