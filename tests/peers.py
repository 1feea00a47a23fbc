"""Helpers for tests that run a real peer program (Postfix, swaks, Dovecot, ...) on loopback.

A peer that is missing skips the test on a developer's machine but fails it
when ``CI=true``: CI must never pass by skipping the interop tests.
``scripts/test`` installs every peer on Debian when it runs as root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

import orphan_reaper

__all__ = [
    "RawSmtpSession",
    "RunningProcess",
    "SinkMessage",
    "SmtpSink",
    "dual_stack_loopback",
    "free_port",
    "ipv6_loopback_port",
    "in_ci",
    "missing_peer",
    "raw_smtp_session",
    "require_program",
    "run_process",
    "smtp_sink",
    "smtp_sink_path",
    "smtp_source_path",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"

#: Where Debian and other distributions put daemons and Postfix's test tools;
#: these are often not on a non-root user's PATH.
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/lib/postfix/sbin")


def in_ci() -> bool:
    """True when running under CI, where a missing peer is an error, not a skip."""
    return os.environ.get("CI") == "true"


def missing_peer(reason: str) -> NoReturn:
    """Skip the test on a developer machine, fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing peer is a failure)", pytrace=False)
    pytest.skip(reason)


def require_program(name: str) -> str:
    """Return the path of the program ``name``, or skip/fail the test if it is absent."""
    path = shutil.which(name)
    if path is None:
        for directory in SBIN_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                path = str(candidate)
                break
    if path is None:
        missing_peer(f"peer program {name!r} not found (scripts/test installs it on Debian)")
    return path


def smtp_sink_path() -> str:
    """Postfix's ``smtp-sink`` test server (Debian package ``postfix``)."""
    return require_program("smtp-sink")


def smtp_source_path() -> str:
    """Postfix's ``smtp-source`` load generator (Debian package ``postfix``)."""
    return require_program("smtp-source")


#: Where the kernel's ephemeral range starts and ends when /proc does not say:
#: Linux's default (other systems start theirs higher, at 49152, IANA's dynamic range).
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)

#: The lowest port :func:`free_port` hands out: below it sit well-known and
#: commonly configured services.
LOWEST_TEST_PORT = 10000

#: The fewest ports a worker's share may hold. A whole run asks a worker for a few
#: dozen ports; with fewer than this (an ephemeral range such as ``1024 65535``
#: leaves none), :func:`free_port` lets the kernel pick instead (:class:`KernelPorts`).
MIN_WORKER_PORTS = 300


def ephemeral_port_range(
    path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range"),
) -> tuple[int, int]:
    """The kernel's ephemeral range: where a bind to port 0 and every outgoing
    connect() take their local port from (``ip_local_port_range``, first and last)."""
    try:
        low, high = (int(word) for word in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return (low, high) if 0 < low <= high <= 65535 else DEFAULT_EPHEMERAL_RANGE


def outside_ephemeral_range(ephemeral: tuple[int, int]) -> range:
    """Ports no kernel picks for port 0 or for a connect(): the larger free stretch
    below or above the ephemeral range, starting at :data:`LOWEST_TEST_PORT`. It is
    empty when the ephemeral range covers everything from there to 65535."""
    below = range(LOWEST_TEST_PORT, max(ephemeral[0], LOWEST_TEST_PORT))
    above = range(max(ephemeral[1] + 1, LOWEST_TEST_PORT), 65536)
    return below if len(below) >= len(above) else above


def worker_slice(ports: range, environ: Mapping[str, str]) -> range:
    """This pytest-xdist worker's share of ``ports`` (``PYTEST_XDIST_WORKER`` is
    ``gw0``, ``gw1``, ...; out of ``PYTEST_XDIST_WORKER_COUNT``). Without xdist, the
    whole of ``ports``.

    ``ports`` is cut into twice as many shares as there are workers: ``gwI`` takes
    share ``I``. A worker that replaces a crashed one gets the next id (``gw2`` of
    two workers, then ``gw3``, ...) and takes one of the spare shares, ``count +
    (I - count) % count``, so it never shares ports with a live first worker (the
    crashed one's peers may still hold its ports); only the ``count``-th replacement
    after it shares with an earlier replacement, which has likely crashed too."""
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    count = environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit()):
        return ports
    index, workers = int(worker[2:]), int(count)
    if workers < 1:
        return ports
    if index >= workers:
        index = workers + (index - workers) % workers
    share = len(ports) // (2 * workers)
    return ports[index * share : (index + 1) * share]


#: Bind errors that say this one port cannot be had now (in use; or refused to us,
#: as a port a security policy reserves). Any other error is the host's, not the
#: port's: every port would fail alike.
PORT_TAKEN = frozenset({errno.EADDRINUSE, errno.EACCES})


def unbindable(host: str, exc: OSError) -> OSError:
    """The error for a ``host`` no port can be bound on, naming it."""
    return OSError(exc.errno, f"free_port: cannot bind on {host!r}: {exc.strerror or exc}")


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound now for TCP and for UDP, without
    ``SO_REUSEADDR`` (so a port a closed connection still holds in TIME_WAIT is not
    free: a peer that does not set the option could not bind it).

    Raises :class:`OSError` naming ``host`` when ``host`` itself cannot be bound (not
    an address of this machine: ``::1`` where IPv6 loopback is off, 192.0.2.1):
    that says nothing of ``port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        try:
            with socket.socket(family, kind) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
                sock.bind((host, port))
        except OSError as exc:
            if exc.errno in PORT_TAKEN:
                return False
            raise unbindable(host, exc) from exc
    return True


class PortAllocator:
    """Hands out the ports of ``ports``, each one at most once, each checked free
    when it is handed out. It starts at a random place, so that two test runs at
    once on one machine are unlikely to walk the same ports in step. A host that
    cannot be bound at all raises at once and uses up no port."""

    def __init__(self, ports: Sequence[int], start: int | None = None) -> None:
        self._ports = ports
        if start is None:
            start = random.randrange(len(ports)) if ports else 0
        self._next = start
        self._left = len(ports)
        self._lock = threading.Lock()

    def allocate(self, host: str) -> int:
        """The next port of the range that is free on ``host``; each is tried once."""
        with self._lock:
            while self._left > 0:
                port = self._ports[self._next % len(self._ports)]
                free = port_is_free(host, port)  # raises before the port is counted
                self._next += 1
                self._left -= 1
                if free:
                    return port
        raise RuntimeError(f"free_port: all {len(self._ports)} ports are handed out or taken")


class KernelPorts:
    """The fallback where no stretch outside the ephemeral range is large enough: the
    kernel picks a port (a bind to port 0), which is released before the peer binds
    it. That leaves the race :class:`PortAllocator` avoids: the port comes from the
    ephemeral range, where another worker's port-0 server or any connect() may take
    it in between. Rare, and only on such a machine; a port is still handed out at
    most once in a process, and checked free for UDP too."""

    def __init__(self) -> None:
        self._given: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self, host: str) -> int:
        """A port the kernel picked on ``host``, free for TCP and UDP, not given before."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self._lock:
            for _ in range(100):
                try:
                    with socket.socket(family, socket.SOCK_STREAM) as sock:
                        sock.bind((host, 0))
                        port: int = sock.getsockname()[1]
                except OSError as exc:
                    raise unbindable(host, exc) from exc
                if port not in self._given and port_is_free(host, port):
                    self._given.add(port)
                    return port
        raise RuntimeError(f"free_port: no port the kernel picked on {host!r} was free")


def port_allocator(
    ephemeral: tuple[int, int], environ: Mapping[str, str]
) -> PortAllocator | KernelPorts:
    """This worker's share of the ports outside ``ephemeral``; :class:`KernelPorts`
    when that share holds fewer than :data:`MIN_WORKER_PORTS`."""
    share = worker_slice(outside_ephemeral_range(ephemeral), environ)
    return PortAllocator(share) if len(share) >= MIN_WORKER_PORTS else KernelPorts()


_ports = port_allocator(ephemeral_port_range(), os.environ)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP (and UDP) port free on ``host``, for a peer that binds it itself.

    Port 0 let the kernel pick from its ephemeral range, released the port, and
    left a window in which another test worker's server or any connect() (which
    takes local ports from the same range) could take it before the peer bound it.
    These ports come from outside that range, from this worker's own share of it,
    and never twice in one process: nothing else in the test run picks them (except
    where the kernel's range leaves too few outside it: see :class:`KernelPorts`).
    A ``host`` that cannot be bound raises :class:`OSError` naming it.
    """
    return _ports.allocate(host)


def ipv6_loopback_port() -> int:
    """A port :func:`free_port` hands out on ``::1``, for a test that needs IPv6
    loopback. A machine without it (IPv6 off, a container with no ``::1``) skips the
    test on a developer's machine and fails it under CI, like a missing peer: the
    test says what it lacks instead of erroring with ``cannot bind on '::1'``."""
    try:
        return free_port("::1")
    except OSError as exc:
        missing_peer(f"no IPv6 loopback here: {exc}")


def dual_stack_loopback() -> socket.socket:
    """A listening IPv6 socket that takes IPv4 connections (``IPV6_V6ONLY`` off), bound
    to 127.0.0.1 alone as ``::ffff:127.0.0.1``: the socket names both ends of each
    connection in the IPv4-mapped form, as a server on ``::`` does for IPv4 clients.
    For a server's ``sock=``; skips the test where the host cannot make one."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::ffff:127.0.0.1", 0))
        sock.listen(16)
    except OSError as exc:
        sock.close()
        pytest.skip(f"no dual-stack loopback socket here: {exc}")
    sock.setblocking(False)
    return sock


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    process: RunningProcess | None = None,
) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    If ``process`` is given and exits first, raise at once with its output,
    rather than waiting out the timeout for a server that already died.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.argv[0]} exited with {process.popen.returncode} before "
                f"listening on {host}:{port}:\n{process.output()}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nothing listening on {host}:{port} after {timeout}s"
                ) from None
            time.sleep(0.02)


@dataclass
class RunningProcess:
    """A subprocess started by :func:`run_process`, its stdout and stderr in ``log_path``."""

    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """Everything the process wrote so far to stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _signal_group(popen: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The child leads its own session, so its process group holds it and its children.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)


@contextlib.contextmanager
def run_process(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    terminate_timeout: float = 5.0,
) -> Iterator[RunningProcess]:
    """Run ``argv`` for the duration of the block; always stop it, children included.

    The process gets its own session so that a daemon's worker processes are
    signalled with it: SIGTERM first, SIGKILL after ``terminate_timeout``. Should
    this process die inside the block, :mod:`orphan_reaper` stops the group.
    Output goes to a temporary file (never a pipe that could fill and block
    the peer); read it with :meth:`RunningProcess.output`.
    """
    fd, log_name = tempfile.mkstemp(prefix="peer-", suffix=".log")
    log_path = Path(log_name)
    try:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=stdin,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        os.close(fd)
        log_path.unlink(missing_ok=True)
        raise
    try:
        try:
            orphan_reaper.watch(popen.pid, group=True)
        finally:
            os.close(fd)
        yield RunningProcess(tuple(argv), popen, log_path)
    finally:
        _signal_group(popen, signal.SIGTERM)
        try:
            popen.wait(timeout=terminate_timeout)
        except subprocess.TimeoutExpired:
            _signal_group(popen, signal.SIGKILL)
            popen.wait()
        # Workers that outlived their leader are still in the group.
        _signal_group(popen, signal.SIGKILL)
        orphan_reaper.forget(popen.pid, group=True)
        log_path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One mail transaction as ``smtp-sink -d`` dumped it (see ``man 1 smtp-sink``).

    ``content`` is the message as received after dot-unstuffing, with the
    dump's LF line ends (smtp-sink does not keep the CRLFs).
    """

    client_proto: str
    helo: str | None
    mail_args: str
    rcpt_args: tuple[str, ...]
    content: bytes


def _parse_sink_dump(data: bytes) -> SinkMessage:
    lines = data.split(b"\n")
    fields: dict[str, list[str]] = {}
    index = 0
    while index < len(lines) and not lines[index].startswith(b"Received: "):
        name, _, value = lines[index].decode("utf-8", "replace").partition(": ")
        fields.setdefault(name, []).append(value)
        index += 1
    # The Received: header smtp-sink adds is three lines long; what follows is ours.
    content = b"\n".join(lines[index + 3 :])
    if content.endswith(b"\n\n"):
        content = content[:-1]
    return SinkMessage(
        client_proto=fields.get("X-Client-Proto", [""])[0],
        helo=fields.get("X-Helo-Args", [None])[0],
        mail_args=fields.get("X-Mail-Args", [""])[0],
        rcpt_args=tuple(fields.get("X-Rcpt-Args", [])),
        content=content,
    )


@dataclass(frozen=True)
class SmtpSink:
    """A running ``smtp-sink``; ``messages()`` reads back what it captured."""

    host: str
    port: int
    dump_dir: Path | None
    process: RunningProcess = field(repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def messages(self) -> list[SinkMessage]:
        """The transactions dumped so far, oldest first (by file time)."""
        if self.dump_dir is None:
            raise RuntimeError("smtp_sink() was started without dump_dir")
        files = sorted(
            (p for p in self.dump_dir.iterdir() if p.is_file()),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        return [_parse_sink_dump(p.read_bytes()) for p in files]


@contextlib.contextmanager
def smtp_sink(
    *,
    dump_dir: Path | None = None,
    hostname: str = "sink.test",
    lmtp: bool = False,
    extra_args: Sequence[str] = (),
    host: str = LOOPBACK,
    startup_timeout: float = 10.0,
) -> Iterator[SmtpSink]:
    """Run Postfix's ``smtp-sink`` on a free loopback port, accepting every message.

    With ``dump_dir``, each transaction is written to its own file there
    (``-d``) and :meth:`SmtpSink.messages` parses them. ``extra_args`` go
    before the address (for example ``("-f", "RCPT")`` to reject recipients,
    ``-p`` to hide PIPELINING, ``-E`` to hide ENHANCEDSTATUSCODES).
    """
    sink = smtp_sink_path()
    options: list[str] = ["-h", hostname]
    if os.geteuid() == 0:
        # smtp-sink refuses to run as root without -u; it only binds loopback here.
        options += ["-u", "root"]
    if lmtp:
        options.append("-L")
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        # The template is expanded by strftime(3), so a literal % must be doubled.
        options += ["-d", str(dump_dir.resolve()).replace("%", "%%") + "/msg."]
    options += list(extra_args)
    port = free_port(host)
    with run_process([sink, *options, f"{host}:{port}", "128"]) as process:
        wait_for_port(host, port, startup_timeout, process=process)
        yield SmtpSink(host, port, dump_dir, process)


def received_now(sock: socket.socket) -> bytes:
    """What a blocking socket's peer end can read at once (b"" when nothing has come).
    The socket's timeout is kept: a later read still fails rather than hangs."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(timeout)


def starttls_client(
    address: tuple[str, int], context: ssl.SSLContext, result: list[bytes]
) -> None:
    """A client that reads a reply in clear (a STARTTLS's 220), then starts TLS, says
    EHLO and reads the reply: what it read, in ``result``. For a thread."""
    with socket.create_connection(address, timeout=10) as plain:
        result.append(plain.recv(100))  # the 220, in clear
        with context.wrap_socket(plain, server_hostname="localhost") as sock:
            sock.sendall(b"EHLO client.test\r\n")
            result.append(sock.recv(100))


def read_until(sock: socket.socket, into: bytearray, size: int) -> None:
    """Read from ``sock`` into ``into`` until it holds ``size`` bytes or the peer closes."""
    sock.settimeout(30)
    while len(into) < size:
        chunk = sock.recv(65536)
        if not chunk:
            return
        into += chunk


class RawSmtpSession:
    """A blocking socket to an SMTP server that frames replies and nothing else.

    Interop tests use it to drive the sans-I/O machines against real servers
    without the adapters: ``recv_some()`` gives raw bytes to feed a machine,
    ``recv_reply()`` reads exactly one (possibly multi-line) reply, keeping any
    pipelined bytes that follow for the next call.
    """

    #: A reply longer than this is a broken server, not a reason to eat memory.
    MAX_REPLY = 1 << 20

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    @classmethod
    def connect(cls, host: str, port: int, *, timeout: float = 10.0) -> RawSmtpSession:
        sock = socket.create_connection((host, port), timeout=timeout)
        # Small writes must not wait on delayed ACKs (a command written in two pieces).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"peer closed the connection; unread: {bytes(self._buffer)!r}")
        self._buffer += chunk
        if len(self._buffer) > self.MAX_REPLY:
            raise ConnectionError(f"reply over {self.MAX_REPLY} bytes")

    def recv_some(self) -> bytes:
        """Buffered bytes if any, else the next chunk from the socket (``b""`` at EOF)."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        return self.sock.recv(65536)

    def recv_line(self) -> bytes:
        """One line, with its line end (CRLF, or a bare LF from a sloppy peer)."""
        start = 0
        while (end := self._buffer.find(b"\n", start)) < 0:
            start = len(self._buffer)
            self._fill()
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line

    def recv_reply(self) -> bytes:
        """One whole reply: ``xyz-`` lines, then the final ``xyz[ text]`` line (RFC 5321 §4.2)."""
        lines: list[bytes] = []
        while True:
            line = self.recv_line()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)
            if sum(map(len, lines)) > self.MAX_REPLY:
                raise ConnectionError(f"reply over {self.MAX_REPLY} bytes")

    def command(self, line: bytes) -> bytes:
        """Send one command line (CRLF added) and return its reply."""
        self.send(line + b"\r\n")
        return self.recv_reply()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSmtpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def raw_smtp_session(host: str, port: int, *, timeout: float = 10.0) -> Iterator[RawSmtpSession]:
    """Connect a :class:`RawSmtpSession` for the block and close it afterwards."""
    session = RawSmtpSession.connect(host, port, timeout=timeout)
    try:
        yield session
    finally:
        session.close()


# -- smtpcore's own adapters, run in a thread for blocking clients ------------------------
# (Appended with its own imports, so that the helpers above stay untouched.)

import asyncio  # noqa: E402
import importlib  # noqa: E402
import ssl  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

#: The adapters the adapter and interop suites are parametrised over (``conftest.py``'s
#: ``adapter`` fixture).
ADAPTERS = ("asyncio", "trio")

T = TypeVar("T")


def run(adapter: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` to completion under the adapter's framework, in this thread."""
    if adapter == "asyncio":

        async def main() -> T:
            return await fn()

        return asyncio.run(main())
    import trio

    return trio.run(fn)


def module(adapter: str) -> Any:
    """The adapter's public module: ``smtpcore.asyncio`` or ``smtpcore.trio``."""
    return importlib.import_module(f"smtpcore.{adapter}")


async def alongside(
    adapter: str,
    background: Callable[[], Awaitable[T]],
    foreground: Callable[[], Awaitable[object]],
) -> T:
    """``background()`` run as a task of its own while ``foreground()`` runs in this
    one, as two tasks sharing a client do; ``background``'s result once both end."""
    if adapter == "asyncio":
        task = asyncio.ensure_future(background())
        try:
            await foreground()
        except BaseException:
            task.cancel()
            raise
        return await task
    import trio

    results: list[T] = []

    async def keep() -> None:
        results.append(await background())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep)
        await foreground()
    return results[0]


def cancelled_elsewhere(adapter: str) -> BaseException:
    """A cancellation that is not a session's: on asyncio a ``CancelledError`` (what
    reading a future other code cancelled raises), on trio a ``trio.Cancelled`` a
    scope of another run raised (what a check that kept it would let out)."""
    if adapter == "asyncio":
        return asyncio.CancelledError()
    import trio

    async def caught() -> BaseException:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(0)
            except trio.Cancelled as exc:
                return exc
        raise AssertionError("the scope was cancelled")

    return trio.run(caught)


async def until(adapter: str, event: threading.Event, timeout: float = 5.0) -> None:
    """Wait, letting the adapter's other tasks run, until ``event`` (set by a task or
    a scripted server's thread) is set."""
    import trio

    due = time.monotonic() + timeout
    while not event.is_set():
        assert time.monotonic() < due, "the event was never set"
        await (asyncio.sleep(0.005) if adapter == "asyncio" else trio.sleep(0.005))


@dataclass
class RunningSMTPServer:
    """An ``smtpcore.<adapter>.SMTPServer`` serving from its own thread and event loop.

    ``call(fn)`` runs the coroutine function ``fn`` in the server's loop and
    returns its result, so a test can shut the server down (``server.aclose``)
    while blocking clients hold sessions open.
    """

    adapter: str
    server: Any
    call: Callable[[Callable[[], Awaitable[Any]]], Any]

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        port: int = self.server.port
        return port

    @property
    def active_sessions(self) -> int:
        count: int = self.server.active_sessions
        return count

    def close_under_a_deadline(self, deadline: float, grace: float = 20.0) -> bool:
        """Call ``aclose(grace)`` under the caller's own ``deadline`` (seconds, shorter
        than ``grace``: ``asyncio.wait_for``, ``trio.move_on_after``), then wait at most
        10 seconds for ``serve_forever`` to return; whether the deadline's cancellation
        reached the caller."""

        async def on_asyncio() -> bool:
            try:
                await asyncio.wait_for(self.server.aclose(grace), deadline)
            except asyncio.TimeoutError:
                cancelled = True
            else:
                cancelled = False
            await asyncio.wait_for(self.server.serve_forever(), 10)
            return cancelled

        async def on_trio() -> bool:
            import trio

            with trio.move_on_after(deadline) as scope:
                await self.server.aclose(grace)
            with trio.fail_after(10):
                await self.server.serve_forever()
            return scope.cancelled_caught

        cancelled: bool = self.call(on_asyncio if self.adapter == "asyncio" else on_trio)
        return cancelled

    def wait_for_sessions(self, count: int, timeout: float = 5.0) -> None:
        """Block until exactly ``count`` sessions are live, or fail."""
        deadline = time.monotonic() + timeout
        while self.active_sessions != count:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.active_sessions} sessions live, expected {count}")
            time.sleep(0.01)


@contextlib.contextmanager
def running_smtp_server(
    adapter: str, handler: Any, *, startup_timeout: float = 10.0, **options: Any
) -> Iterator[RunningSMTPServer]:
    """Serve ``handler`` on a loopback port with ``smtpcore.<adapter>`` for the block.

    The server runs in a thread with its own event loop, so tests drive it
    with blocking clients (smtplib, raw sockets, peer programs). Leaving the
    block shuts it down gracefully and re-raises any error the loop died of.
    A failed AUTH is answered at once (``auth_failure_delay=0``) unless
    ``options`` say otherwise: tests of wrong passwords stay fast.
    """
    options.setdefault("hostname", "mx.test")
    options.setdefault("auth_failure_delay", 0.0)
    yield from _serve_in_thread(adapter, "SMTPServer", handler, startup_timeout, options)


@dataclass(frozen=True)
class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost (``trustme``)."""

    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """Make a CA and a server certificate, with contexts and PEM files for peer programs."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", "mx.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file = directory / "server.pem"
    key_file = directory / "server.key"
    cert.private_key_pem.write_to_path(str(key_file))
    with cert_file.open("wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    return TLSFiles(server_context, client_context, ca_file, cert_file, key_file)


def open_fd_count() -> int:
    """File descriptors this process holds now (Linux), to catch leaked sockets."""
    return len(os.listdir("/proc/self/fd"))


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit); return it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


# -- POP3: smtpcore's POP3 server in a thread, Maildirs, Dovecot ---------------------------
# (Appended with its own imports, so that the helpers above stay untouched.)

import hashlib  # noqa: E402
import pwd  # noqa: E402


def _serve_in_thread(
    adapter: str, class_name: str, first: Any, startup_timeout: float, options: dict[str, Any]
) -> Iterator[RunningSMTPServer]:
    """Run ``smtpcore.<adapter>.<class_name>(first, LOOPBACK, 0, **options)`` in a thread."""
    import importlib
    import queue
    import threading

    module = importlib.import_module(f"smtpcore.{adapter}")
    server_class = getattr(module, class_name)
    ready: queue.Queue[tuple[Any, Callable[[], object], Any] | BaseException] = queue.Queue()
    failure: list[BaseException] = []

    def run_asyncio() -> None:
        import asyncio

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def call(fn: Callable[[], Awaitable[Any]]) -> Any:
                async def wrapper() -> Any:
                    return await fn()

                return asyncio.run_coroutine_threadsafe(wrapper(), loop).result(60)

            async with server_class(first, LOOPBACK, 0, **options) as server:
                ready.put((server, lambda: loop.call_soon_threadsafe(stop.set), call))
                await stop.wait()

        asyncio.run(main())

    def run_trio() -> None:
        import trio

        async def main() -> None:
            stop = trio.Event()
            token = trio.lowlevel.current_trio_token()

            def call(fn: Callable[[], Awaitable[Any]]) -> Any:
                return trio.from_thread.run(fn, trio_token=token)

            async with server_class(first, LOOPBACK, 0, **options) as server:
                ready.put(
                    (server, lambda: trio.from_thread.run_sync(stop.set, trio_token=token), call)
                )
                await stop.wait()

        trio.run(main)

    def target() -> None:
        try:
            run_asyncio() if adapter == "asyncio" else run_trio()
        except BaseException as exc:
            failure.append(exc)
            ready.put(exc)

    thread = threading.Thread(target=target, name=f"{class_name}-{adapter}", daemon=True)
    thread.start()
    item = ready.get(timeout=startup_timeout)
    if isinstance(item, BaseException):
        thread.join()
        raise item
    server, stop, call = item
    try:
        yield RunningSMTPServer(adapter, server, call)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop may have ended already
            stop()
        thread.join(60)
    if thread.is_alive():
        raise RuntimeError(f"the {adapter} server thread did not stop")
    if failure:
        raise failure[0]


@contextlib.contextmanager
def running_pop3_server(
    adapter: str, store: Any, *, startup_timeout: float = 10.0, **options: Any
) -> Iterator[RunningSMTPServer]:
    """Serve the mailstore ``store`` over POP3 with ``smtpcore.<adapter>`` for the block.

    As :func:`running_smtp_server`: the server runs in a thread with its own
    event loop, for blocking clients (poplib, fetchmail, ...), and a failed
    login is answered at once unless ``options`` say otherwise.
    """
    options.setdefault("hostname", "pop.test")
    options.setdefault("auth_failure_delay", 0.0)
    yield from _serve_in_thread(adapter, "POP3Server", store, startup_timeout, options)


def recorded_sleeps(adapter: str, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds each sleep of the adapter's clock is asked for from now on (a failed
    login's ``auth_failure_delay`` is one), recorded before it sleeps: a test asks
    whether a delay was applied without timing it."""
    clock: Any = (
        importlib.import_module("smtpcore._asyncio_clock").AsyncioClock
        if adapter == "asyncio"
        else importlib.import_module("smtpcore.trio").TrioClock
    )
    asked: list[float] = []
    sleep = clock.sleep

    async def recording(self: object, seconds: float) -> None:
        asked.append(seconds)
        await sleep(self, seconds)

    monkeypatch.setattr(clock, "sleep", recording)
    return asked


def write_maildir(path: Path, messages: Sequence[bytes], *, subdir: str = "new") -> list[Path]:
    """Make the Maildir ``path`` (tmp, new, cur) holding ``messages``, in order.

    Names are ``<seq>.M<n>P<pid>.test``, so delivery order is the listing order.
    """
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for number, content in enumerate(messages, 1):
        name = f"{1_700_000_000 + number}.M{number}P{os.getpid()}.test"
        if subdir == "cur":
            name += ":2,"
        target = path / subdir / name
        target.write_bytes(content)
        paths.append(target)
    return paths


def copy_maildir(source: Path, target: Path) -> None:
    """A copy of the Maildir ``source`` made of hard links: quick for 1,000 messages."""
    for sub in ("tmp", "new", "cur"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        directory = source / sub
        if directory.is_dir():
            for entry in os.scandir(directory):
                os.link(entry.path, target / sub / entry.name)


def maildir_contents(path: Path) -> list[bytes]:
    """The messages of the Maildir ``path`` (new and cur), ordered by content digest."""
    found = []
    for sub in ("new", "cur"):
        directory = path / sub
        if directory.is_dir():
            found += [p.read_bytes() for p in directory.iterdir() if p.is_file()]
    return sorted(found, key=lambda data: hashlib.sha256(data).digest())


@dataclass(frozen=True)
class Dovecot:
    """A ``dovecot -F`` serving POP3 on a loopback port from Maildirs under ``mail_root``."""

    port: int
    mail_root: Path
    process: RunningProcess = field(repr=False)

    def maildir(self, user: str) -> Path:
        return self.mail_root / user


@contextlib.contextmanager
def dovecot_pop3(
    directory: Path,
    users: Mapping[str, str],
    *,
    startup_timeout: float = 15.0,
    tls: TLSFiles | None = None,
    auth_mechanisms: str = "plain login",
) -> Iterator[Dovecot]:
    """Run Dovecot's POP3 server (Debian ``dovecot-pop3d``) in the foreground for the block.

    Everything lives under ``directory``: the configuration, a passwd-file
    with ``users`` (name to plaintext password), the runtime directories and
    the Maildirs (``mail_root/<user>``, which the caller fills). The master
    runs as the current user; as root, Dovecot will not run its login and
    mail processes as root, so they run as the package's ``dovenull`` and
    ``dovecot`` users and the Maildirs are handed to the ``dovecot`` user.
    With ``tls``, STLS is offered with that certificate. ``auth_mechanisms`` is
    Dovecot's setting of that name (its SASL mechanisms, lower case).
    """
    dovecot = require_program("dovecot")
    mail_root = directory / "mail"
    mail_root.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "state"):
        (directory / sub).mkdir(exist_ok=True)
    passwd = directory / "passwd"
    passwd.write_text("".join(f"{user}:{{PLAIN}}{secret}\n" for user, secret in users.items()))
    if os.geteuid() == 0:
        try:
            mail_user = pwd.getpwnam("dovecot")
            pwd.getpwnam("dovenull")
        except KeyError:
            missing_peer("Dovecot's system users (dovecot, dovenull) are missing")
        internal, login = "dovecot", "dovenull"
        uid, gid = mail_user.pw_uid, mail_user.pw_gid
    else:
        me = pwd.getpwuid(os.geteuid())
        internal = login = me.pw_name
        uid, gid = me.pw_uid, me.pw_gid
    ssl_lines = "ssl = no\n"
    if tls is not None:
        ssl_lines = (
            f"ssl = yes\nssl_cert = <{tls.cert_file}\nssl_key = <{tls.key_file}\n"
            "ssl_min_protocol = TLSv1.2\n"
        )
    port = free_port()
    config = directory / "dovecot.conf"
    config.write_text(
        f"""base_dir = {directory}/run
state_dir = {directory}/state
instance_name = smtpcore-test-{port}
log_path = /dev/stderr
protocols = pop3
listen = 127.0.0.1
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{mail_root}/%u
pop3_uidl_format = %f
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail_root}/%u
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
"""
    )
    os.chown(mail_root, uid, gid)
    with run_process([dovecot, "-F", "-c", str(config)]) as process:
        wait_for_port(LOOPBACK, port, startup_timeout, process=process)
        yield Dovecot(port, mail_root, process)


def hand_to_dovecot(dovecot: Dovecot, path: Path) -> None:
    """Give a Maildir the test made to the user Dovecot's mail processes run as."""
    owner = dovecot.mail_root.stat()
    for root, _dirs, files in os.walk(path):
        os.chown(root, owner.st_uid, owner.st_gid)
        for name in files:
            os.chown(os.path.join(root, name), owner.st_uid, owner.st_gid)


class HeldAnswer:
    """A scripted server's step (:attr:`step`) that stops before it answers: ``asked``
    is set once the client's command is in, and the script goes on only once the
    test sets ``release``. A call is then in progress, for a second one to meet."""

    def __init__(self) -> None:
        from smtpcore.testing import Call  # peers loads no smtpcore module at import

        self.asked = threading.Event()
        self.release = threading.Event()
        self.step = Call(self._wait)

    def _wait(self, connection: object) -> None:
        self.asked.set()
        self.release.wait(5)
