"""Scripted peers: a server or client that plays a transcript over a loopback socket.

A script is a list of steps: bytes to send, lines to expect, the TLS
handshake, closing, and a function for what a transcript cannot write down
(:class:`Call`). The peer runs in a thread, so the client or server under
test may be written for asyncio, trio, threads or another language. When the
other side departs from the script (a different line, an early close,
silence), the peer stops and :meth:`ScriptedPeer.check` raises
:class:`ScriptMismatch` with a diff of the expected and the actual transcript.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, TypeAlias

from smtpcore._dial_name import dial_names

__all__ = [
    "Call",
    "Close",
    "Expect",
    "ExpectClose",
    "ScriptMismatch",
    "ScriptedClient",
    "ScriptedConnection",
    "ScriptedPeer",
    "ScriptedServer",
    "Send",
    "StartTLS",
    "Step",
    "script",
]

_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Send:
    """The scripted peer writes ``data`` as it is: one write, no CRLF added."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Expect:
    """The other side must send this line next (CRLF not included).

    ``line`` is compared exactly, or, as a compiled pattern, must match the
    whole line.
    """

    line: bytes | re.Pattern[bytes]


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Both sides do the TLS handshake now (after the STARTTLS or STLS reply)."""


@dataclass(frozen=True, slots=True)
class Close:
    """The scripted peer closes the connection."""


@dataclass(frozen=True, slots=True)
class ExpectClose:
    """The other side must close the connection now, sending nothing more."""


@dataclass(frozen=True, slots=True)
class Call:
    """The scripted peer hands the connection to ``function`` for what a transcript cannot
    write down: content of a length not known in advance, reading until the other side
    closes, a check on what it sent.

    ``function`` gets a :class:`ScriptedConnection`; the script goes on when it returns.
    An exception it raises (a failed ``assert``, say) is a departure from the script.

    >>> import smtplib
    >>> steps = [
    ...     *script("S: 220 mx.test ESMTP\\nC~ (?i)HELO .+\\nS: 250 mx.test"),
    ...     *script("C~ (?i)MAIL FROM:<a@abc.example>.*\\nS: 250 ok"),
    ...     *script("C~ (?i)RCPT TO:<b@pqr.example>.*\\nS: 250 ok"),
    ...     *script("C~ (?i)DATA\\nS: 354 go ahead"),
    ...     Call(ScriptedConnection.content),  # as many lines as the client sends
    ...     *script("S: 250 queued\\nC~ (?i)QUIT\\nS: 221 bye"),
    ... ]
    >>> message = "Subject: hi\\r\\n\\r\\nhello\\r\\n"
    >>> with ScriptedServer(steps) as server, smtplib.SMTP(server.host, server.port) as client:
    ...     client.helo("c.test")
    ...     client.sendmail("a@abc.example", ["b@pqr.example"], message)
    (250, b'mx.test')
    {}
    """

    function: Callable[[ScriptedConnection], object]


Step: TypeAlias = Send | Expect | StartTLS | Close | ExpectClose | Call


def script(text: str, *, role: str = "server") -> list[Step]:
    """Steps from a transcript written as an RFC shows one.

    Lines start with ``S:`` (the server's) or ``C:`` (the client's); the
    scripted peer (``role``) sends its own lines with CRLF and expects the
    other's. ``C~`` or ``S~`` introduce a regular expression for the whole
    line; ``S+`` (or ``C+``) sends the text without CRLF (a reply split
    mid-line); ``-- starttls``, ``-- close`` and ``-- expect close`` are the
    other steps. Blank lines and lines starting with ``#`` are skipped.

    >>> script('''
    ... S: 220 mx.test ESMTP
    ... C~ EHLO .+
    ... S: 250 mx.test
    ... ''')
    [Send(data=b'220 mx.test ESMTP\\r\\n'), Expect(line=re.compile(b'EHLO .+')), ...]
    """
    if role not in ("server", "client"):
        raise ValueError("role is 'server' or 'client'")
    own = "S" if role == "server" else "C"
    steps: list[Step] = []
    for raw in text.split("\n"):  # LF alone ends a line: U+2028 or a bare CR may be data
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("--"):
            steps.append(_directive(line[2:].strip().lower()))
            continue
        who, mark, rest = line[:1], line[1:2], line[3:] if line[2:3] == " " else line[2:]
        if who not in ("S", "C") or mark not in (":", "~", "+"):
            raise ValueError(f"not a transcript line: {raw!r}")
        data = rest.encode("utf-8")
        if who == own:
            if mark == "~":
                raise ValueError(f"a pattern is for the other side's lines: {raw!r}")
            steps.append(Send(data if mark == "+" else data + b"\r\n"))
        elif mark == "~":
            steps.append(Expect(re.compile(data)))
        else:
            steps.append(Expect(data))
    return steps


def _directive(name: str) -> Step:
    if name == "starttls":
        return StartTLS()
    if name == "close":
        return Close()
    if name == "expect close":
        return ExpectClose()
    raise ValueError(f"unknown directive -- {name}")


class ScriptMismatch(AssertionError):
    """The other side departed from the script; the message shows the diff."""


def _show(prefix: str, data: bytes) -> list[str]:
    text = data.decode("utf-8", "backslashreplace")
    lines = text.split("\r\n")
    if lines and lines[-1] == "":
        lines.pop()
    else:
        lines[-1] += "  (no CRLF)"
    return [f"{prefix}: {line!r}"[:200] for line in lines]


def _render(step: Step, own: str, other: str) -> list[str]:
    if isinstance(step, Send):
        return _show(own, step.data)
    if isinstance(step, Expect):
        if isinstance(step.line, bytes):
            return _show(other, step.line + b"\r\n")
        return [f"{other}~ {step.line.pattern.decode('utf-8', 'backslashreplace')!r}"]
    if isinstance(step, Call):
        return [f"-- Call {getattr(step.function, '__qualname__', repr(step.function))}"]
    return [f"-- {type(step).__name__}"]


class ScriptedPeer:
    """What :class:`ScriptedServer` and :class:`ScriptedClient` share: the player."""

    _own = "S"
    _other = "C"

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = _TIMEOUT,
    ) -> None:
        self.steps: tuple[Step, ...] = tuple(steps)
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.transcript: list[str] = []
        """What happened, one line each, in the form of the rendered script."""
        self.failure: str | None = None
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = b""

    # -- results ------------------------------------------------------------------

    def expected(self) -> list[str]:
        return [line for step in self.steps for line in _render(step, self._own, self._other)]

    def check(self) -> None:
        """Wait for the script to end; raise :class:`ScriptMismatch` if it was departed from."""
        if not self.done.wait(self.timeout + 5):
            self._fail("the script did not finish")
        if self.failure is not None:
            diff = difflib.unified_diff(
                self.expected(), self.transcript, "script", "actual", lineterm=""
            )
            raise ScriptMismatch(f"{self.failure}\n" + "\n".join(diff))

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason

    # -- playing -----------------------------------------------------------------

    def _play(self, conn: socket.socket) -> None:
        conn.settimeout(self.timeout)
        try:
            for step in self.steps:
                conn = self._step(conn, step)
                if self.failure is not None:
                    return
        except (OSError, ssl.SSLError) as exc:
            self._fail(f"connection error: {exc!r}")
        except Exception as exc:  # the script itself cannot go on (StartTLS without a context)
            self._fail(f"the script could not be played: {exc!r}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self.done.set()

    def _step(self, conn: socket.socket, step: Step) -> socket.socket:
        if isinstance(step, Send):
            conn.sendall(step.data)
            self.transcript += _show(self._own, step.data)
        elif isinstance(step, Expect):
            line = self._read_line(conn)
            if line is None:
                if self.failure is None:  # silence failed in _read_line already: not a close
                    self.transcript.append(f"-- {self._other} closed")
                    self._fail(f"expected {_render(step, self._own, self._other)[0]}, got a close")
            else:
                self.transcript += _show(self._other, line + b"\r\n")
                if not _matches(step.line, line):
                    self._fail(f"line {len(self.transcript)} departs from the script")
        elif isinstance(step, StartTLS):
            self.transcript.append("-- StartTLS")
            if self._buffer:
                self._fail(f"{self._other} sent {self._buffer!r} before the TLS handshake")
                return conn
            conn = self._wrap(conn)
        elif isinstance(step, Close):
            self.transcript.append("-- Close")
            conn.close()
        elif isinstance(step, Call):
            self.transcript += _render(step, self._own, self._other)
            try:
                step.function(ScriptedConnection(self, conn))
            except OSError:
                raise  # the connection's own error, as for every other step
            except Exception as exc:
                self._fail(f"{_render(step, self._own, self._other)[0][3:]} raised {exc!r}")
        else:
            self.transcript.append("-- ExpectClose")
            extra = self._buffer or conn.recv(4096)
            if extra:
                self.transcript += _show(self._other, extra)
                self._fail(f"{self._other} sent more where it should have closed")
        return conn

    def _wrap(self, conn: socket.socket) -> socket.socket:
        raise NotImplementedError

    def _read_line(self, conn: socket.socket) -> bytes | None:
        while b"\r\n" not in self._buffer:
            try:
                data = conn.recv(4096)
            except TimeoutError:
                if self._buffer:  # what came of the line, shown as it is
                    self.transcript += _show(self._other, self._buffer)
                self._fail(f"{self._other} sent nothing for {self.timeout} s")
                return None
            if not data:
                if self._buffer:
                    self.transcript += _show(self._other, self._buffer)
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def close(self) -> None:
        """Release the sockets; the script's outcome stays for :meth:`check`."""


class ScriptedConnection:
    """The connection as a :class:`Call` step's function sees it: the other side's lines
    in, bytes out, both written to the peer's transcript."""

    def __init__(self, peer: ScriptedPeer, conn: socket.socket) -> None:
        self._peer = peer
        self._conn = conn

    def line(self) -> bytes | None:
        """The other side's next line, without its CRLF; ``None`` once it has closed (or
        stayed silent for the peer's ``timeout``, which is a departure)."""
        peer = self._peer
        line = peer._read_line(self._conn)
        if line is None:
            if peer.failure is None:  # not silence, which is a departure of its own
                peer.transcript.append(f"-- {peer._other} closed")
        else:
            peer.transcript += _show(peer._other, line + b"\r\n")
        return line

    def content(self) -> bytes:
        """The lines up to the lone ``.`` that ends DATA content or a POP3 multi-line
        response (RFC 5321 §4.1.1.4, RFC 1939 §3), each with its CRLF, dot-stuffing left in;
        what came before a close, if the other side closed first."""
        lines = []
        while (line := self.line()) is not None and line != b".":
            lines.append(line + b"\r\n")
        return b"".join(lines)

    def read_to_close(self) -> None:
        """Read and record whatever the other side sends until it closes."""
        while self.line() is not None:
            pass

    def send(self, data: bytes) -> None:
        """Write ``data`` as it is: one write, no CRLF added."""
        self._conn.sendall(data)
        self._peer.transcript += _show(self._peer._own, data)


def _matches(expected: bytes | re.Pattern[bytes], line: bytes) -> bool:
    if isinstance(expected, bytes):
        return expected == line
    return expected.fullmatch(line) is not None


class ScriptedServer(ScriptedPeer):
    """A server that plays ``steps`` to the first client that connects.

    Listens on ``host`` (loopback) and a free port; read :attr:`host` and
    :attr:`port`. A :class:`StartTLS` step needs ``ssl_context`` (a server
    context). Leaving the ``with`` block stops listening, waits for the script
    to end (at the latest ``timeout`` seconds after the client falls silent)
    and checks it: once it returns, every socket the server opened is closed,
    so a test may count the file descriptors its client left open.

    >>> import smtplib
    >>> steps = script("S: 220 mx.test ESMTP\\nC~ (?i)QUIT\\nS: 221 bye\\n-- close")
    >>> with ScriptedServer(steps) as server:
    ...     smtplib.SMTP(server.host, server.port).quit()  # smtplib writes "quit"
    (221, b'bye')

    A script is lines, whatever the protocol: the same server plays POP3
    (RFC 1939), for testing a POP3 client.

    >>> import poplib
    >>> steps = script('''
    ... S: +OK ready
    ... C: USER john
    ... S: +OK
    ... C: PASS secret
    ... S: +OK logged in
    ... C: STAT
    ... S: +OK 2 320
    ... C: QUIT
    ... S: +OK bye
    ... ''')
    >>> with ScriptedServer(steps) as server:
    ...     client = poplib.POP3(server.host, server.port)
    ...     client.user("john"), client.pass_("secret"), client.stat(), client.quit()
    (b'+OK', b'+OK logged in', (2, 320), b'+OK bye')
    """

    _own, _other = "S", "C"

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        timeout: float = _TIMEOUT,
    ) -> None:
        super().__init__(steps, ssl_context=ssl_context, timeout=timeout)
        self._listener = socket.create_server((host, 0))
        self._accepted = threading.Event()
        """Set once the thread has taken a connection, or given up waiting for one."""
        self.host: str = host
        self.port: int = self._listener.getsockname()[1]

    def __enter__(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._serve, name="ScriptedServer", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            self._listener.settimeout(self.timeout)
            conn, _ = self._listener.accept()
        except OSError as exc:
            self._fail(f"no client connected ({exc!r})")
            self.done.set()
            return
        finally:
            self._accepted.set()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._play(conn)

    def _wrap(self, conn: socket.socket) -> socket.socket:
        if self.ssl_context is None:
            raise ValueError("a StartTLS step needs ssl_context")
        return self.ssl_context.wrap_socket(conn, server_side=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc_type is None:
            self.check()
        elif self.failure is not None:
            # The departure explains the error the code under test ran into.
            self.check()

    def close(self) -> None:
        """Stop listening and wait for the script to end, which closes the connection.

        A client that connected (and perhaps closed already) before the thread took
        its connection is still in the listener's backlog: it is taken first."""
        if self._thread is not None and not self._accepted.is_set():
            pending, _, _ = select.select([self._listener], [], [], 0)
            if pending:
                self._accepted.wait(self.timeout)
        self._listener.close()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)


class ScriptedClient(ScriptedPeer):
    """A client that plays ``steps`` to the server at ``host``, ``port``.

    ``steps`` use the client's point of view (:func:`script` with
    ``role="client"``); a :class:`StartTLS` step needs ``ssl_context`` (a
    client context). :meth:`run` plays the whole script in the calling
    thread, then checks it. A non-ASCII ``host`` or ``server_hostname`` is used in
    its A-label form, as the clients use it (``mx.xn--strae-oqa.test``).
    """

    _own, _other = "C", "S"

    def __init__(
        self,
        host: str,
        port: int,
        steps: Iterable[Step],
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = _TIMEOUT,
    ) -> None:
        super().__init__(steps, ssl_context=ssl_context, timeout=timeout)
        self.host, self.server_hostname = dial_names(host, server_hostname)
        self.port = port

    def run(self) -> None:
        """Connect, play the script, and raise :class:`ScriptMismatch` on a departure."""
        try:
            conn = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            self._fail(f"could not connect ({exc!r})")
            self.done.set()
        else:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._play(conn)
        self.check()

    def _wrap(self, conn: socket.socket) -> socket.socket:
        if self.ssl_context is None:
            raise ValueError("a StartTLS step needs ssl_context")
        return self.ssl_context.wrap_socket(conn, server_hostname=self.server_hostname)
