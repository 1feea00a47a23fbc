"""POP3 retrieval throughput of the asyncio and trio adapters, beside Dovecot.

    .venv/bin/python benchmarks/pop3_adapters.py [--messages 1000] [--large-mb 20] [--rounds 3]

Three servers, each in its own process, serve the same Maildir: smtpcore's
``POP3Server`` on asyncio and on trio (a ``MaildirStore``), and Dovecot's
POP3 server (``dovecot -F``, Debian ``dovecot-pop3d``). Four clients fetch
from each: a raw-socket client (one ``RETR`` at a time, reading to the final
dot), Python's ``poplib``, and smtpcore's ``POP3Client`` on asyncio and on
trio (``retrieve_many``, pipelined when the server lists PIPELINING). Each
client measures two loads after logging in:

* ``msgs/s``: ``--messages`` messages of 10 KB, each retrieved once;
* ``MB/s``: one message of ``--large-mb`` MB.

The best of ``--rounds`` runs counts; each round visits every server in turn.
Every load is bounded, every server stopped at the end. Goals (issue 6): our
server within 2x of Dovecot with the same client, and our client faster than
poplib against the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import poplib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def peers() -> Any:
    """The test suite's peer helpers (free ports, Maildirs, Dovecot), shared here."""
    return importlib.import_module("peers")


USER = "bench"
PASSWORD = "bench password"
SERVER_PIDS: dict[int, int] = {}
"""Port -> process id of the servers running now, for whoever measures their CPU."""
SERVERS = ("dovecot", "smtpcore.asyncio", "smtpcore.trio")
CLIENTS = ("raw", "poplib", "smtpcore.asyncio", "smtpcore.trio")
TIMEOUT = 120.0


def message_10k(number: int) -> bytes:
    header = f"Subject: bench {number}\nFrom: a@abc.example\nTo: bench@pqr.example\n\n"
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = b".a line with a leading dot\n" + line * ((10240 - len(header)) // len(line))
    return header.encode() + body


def large_message(megabytes: int) -> bytes:
    line = b"z" * 76 + b"\r\n"
    return b"Subject: large\r\n\r\n" + line * (megabytes * 1024 * 1024 // len(line))


# -- servers --------------------------------------------------------------------------


def serve(kind: str, port: int, mail_root: str) -> None:
    """Run one smtpcore server until SIGTERM (the child process)."""
    from smtpcore.maildrop import MaildirStore

    store = MaildirStore(mail_root, {USER: PASSWORD})
    if kind == "smtpcore.asyncio":
        from smtpcore.asyncio import POP3Server

        async def main_asyncio() -> None:
            async with POP3Server(store, "127.0.0.1", port, hostname="pop.bench") as server:
                print("ready", flush=True)
                await server.serve_forever()

        asyncio.run(main_asyncio())
    else:
        import trio

        from smtpcore.trio import POP3Server as TrioPOP3Server

        async def main_trio() -> None:
            async with TrioPOP3Server(store, "127.0.0.1", port, hostname="pop.bench") as server:
                print("ready", flush=True)
                await server.serve_forever()

        trio.run(main_trio)


@contextmanager
def smtpcore_server(kind: str, mail_root: Path) -> Iterator[int]:
    port = peers().free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port), str(mail_root)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{kind} did not start")
        peers().wait_for_port("127.0.0.1", port, 10.0)
        SERVER_PIDS[port] = process.pid
        yield port
    finally:
        SERVER_PIDS.pop(port, None)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def dovecot_server(directory: Path, template: Path) -> Iterator[int]:
    helpers = peers()
    with helpers.dovecot_pop3(directory, {USER: PASSWORD}) as dovecot:
        helpers.copy_maildir(template, dovecot.maildir(USER))
        helpers.hand_to_dovecot(dovecot, dovecot.maildir(USER))
        SERVER_PIDS[dovecot.port] = dovecot.process.pid
        try:
            yield dovecot.port
        finally:
            SERVER_PIDS.pop(dovecot.port, None)


# -- clients ----------------------------------------------------------------------------
# Each returns (seconds for the small messages, seconds for the large one).


def _recv_until(sock: socket.socket, buffer: bytearray, ending: bytes) -> bytes:
    while True:
        index = buffer.find(ending)
        if index >= 0:
            data = bytes(buffer[: index + len(ending)])
            del buffer[: index + len(ending)]
            return data
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed")
        buffer += chunk


def _recv_multiline(sock: socket.socket, buffer: bytearray) -> int:
    """Read one +OK and its content to the final dot; returns the octets read."""
    status = _recv_until(sock, buffer, b"\r\n")
    if not status.startswith(b"+OK"):
        raise RuntimeError(status)
    total = 0
    while True:
        index = buffer.find(b"\r\n.\r\n")
        if index >= 0:
            total += index + 5
            del buffer[: index + 5]
            return total
        keep = len(buffer) - 4 if len(buffer) > 4 else 0
        total += keep
        del buffer[:keep]
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed")
        buffer += chunk


def raw_client(port: int, count: int) -> tuple[float, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        _recv_until(sock, buffer, b"\r\n")
        for line in (f"USER {USER}", f"PASS {PASSWORD}"):
            sock.sendall(line.encode() + b"\r\n")
            if not _recv_until(sock, buffer, b"\r\n").startswith(b"+OK"):
                raise RuntimeError("login failed")
        start = time.perf_counter()
        for number in range(1, count + 1):
            sock.sendall(b"RETR %d\r\n" % number)
            _recv_multiline(sock, buffer)
        small = time.perf_counter() - start
        start = time.perf_counter()
        sock.sendall(b"RETR %d\r\n" % (count + 1))
        _recv_multiline(sock, buffer)
        large = time.perf_counter() - start
        sock.sendall(b"QUIT\r\n")
        _recv_until(sock, buffer, b"\r\n")
    return small, large


def poplib_client(port: int, count: int) -> tuple[float, float]:
    client = poplib.POP3("127.0.0.1", port, timeout=TIMEOUT)
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        start = time.perf_counter()
        for number in range(1, count + 1):
            client.retr(number)
        small = time.perf_counter() - start
        start = time.perf_counter()
        client.retr(count + 1)
        large = time.perf_counter() - start
        client.quit()
    finally:
        client.close()
    return small, large


def smtpcore_client(kind: str, port: int, count: int) -> tuple[float, float]:
    from smtpcore._driver import POP3Timeouts

    timeouts = POP3Timeouts.uniform(TIMEOUT)

    async def fetch(client_class: type) -> tuple[float, float]:
        # USER/PASS over plaintext to the loopback server, as the other clients log in:
        # allowed explicitly, since the client refuses it without TLS by default.
        async with client_class(
            "127.0.0.1", port, stls=False, timeouts=timeouts, allow_plaintext_auth=True
        ) as client:
            await client.login(USER, PASSWORD)
            start = time.perf_counter()
            got = 0
            async for _, _message in client.retrieve_many(range(1, count + 1)):
                got += 1
            small = time.perf_counter() - start
            assert got == count
            start = time.perf_counter()
            async for _chunk in client.retrieve_chunks(count + 1):
                pass
            large = time.perf_counter() - start
        return small, large

    if kind == "smtpcore.asyncio":
        from smtpcore.asyncio import POP3Client

        return asyncio.run(fetch(POP3Client))
    import trio

    from smtpcore.trio import POP3Client as TrioPOP3Client

    return trio.run(fetch, TrioPOP3Client)


def client_function(kind: str) -> Callable[[int, int], tuple[float, float]]:
    if kind == "raw":
        return raw_client
    if kind == "poplib":
        return poplib_client
    return lambda port, count: smtpcore_client(kind, port, count)


# -- the run ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--large-mb", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--serve", nargs=3, metavar=("KIND", "PORT", "ROOT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        kind, port, root = args.serve
        serve(kind, int(port), root)
        return
    if not 1 <= args.messages <= 100_000 or not 1 <= args.large_mb <= 1024:
        parser.error("--messages is 1 to 100000, --large-mb 1 to 1024")

    workdir = Path(tempfile.mkdtemp(prefix="smtpcore-pop3-bench-"))
    os.chmod(workdir, 0o755)  # Dovecot's unprivileged processes read from here
    results: dict[tuple[str, str], tuple[float, float]] = {}
    large_size = len(large_message(args.large_mb))
    try:
        template = workdir / "template"
        peers().write_maildir(
            template,
            [message_10k(n) for n in range(args.messages)] + [large_message(args.large_mb)],
        )
        with ExitStack() as running:
            # Every server runs from the start, and each round visits them all in
            # turn: on a shared machine, a slow spell then costs every server alike.
            ports: dict[str, int] = {}
            for server in SERVERS:
                servers: AbstractContextManager[int]
                if server == "dovecot":
                    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
                        print("dovecot not found: skipped (Debian package dovecot-pop3d)")
                        continue
                    servers = dovecot_server(workdir / "dovecot", template)
                else:
                    mail_root = workdir / server
                    peers().copy_maildir(template, mail_root / USER)
                    servers = smtpcore_server(server, mail_root)
                ports[server] = running.enter_context(servers)
            runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for server, port in ports.items():
                    for client in CLIENTS:
                        runs.setdefault((server, client), []).append(
                            client_function(client)(port, args.messages)
                        )
            for (server, client), timings in runs.items():
                small = min(small for small, _ in timings)
                large = min(large for _, large in timings)
                results[(server, client)] = (small, large)
                print(
                    f"  {server:<17} <- {client:<17} "
                    f"{args.messages / small:9.0f} msgs/s {large_size / large / 1e6:8.1f} MB/s",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, args.messages, large_size)


def report(
    results: dict[tuple[str, str], tuple[float, float]], messages: int, large_size: int
) -> None:
    def rates(server: str, client: str) -> tuple[float, float] | None:
        found = results.get((server, client))
        if found is None:
            return None
        return messages / found[0], large_size / found[1] / 1e6

    print()
    print(f"{messages} messages of 10 KB, and one of {large_size / 1e6:.1f} MB")
    print()
    header = f"{'server':<17} {'client':<17} {'msgs/s':>9} {'MB/s':>8} {'vs Dovecot':>18}"
    print(header)
    print("-" * len(header))
    for server in SERVERS:
        for client in CLIENTS:
            found = rates(server, client)
            if found is None:
                continue
            base = rates("dovecot", client)
            versus = ""
            if base is not None and server != "dovecot":
                versus = f"{found[0] / base[0]:.2f}x {found[1] / base[1]:.2f}x"
            print(f"{server:<17} {client:<17} {found[0]:9.0f} {found[1]:8.1f} {versus:>18}")
    print()
    print("our clients against poplib, same server (ratio > 1: ours faster)")
    for server in SERVERS:
        base = rates(server, "poplib")
        if base is None:
            continue
        for client in ("smtpcore.asyncio", "smtpcore.trio"):
            found = rates(server, client)
            if found is not None:
                print(
                    f"  {server:<17} {client:<17} msgs {found[0] / base[0]:5.2f}x"
                    f"   MB {found[1] / base[1]:5.2f}x"
                )


if __name__ == "__main__":
    main()
