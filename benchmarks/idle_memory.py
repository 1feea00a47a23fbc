"""Memory per idle SMTP session, smtpcore beside Twisted and aiosmtpd.

    .venv/bin/python benchmarks/idle_memory.py [--sessions 400] [--servers ...] [--detail] [--tls]

Each server runs in its own process with ``tracemalloc`` on. This process
opens ``--sessions`` connections, reads each greeting, sends ``EHLO`` and
reads the reply, and leaves them all open and idle; the server process then
reports what it allocated since just before the first of them
(``tracemalloc``, after a garbage collection) and how much its resident set
grew, each divided by the sessions. Everything a session holds counts: the
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import adapters_smtp  # noqa: E402

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
    """The child's side of the pipe: ``mark`` takes the baseline, ``measure`` reports
    the growth since then (a thread beside the server's loop)."""
    base: tuple[int, int] = (0, 0)
    snapshot: tracemalloc.Snapshot | None = None
    for line in sys.stdin:
        gc.collect()
        if line.strip() == "mark":
            base = (tracemalloc.get_traced_memory()[0], rss_bytes())
            snapshot = tracemalloc.take_snapshot() if detail else None
        else:
            grown = (tracemalloc.get_traced_memory()[0] - base[0], rss_bytes() - base[1])
            if snapshot is not None:
                stats = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
                for stat in stats[:60]:
                    print(f"  {stat}", file=sys.stderr)
                parts: dict[str, int] = {}
                for stat in stats:
                    part = part_of(stat.traceback[0].filename)
                    parts[part] = parts.get(part, 0) + stat.size_diff
                for part, size in sorted(parts.items(), key=lambda item: -item[1]):
                    print(
                        f"  made by {part:34} {size / sessions:6.0f} B a session", file=sys.stderr
                    )
            print(f"{grown[0]} {grown[1]}", flush=True)


def serve_smtpcore(kind: str, port: int, sessions: int, tls: Path | None) -> None:
    from smtpcore.handler import Handler

    options: dict[str, Any] = {
        "hostname": "mx.test",
        "max_sessions": sessions + 100,
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


def child(kind: str, port: int, sessions: int, detail: bool, tls: Path | None) -> None:
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


def measure(kind: str, sessions: int, detail: bool, tls: Path | None) -> tuple[float, float]:
    """Bytes per idle session: (tracemalloc, resident set)."""
    port = adapters_smtp.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    args = ["--child", kind, str(port), "--sessions", str(sessions)]
    if tls is not None:
        args += ["--tls-files", str(tls)]
    server = subprocess.Popen(
        [sys.executable, __file__, *args, *(["--detail"] if detail else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} did not start")
        for sock in open_sessions(port, 20, tls is not None):  # warm up: first-use allocations
            end_session(sock)
        time.sleep(0.5)  # what a closed session frees goes before the baseline
        server.stdin.write("mark\n")
        server.stdin.flush()
        opened = open_sessions(port, sessions, tls is not None)
        server.stdin.write("measure\n")
        server.stdin.flush()
        traced, rss = (int(n) for n in server.stdout.readline().split())
        for sock in opened:
            sock.close()
        return traced / sessions, rss / sessions
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
    args = parser.parse_args()
    if not 10 <= args.sessions <= 900:
        parser.error("--sessions is 10 to 900")
    if args.child:
        child(args.child[0], int(args.child[1]), args.sessions, args.detail, args.tls_files)
        return
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
