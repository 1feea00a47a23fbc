"""An SMTP sink that sweeps the CPU's caches before each reply, for ``client_cpu.py --evict``.

    .venv/bin/python benchmarks/evicting_sink.py PORT MEGABYTES [--pipelining]

A client that waits for each reply from a real server finds its caches cold
when the reply comes: in the round trip its core ran other work, or went idle
and the host ran other work on it. On this two-core virtual machine that is
what a client meets on two cores (each reply wakes an idle core), and not on
one core, where the client and ``smtp-sink`` take turns and leave each other's
lines in the caches. Run on the clients' core, this sink writes over
``MEGABYTES`` of its own memory before it answers each command (and the
content), so that every reply reaches the client after the same sweep,
whatever the client is: a client's CPU a message then includes what its work
costs from cold caches, the larger the more code and objects it touches a
reply.

It answers as ``smtp-sink`` does what the clients of ``client_loads`` send:
the greeting, EHLO (with PIPELINING if asked), MAIL, RCPT, DATA and the
content up to its end, RSET, NOOP and QUIT, one connection after another,
pipelined commands in order. Loopback only; it runs until it is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import socket


def serve(sock: socket.socket, sweep: tuple[bytearray, bytearray], pipelining: bool) -> None:
    """One session: answer each command line (and the content) after a sweep."""
    ehlo = (
        b"250-sink.test\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"") + b"250 8BITMIME\r\n"
    )
    buffer = b""
    in_data = False
    sock.sendall(b"220 sink.test ESMTP\r\n")
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        replies = []
        while True:
            if in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                buffer = buffer[end + 5 :]
                in_data = False
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            verb = buffer[:4].upper()
            buffer = buffer[end + 2 :]
            if verb in (b"EHLO", b"HELO"):
                replies.append(ehlo)
            elif verb == b"DATA":
                in_data = True
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
            else:  # MAIL, RCPT, RSET, NOOP
                replies.append(b"250 2.0.0 Ok\r\n")
        if replies:
            target, source = sweep
            target[:] = source  # one copy, in place: reads one half and writes the other
            sock.sendall(b"".join(replies))
            if replies[-1].startswith(b"221"):
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("megabytes", type=float)
    parser.add_argument("--pipelining", action="store_true")
    args = parser.parse_args()
    half = int(args.megabytes * (1 << 20)) // 2
    sweep = (bytearray(half), bytearray(b"x" * half))
    with socket.create_server(("127.0.0.1", args.port)) as listener:
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with contextlib.suppress(ConnectionError):
                    serve(conn, sweep, args.pipelining)


if __name__ == "__main__":
    main()
