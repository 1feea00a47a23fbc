"""End-to-end loopback throughput of the asyncio and trio adapters, beside aiosmtpd.

    .venv/bin/python benchmarks/adapters_smtp.py [--messages 10000] [--large-mb 100]

Twisted's ESMTP server joins the table when Twisted is installed
(``pip install -e '.[bench]'``).

Each server runs in its own process and gets the same three loads from the
same clients, in the same run:

* ``pipelined``: one session, 1 KB messages, the next envelope pipelined
  behind each final dot (RFC 2920), from a small blocking client here;
* ``smtp-source``: Postfix's load generator, 20 concurrent reused sessions,
  1 KB messages;
* ``large``: one message of ``--large-mb`` MB sent as raw bytes.

Every load is bounded and every server is stopped at the end. On Linux the
table also shows the server process's CPU time (user and system) per message
or per MB: on a shared machine, whose speed drifts from minute to minute, it
is a steadier figure than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

SERVERS = ("smtpcore.asyncio", "smtpcore.trio", "aiosmtpd", "twisted")
ON_UVLOOP = "+uvloop"
"""The suffix of a server that runs on uvloop's event loop: ``smtpcore.asyncio+uvloop``."""
LINE = b"x" * 76 + b"\r\n"
BODY_1K = b"Subject: bench\r\n\r\n" + LINE * 13


def serve_twisted(port: int) -> None:
    """Twisted's ESMTP server, accepting everything and keeping nothing."""
    from twisted.internet import defer, reactor
    from twisted.mail import smtp
    from zope.interface import implementer

    @implementer(smtp.IMessage)
    class Discard:
        def lineReceived(self, line: bytes) -> None:
            pass

        def eomReceived(self) -> defer.Deferred[None]:
            return defer.succeed(None)

        def connectionLost(self) -> None:
            pass

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: object, origin: object, recipients: object) -> None:
            return None

        def validateFrom(self, helo: object, origin: object) -> object:
            return origin

        def validateTo(self, user: object) -> object:
            return Discard

    class Factory(smtp.SMTPFactory):
        protocol = smtp.ESMTP

        def buildProtocol(self, addr: object) -> smtp.ESMTP:
            protocol = super().buildProtocol(addr)
            protocol.delivery = Delivery()
            return protocol

    reactor.listenTCP(port, Factory(), interface="127.0.0.1")  # type: ignore[attr-defined]  # reactor is a module-level proxy
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]  # as above


FLOOR_GREETING = b"220 mx.test ESMTP smtpcore\r\n"
FLOOR_EHLO = (
    b"250-mx.test\r\n250-SIZE\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)
FLOOR_BYE = b"221 2.0.0 mx.test Bye\r\n"


FLOOR_REPLIES = {
    b"EHLO": FLOOR_EHLO,
    b"MAIL": b"250 2.1.0 OK\r\n",
    b"RCPT": b"250 2.1.5 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
}
FLOOR_OTHER = b"250 2.0.0 OK\r\n"
FLOOR_ACCEPTED = b"250 2.0.0 OK: message accepted\r\n"
END_OF_DATA = b"\r\n.\r\n"


class FloorResponder:
    """The bytes smtpcore's server writes to the benchmarks' loads, checking nothing:
    a reply chosen by the first four bytes of each line, the content skipped up to
    its end marker. What a floor built on it costs is its transport's alone."""

    def __init__(self) -> None:
        self.buffer = b""
        self.in_content = False
        self.done = False

    def respond(self, data: bytes) -> bytes:
        """The replies to everything complete in ``data`` and what came before it."""
        buffer = self.buffer + data
        replies = b""
        while not self.done:
            if self.in_content:
                end = buffer.find(END_OF_DATA)
                if end < 0:
                    buffer = buffer[-4:]  # the marker may straddle two reads
                    break
                replies += FLOOR_ACCEPTED
                buffer = buffer[end + 5 :]
                self.in_content = False
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            verb, buffer = buffer[:4].upper(), buffer[end + 2 :]
            if verb == b"QUIT":
                replies += FLOOR_BYE
                self.done = True
            else:
                replies += FLOOR_REPLIES.get(verb, FLOOR_OTHER)
                if verb == b"DATA":
                    self.in_content = True
                    buffer = b"\r\n" + buffer  # the marker's first line break
        self.buffer = buffer
        return replies


class FloorProtocol(asyncio.Protocol):
    """The floor under any asyncio SMTP server: a bare ``asyncio.Protocol`` writing
    the bytes smtpcore's server writes (:class:`FloorResponder`), one write a read,
    and closing after QUIT. What it costs per connection or message is asyncio's
    own: its accept path, socket transport, selector and callbacks."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.responder = FloorResponder()
        transport.write(FLOOR_GREETING)

    def data_received(self, data: bytes) -> None:
        if replies := self.responder.respond(data):
            self.transport.write(replies)
        if self.responder.done:
            self.transport.close()


class RawFloorSession:
    """:class:`FloorProtocol` over the raw socket on asyncio's selector: what
    ``smtpcore.asyncio``'s server does for a connection below SMTP (a reader on the
    socket, ``recv``, one ``send`` to the kernel a read, the reader removed and the
    socket closed), writing the same bytes and checking nothing. What it costs is
    the event loop's own share of a connection served that way."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.responder = FloorResponder()
        sock.send(FLOOR_GREETING)
        loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        if replies := self.responder.respond(data):
            self.sock.send(replies)
        if data and not self.responder.done:
            return
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def serve_raw_floor(port: int, ready: Callable[[], object]) -> None:
    """Accept from the listening socket on the loop's selector, as ``smtpcore.asyncio``
    does, and serve each connection with a :class:`RawFloorSession`."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)

    def accept() -> None:
        for _ in range(100):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            RawFloorSession(loop, sock)

    loop.add_reader(listener.fileno(), accept)
    ready()
    await asyncio.Event().wait()


async def trio_floor_session(stream: Any) -> None:
    """:class:`FloorProtocol` on trio: a bare ``trio.SocketStream`` session writing the
    same bytes, checking nothing; what it costs is trio's own share of a connection."""
    await stream.send_all(FLOOR_GREETING)
    responder = FloorResponder()
    while not responder.done and (data := await stream.receive_some(65536)):
        if replies := responder.respond(data):
            await stream.send_all(replies)
    await stream.aclose()


async def serve_trio_floor(port: int, ready: Callable[[], object]) -> None:
    import trio

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        await nursery.start(trio.serve_listeners, trio_floor_session, listeners)
        ready()


def run_asyncio(main: Coroutine[Any, Any, None], uvloop: bool) -> None:
    """``asyncio.run(main)``, on a loop of uvloop's if asked, without changing the event
    loop policy of the process (a thread of ``compare.py`` runs servers too)."""
    if not uvloop:
        asyncio.run(main)
        return
    import uvloop as uv

    loop = uv.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def serve(kind: str, port: int) -> None:
    """Run one server until SIGTERM (the child process)."""
    if kind == "twisted":
        serve_twisted(port)
        return
    if kind == "asyncio floor":

        async def main_floor() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(FloorProtocol, "127.0.0.1", port)
            print("ready", flush=True)
            await server.serve_forever()

        asyncio.run(main_floor())
        return
    if kind == "trio floor":
        import trio

        trio.run(serve_trio_floor, port, lambda: print("ready", flush=True))
        return
    if kind == "raw floor":
        asyncio.run(serve_raw_floor(port, lambda: print("ready", flush=True)))
        return
    if kind == "aiosmtpd":
        from aiosmtpd.smtp import SMTP

        class Sink:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                return "250 OK"

        async def main_aiosmtpd() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: SMTP(Sink(), hostname="mx.test", data_size_limit=None),
                "127.0.0.1",
                port,
            )
            print("ready", flush=True)
            await server.serve_forever()

        asyncio.run(main_aiosmtpd())
        return

    from smtpcore.handler import Envelope, Handler, Session
    from smtpcore.smtp import Rcpt, Reply

    class Accept(Handler):
        async def handle_rcpt(
            self, session: Session, envelope: Envelope, command: Rcpt
        ) -> Reply | None:
            return Reply(250, "OK")

    options = {"hostname": "mx.test", "max_message_size": None, "max_sessions": 1000}
    if kind.removesuffix(ON_UVLOOP) == "smtpcore.asyncio":
        from smtpcore.asyncio import SMTPServer as AsyncioServer

        async def main_asyncio() -> None:
            async with AsyncioServer(Accept(), "127.0.0.1", port, **options) as server:
                print("ready", flush=True)
                await server.serve_forever()

        run_asyncio(main_asyncio(), uvloop=kind.endswith(ON_UVLOOP))
    else:
        import trio

        from smtpcore.trio import SMTPServer as TrioServer

        async def main_trio() -> None:
            async with TrioServer(Accept(), "127.0.0.1", port, **options) as server:
                print("ready", flush=True)
                await server.serve_forever()

        trio.run(main_trio)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Client:
    """A blocking SMTP client that reads replies and nothing else."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def replies(self, count: int) -> list[bytes]:
        """``count`` replies (their last lines)."""
        found: list[bytes] = []
        while len(found) < count:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed")
                self.buffer += chunk
                continue
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            if line[3:4] != b"-":
                found.append(line)
        return found

    def expect(self, count: int, codes: bytes = b"2") -> None:
        for line in self.replies(count):
            if line[:1] not in codes:
                raise RuntimeError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.sock.sendall(b"QUIT\r\n")
        self.replies(1)
        self.sock.close()


ENVELOPE = b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nDATA\r\n"


def pipelined(port: int, messages: int, tls: Any = None) -> float:
    """Messages per second over one session, the next envelope behind each dot; with
    ``tls`` (a client's ``ssl.SSLContext``), after STARTTLS."""
    client = Client(port)
    client.expect(1)
    client.sock.sendall(b"EHLO bench.test\r\n")
    client.expect(1)
    if tls is not None:
        client.sock.sendall(b"STARTTLS\r\n")
        client.expect(1)
        client.sock = tls.wrap_socket(client.sock, server_hostname="mx.test")
        client.sock.sendall(b"EHLO bench.test\r\n")
        client.expect(1)
    started = time.perf_counter()
    client.sock.sendall(ENVELOPE)
    client.expect(2)
    client.expect(1, b"3")
    for n in range(messages):
        last = n == messages - 1
        client.sock.sendall(BODY_1K + b".\r\n" + (b"" if last else ENVELOPE))
        client.expect(1 if last else 3)
        if not last:
            client.expect(1, b"3")
    elapsed = time.perf_counter() - started
    client.close()
    return messages / elapsed


def run_timed_program(command: list[str], timeout: float = 600) -> None:
    """Run a load program to its end, which is known the moment it exits; killed after
    ``timeout`` seconds.

    Not ``subprocess.run(..., timeout=...)``: with a timeout, waiting for the child
    polls it with sleeps that grow to 50 ms, so a timed run ends on the next
    poll, up to 50 ms late (a third of a 2,000-message run of a fast server).
    A plain ``wait`` blocks in ``waitpid`` and returns when the child exits; a
    timer kills a child that takes too long.
    """
    child = subprocess.Popen(command)
    killer = threading.Timer(timeout, child.kill)
    killer.start()
    try:
        code = child.wait()
    finally:
        killer.cancel()
    if code != 0:
        raise subprocess.CalledProcessError(code, command)


def smtp_source(port: int, messages: int, sessions: int = 20) -> float:
    """Messages per second from smtp-source with ``sessions`` reused sessions."""
    program = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    started = time.perf_counter()
    run_timed_program(
        [
            *(program, "-s", str(sessions), "-m", str(messages), "-l", "1024", "-d"),
            *("-f", "a@abc.example", "-t", "b@pqr.example", f"127.0.0.1:{port}"),
        ]
    )
    return messages / (time.perf_counter() - started)


def large(port: int, megabytes: int) -> float:
    """MB/s for one message of ``megabytes`` MB (from the 354 to the final reply)."""
    block = LINE * (65536 // len(LINE))
    count = megabytes * 1024 * 1024 // len(block)
    client = Client(port)
    client.expect(1)
    client.sock.sendall(b"EHLO bench.test\r\n")
    client.expect(1)
    client.sock.sendall(ENVELOPE)
    client.expect(2)
    client.expect(1, b"3")
    started = time.perf_counter()
    for _ in range(count):
        client.sock.sendall(block)
    client.sock.sendall(b".\r\n")
    client.expect(1)
    elapsed = time.perf_counter() - started
    client.close()
    return count * len(block) / elapsed / 1e6


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` so far (None without /proc).

    From the scheduler's own count in nanoseconds (``/proc/PID/task/*/schedstat``,
    every thread), where the kernel keeps it; else from ``/proc/PID/stat``, whose
    clock ticks (10 ms) are coarse beside the CPU of a few hundred connections.
    """
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        if total:
            return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_server(kind: str, measure: Callable[[int], float]) -> tuple[float, float | None]:
    """The load's figure against a fresh ``kind`` server, and the server's CPU seconds."""
    port = free_port()
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{kind} did not start")
        before = cpu_seconds(child.pid)
        figure = measure(port)
        after = cpu_seconds(child.pid)
        if before is None or after is None:
            return figure, None
        return figure, after - before
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--pipelined-messages", type=int, default=5_000)
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    # load -> (what the CPU time is divided by, its unit, how to measure)
    loads: dict[str, tuple[int, str, Callable[[int], float]]] = {
        "pipelined 1 KB (msg/s)": (
            args.pipelined_messages,
            "us/msg",
            lambda p: pipelined(p, args.pipelined_messages),
        ),
        "smtp-source x20 1 KB (msg/s)": (
            args.messages,
            "us/msg",
            lambda p: smtp_source(p, args.messages),
        ),
        f"one {args.large_mb} MB message (MB/s)": (
            args.large_mb,
            "us/MB",
            lambda p: large(p, args.large_mb),
        ),
    }
    servers = [kind for kind in SERVERS if kind != "twisted" or _have_twisted()]
    table: dict[str, dict[str, tuple[float, float | None]]] = {}
    for load, (work, _, measure) in loads.items():
        # Each repeat visits every server in turn: on a shared machine, a slow
        # spell then costs every server alike.
        runs: dict[str, list[tuple[float, float | None]]] = {kind: [] for kind in servers}
        for _ in range(args.repeat):
            for kind in servers:
                runs[kind].append(run_server(kind, measure))
        for kind in servers:
            figure = statistics.median(run[0] for run in runs[kind])
            cpus = [run[1] for run in runs[kind] if run[1] is not None]
            cpu = statistics.median(cpus) * 1e6 / work if cpus else None
            table.setdefault(load, {})[kind] = (figure, cpu)
            print(f"  {load:34} {kind:18} {figure:10.1f}", file=sys.stderr)
    print(f"\n{'load':34} {'server':18} {'figure':>10} {'vs aiosmtpd':>12} {'server CPU':>14}")
    for load, figures in table.items():
        unit = loads[load][1]
        base = figures["aiosmtpd"][0]
        for kind, (value, cpu) in figures.items():
            cpu_text = f"{cpu:8.0f} {unit}" if cpu is not None else ""
            print(f"{load:34} {kind:18} {value:10.1f} {value / base:11.2f}x {cpu_text:>14}")


def _have_twisted() -> bool:
    try:
        import twisted.mail  # noqa: F401
    except ImportError:
        print("(Twisted not installed: its column is left out)", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    main()
