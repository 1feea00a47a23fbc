"""Memory per idle SMTP session, smtpcore beside Twisted and aiosmtpd.

    .venv/bin/python benchmarks/idle_memory.py [--sessions 400] [--servers ...] [--detail] [--tls]

This process opens ``--sessions`` connections, reads each greeting, sends
``EHLO`` and reads the reply, and leaves them all open and idle. Each server
is measured twice, in two processes of its own, after the same warm-up
(twenty sessions opened and ended):

* ``tracemalloc``: in a server process with ``tracemalloc`` on, what Python
  allocated since just before the first of the sessions, after a garbage
  collection;
* resident set: in a server process with ``tracemalloc`` off, how much the
  resident set grew over ``--sessions`` sessions opened while ``WARM_UP``
  (400) others are held open, whatever ``--sessions`` is. The server's start
  leaves memory free but resident (a module compiled at import, as under
  ``PYTHONDONTWRITEBYTECODE``, leaves megabytes), which sessions reuse
  without growing the resident set: the sessions held take up the
  small-object allocator's free pools, which nothing can give back, and the
  C heap's free pages are given back at the baseline (glibc's
  ``malloc_trim``). A table that doubles (the selector's, the server's set
  of sessions) grows the resident set at once, by tens of kilobytes, which
  the figure shares out over the sessions: at fewer than 100 sessions it
  would be mostly that, and ``--sessions`` is 100 at least. With
  ``tracemalloc`` on, its own record of each block, and its
  table that doubles at a threshold, would be counted as the sessions'.
  (Until wave 2 the column was the growth from the warm-up's baseline in the
  traced process: docs/performance.rst, Round 28.)

The resident set's run holds ``WARM_UP`` and ``--sessions`` sockets at once,
here and in the server: where the hard limit of open files is lower than
that, the script says so and the largest ``--sessions`` that fits.

Each figure is divided by the sessions. Everything a session holds counts: the
protocol machine, the driver's session and the adapter's transport, the
event loop's transport and socket objects, the task and its suspended
coroutines. ``--detail`` prints where the smtpcore servers' bytes were
allocated, by source line, and then by whose code allocated them (the
machine's, the rest of smtpcore's, the framework's and the standard library's),
per session: an object is counted where it was made (a machine by the driver
line that builds it, a coroutine's frame by the line that calls it).

``--tls`` measures sessions under TLS instead, smtpcore's servers only: each
session sends ``STARTTLS`` after its first ``EHLO``, makes the handshake (TLS
1.3, a throwaway certificate made with ``trustme``) and sends ``EHLO`` again
before it idles: what every submission session costs.

Loopback only; every server started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import adapters_smtp  # noqa: E402

WARM_UP = 400
"""Sessions the resident set's run holds open before its baseline, whatever
``--sessions`` is: what the server's start left free in the small-object allocator's
pools is a fixed amount, which 300 sessions took up on the code before wave 2's splits
(Round 28); held in proportion to ``--sessions``, it read low below 400."""

FILES_BESIDE_SESSIONS = 64
"""Open files a process of the run needs besides its sessions' sockets (standard
streams, the pipe to the server, the listening socket, the event loop's own)."""

SERVERS = (
    "smtpcore.asyncio",
    "smtpcore.trio",
    "twisted",
    "aiosmtpd",
    "asyncio floor",
    "raw floor",
    "trio floor",
)
"""The floors: ``adapters_smtp.FloorProtocol``, a bare ``asyncio.Protocol`` that writes
the same bytes as smtpcore's server, ``adapters_smtp.RawFloorSession``, the same over
the raw socket on asyncio's selector (as smtpcore's asyncio server serves a
connection), and ``adapters_smtp.trio_floor_session``, the same on a bare
``trio.SocketStream``; what each holds is its framework's own share."""


def rss_bytes() -> int:
    """This process's resident set (0 without /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def open_sockets() -> int:
    """How many sockets this process has open (0 without /proc): at the baseline, the
    sessions held open before it."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    count = 0
    for fd in fds:
        with suppress(OSError):  # the listing's own descriptor, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def release_free_pages() -> None:
    """Give the C allocator's free pages back to the system (glibc's ``malloc_trim``;
    nothing elsewhere): what the server's start freed stays resident, and sessions
    that reuse it after the baseline grow no resident set; given back, each page a
    session touches again counts."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


class Reading(NamedTuple):
    """What the server process reports at the baseline and at the measure."""

    traced: int
    """Bytes ``tracemalloc`` traces (0 when it is off)."""
    rss: int
    sockets: int
    tracing: bool


def reading() -> Reading:
    traced = tracemalloc.get_traced_memory()[0]
    return Reading(traced, rss_bytes(), open_sockets(), tracemalloc.is_tracing())


PARTS = (
    ("smtpcore machine", ("/smtpcore/smtp/", "/smtpcore/_lines.py")),
    ("smtpcore driver and adapter", ("/smtpcore/",)),
    ("trio", ("/trio/", "<attrs generated")),
    ("asyncio and the standard library", ("/asyncio/", "/lib/python")),
)
"""Where an allocation's source file says it belongs, checked in this order."""


def part_of(filename: str) -> str:
    for name, markers in PARTS:
        if any(marker in filename for marker in markers):
            return name
    return "other"


def answer_requests(detail: bool, sessions: int) -> None:
    """The child's side of the pipe (a thread beside the server's loop): ``mark`` takes
    the baseline, ``measure`` the reading the growth is counted to (with ``--detail``,
    where it went), ``look`` a reading alone; each answers its reading, after a garbage
    collection, so that the parent opens no session before the baseline is taken."""
    snapshot: tracemalloc.Snapshot | None = None
    for line in sys.stdin:
        gc.collect()
        if line.strip() == "mark":
            release_free_pages()
            snapshot = tracemalloc.take_snapshot() if detail else None
        elif line.strip() == "measure" and snapshot is not None:
            stats = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
            for stat in stats[:60]:
                print(f"  {stat}", file=sys.stderr)
            parts: dict[str, int] = {}
            for stat in stats:
                part = part_of(stat.traceback[0].filename)
                parts[part] = parts.get(part, 0) + stat.size_diff
            for part, size in sorted(parts.items(), key=lambda item: -item[1]):
                print(f"  made by {part:34} {size / sessions:6.0f} B a session", file=sys.stderr)
        print(" ".join(str(int(value)) for value in reading()), flush=True)


def serve_smtpcore(kind: str, port: int, sessions: int, tls: Path | None) -> None:
    from smtpcore.handler import Handler

    options: dict[str, Any] = {
        "hostname": "mx.test",
        "max_sessions": WARM_UP + sessions + 100,  # what the resident set's run holds
        "max_sessions_per_address": None,  # every client here is 127.0.0.1
    }
    if tls is not None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls / "server.pem", tls / "server.key")
        options["ssl_context"] = context
    if kind == "smtpcore.asyncio":
        import asyncio

        from smtpcore.asyncio import SMTPServer as AsyncioServer

        async def main_asyncio() -> None:
            async with AsyncioServer(Handler(), "127.0.0.1", port, **options) as server:
                print("ready", flush=True)
                await server.serve_forever()

        asyncio.run(main_asyncio())
    else:
        import trio

        from smtpcore.trio import SMTPServer as TrioServer

        async def main_trio() -> None:
            async with TrioServer(Handler(), "127.0.0.1", port, **options) as server:
                print("ready", flush=True)
                await server.serve_forever()

        trio.run(main_trio)


def child(
    kind: str, port: int, sessions: int, detail: bool, tls: Path | None, trace: bool
) -> None:
    if trace:
        tracemalloc.start()
    threading.Thread(target=answer_requests, args=(detail, sessions), daemon=True).start()
    if kind.startswith("smtpcore."):
        serve_smtpcore(kind, port, sessions, tls)
    else:
        adapters_smtp.serve(kind, port)


def open_sessions(port: int, count: int, tls: bool = False) -> list[socket.socket]:
    """``count`` sessions past EHLO (``tls``: past STARTTLS and EHLO again), left open."""
    opened = []
    for _ in range(count):
        client = adapters_smtp.Client(port)
        client.expect(1)
        client.sock.sendall(b"EHLO bench.test\r\n")
        client.expect(1)
        if tls:
            client.sock.sendall(b"STARTTLS\r\n")
            client.expect(1)
            client.sock = _CLIENT_TLS.wrap_socket(client.sock, server_hostname="mx.test")
            client.sock.sendall(b"EHLO bench.test\r\n")
            client.expect(1)
        opened.append(client.sock)
    return opened


def _client_context() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the throwaway certificate: nothing to verify
    return context


_CLIENT_TLS: Any = None
"""The client's TLS context under ``--tls`` (see :func:`main`)."""


def make_certificate(directory: Path) -> None:
    """A throwaway server certificate and key for ``--tls``, as PEM files in ``directory``."""
    import trustme

    cert = trustme.CA().issue_cert("mx.test", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    with (directory / "server.pem").open("wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())


def end_session(sock: socket.socket) -> None:
    """QUIT, and wait for the server to close the connection: a warm-up session's
    memory is freed before the baseline is taken, not counted against the sessions."""
    sock.sendall(b"QUIT\r\n")
    sock.settimeout(10)
    while sock.recv(4096):
        pass
    sock.close()


class Server:
    """A server in a process of its own, asked for its :class:`Reading` over a pipe."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    def ask(self, request: str) -> Reading:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        traced, rss, sockets, tracing = (int(n) for n in self.process.stdout.readline().split())
        return Reading(traced, rss, sockets, bool(tracing))


@contextmanager
def started(
    kind: str, sessions: int, tls: Path | None, *, trace: bool, detail: bool = False
) -> Iterator[Server]:
    """The server ``kind`` ready on a free port, warmed up (first-use allocations made
    and twenty ended sessions freed), stopped at the end."""
    port = adapters_smtp.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    args = ["--child", kind, str(port), "--sessions", str(sessions)]
    if tls is not None:
        args += ["--tls-files", str(tls)]
    args += ["--trace"] if trace else []
    args += ["--detail"] if detail else []
    process = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} did not start")
        for sock in open_sessions(port, 20, tls is not None):
            end_session(sock)
        time.sleep(0.5)  # what a closed session frees goes before the baseline
        yield Server(process, port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def traced_readings(
    kind: str, sessions: int, detail: bool, tls: Path | None
) -> tuple[Reading, Reading]:
    """The readings of a traced server before and after ``sessions`` idle sessions."""
    with started(kind, sessions, tls, trace=True, detail=detail) as server:
        base = server.ask("mark")
        opened = open_sessions(server.port, sessions, tls is not None)
        grown = server.ask("measure")
        for sock in opened:
            sock.close()
    return base, grown


class ResidentReadings(NamedTuple):
    """An untraced server's readings: before the warm-up's sessions, at the baseline
    with them held open, and after the measured sessions."""

    idle: Reading
    base: Reading
    grown: Reading


def resident_readings(
    kind: str, sessions: int, tls: Path | None, warm_up: int = WARM_UP
) -> ResidentReadings:
    """The readings of an untraced server past ``warm_up`` idle sessions held open, and
    after ``sessions`` more."""
    with started(kind, sessions, tls, trace=False) as server:
        idle = server.ask("look")
        held = open_sessions(server.port, warm_up, tls is not None)
        base = server.ask("mark")
        held += open_sessions(server.port, sessions, tls is not None)
        grown = server.ask("look")
        for sock in held:
            sock.close()
    return ResidentReadings(idle, base, grown)


def measure(kind: str, sessions: int, detail: bool, tls: Path | None) -> tuple[float, float]:
    """Bytes per idle session: (tracemalloc, resident set)."""
    base, grown = traced_readings(kind, sessions, detail, tls)
    traced = (grown.traced - base.traced) / sessions
    readings = resident_readings(kind, sessions, tls)
    return traced, (readings.grown.rss - readings.base.rss) / sessions


def open_files_needed(sessions: int) -> int:
    """Open files each process of the resident set's run holds at its most."""
    return WARM_UP + sessions + FILES_BESIDE_SESSIONS


def hard_limit_of_open_files() -> int | None:
    """The hard limit of open files (``None``: no limit, or no ``resource`` module)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def allow_open_files(count: int) -> None:
    """Raise this process's soft limit of open files to ``count`` where the hard limit
    allows: the server's process inherits it."""
    try:
        import resource  # POSIX only
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def available(kind: str) -> bool:
    module = {"twisted": "twisted.mail", "aiosmtpd": "aiosmtpd", "smtpcore.trio": "trio"}
    module["asyncio floor"] = "asyncio"
    module["raw floor"] = "asyncio"
    module["trio floor"] = "trio"
    try:
        __import__(module.get(kind, "asyncio"))
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--detail", action="store_true", help="where smtpcore's bytes go")
    parser.add_argument("--tls", action="store_true", help="sessions past STARTTLS")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--tls-files", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, port = args.child[0], int(args.child[1])
        child(kind, port, args.sessions, args.detail, args.tls_files, args.trace)
        return
    if not 100 <= args.sessions <= 900:
        parser.error("--sessions is 100 to 900")
    hard = hard_limit_of_open_files()
    if hard is not None and open_files_needed(args.sessions) > hard:
        fits = hard - open_files_needed(0)
        parser.error(
            f"--sessions {args.sessions} needs {open_files_needed(args.sessions)} open files"
            f" ({WARM_UP} sessions held before the resident set's baseline, and"
            f" {FILES_BESIDE_SESSIONS} besides); the hard limit is {hard}: "
            + (f"--sessions {fits} at most" if fits >= 100 else "too low for 100")
        )
    allow_open_files(open_files_needed(args.sessions))
    kinds = args.servers.split(",")
    tls_files = None
    if args.tls:
        global _CLIENT_TLS
        _CLIENT_TLS = _client_context()
        kinds = [kind for kind in kinds if kind.startswith("smtpcore.")]
        tls_files = Path(tempfile.mkdtemp(prefix="idle-memory-tls-"))
        make_certificate(tls_files)
    print(f"# {args.sessions} idle sessions past {'STARTTLS and ' if args.tls else ''}EHLO;")
    print("# bytes per session")
    print(f"{'server':18} {'tracemalloc':>12} {'resident set':>13}")
    try:
        for _ in range(args.rounds):
            for kind in kinds:
                if not available(kind):
                    continue
                detail = args.detail and kind.startswith("smtpcore.")
                traced, rss = measure(kind, args.sessions, detail, tls_files)
                print(f"{kind:18} {traced:12.0f} {rss:13.0f}", flush=True)
    finally:
        if tls_files is not None:
            shutil.rmtree(tls_files)


if __name__ == "__main__":
    main()
