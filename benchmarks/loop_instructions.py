"""User-space instructions a connection (or a message) costs, with the client on the
server's own event loop: a count that is the same from run to run.

    .venv/bin/python benchmarks/loop_instructions.py [--loads connect,newconn]

``instructions.py`` counts a server process fed by clients in other processes;
under valgrind the server runs about fifty times slower than they do, so
whether a client's next command is already in when the session first reads
changes from run to run, and with it the count (a few percent for a new
connection). Here the client is a coroutine on the server's loop, over
loopback sockets: every read of the session finds what a fast server would
find, the same each run. The process is counted by ``valgrind --tool=callgrind``
twice, for ``--few`` and for ``--many`` units, and the difference is divided
by the units between: start-up drops out, the client's own work stays in
(the same for any two servers compared), so compare counts of this script
with each other, not with ``instructions.py``'s. Two runs agree to about
0.05%.

The loads: ``connect`` (connect, EHLO, QUIT) and ``newconn`` (connect, EHLO,
MAIL, RCPT, DATA, a 1 KB message, QUIT), one command at a time, as
``smtp-source`` sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import adapters_smtp  # noqa: E402

ENVELOPE = (b"MAIL FROM:<a@abc.example>\r\n", b"RCPT TO:<b@pqr.example>\r\n", b"DATA\r\n")


async def _reply(loop: asyncio.AbstractEventLoop, sock: socket.socket, pending: bytearray) -> None:
    """Read up to the last line of the next reply; a reply other than 2xx or 3xx fails."""
    while True:
        end = pending.find(b"\r\n")
        while end >= 0:
            line = bytes(pending[:end])
            del pending[: end + 2]
            if line[3:4] != b"-":
                if line[:1] not in b"23":
                    raise RuntimeError(f"unexpected reply {line!r}")
                return
            end = pending.find(b"\r\n")
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk


async def _session(loop: asyncio.AbstractEventLoop, port: int, load: str) -> None:
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        pending = bytearray()
        await _reply(loop, sock, pending)
        commands = [b"EHLO bench.test\r\n"]
        if load == "newconn":
            commands += [*ENVELOPE, adapters_smtp.BODY_1K + b".\r\n"]
        for command in [*commands, b"QUIT\r\n"]:
            await loop.sock_sendall(sock, command)
            await _reply(loop, sock, pending)


async def _serve(load: str, units: int) -> None:
    from smtpcore.asyncio import SMTPServer
    from smtpcore.handler import Envelope, Handler, Session
    from smtpcore.smtp import Rcpt, Reply

    class Accept(Handler):  # as adapters_smtp's server
        async def handle_rcpt(
            self, session: Session, envelope: Envelope, command: Rcpt
        ) -> Reply | None:
            return Reply(250, "OK")

    port = adapters_smtp.free_port()
    options = {"hostname": "mx.test", "max_message_size": None, "max_sessions": 1000}
    async with SMTPServer(Accept(), "127.0.0.1", port, **options):  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        for _ in range(units):
            await _session(loop, port, load)
        await asyncio.sleep(0.01)  # the last session's close


def _count(load: str, units: int) -> int:
    """The instructions of a whole run of ``units`` (a child process under callgrind)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (the test setup's Debian packages have it)")
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        subprocess.run(
            [
                *(valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(sys.executable, __file__, "--run", load, str(units)),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        total = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if total is None:
            raise RuntimeError("no total in callgrind's output")
        return int(total.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--run"]:  # the child under valgrind
        asyncio.run(_serve(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", default="connect,newconn")
    parser.add_argument("--few", type=int, default=100)
    parser.add_argument("--many", type=int, default=300)
    args = parser.parse_args()
    if not 0 < args.few < args.many:
        parser.error("--few must be positive and below --many")
    for load in args.loads.split(","):
        if load not in ("connect", "newconn"):
            parser.error(f"unknown load {load!r}")
        difference = _count(load, args.many) - _count(load, args.few)
        print(f"{load}: {difference / (args.many - args.few):,.0f} instructions per unit")


if __name__ == "__main__":
    main()
